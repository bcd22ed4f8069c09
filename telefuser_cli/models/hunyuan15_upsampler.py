"""HunyuanVideo 1.5 super-resolution latent upsamplers, parameter names in the official checkpoint layout.

Official classes (Tencent-Hunyuan/HunyuanVideo-1.5 ``hyvideo/models/transformers/modules/upsample.py``), files
``upsampler/<version>/config.json`` + ``diffusion_pytorch_model.safetensors``:

- ``SRTo720pUpsampler`` (``upsampler/720p_sr_distilled``): a causal 3-D convolution residual network on
  latents, ``in_conv -> blocks.N (conv, SiLU, conv, SiLU, conv, + skip) -> out_conv`` (+ the input when
  ``global_residual``). It does not change the size: the SR pipeline first resizes the low-resolution
  latents bilinearly to the target latent size, then this network refines them.
- ``SRTo1080pUpsampler`` (``upsampler/1080p_sr_distilled``): ``conv_in`` (+ the input repeated on channels),
  ``up.N.block.M`` residual blocks (RMS norm, SiLU, causal conv; a 1x1 ``nin_shortcut`` where the width
  changes), ``norm_out``, SiLU, ``conv_out``. Also size-preserving (the official class has no ``upsample``).

The causal convolutions, RMS norm and residual blocks are those of the VAE (:mod:`hunyuan15_vae`), as in the
official code. No buffers. Precision: RMS norms in float32, convolutions in the dtype of the weights; the
official pipeline runs the upsampler in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from telefuser_cli.models.hunyuan15_vae import CausalConv3d, RMSNorm


@dataclass(frozen=True)
class SRTo720pConfig:
    """Official ``SRTo720pUpsampler`` config.json fields (``hidden_channels`` None means 64 officially)."""

    in_channels: int = 32
    out_channels: int = 32
    hidden_channels: int = 64
    num_blocks: int = 6
    global_residual: bool = False

    def __post_init__(self) -> None:
        if min(self.in_channels, self.out_channels, self.hidden_channels) < 1 or self.num_blocks < 0:
            raise ValueError(
                f"SRTo720pConfig needs positive channels and num_blocks >= 0, got in={self.in_channels}, "
                f"out={self.out_channels}, hidden={self.hidden_channels}, num_blocks={self.num_blocks}"
            )


@dataclass(frozen=True)
class SRTo1080pConfig:
    """Official ``SRTo1080pUpsampler`` config.json fields."""

    z_channels: int = 32
    out_channels: int = 32
    block_out_channels: tuple[int, ...] = (64, 64)
    num_res_blocks: int = 2
    is_residual: bool = False  # stored by the official config, unused by its forward

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if not self.block_out_channels or self.block_out_channels[0] % self.z_channels:
            raise ValueError(
                f"block_out_channels={self.block_out_channels}: the first width must be a multiple of "
                f"z_channels={self.z_channels} (the input is repeated on channels into it)"
            )


class SRResidualBlock(nn.Module):
    """Official ``SRResidualCausalBlock3D``: ``x + conv(silu(conv(silu(conv(x)))))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            CausalConv3d(dim, dim), nn.SiLU(), CausalConv3d(dim, dim), nn.SiLU(), CausalConv3d(dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class SRTo720pUpsampler(nn.Module):
    """Refines bilinearly resized latents. x: [B, in_channels, T, h, w] -> [B, out_channels, T, h, w]."""

    def __init__(self, config: SRTo720pConfig):
        super().__init__()
        self.config = config
        self.in_conv = CausalConv3d(config.in_channels, config.hidden_channels)
        self.blocks = nn.ModuleList(
            [SRResidualBlock(config.hidden_channels) for _ in range(config.num_blocks)]
        )
        self.out_conv = CausalConv3d(config.hidden_channels, config.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.in_conv(x.to(self.in_conv.conv.weight.dtype))
        for block in self.blocks:
            h = block(h)
        h = self.out_conv(h)
        # official: the residual is added only when the shapes agree
        if self.config.global_residual and h.shape == x.shape:
            h = h + x.to(h.dtype)
        return h


class ResnetBlock(nn.Module):
    """The official VAE ``ResnetBlock`` with its optional 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim)
        self.norm2 = RMSNorm(out_dim)
        self.conv2 = CausalConv3d(out_dim, out_dim)
        self.nin_shortcut = nn.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (x if self.nin_shortcut is None else self.nin_shortcut(x))


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)


class SRTo1080pUpsampler(nn.Module):
    """x: [B, z_channels, T, h, w] (already at the target latent size) -> [B, out_channels, T, h, w]."""

    def __init__(self, config: SRTo1080pConfig):
        super().__init__()
        self.config = config
        widths = config.block_out_channels
        self.conv_in = CausalConv3d(config.z_channels, widths[0])
        levels, dim = [], widths[0]
        for width in widths:
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(dim, width))
                dim = width
            levels.append(_Level(blocks))
        self.up = nn.ModuleList(levels)
        self.norm_out = RMSNorm(dim)
        self.conv_out = CausalConv3d(dim, config.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        x = x.to(self.conv_in.conv.weight.dtype)
        h = self.conv_in(x) + x.repeat_interleave(cfg.block_out_channels[0] // cfg.z_channels, dim=1)
        for level in self.up:
            for block in level.block:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


Upsampler = SRTo720pUpsampler | SRTo1080pUpsampler
