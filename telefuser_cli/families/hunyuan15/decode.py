"""HunyuanVideo 1.5 decoding: normalised latents to video through the VAE, optionally tiled.

Spatial tiles are decoded and blended as the official VAE does it (:mod:`telefuser_cli.ops.crop_blend_tiling`);
temporal tiles are blended as HunyuanVideo's ``temporal_tiled_decode`` (``blend_t``).
"""

from __future__ import annotations

import torch

from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE
from telefuser_cli.ops.crop_blend_tiling import crop_blend_decode


def _blend_frames(prev: torch.Tensor, cur: torch.Tensor, extent: int) -> torch.Tensor:
    """Official ``blend_t``: the first ``extent`` frames of ``cur`` fade in over the last ones of ``prev``."""
    extent = min(prev.shape[2], cur.shape[2], extent)
    if extent == 0:
        return cur
    w = torch.arange(extent, dtype=torch.float32, device=cur.device).view(1, 1, -1, 1, 1) / extent
    cur = cur.clone()
    cur[:, :, :extent] = prev[:, :, -extent:] * (1 - w) + cur[:, :, :extent] * w
    return cur


@torch.no_grad()
def decode(
    vae: Hunyuan15VAE,
    latents: torch.Tensor,
    tile: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    tile_frames: int | None = None,
    frame_overlap: float = 0.25,
) -> torch.Tensor:
    """Normalised latents [B, C, T, h, w] -> video [B, 3, 1 + 4(T-1), 16h, 16w] float32 in [-1, 1].

    ``tile``/``stride``: spatial tiles (height, width) in latent pixels, decoded and blended as the official
    VAE does it (:func:`crop_blend_decode`; its 256-pixel tiles are tile (16, 16), stride (12, 12)); the
    reference pipelines always decode this way, so with those settings our video is theirs. ``tile_frames``:
    also tile in time, that many latent frames a tile, every ``tile_frames * (1 - frame_overlap)``, blended
    as HunyuanVideo's ``temporal_tiled_decode`` (approximate: the causal VAE restarts at each tile; for
    memory only). None: no tiling on that axis. Clamping comes after all blending, as in the reference.
    """
    cfg = vae.config
    scale, ratio = cfg.ffactor_spatial, cfg.ffactor_temporal
    dtype = vae.decoder.conv_in.conv.weight.dtype

    def raw(z: torch.Tensor) -> torch.Tensor:
        return vae.decoder(z.to(dtype)).float()

    def spatial(z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        if tile is None or (h <= tile[0] and w <= tile[1]):
            return raw(z)
        return crop_blend_decode(raw, z, tile, stride or tile, scale)

    z = vae.denormalize(latents)
    frames = z.shape[2]
    if tile_frames is None or frames <= tile_frames:
        return spatial(z).clamp_(-1.0, 1.0)
    step = int(tile_frames * (1 - frame_overlap))
    if not 0 < step < tile_frames:
        raise ValueError(f"tile_frames={tile_frames} with frame_overlap={frame_overlap} gives stride {step}")
    extent = int(ratio * tile_frames * frame_overlap)  # official blend_extent over tile_sample_min_tsize
    keep = ratio * step  # official t_limit: decoded frames each tile contributes
    out, prev = [], None
    for start in range(0, frames, step):
        current = spatial(z[:, :, start : start + tile_frames])
        if prev is not None:
            current = _blend_frames(prev, current, extent)
        out.append(current[:, :, :keep])
        prev = current
    return torch.cat(out, dim=2).clamp_(-1.0, 1.0)
