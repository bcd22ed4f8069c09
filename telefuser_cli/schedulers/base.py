"""The base class of the flow-matching schedulers (the grids are in :mod:`.grids`).

Flow matching convention (Wan): ``x_sigma = (1 - sigma) * x0 + sigma * noise``, the DiT predicts the
velocity ``v = noise - x0``, so ``x0 = x - sigma * v``. Sigma runs from (about) 1 down to exactly 0.

Precision: every grid is built in float64 (numpy, as the official code does), then rounded once to
float32; the solvers' per-step coefficients are computed in float64 from those float32 sigmas, so the
only float32 arithmetic left is the tensor math inside ``step``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class FlowScheduler:
    """One denoising trajectory of a flow-matching solver.

    Build a new instance per trajectory: multistep solvers keep the previous x0 predictions.

    Attributes:
        timesteps: [N] float32, the value the DiT receives at step i.
        sigmas: [N + 1] float32 noise levels, ``sigmas[-1] == 0``.
    """

    timesteps: Tensor
    sigmas: Tensor

    def __init__(self, sigmas: np.ndarray, timesteps: np.ndarray | Tensor) -> None:
        """sigmas: [N] float64 grid without the final 0; timesteps: [N] values for the DiT."""
        sigmas32 = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas32)
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.float32)
        # Python floats of the float32 sigmas: step() multiplies tensors by these without a device sync.
        self._sig = [float(s) for s in sigmas32]
        self._next = 0

    @property
    def num_steps(self) -> int:
        return len(self._sig) - 1

    def _advance(self, i: int) -> None:
        """Check that steps are taken in order, once each (the multistep history assumes it)."""
        if i != self._next:
            raise ValueError(
                f"{type(self).__name__}.step expected step index {self._next} of {self.num_steps}, got {i}; "
                "steps must be taken in order 0..N-1 on a fresh scheduler per trajectory"
            )
        self._next = i + 1

    def step(self, velocity: Tensor, i: int, sample: Tensor) -> Tensor:
        """Advance ``sample`` (x at sigmas[i]) to sigmas[i + 1] given the DiT's velocity at step i.

        velocity, sample: same shape, any float dtype; computed and returned in float32.
        """
        raise NotImplementedError
