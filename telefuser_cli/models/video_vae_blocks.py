"""Building blocks of the causal video VAEs (Wan2.1, Wan2.2, HunyuanVideo 1.5).

Shared by the families: :class:`RMSNorm` (all), the Wan-layout :class:`ResidualBlock`,
:class:`AttentionBlock` and :class:`Resample` (Wan2.1 and Wan2.2 keep the same key names; the Wan2.2
upsampling keeps its width), the Wan2.2 levels with a parameter-free shortcut (:class:`DownLevel`,
:class:`UpLevel`), and the space <-> channels reshapes behind those shortcuts (``space_to_channels``,
``channels_to_space``, ``mean_shortcut``, ``patchify``), whose channel order is a parameter:
HunyuanVideo puts the resampling factors outermost, the Wan2.2 VAE the channels. The causal convolution
and its frame cache are in :mod:`telefuser_cli.models.causal_conv`.

Blocks whose checkpoint keys differ stay with their family (HunyuanVideo's ``norm1/conv1/norm2/conv2``
residual block and its block-causal attention), since the official key names are loaded as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telefuser_cli.models.causal_conv import CausalCache, CausalConv3d, PastFrames, memory_format_of


class RMSNorm(nn.Module):
    """Official ``RMS_norm`` (Wan and HunyuanVideo): L2-normalise over channels, times sqrt(C) and gamma;
    computed in float32, returned in the input dtype. ``gamma`` is [C, 1, 1, 1] for video, [C, 1, 1] with
    ``images`` (the Wan attention's per-frame norm): the official shapes."""

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, C, ...] -> same shape and dtype."""
        if torch.is_grad_enabled() and (x.requires_grad or self.gamma.requires_grad):
            # autograd (a test, a fine-tune) cannot go through the out= kernels below: the same math, functional
            xf = x.float()
            norm = torch.linalg.vector_norm(xf, dim=1, keepdim=True).clamp_min(1e-12)
            return (xf / norm * (self.gamma.float().view(-1, *(1,) * (x.ndim - 2)) * self.scale)).to(x.dtype)
        out = torch.empty_like(x)
        self.write(x, out)
        return out

    def write(self, x: Tensor, out: Tensor) -> None:
        xf = x.float()
        norm = torch.linalg.vector_norm(xf, dim=1, keepdim=True).clamp_min_(1e-12)
        # gamma is [C, 1, 1(, 1)] (official shape); x may be a single frame [N, C, H, W].
        gain = self.gamma.float().view(-1, *(1,) * (x.ndim - 2)) * self.scale
        if out.dtype == torch.float32:
            torch.div(xf, norm, out=out)
            out.mul_(gain)
        else:
            # Scaled in float32 and rounded once; xf is already a private float32 copy unless x is float32.
            scaled = xf.div_(norm) if xf is not x else xf.div(norm)
            out.copy_(scaled.mul_(gain))


def norm_silu(norm: RMSNorm) -> Callable[[Tensor, Tensor], None]:
    def act(x: Tensor, out: Tensor) -> None:
        norm.write(x, out)
        F.silu(out, inplace=True)

    return act


class ResidualBlock(nn.Module):
    """norm, SiLU, causal conv, norm, SiLU, dropout, causal conv, plus a (1x1x1 conv) shortcut.

    ``residual`` keeps the official Sequential indices (0 norm, 2 conv, 3 norm, 6 conv) for the keys.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.residual = nn.ModuleList([
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        ])  # fmt: skip
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """x: [B, in_dim, T, H, W] -> [B, out_dim, T, H, W]."""
        h = self.shortcut(x)
        r = self.residual
        y = r[2].step(x, cache, norm_silu(r[0]))
        # Dropout (r[5]) is identity at inference and the official rate is 0.
        return r[6].step(y, cache, norm_silu(r[3])).add_(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        """x: [B, C, T, H, W] -> same shape. ``cache`` is unused (per-frame op)."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames))
        qkv = qkv.permute(0, 2, 3, 1).reshape(b * t, 1, h * w, 3 * c)
        q, k, v = qkv.chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B*T, 1, H*W, C]
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        y = self.proj(y).view(b, t, c, h, w).transpose(1, 2)
        return y + x


class Resample(nn.Module):
    """2x spatial up/down sampling, with a causal time conv doubling/halving frames in the 3-D modes.

    ``up_dim``: the channels after an upsampling (Wan2.1 halves them, the default; Wan2.2 keeps ``dim``).
    """

    def __init__(self, dim: int, mode: str, up_dim: int | None = None) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, dim // 2 if up_dim is None else up_dim, 3, padding=1),
            )
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        else:
            raise ValueError(f"Resample mode={mode!r} is not one of upsample2d/3d, downsample2d/3d")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    @property
    def upsamples_time(self) -> bool:
        """Whether it makes two frames of each (the decoder's frame-rate stages end here)."""
        return self.mode == "upsample3d"

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """x: [B, C, T, H, W] -> [B, up_dim, T', 2H, 2W] (up) or [B, C, T', H/2, W/2] (down)."""
        if self.mode == "upsample3d":
            x = self._time_upsample(x, cache)
        b, c, t, h, w = x.shape
        if self.mode.startswith("upsample"):
            c_out = self.resample[1].out_channels
            out = torch.empty((b, c_out, t, 2 * h, 2 * w), dtype=x.dtype, device=x.device,
                              memory_format=memory_format_of(x))  # fmt: skip
            weight = _subpixel_weight(self.resample[1].weight)
            bias = self.resample[1].bias.repeat(4)
            # [B, C', 2h, 2w] viewed as its four pixel phases [B, C', h, 2, w, 2].
            phases = out.unflatten(3, (h, 2)).unflatten(5, (w, 2))
            for i in range(t):
                # Frame by frame: the conv output holds all four phases, as large as the frame's output.
                y = F.conv2d(x[:, :, i], weight, bias, padding=1).unflatten(1, (2, 2, c_out))
                for py in range(2):
                    for px in range(2):
                        phases[:, :, i, :, py, :, px].copy_(y[:, py, px, :, py : py + h, px : px + w])
            return out
        y = self.resample(x.transpose(1, 2).reshape(b * t, c, h, w))
        x = y.view(b, t, *y.shape[1:]).transpose(1, 2)
        if self.mode == "downsample3d":
            x = self._time_downsample(x, cache)
        return x

    def _time_upsample(self, x: Tensor, cache: CausalCache) -> Tensor:
        b, c, t, h, w = x.shape
        if cache.past() is None:
            # First chunk: the official code passes it through; the time conv's past stays zeros.
            cache.update(PastFrames(x[:, :, 0]))
            return x
        y = self.time_conv.step(x, cache)  # [B, 2C, T, H, W]: channel half j is output frame 2t + j
        out = torch.empty(
            (b, c, 2 * t, h, w), dtype=y.dtype, device=y.device, memory_format=memory_format_of(y)
        )
        out.unflatten(2, (t, 2)).copy_(y.unflatten(1, (2, c)).permute(0, 2, 3, 1, 4, 5))
        return out

    def _time_downsample(self, x: Tensor, cache: CausalCache) -> Tensor:
        past = cache.past()
        cache.update(x[:, :, -1:].clone())
        if past is None:
            # First chunk (one frame) passes through, as in the official code.
            return x
        return self.time_conv(torch.cat([past, x], dim=2))


# Rows (and columns) of a 3-tap kernel that land on the same source pixel after a 2x nearest upsampling:
# output pixel 2i sees source rows (i-1, i, i), output pixel 2i+1 sees (i, i, i+1).
_PHASE_TAPS = ((0, 1, 1), (0, 0, 1))


def _subpixel_weight(weight: Tensor) -> Tensor:
    """A 3x3 conv after a 2x nearest upsampling as four 2x2 convs on the source, one per output phase.

    weight: [O, I, 3, 3] -> [4*O, I, 2, 2], output channel (2*py + px)*O + o is phase (py, px). With
    padding 1 the 2x2 conv gives h+1 rows; phase py's rows are py..py+h-1 (and the same for columns).
    Same result up to round-off with 4/9 of the multiplies, and no 4x upsampled copy of the input.
    """
    taps = torch.zeros(2, 2, 3, device=weight.device)
    for phase, rows in enumerate(_PHASE_TAPS):
        for k, row in enumerate(rows):
            taps[phase, row, k] = 1
    o, i = weight.shape[:2]
    # Summed in float32: a bf16 weight is rounded once, after the sum.
    merged = torch.einsum("apk,oikl,bql->aboipq", taps, weight.float(), taps)
    return merged.reshape(4 * o, i, 2, 2).to(weight.dtype)


def space_to_channels(x: Tensor, ft: int, fs: int, channels_outer: bool = False) -> Tensor:
    """[B, C, ft*T, fs*H, fs*W] -> [B, C*ft*fs*fs, T, H, W]: each ft x fs x fs block onto channels.

    Channel order: (ft, fs, fs, C), the factors outermost (HunyuanVideo), or (C, ft, fs, fs) with
    ``channels_outer`` (Wan2.2).
    """
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6) if channels_outer else x.permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(b, c * ft * fs * fs, t // ft, h // fs, w // fs)


def channels_to_space(x: Tensor, ft: int, fs: int, channels_outer: bool = False) -> Tensor:
    """Inverse of :func:`space_to_channels`: [B, C*ft*fs*fs, T, H, W] -> [B, C, ft*T, fs*H, fs*W]."""
    b, packed, t, h, w = x.shape
    c = packed // (ft * fs * fs)
    if channels_outer:
        x = x.view(b, c, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    else:
        x = x.view(b, ft, fs, fs, c, t, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
    return x.reshape(b, c, t * ft, h * fs, w * fs)


def mean_shortcut(x: Tensor, ft: int, fs: int, out_dim: int, channels_outer: bool = False) -> Tensor:
    """The downsampling shortcut: ``space_to_channels`` then the mean of each group of consecutive
    channels, down to ``out_dim``. [B, C, ft*T, fs*H, fs*W] -> [B, out_dim, T, H, W]."""
    s = space_to_channels(x, ft, fs, channels_outer)
    return s.view(s.shape[0], out_dim, s.shape[1] // out_dim, *s.shape[2:]).mean(dim=2)


def patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, T, p*H, p*W] -> [B, C*p*p, T, H, W] in the official Wan2.2 order (C, column phase, row
    phase): ``space_to_channels`` with height and width swapped."""
    return space_to_channels(x.transpose(3, 4), 1, p, channels_outer=True).transpose(3, 4)


def unpatchify(x: Tensor, p: int) -> Tensor:
    """Inverse of :func:`patchify`: [B, C*p*p, T, H, W] -> [B, C, T, p*H, p*W]."""
    return channels_to_space(x.transpose(3, 4), 1, p, channels_outer=True).transpose(3, 4)


def _level_blocks(in_dim: int, out_dim: int, n: int, dropout: float) -> list[nn.Module]:
    return [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout) for i in range(n)]


class DownLevel(nn.Module):
    """One Wan2.2 encoder level (official ``Down_ResidualBlock``): ``n`` residual blocks and an optional
    Resample, plus a parameter-free shortcut: the input's ft x fs x fs blocks onto channels (channels
    outermost), averaged down to ``out_dim``. Parameters under ``downsamples.N`` as the official keys."""

    def __init__(
        self, in_dim: int, out_dim: int, n: int, temporal: bool, down: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.ft, self.fs = (2 if temporal else 1), (2 if down else 1)
        blocks = _level_blocks(in_dim, out_dim, n, dropout)
        if down:
            blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """One chunk. x: [B, in_dim, T, H, W] -> [B, out_dim, T', H/fs, W/fs]."""
        # Zero frames in front make the chunk a whole number of ft-frame groups: the first chunk is one
        # frame, as the temporal Resample's pass-through of it.
        pad = -x.shape[2] % self.ft
        padded = F.pad(x, (0, 0, 0, 0, pad, 0)) if pad else x
        shortcut = mean_shortcut(padded, self.ft, self.fs, self.out_dim, channels_outer=True)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + shortcut


class UpLevel(nn.Module):
    """One Wan2.2 decoder level (official ``Up_ResidualBlock``): ``n`` residual blocks and an optional
    Resample keeping the width, plus (with the Resample) a parameter-free shortcut: every input channel
    repeated, then spread over ft x 2 x 2 blocks (channels outermost). Parameters under ``upsamples.N``."""

    def __init__(
        self, in_dim: int, out_dim: int, n: int, temporal: bool, up: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.ft = 2 if temporal else 1
        self.repeats = out_dim * self.ft * 4 // in_dim if up else 0
        blocks = _level_blocks(in_dim, out_dim, n, dropout)
        if up:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", up_dim=out_dim))
        self.upsamples = nn.ModuleList(blocks)

    @property
    def upsamples_time(self) -> bool:
        return self.ft == 2

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """x: [B, in_dim, T, H, W] -> [B, out_dim, T', 2H, 2W] (T' = T, or 2T past the first frame with
        temporal upsampling), or [B, out_dim, T, H, W] without a Resample."""
        y = x
        for layer in self.upsamples:
            y = layer(y, cache)
        if not self.repeats:
            return y
        shortcut = channels_to_space(
            x.repeat_interleave(self.repeats, dim=1), self.ft, 2, channels_outer=True
        )
        # On the very first frame the temporal Resample passes its one frame through; the official
        # shortcut then keeps only its last time phase (``first_chunk``): in both cases the last y frames.
        return y + shortcut[:, :, shortcut.shape[2] - y.shape[2] :]
