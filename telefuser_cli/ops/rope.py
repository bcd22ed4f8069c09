"""3-D rotary position embedding of the video DiTs (Wan, HunyuanVideo).

Wan: the head dimension ``d`` is split across the three video axes the way the official Wan model does:
frames get ``d - 4 * (d // 6)`` channels, height and width ``2 * (d // 6)`` each. Each axis uses the
standard RoPE frequencies ``theta ** (-2i / d_axis)`` with ``theta = 10000``. Consecutive channel pairs
``(x[2i], x[2i + 1])`` are rotated (interleaved layout, as in the official complex formulation).

The angle table is computed in float64 (as the official code does) from the grid shape, once per run
(:class:`LastRopeTable`), so there is no buffer to keep, move or recompute after a ``meta``-device
construction. HunyuanVideo uses the same table with its own axis split and theta. The rotation itself is
applied in float32, which agrees with the official float64 product to float32 round-off.
"""

from __future__ import annotations

import torch

ROPE_THETA = 10000.0


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to the (frame, height, width) axes; they sum to ``head_dim``."""
    if head_dim % 2 != 0 or head_dim < 6:
        raise ValueError(f"RoPE needs an even head_dim >= 6, got head_dim={head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def axis_angles(length: int, axis_dim: int, theta: float = ROPE_THETA, device=None) -> torch.Tensor:
    """Rotation angles of one axis in float64: ``[length, axis_dim // 2]``, ``pos * theta**(-2i/axis_dim)``."""
    inv_freq = 1.0 / torch.pow(
        torch.tensor(theta, dtype=torch.float64, device=device),
        torch.arange(0, axis_dim, 2, dtype=torch.float64, device=device) / axis_dim,
    )
    pos = torch.arange(length, dtype=torch.float64, device=device)
    return torch.outer(pos, inv_freq)


def rope_table(
    grid: tuple[int, int, int],
    axis_dims: tuple[int, int, int],
    theta: float = ROPE_THETA,
    device=None,
) -> torch.Tensor:
    """Rotation table for a token grid, tokens ordered frame-major as the patch embedding flattens them.

    grid: (F, H, W) in patches; axis_dims: head channels given to (frame, height, width), summing to the
    head dim (Wan: :func:`rope_axis_dims`; HunyuanVideo: ``rope_dim_list``). Returns complex64
    ``[F*H*W, head_dim // 2]`` (unit phasors), built from float64 angles.
    """
    f, h, w = grid
    df, dh, dw = axis_dims
    af = axis_angles(f, df, theta, device)[:, None, None, :].expand(f, h, w, df // 2)
    ah = axis_angles(h, dh, theta, device)[None, :, None, :].expand(f, h, w, dh // 2)
    aw = axis_angles(w, dw, theta, device)[None, None, :, :].expand(f, h, w, dw // 2)
    angles = torch.cat([af, ah, aw], dim=-1).reshape(f * h * w, -1)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


class LastRopeTable:
    """The RoPE table of the last (grid, device) asked for: built once per run, not once per step.

    A plain object on the model (not a buffer): no state-dict key, nothing for ``.to()`` or a ``meta``
    construction to handle. Callers must not modify the table in place (every step shares it).
    """

    def __init__(self, axis_dims: tuple[int, int, int], theta: float = ROPE_THETA):
        self.axis_dims, self.theta = tuple(axis_dims), theta
        self._last: tuple[tuple, torch.Tensor] | None = None

    def __call__(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        key = (tuple(grid), torch.device(device))
        if self._last is None or self._last[0] != key:
            self._last = (key, rope_table(grid, self.axis_dims, self.theta, device))
        return self._last[1]


def apply_rope(x: torch.Tensor, table: torch.Tensor, heads_first: bool = False) -> torch.Tensor:
    """Rotate channel pairs of ``x`` by the table.

    x: [B, L, H, D] (any float dtype); table: [L, D/2] complex64 from :func:`rope_table`.
    Returns a tensor of x's dtype and shape [B, L, H, D]. With ``heads_first=True`` its memory is laid out
    as a contiguous [B, H, L, D] (the result is a transposed view of it), which is what SDPA reads fastest;
    the layout change rides on the cast that happens anyway.
    """
    b, seq, heads, d = x.shape
    xc = torch.view_as_complex(x.float().reshape(b, seq, heads, d // 2, 2))
    rotated = torch.view_as_real(xc * table[:, None, :]).flatten(3)
    if not heads_first:
        return rotated.to(x.dtype)
    out = torch.empty((b, heads, seq, d), dtype=x.dtype, device=x.device).transpose(1, 2)
    return out.copy_(rotated)
