"""Spatially tiled decoding with linear blending of the overlaps, generic over the decode callable.

Memory: the tiles are decoded one after the other, so the peak is the float32 output and weight
accumulators (``4 * C' * F * H * W`` bytes plus ``4 * H * W``) plus one tile's decode (its working set and
its output, ``4 * C' * F * th * tw`` bytes) plus whatever the caller holds. For the Wan2.1 VAE
(``WanVAE.tiled_decode``) the working set of a tile does not grow with the frame count: the decoder runs
one frame at a time with two cached frames per causal convolution, so it is set by the tile size alone;
only the accumulators, the tile's output and the whole-frame features it keeps
(``4 * 384 * T * h * w`` bytes in float32) grow with the frames. Measured numbers: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _check(name: str, value: tuple[int, int]) -> tuple[int, int]:
    if len(value) != 2 or any(int(v) != v or v <= 0 for v in value):
        raise ValueError(f"{name}={value} must be two positive integers (height, width) in latent pixels")
    return int(value[0]), int(value[1])


def tile_starts(extent: int, size: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``size`` every ``stride`` covering ``extent``; the last tile ends flush
    with the edge (its overlap grows) instead of being a thin sliver."""
    if extent <= size:
        return [0]
    starts = list(range(0, extent - size, stride))
    starts.append(extent - size)
    return starts


def _ramps(starts: list[int], size: int, extent: int, scale: int) -> list[Tensor]:
    """Per-tile 1-D blend weights in output pixels: linear ramps over the overlap with each neighbour."""
    weights = []
    for i, start in enumerate(starts):
        length = (min(start + size, extent) - start) * scale
        w = torch.ones(length, dtype=torch.float64)
        if i > 0:
            lo = (starts[i - 1] + size - start) * scale
            w[:lo] *= torch.arange(1, lo + 1, dtype=torch.float64) / (lo + 1)
        if i + 1 < len(starts):
            hi = (start + size - starts[i + 1]) * scale
            w[length - hi :] *= torch.arange(hi, 0, -1, dtype=torch.float64) / (hi + 1)
        weights.append(w)
    return weights


def tiled_decode(
    decode_fn: Callable[[Tensor], Tensor],
    z: Tensor,
    tile_size: tuple[int, int],
    tile_stride: tuple[int, int],
    scale: int = 8,
) -> Tensor:
    """Decode ``z`` tile by tile over height and width and blend the overlaps linearly.

    Args:
        decode_fn: maps a latent tile [B, C, T, th, tw] to pixels [B, C', F, th*scale, tw*scale].
        z: latent [B, C, T, h, w].
        tile_size, tile_stride: (height, width) in LATENT pixels; stride <= size, the overlap is
            size - stride latent pixels (size - stride) * scale output pixels wide.
        scale: output pixels per latent pixel (8 for the Wan2.1 VAE).

    Returns:
        [B, C', F, h*scale, w*scale] in float32: each pixel is the weighted mean of the tiles covering it,
        weights ramping linearly across every overlap. With one tile per axis it is ``decode_fn(z)``.
    """
    size, stride = _check("tile_size", tile_size), _check("tile_stride", tile_stride)
    if stride[0] > size[0] or stride[1] > size[1]:
        raise ValueError(
            f"tile_stride={tuple(tile_stride)} must be <= tile_size={tuple(tile_size)} (no gaps)"
        )
    if int(scale) != scale or scale <= 0:
        raise ValueError(f"scale={scale} must be a positive integer")
    h, w = z.shape[-2:]
    ys, xs = tile_starts(h, size[0], stride[0]), tile_starts(w, size[1], stride[1])
    wy, wx = _ramps(ys, size[0], h, scale), _ramps(xs, size[1], w, scale)
    if len(ys) == 1 and len(xs) == 1:
        return decode_fn(z).float()
    out = None
    weight_sum = torch.zeros(h * scale, w * scale, dtype=torch.float32, device=z.device)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            tile = decode_fn(z[..., y0 : y0 + size[0], x0 : x0 + size[1]]).float()
            if out is None:
                out = torch.zeros(
                    (*tile.shape[:-2], h * scale, w * scale), dtype=torch.float32, device=z.device
                )
            mask = (wy[i][:, None] * wx[j][None, :]).to(torch.float32).to(z.device)
            py, px = y0 * scale, x0 * scale
            if tile.shape[-2:] != mask.shape:
                raise ValueError(f"decode_fn returned tiles of {tuple(tile.shape[-2:])} pixels, "
                                 f"expected {tuple(mask.shape)} for scale={scale}")  # fmt: skip
            out[..., py : py + mask.shape[0], px : px + mask.shape[1]].addcmul_(tile, mask)
            weight_sum[py : py + mask.shape[0], px : px + mask.shape[1]] += mask
            del tile
    return out.div_(weight_sum)
