"""Wan sampling over loaded modules: text encoding, initial noise, and the denoising loop.

One loop serves every Wan model: a single DiT (Wan2.1), or two experts chosen per step (Wan2.2 A14B:
the high-noise expert while t >= boundary * 1000), each with its own guidance scale. One scheduler
carries the whole trajectory across the switch, as the official code does. No configuration objects
here: plain arguments.

The text context is the same at every step: the loop has each expert prepare it once
(``WanDiT.prepare_context``: the text embedding and every block's cross-attention keys and values) and
passes the caches to the guidance, which hands them to the DiT in place of the raw context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from telefuser_cli.loading.tokenizer import tokenize
from telefuser_cli.models.umt5 import UMT5Encoder
from telefuser_cli.models.wan_dit import ContextCache, WanDiT
from telefuser_cli.schedulers import FlowScheduler


@torch.no_grad()
def encode_text(
    encoder: UMT5Encoder, tokenizer, prompts: list[str], device: torch.device, text_len: int = 512
) -> list[torch.Tensor]:
    """Each prompt -> [L_i, dim] features trimmed to its true length (as the official wrapper does).

    The tokenizer applies the official prompt cleaning; the DiT pads back to text_len with zeros.
    """
    ids, mask = tokenize(tokenizer, prompts, max_length=text_len)
    features = encoder(ids.to(device), mask.to(device))
    lengths = mask.sum(dim=1).tolist()
    return [feature[:length] for feature, length in zip(features, lengths, strict=True)]


def initial_noise(shape: tuple[int, ...], seed: int, rand_device: str, device: torch.device) -> torch.Tensor:
    """float32 noise from a generator seeded on `rand_device` (cpu: the same video on any machine)."""
    generator = torch.Generator(device=rand_device).manual_seed(seed)
    noise = torch.randn(shape, dtype=torch.float32, generator=generator, device=rand_device)
    return noise.to(device)


# What the guidance hands the DiT as its context: the raw text features or their prepared cache.
Context = torch.Tensor | ContextCache


class Guidance(Protocol):
    """How one step's velocity is made from the conditional and unconditional passes.

    ``two_pass_guidance`` runs both here; a cfg-parallel strategy
    (``runtime.distributed.CfgParallelGuidance``) runs one per rank and exchanges them.
    """

    def __call__(
        self,
        dit: WanDiT,
        latents: torch.Tensor,
        t: torch.Tensor,
        context: Context,
        context_null: Context | None,
        cfg_scale: float,
    ) -> torch.Tensor: ...


def two_pass_guidance(
    dit: WanDiT,
    latents: torch.Tensor,
    t: torch.Tensor,
    context: Context,
    context_null: Context | None,
    cfg_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance in one process: uncond + scale * (cond - uncond); scale 1 skips uncond."""
    velocity = dit(latents, t, context)
    if cfg_scale != 1.0:
        if context_null is None:
            raise ValueError("a guided expert needs the negative prompt's context")
        uncond = dit(latents, t, context_null)
        velocity = uncond + cfg_scale * (velocity - uncond)
    return velocity


def _pad_tokens(context: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad [B, L, D] to [B, length, D]: the DiT pads to text_len with zeros anyway, so this is exact."""
    return F.pad(context, (0, 0, 0, length - context.shape[1]))


def _join(context: Context, context_null: Context) -> Context:
    """The context of the batch [cond; uncond]: caches concatenated, or raw features padded to one length.

    Concatenating caches copies the text keys and values every step: one pass over 2 x layers x 2 x
    text_len x dim values (Wan2.1 1.3B: 180 MiB, a few hundredths of a percent of the step on a CPU).
    """
    if isinstance(context, ContextCache) and isinstance(context_null, ContextCache):
        return ContextCache.cat([context, context_null])
    if isinstance(context, ContextCache) or isinstance(context_null, ContextCache):
        raise ValueError("batched CFG needs both contexts raw or both prepared (ContextCache)")
    length = max(context.shape[1], context_null.shape[1])
    return torch.cat([_pad_tokens(context, length), _pad_tokens(context_null, length)])


def batched_cfg_guidance(
    dit: WanDiT,
    latents: torch.Tensor,
    t: torch.Tensor,
    context: Context,
    context_null: Context | None,
    cfg_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance with one forward on the batch [cond; uncond] (twice the activations).

    Raw contexts are zero-padded to a common length first (exact: the DiT zero-pads to text_len); prepared
    ones are concatenated. The result equals :func:`two_pass_guidance` to round-off (a batch of 2 may take
    other kernels than two batches of 1 on some CPUs: tests/unit/test_batched_cfg.py states the tolerance);
    it costs twice the activation memory of one pass, and saves one launch of every kernel per step. Scale 1 runs the conditional pass alone, as two_pass_guidance does.
    """
    if cfg_scale == 1.0:
        return dit(latents, t, context)
    if context_null is None:
        raise ValueError("a guided expert needs the negative prompt's context")
    batch = latents.shape[0]
    out = dit(torch.cat([latents, latents]), torch.cat([t, t]), _join(context, context_null))
    cond, uncond = out[:batch], out[batch:]
    return uncond + cfg_scale * (cond - uncond)


@dataclass
class Expert:
    """A DiT and the guidance scale it samples with (1: no unconditional pass).

    ``cache_context``: prepare the context once per run (``dit.prepare_context``) rather than in every
    block at every step. Off only where the blocks' weights are not on the device between steps
    (block-sequential offload brings each block to the device for its own forward alone).
    """

    dit: WanDiT
    cfg_scale: float
    cache_context: bool = True


def prepare_contexts(
    expert: Expert, context: torch.Tensor, context_null: torch.Tensor | None
) -> tuple[Context, Context | None]:
    """The contexts ``expert`` samples with: prepared once (positive, and negative if it is guided), or raw.

    The caches are made where the expert's weights are: call it once the expert is on its device.
    """
    if not expert.cache_context:
        return context, context_null
    guided = expert.cfg_scale != 1.0 and context_null is not None
    return expert.dit.prepare_context(context), expert.dit.prepare_context(context_null) if guided else None


def expert_schedule(
    timesteps: torch.Tensor, boundary: float | None, boundary_step_index: int | None = None
) -> list[int]:
    """Per step: 0 for the high-noise expert, 1 for the low-noise one.

    The official rule: high while t >= boundary * 1000; an explicit `boundary_step_index` (distilled
    models) puts the switch before that step instead. Without a boundary every step uses expert 0.
    """
    if boundary_step_index is not None:
        return [0 if i < boundary_step_index else 1 for i in range(len(timesteps))]
    if boundary is None:
        return [0] * len(timesteps)
    threshold = boundary * 1000
    return [0 if t >= threshold else 1 for t in timesteps.tolist()]


@torch.no_grad()
def denoise(
    latents: torch.Tensor,
    scheduler: FlowScheduler,
    experts: Sequence[Expert],
    schedule: Sequence[int],
    context: torch.Tensor,
    context_null: torch.Tensor | None,
    on_step: Callable[[], None] = lambda: None,
    on_switch: Callable[[int, int], None] = lambda old, new: None,
    guidance: Guidance = two_pass_guidance,
) -> torch.Tensor:
    """Run the whole trajectory. latents: [B, C, T, h, w] float32; context(_null): [B, L, D].

    `schedule[i]` names the expert of step i; `on_switch(old, new)` runs when it changes (to move
    experts between devices). An expert with cfg_scale 1 skips the unconditional pass. `guidance`
    combines the passes (both here by default, or one per rank with cfg parallelism). Each expert
    prepares the contexts once when it takes over (its own weights: MoE experts differ); the previous
    expert's caches are dropped first.
    """
    timesteps = scheduler.timesteps.to(device=latents.device, dtype=torch.float32)
    batch = latents.shape[0]
    active = schedule[0] if len(schedule) else 0
    prepared = None
    for i in range(scheduler.num_steps):
        if schedule[i] != active:
            prepared = None
            on_switch(active, schedule[i])
            active = schedule[i]
        expert = experts[active]
        if prepared is None:
            prepared = prepare_contexts(expert, context, context_null)
        t = timesteps[i].expand(batch)
        velocity = guidance(expert.dit, latents, t, *prepared, expert.cfg_scale)
        latents = scheduler.step(velocity, i, latents)
        on_step()
    return latents
