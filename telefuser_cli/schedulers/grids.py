"""The sigma grids and DiT timesteps of the flow-matching solvers, in numpy only (no torch).

``grid(name, num_steps, shift, timesteps)`` is what a scheduler of ``make_scheduler`` runs on; the record of a
run and ``dump-config`` show its timesteps without importing torch.

Precision: every grid is built in float64 (numpy, as the official code does), then rounded once to float32
by the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

SOLVERS = ("unipc", "dpm++", "euler")


def shift_sigmas(sigmas: Any, shift: float) -> Any:
    """Time shift of flow-matching sigmas: ``s * sigma / (1 + (s - 1) * sigma)``.

    Elementwise, in the input's dtype (numpy arrays or tensors) (the grids here are built in float64 numpy). Fixed points are 0 and 1;
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


def check_explicit_timesteps(timesteps: Sequence[float], num_train_timesteps: int) -> list[float]:
    """Explicit DiT timesteps of a step-distilled sampler: non-empty, in (0, T], strictly decreasing."""
    ts = [float(t) for t in timesteps]
    if not ts:
        raise ValueError("timesteps must hold at least one value, got an empty list")
    if any(not (0 < t <= num_train_timesteps) for t in ts):
        raise ValueError(f"timesteps must lie in (0, {num_train_timesteps}], got {ts}")
    if any(b >= a for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps must be strictly decreasing, got {ts}")
    return ts


def grid(
    name: str,
    num_steps: int,
    shift: float,
    timesteps: Sequence[float] | None = None,
    num_train_timesteps: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """(sigmas [N] float64 without the final 0, the DiT's timesteps [N]) of solver ``name``.

    unipc: ``shift(linspace(float32(1 - 1/T), 0, N + 1)[:N])`` and integer (truncated) timesteps; dpm++: the
    same from 1; euler: from 1, float timesteps ``float32(sigma) * T``, or ``shift(t_i / T)`` for explicit
    ``timesteps`` (step-distilled models; euler only). Raises ValueError naming a bad argument.
    """
    if name not in SOLVERS:
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(sorted(SOLVERS))}")
    if timesteps is not None:
        if name != "euler":
            raise ValueError(
                f"explicit timesteps are only supported by the 'euler' scheduler (the step-distilled "
                f"samplers are Euler), got scheduler {name!r} with timesteps={list(timesteps)}"
            )
        ts = check_explicit_timesteps(timesteps, num_train_timesteps)
        check_grid_args(len(ts), shift, num_train_timesteps)
        sigmas = shift_sigmas(np.asarray(ts, dtype=np.float64) / num_train_timesteps, shift)
        return sigmas, sigmas.astype(np.float32) * np.float32(num_train_timesteps)
    check_grid_args(num_steps, shift, num_train_timesteps)
    if name == "unipc":
        # The official grid starts at the float32 value of its largest training sigma, 1 - 1/T.
        sigma_max = float(np.float32(1.0 - 1.0 / num_train_timesteps))
        sigmas = shifted_linspace(sigma_max, num_steps, shift)
        return sigmas, (sigmas * num_train_timesteps).astype(np.int64)
    sigmas = shifted_linspace(1.0, num_steps, shift)
    if name == "dpm++":
        return sigmas, (sigmas * num_train_timesteps).astype(np.int64)
    return sigmas, sigmas.astype(np.float32) * np.float32(num_train_timesteps)


def dit_timesteps(
    name: str, num_steps: int, shift: float, timesteps: Sequence[float] | None = None
) -> list[float]:
    """The values the DiT receives, as the scheduler holds them (float32), as Python floats."""
    return np.asarray(grid(name, num_steps, shift, timesteps)[1], dtype=np.float32).tolist()
