"""Shared pieces of the flow-matching schedulers: the sigma shift, grid helpers, the base class.

Flow matching convention (Wan): ``x_sigma = (1 - sigma) * x0 + sigma * noise``, the DiT predicts the
velocity ``v = noise - x0``, so ``x0 = x - sigma * v``. Sigma runs from (about) 1 down to exactly 0.

Precision: every grid is built in float64 (numpy, as the official code does), then rounded once to
float32; the solvers' per-step coefficients are computed in float64 from those float32 sigmas, so the
only float32 arithmetic left is the tensor math inside ``step``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """Time shift of flow-matching sigmas: ``s * sigma / (1 + (s - 1) * sigma)``.

    Elementwise, in the input's dtype; numpy arrays work too (the grids here are built in float64 numpy). Fixed points are 0 and 1;
    ``shift > 1`` moves the grid towards high noise.
    """
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def check_grid_args(num_steps: int, shift: float, num_train_timesteps: int) -> None:
    """Raise ValueError for arguments no solver can use, naming the value."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if not (isinstance(shift, int | float) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int):
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")


def shifted_linspace(sigma_max: float, num_steps: int, shift: float) -> np.ndarray:
    """``shift(linspace(sigma_max, 0, N + 1)[:N])`` in float64 numpy, the way the official solvers build it.

    numpy's linspace (not torch's) because the official integer timesteps are truncations of these
    float64 values, and a one-ulp difference can move a truncation across an integer.
    """
    return shift_sigmas(np.linspace(sigma_max, 0.0, num_steps + 1)[:num_steps], shift)


def log_snr(sigma: float) -> float:
    """``lambda = log(alpha / sigma)`` with ``alpha = 1 - sigma``; -inf at sigma 1, +inf at sigma 0.

    The infinite ends are what the official float32 code computes too (``log(0)``); the solver formulas
    below are written so that they reduce to first-order / exact steps there instead of producing NaN.
    """
    if sigma <= 0.0:
        return math.inf
    if sigma >= 1.0:
        return -math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


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
