"""Flow-matching schedulers on the official Wan grids: ``make_scheduler(name, num_steps, shift)``.

| name    | grid before the shift            | DiT timestep            | solver                          |
|---------|----------------------------------|-------------------------|---------------------------------|
| unipc   | linspace(0.999, 0, N + 1)[:N]    | int64(sigma * 1000)     | UniPC bh2, order 2 (Wan default)|
| dpm++   | linspace(1, 0, N + 1)[:N]        | int64(sigma * 1000)     | DPM-Solver++ 2M midpoint        |
| euler   | linspace(1, 0, N + 1)[:N]        | float32(sigma) * 1000   | Euler                           |

All end at sigma 0. Timesteps are exposed as float32 either way (the integers are exact in float32).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .grids import SOLVERS, dit_timesteps, grid, shift_sigmas

# The torch side is imported on first use, so the grids (config.json, dump-config) need no torch.
_LAZY = {
    "FlowScheduler": ".base",
    "FlowDPMScheduler": ".flow_dpm",
    "FlowEulerScheduler": ".flow_euler",
    "FlowUniPCScheduler": ".flow_unipc",
    "SCHEDULERS": ".factory",
    "make_scheduler": ".factory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SOLVERS", "dit_timesteps", "grid", "shift_sigmas", *_LAZY]
