"""Wan text-to-video sampling over loaded modules: encode text, denoise with guidance.

No configuration objects here: plain arguments, so the algorithm can be tested and reused
(the MoE and distilled pipelines build on `denoise`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from telefuser_cli.loading.tokenizer import tokenize
from telefuser_cli.models.umt5 import UMT5Encoder
from telefuser_cli.models.wan_dit import WanDiT
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


@torch.no_grad()
def denoise(
    dit: WanDiT,
    latents: torch.Tensor,
    context: torch.Tensor,
    context_null: torch.Tensor | None,
    scheduler: FlowScheduler,
    cfg_scale: float,
    on_step: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """Run the whole trajectory. latents: [B, C, T, h, w] float32; context(_null): [B, L, D].

    With `context_null` None (cfg 1) the unconditional pass is skipped.
    """
    timesteps = scheduler.timesteps.to(device=latents.device, dtype=torch.float32)
    batch = latents.shape[0]
    for i in range(scheduler.num_steps):
        t = timesteps[i].expand(batch)
        velocity = dit(latents, t, context)
        if context_null is not None:
            uncond = dit(latents, t, context_null)
            velocity = uncond + cfg_scale * (velocity - uncond)
        latents = scheduler.step(velocity, i, latents)
        on_step()
    return latents
