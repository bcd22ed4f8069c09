"""The one sampling loop: scheduler steps, classifier-free guidance, and the expert of each step.

Every family samples through :func:`sample`. What differs between families lives behind
:class:`Denoiser`: how a DiT prepares its text context once per run, how two contexts join into one
batch, and how one step's velocity is predicted (condition channels, image tokens, meanflow's reference
time are the denoiser's business). Guidance has one formula, :func:`guide`, and three ways to get its two
passes (:class:`TwoPass`, :class:`Batched`, :class:`CfgParallel`). A mixture of experts is a list of
denoisers and a per-step schedule naming one of them (Wan2.2 A14B: the high-noise expert while
t >= boundary * 1000, as the official code; one scheduler carries the whole trajectory across the switch).

Precision: latents, timesteps and the scheduler's arithmetic stay float32 whatever the DiT's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from telefuser_cli.families.base import Denoiser, Step
from telefuser_cli.schedulers import FlowScheduler


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, the one formula every strategy uses: uncond + scale * (cond - uncond)."""
    return uncond + scale * (cond - uncond)


def _check_null(context_null: Any) -> None:
    if context_null is None:
        raise ValueError("a guided denoiser needs the negative prompt's context")


class TwoPass:
    """Both passes one after the other in this process; scale 1 runs the conditional pass alone."""

    name = "two-pass"

    def __call__(self, denoiser: Denoiser, latents, step: Step, context, context_null) -> torch.Tensor:
        velocity = denoiser(latents, step, context)
        if denoiser.cfg_scale == 1.0:
            return velocity
        _check_null(context_null)
        return guide(velocity, denoiser(latents, step, context_null), denoiser.cfg_scale)


class Batched:
    """Both passes as one forward on the batch [cond; uncond]: twice the activations, one launch per kernel.

    Equal to :class:`TwoPass` to round-off (a batch of 2 may take other kernels than two batches of 1 on
    some CPUs: tests/unit/test_batched_cfg.py states the tolerance). Scale 1 runs the conditional pass alone.
    """

    name = "batched"

    def __call__(self, denoiser: Denoiser, latents, step: Step, context, context_null) -> torch.Tensor:
        if denoiser.cfg_scale == 1.0:
            return denoiser(latents, step, context)
        _check_null(context_null)
        batch = latents.shape[0]
        out = denoiser(torch.cat([latents, latents]), step, denoiser.join(context, context_null))
        return guide(out[:batch], out[batch:], denoiser.cfg_scale)


@dataclass
class CfgParallel:
    """The two passes on the two ranks of the cfg group: rank 0 conditional, rank 1 unconditional.

    Both ranks gather the pair and combine it with :func:`guide`, so every rank holds the same velocity.
    """

    group: Any  # torch.distributed ProcessGroup
    cfg_rank: int
    name = "cfg-parallel"

    def __call__(self, denoiser: Denoiser, latents, step: Step, context, context_null) -> torch.Tensor:
        if denoiser.cfg_scale == 1.0:  # no unconditional pass: both ranks run the conditional one
            return denoiser(latents, step, context)
        _check_null(context_null)
        mine = denoiser(latents, step, context if self.cfg_rank == 0 else context_null).contiguous()
        cond, uncond = torch.empty_like(mine), torch.empty_like(mine)
        dist.all_gather([cond, uncond], mine, group=self.group)
        return guide(cond, uncond, denoiser.cfg_scale)


Guidance = TwoPass | Batched | CfgParallel


def _steps(scheduler: FlowScheduler, device: torch.device) -> list[Step]:
    timesteps = scheduler.timesteps.to(device=device, dtype=torch.float32)
    zero = timesteps.new_zeros(())
    values = scheduler.timesteps.tolist()
    n = scheduler.num_steps
    return [Step(i, timesteps[i], timesteps[i + 1] if i + 1 < n else zero, values[i]) for i in range(n)]


@torch.no_grad()
def sample(
    latents: torch.Tensor,
    scheduler: FlowScheduler,
    denoisers: Sequence[Denoiser],
    text: Any,
    text_null: Any | None,
    *,
    schedule: Sequence[int] | None = None,
    guidance: Guidance | None = None,
    on_step: Callable[[], None] = lambda: None,
    on_switch: Callable[[int, int], None] = lambda old, new: None,
    after_step: Callable[[torch.Tensor, Step], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the whole trajectory: latents [B, C, T, h, w] float32 noise -> denoised latents (float32).

    ``schedule[i]`` names the denoiser of step i (default: the first for every step); ``on_switch(old,
    new)`` runs when it changes, before the new one's first step (to move experts between devices). Each
    denoiser prepares the contexts when it takes over (MoE experts have their own weights; the previous
    one's are dropped first): the positive one, and the negative one only if it is guided.
    ``after_step(latents, step)`` may replace the latents after each scheduler step (a family that keeps
    some latent frames fixed).
    """
    guidance = guidance or TwoPass()
    schedule = list(schedule) if schedule is not None else [0] * scheduler.num_steps
    active = schedule[0] if schedule else 0
    prepared = None
    for step in _steps(scheduler, latents.device):
        if schedule[step.index] != active:
            prepared = None
            on_switch(active, schedule[step.index])
            active = schedule[step.index]
        denoiser = denoisers[active]
        if prepared is None:
            guided = denoiser.cfg_scale != 1.0 and text_null is not None
            prepared = (denoiser.prepare(text), denoiser.prepare(text_null) if guided else None)
        velocity = guidance(denoiser, latents, step, *prepared)
        latents = scheduler.step(velocity, step.index, latents)
        if after_step is not None:
            latents = after_step(latents, step)
        on_step()
    return latents
