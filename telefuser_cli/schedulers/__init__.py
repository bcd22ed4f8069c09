"""Flow-matching schedulers on the official Wan grids: ``make_scheduler(name, num_steps, shift)``.

| name    | grid before the shift            | DiT timestep            | solver                          |
|---------|----------------------------------|-------------------------|---------------------------------|
| unipc   | linspace(0.999, 0, N + 1)[:N]    | int64(sigma * 1000)     | UniPC bh2, order 2 (Wan default)|
| dpm++   | linspace(1, 0, N + 1)[:N]        | int64(sigma * 1000)     | DPM-Solver++ 2M midpoint        |
| euler   | linspace(1, 0, N + 1)[:N]        | float32(sigma) * 1000   | Euler                           |

All end at sigma 0. Timesteps are exposed as float32 either way (the integers are exact in float32).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import FlowScheduler, shift_sigmas
from .flow_dpm import FlowDPMScheduler
from .flow_euler import FlowEulerScheduler
from .flow_unipc import FlowUniPCScheduler

SCHEDULERS: dict[str, type[FlowScheduler]] = {
    "unipc": FlowUniPCScheduler,
    "dpm++": FlowDPMScheduler,
    "euler": FlowEulerScheduler,
}


def make_scheduler(
    name: str,
    num_steps: int,
    shift: float,
    timesteps: Sequence[float] | None = None,
    num_train_timesteps: int = 1000,
) -> FlowScheduler:
    """A fresh scheduler (one per trajectory) for solver ``name`` in {"unipc", "dpm++", "euler"}.

    ``timesteps``: explicit list for step-distilled models, e.g. [1000, 750, 500, 250]; "euler" only. It
    replaces ``num_steps`` and the linspace grid with ``sigma_i = shift(t_i / num_train_timesteps)``, the
    mapping lightx2v's Wan2.2 distill scheduler uses with its ``sample_shift`` (see ``flow_euler``); pass
    ``shift=1`` for ``sigma_i = t_i / num_train_timesteps``.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(sorted(SCHEDULERS))}")
    if timesteps is not None:
        if name != "euler":
            raise ValueError(
                f"explicit timesteps are only supported by the 'euler' scheduler (the step-distilled "
                f"samplers are Euler), got scheduler {name!r} with timesteps={list(timesteps)}"
            )
        return FlowEulerScheduler(num_steps, shift, num_train_timesteps, timesteps=timesteps)
    return SCHEDULERS[name](num_steps, shift, num_train_timesteps)


__all__ = [
    "SCHEDULERS",
    "FlowDPMScheduler",
    "FlowEulerScheduler",
    "FlowScheduler",
    "FlowUniPCScheduler",
    "make_scheduler",
    "shift_sigmas",
]
