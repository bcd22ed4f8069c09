"""HunyuanVideo 1.5 super-resolution stage over loaded modules (plain arguments, no configuration objects).

The reference design is the official ``HunyuanVideo_1_5_SR_Pipeline`` (Tencent-Hunyuan/HunyuanVideo-1.5
``hyvideo/pipelines/hunyuan_video_sr_pipeline.py``); there is no diffusers counterpart. For the base model's
final (normalised) latents ``lq`` [B, C, T, h, w]:

1. Target size: the base video's size maps to the SR resolution's bucket of the closest aspect ratio
   (official ``BucketMap``: 848x480 at 480p -> 1280x720 at 720p), see :func:`sr_target_size`.
2. ``lq`` is resized bilinearly, frame by frame, to the target latent size, then refined by the upsampler
   (run in float32, as officially).
3. ``lq`` is noised to ``lq_noise_strength`` s (0.7): ``(1 - s) * lq + s * noise``.
4. The SR DiT reads ``[latents, cond latents, cond mask, lq, ones]`` on channels (3C + 2; cond latents and
   mask are the t2v zeros, or for i2v the reference image's latents at the SR size with its first-frame
   mask, and the SigLIP tokens of the image go in as for the base model). It starts from fresh noise at
   sigma 1; the one sampling loop runs Euler ``pipeline.sr_steps`` (6) at ``pipeline.sr_shift`` (2), CFG
   ``pipeline.sr_cfg_scale`` (1 for the released distilled SR models). From the first step whose timestep
   falls below ``1000 * s`` the lq channels and their mask are zeroed for the rest of the trajectory.

:func:`prepare` gives steps 2-4: the trajectory's start and the condition of each step.

Randomness: the initial latents (drawn in bfloat16, as officially: :func:`.latents.draw_noise`) and then
the lq noise (float32) come from one CPU generator seeded with ``seed`` (the official code draws the lq noise
from torch's global generator instead, which is not reproducible across runs that draw elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from telefuser_cli.families.hunyuan15.buckets import SIZE_MAP, crop_size_list
from telefuser_cli.families.hunyuan15.latents import draw_noise, t2v_condition
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.models.hunyuan15_upsampler import Upsampler

LQ_NOISE_STRENGTH = 0.7


def sr_target_size(height: int, width: int, base_resolution: str, sr_resolution: str) -> tuple[int, int]:
    """(height, width) of the SR video for a base video of (height, width), as the official BucketMap.

    The base size must be one of the base resolution's buckets (the base pipeline produces those);
    anything else raises ValueError naming the size.
    """
    for name in (base_resolution, sr_resolution):
        if name not in SIZE_MAP:
            raise ValueError(f"resolution {name!r} is not one of {sorted(SIZE_MAP)}")
    lr = crop_size_list(SIZE_MAP[base_resolution])
    hr = crop_size_list(SIZE_MAP[sr_resolution])
    if (width, height) not in lr:
        raise ValueError(
            f"{width}x{height} is not a {base_resolution} bucket; the SR stage maps only bucket sizes "
            f"(e.g. 848x480 at 480p)"
        )
    hr_ratios = np.array([w / h for w, h in hr])
    w, h = hr[int(np.abs(hr_ratios - width / height).argmin())]
    return h, w


def resize_latents(latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of every frame (align_corners=False). [B, C, T, h, w] -> [B, C, T, *size]."""
    b, c, t, h, w = latents.shape
    frames = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)


def noise_lq(lq: torch.Tensor, noise: torch.Tensor, strength: float = LQ_NOISE_STRENGTH) -> torch.Tensor:
    """Official ``add_noise_to_lq``: the flow-matching point at t = 1000 * strength, in float32."""
    t = torch.tensor(1000.0 * strength, dtype=torch.float32) / 1000.0
    return (1 - t) * lq.float() + t * noise.float()


def sr_condition(base_condition: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """[cond latents, cond mask] (C + 1) + [lq, ones] (C + 1) on channels -> [B, 2C + 2, T, h, w]."""
    ones = lq.new_ones(lq.shape[0], 1, *lq.shape[2:])
    return torch.cat([base_condition.to(lq.dtype), lq, ones], dim=1)


def drop_lq(condition: torch.Tensor) -> torch.Tensor:
    """The condition with its lq channels and their mask zeroed (official ``zero_lq_condition``)."""
    channels = (condition.shape[1] - 2) // 2
    out = condition.clone()
    out[:, channels + 1 :] = 0
    return out


def lq_schedule(
    condition: torch.Tensor, strength: float = LQ_NOISE_STRENGTH
) -> Callable[[float], torch.Tensor]:
    """Condition per step: the full one while t >= 1000 * strength, the dropped one below.

    The official loop swaps in the dropped condition at the first t below the threshold and keeps it; the
    timesteps only decrease, so choosing by t alone is the same.
    """
    dropped = drop_lq(condition)
    threshold = 1000.0 * strength
    return lambda t: dropped if t < threshold else condition


@torch.no_grad()
def prepare(
    dit: Hunyuan15DiT,
    upsampler: Upsampler,
    lq_latents: torch.Tensor,
    target_latent_size: tuple[int, int],
    seed: int,
    lq_noise_strength: float = LQ_NOISE_STRENGTH,
    base_condition: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Callable[[float], torch.Tensor]]:
    """The SR trajectory's start: (fresh noise at the SR size, the condition of each step's timestep).

    ``lq_latents``: the base stage's final latents [B, C, T, h, w]; ``target_latent_size``: (H/16, W/16) of
    the SR video (see :func:`sr_target_size`); ``dit``: the SR transformer (its channels are checked);
    ``base_condition``: [B, C + 1, T, *target_latent_size] cond latents and mask (None: the t2v zeros).
    """
    cfg = dit.config
    channels = lq_latents.shape[1]
    if cfg.patch_in_channels != 3 * channels + 2:
        raise ValueError(
            f"the SR DiT takes {cfg.patch_in_channels} input channels; SR needs 3*{channels}+2 = "
            f"{3 * channels + 2} (latents, [cond, mask], [lq, ones]): is this the SR transformer?"
        )
    if not 0.0 <= lq_noise_strength <= 1.0:
        raise ValueError(f"lq_noise_strength={lq_noise_strength} must lie in [0, 1]")
    device = lq_latents.device
    b, _, t = lq_latents.shape[:3]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (b, cfg.out_channels, t, *target_latent_size)
    latents = draw_noise(shape, generator, device)  # official: the SR prepare_latents draws in bfloat16 too

    lq = resize_latents(lq_latents.float(), target_latent_size)
    lq = upsampler(lq.float()).float()
    lq_noise = torch.randn(lq.shape, generator=generator, dtype=torch.float32).to(device)
    lq = noise_lq(lq, lq_noise, lq_noise_strength)

    if base_condition is None:
        base_condition = t2v_condition(latents)
    elif base_condition.shape[-2:] != latents.shape[-2:] or base_condition.shape[1] != channels + 1:
        raise ValueError(
            f"base_condition {tuple(base_condition.shape)} must be [B, {channels + 1}, T, "
            f"{target_latent_size[0]}, {target_latent_size[1]}] (cond latents and mask at the SR size)"
        )
    return latents, lq_schedule(sr_condition(base_condition, lq), lq_noise_strength)
