"""``make_scheduler(name, num_steps, shift)``: a fresh flow-matching scheduler (imports torch)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import FlowScheduler
from .flow_dpm import FlowDPMScheduler
from .flow_euler import FlowEulerScheduler
from .flow_unipc import FlowUniPCScheduler
from .grids import grid

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
    grid(name, num_steps, shift, timesteps, num_train_timesteps)  # every argument checked, one message each
    if timesteps is not None:
        return FlowEulerScheduler(num_steps, shift, num_train_timesteps, timesteps=timesteps)
    return SCHEDULERS[name](num_steps, shift, num_train_timesteps)
