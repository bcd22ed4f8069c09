"""Spatially tiled decoding as the HunyuanVideo VAEs do it: overlapping tiles, each blended into its upper and
left neighbours over a fixed band, then cropped (official ``spatial_tiled_decode``, diffusers
``AutoencoderKLHunyuanVideo15.tiled_decode``).

This differs from ``ops.tiling.tiled_decode`` (a weighted mean of every tile covering a pixel): the HunyuanVideo
1.5 reference pipelines always decode this way, so with the same tile settings our video equals theirs to
round-off at every size, not only below one tile.

Memory: one row of decoded tiles plus the row above it, instead of every tile at once as the reference keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _ramp(extent: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The reference's per-line weights (1 - y/extent, y/extent), computed in float64 like its Python floats."""
    w = torch.arange(extent, dtype=torch.float64, device=device) / extent
    return (1 - w).float(), w.float()


def _blend_rows(above: Tensor, tile: Tensor, extent: int) -> None:
    """In place: the first ``extent`` rows of ``tile`` fade in over the last ones of ``above`` (``blend_v``)."""
    extent = min(above.shape[-2], tile.shape[-2], extent)
    if extent:
        keep, take = _ramp(extent, tile.device)
        tile[..., :extent, :] = (
            above[..., -extent:, :] * keep[:, None] + tile[..., :extent, :] * take[:, None]
        )


def _blend_columns(left: Tensor, tile: Tensor, extent: int) -> None:
    """In place: the first ``extent`` columns of ``tile`` fade in over the last ones of ``left`` (``blend_h``)."""
    extent = min(left.shape[-1], tile.shape[-1], extent)
    if extent:
        keep, take = _ramp(extent, tile.device)
        tile[..., :extent] = left[..., -extent:] * keep + tile[..., :extent] * take


def crop_blend_decode(
    decode_fn: Callable[[Tensor], Tensor],
    z: Tensor,
    tile: tuple[int, int],
    stride: tuple[int, int],
    scale: int,
) -> Tensor:
    """Decode ``z`` [B, C, T, h, w] in ``tile`` (height, width) latent tiles every ``stride`` latent pixels.

    Each decoded tile is blended over ``(tile - stride) * scale`` pixels into the tiles above and to its left,
    then cropped to its first ``stride * scale`` pixels. The reference's ``tile_overlap_factor`` f and
    ``tile_latent_min_size`` L are ``stride = L * (1 - f)`` (it requires ``L * f`` to be an integer), e.g. the
    official 256-pixel tiles of HunyuanVideo 1.5: tile (16, 16), stride (12, 12). ``decode_fn`` maps a latent
    tile to pixels ``scale`` times larger.
    """
    for name, pair in (("tile", tile), ("stride", stride)):
        if len(pair) != 2 or min(pair) <= 0:
            raise ValueError(f"{name}={tuple(pair)} must be two positive latent sizes (height, width)")
    if stride[0] > tile[0] or stride[1] > tile[1]:
        raise ValueError(f"stride={tuple(stride)} must be <= tile={tuple(tile)} (no gaps between tiles)")
    blend = ((tile[0] - stride[0]) * scale, (tile[1] - stride[1]) * scale)
    limit = (stride[0] * scale, stride[1] * scale)
    h, w = z.shape[-2:]
    rows, above = [], None
    for i in range(0, h, stride[0]):
        row = [decode_fn(z[..., i : i + tile[0], j : j + tile[1]]) for j in range(0, w, stride[1])]
        for j, current in enumerate(row):
            if above is not None:
                _blend_rows(above[j], current, blend[0])
            if j > 0:
                _blend_columns(row[j - 1], current, blend[1])
        rows.append(torch.cat([current[..., : limit[0], : limit[1]] for current in row], dim=-1))
        above = row
    return torch.cat(rows, dim=-2)
