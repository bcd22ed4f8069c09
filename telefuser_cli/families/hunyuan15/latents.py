"""HunyuanVideo 1.5 latents: their shape, the initial noise, and the text-to-video condition channels.

Noise [B, 32, (F-1)/4 + 1, H/16, W/16] is drawn in bfloat16 from a CPU generator, as the official
``HunyuanVideo_1_5_Pipeline.prepare_latents`` draws it, then kept in float32 (:func:`initial_noise`); the
t2v condition is zeros (cond latents) and a zero mask, concatenated on channels after the latents (i2v:
:mod:`.image_cond`; super-resolution: :mod:`.sr`).
"""

from __future__ import annotations

import torch

# The dtype the initial noise is drawn in (then float32): the official target_dtype (see draw_noise).
NOISE_DTYPE = "bfloat16"


def latent_shape(
    batch: int, frames: int, height: int, width: int, channels: int = 32, temporal: int = 4, spatial: int = 16
) -> tuple[int, int, int, int, int]:
    """[B, C, (F-1)/4 + 1, H/16, W/16]; raises ValueError for sizes the VAE cannot map exactly."""
    if frames < 1 or (frames - 1) % temporal:
        raise ValueError(f"frames={frames} must be 1 + {temporal}*k (e.g. 121)")
    if height % spatial or width % spatial or height <= 0 or width <= 0:
        raise ValueError(f"height={height} and width={width} must be positive multiples of {spatial}")
    return batch, channels, (frames - 1) // temporal + 1, height // spatial, width // spatial


def draw_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise as the official pipelines draw their initial latents: on ``generator`` (a CPU
    one: official ``noise_init_device``) in :data:`NOISE_DTYPE`, then moved to ``device`` as float32.

    The official ``prepare_latents`` draws in the DiT's ``target_dtype`` (bfloat16, whatever the run dtype);
    with the same seed, float32 noise differs from it by bfloat16 rounding, which moves the tiny model's final
    latents by 1e-3 to 2e-3 (relative): another video for the same seed.
    From here on the latents stay float32 (precision policy; the official scheduler step also returns float32).
    """
    noise = torch.randn(
        shape, generator=generator, device=generator.device, dtype=getattr(torch, NOISE_DTYPE)
    )
    return noise.to(device=device, dtype=torch.float32)


def initial_noise(
    shape: tuple[int, ...], seed: int, device: torch.device, rand_device: str = "cpu"
) -> torch.Tensor:
    """The base stage's initial latents for ``seed``: :func:`draw_noise` on a generator seeded with it on
    ``rand_device`` (``pipeline.rand_device``; cpu, the official choice, gives the same video on any machine)."""
    return draw_noise(shape, torch.Generator(device=rand_device).manual_seed(seed), device)


def t2v_condition(latents: torch.Tensor) -> torch.Tensor:
    """t2v conditioning channels: zero cond latents and a zero mask. [B, C, T, h, w] -> [B, C + 1, T, h, w]."""
    b, c, t, h, w = latents.shape
    return latents.new_zeros(b, c + 1, t, h, w)
