"""Flow-matching Euler: ``x_{i+1} = x_i + v_i * (sigma_{i+1} - sigma_i)``.

Grid: ``sigma = shift(linspace(1, 0, N + 1)[:N])``, final sigma 0, the DiT gets ``sigma * 1000`` as a float.
This is what diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=...)`` does with those
sigmas (constructed with ``shift=1``); its ``set_timesteps(N)`` default is another grid (N points between
its shifted training extremes, shifted again: 1.0, 0.910, 0.717, 0.024 for 4 steps at shift 5, where this
grid is 1.0, 0.9375, 0.833, 0.625).

Explicit timesteps (step-distilled models): lightx2v's ``Wan22StepDistillScheduler`` takes a
``denoising_step_list`` such as [1000, 750, 500, 250] together with ``sample_shift`` (5.0 in its Wan2.2
distill configs) and uses ``sigma_i = shift(t_i / 1000)`` (it indexes a 1000-point float32 linspace(1, 0)
grid at ``1000 - t_i`` and shifts it); the DiT gets ``sigma_i * 1000`` as a float (1000, 937.5, 833.3,
625.0 for that list at shift 5); each step is the deterministic Euler update to the next sigma, the last
one to 0. We do the same, in float64 rounded once: identical to lightx2v's float32 values for
[1000, 750, 500, 250], within one float32 ulp for other lists. Pass ``shift=1`` for ``sigma_i = t_i / 1000``.
(lightx2v's Wan2.1 ``WanStepDistillScheduler`` instead re-noises with fresh noise at each step; that
sampler is not this one.)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .base import FlowScheduler
from .grids import grid


class FlowEulerScheduler(FlowScheduler):
    """First-order flow-matching sampler; no history. Timesteps are ``float32(sigma) * 1000`` in float32.

    ``timesteps`` (explicit list, distilled models) replaces ``num_steps`` and the linspace grid:
    ``sigma_i = shift(t_i / num_train_timesteps)``; ``num_steps`` is then ignored.
    """

    def __init__(
        self,
        num_steps: int,
        shift: float,
        num_train_timesteps: int = 1000,
        timesteps: Sequence[float] | None = None,
    ) -> None:
        super().__init__(*grid("euler", num_steps, shift, timesteps, num_train_timesteps))
        # sigma_{i+1} - sigma_i taken in float32, as diffusers' step does with its float32 sigma tensor.
        full = self.sigmas.numpy()
        self._dt = [float(full[i + 1] - full[i]) for i in range(self.num_steps)]

    def step(self, velocity: Tensor, i: int, sample: Tensor) -> Tensor:
        """x: [B, C, F, H, W] (any shape) at sigmas[i] -> x at sigmas[i + 1], float32."""
        self._advance(i)
        return sample.float() + self._dt[i] * velocity.float()
