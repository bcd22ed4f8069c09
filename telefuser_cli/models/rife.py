"""RIFE frame interpolation: IFNet of the Practical-RIFE v4.22+ family (released ``flownet.pkl`` layout).

The defaults are RIFE v4.26 "heavy" (five flow blocks of widths 192/128/96/64/32, a 16-channel feature
head), the variant that ``ccvfi`` implements and against which this module is tested. Parameter names
are exactly those of the released state dict once its DataParallel ``module.`` prefix is stripped
(``encode.cnn0..3``, ``blockN.conv0``, ``blockN.convblock``, ``blockN.lastconv``), so
``load_state_dict(strict=True, assign=True)`` fills a model built on ``meta``.

No buffers: the warping grid is computed in forward from the shapes, so a ``meta``-built model needs nothing
more after loading.

Precision: the convolutions run in the weights' dtype; flows and masks are accumulated in float32 and
warping (grid and sampling) is done in float32, because a bf16 grid over an 832-pixel-wide frame is off by
up to ~0.8 px (bf16 keeps 8 significant bits). In float32 this is the reference computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Channels the lastconv of a block predicts besides its features: 4 flow (two 2-D flows) + 1 mask.
_FLOW_MASK = 5


@dataclass(frozen=True)
class RIFEConfig:
    """Architecture of an IFNet (defaults: the released RIFE v4.26 heavy ``flownet.pkl``).

    block_widths: hidden channels of each flow block, coarse to fine (their count is the block count).
    head_width / head_channels: hidden and output channels of the per-image feature encoder ``encode``.
    feat_channels: features a block hands to the next one (besides 4 flow + 1 mask channels).
    num_resconv: residual convolutions per block.
    scales: default downscale factor of each block (``scale_list``); None: 2**(n-1), ..., 2, 1.
    """

    block_widths: tuple[int, ...] = (192, 128, 96, 64, 32)
    head_width: int = 16
    head_channels: int = 16
    feat_channels: int = 8
    num_resconv: int = 8
    scales: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_widths", tuple(int(c) for c in self.block_widths))
        n = len(self.block_widths)
        scales = self.scales if self.scales is not None else tuple(2.0 ** (n - 1 - i) for i in range(n))
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))
        if not self.block_widths or any(c <= 0 or c % 2 for c in self.block_widths):
            raise ValueError(f"block_widths={self.block_widths} must be positive even numbers (at least one)")
        if min(self.head_width, self.head_channels, self.feat_channels, self.num_resconv) <= 0:
            raise ValueError(
                f"head_width={self.head_width}, head_channels={self.head_channels}, "
                f"feat_channels={self.feat_channels} and num_resconv={self.num_resconv} must be positive"
            )
        if len(self.scales) != n or min(self.scales) <= 0:
            raise ValueError(f"scales={self.scales} needs one positive scale per block ({n} blocks)")

    @property
    def block_inputs(self) -> tuple[int, ...]:
        """Input channels of each block: the first sees both images, the timestep and both features;
        the others see both warped images, timestep, mask, flow, the previous features and both warped
        feature maps."""
        first = 3 + 3 + 1 + 2 * self.head_channels
        rest = 3 + 3 + 1 + 1 + 4 + self.feat_channels + 2 * self.head_channels
        return (first,) + (rest,) * (len(self.block_widths) - 1)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, True))


class Head(nn.Module):
    """Per-image feature encoder: [B, 3, H, W] -> [B, head_channels, H, W] (H, W even)."""

    def __init__(self, width: int, channels: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, channels, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.cnn0(x), 0.2)
        x = F.leaky_relu(self.cnn1(x), 0.2)
        x = F.leaky_relu(self.cnn2(x), 0.2)
        return self.cnn3(x)


class ResConv(nn.Module):
    """3x3 convolution with a learned per-channel gain ``beta`` on the residual branch."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class IFBlock(nn.Module):
    """One coarse-to-fine flow block working at 1/scale resolution (4x further down inside)."""

    def __init__(self, in_planes: int, c: int, feat_channels: int, num_resconv: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        self.convblock = nn.Sequential(*(ResConv(c) for _ in range(num_resconv)))
        out = _FLOW_MASK + feat_channels
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * out, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor, flow: Tensor | None, scale: float) -> tuple[Tensor, Tensor, Tensor]:
        """x: [B, C, H, W] (run dtype), flow: [B, 4, H, W] float32 or None
        -> flow delta [B, 4, H, W] float32, mask logits [B, 1, H, W] float32, features [B, feat, H, W]."""
        if scale != 1:
            x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            if scale != 1:
                flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
                flow = flow * (1.0 / scale)
            x = torch.cat((x, flow.to(x.dtype)), 1)
        tmp = self.lastconv(self.convblock(self.conv0(x)))
        if scale != 1:
            tmp = F.interpolate(tmp, scale_factor=scale, mode="bilinear", align_corners=False)
        return tmp[:, :4].float() * scale, tmp[:, 4:5].float(), tmp[:, 5:]


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: sample `image` [B, C, H, W] at pixel + `flow` [B, 2, H, W] (pixels, x then y),
    bilinear, borders replicated; computed in float32, returned in the image's dtype."""
    b, _, h, w = flow.shape
    flow = flow.float()
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=torch.float32)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=torch.float32)
    gx = xs.view(1, 1, w) + flow[:, 0] / ((w - 1.0) / 2.0)
    gy = ys.view(1, h, 1) + flow[:, 1] / ((h - 1.0) / 2.0)
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(image.dtype)


def size_multiple(scale_list: Sequence[float]) -> int:
    """H and W must be multiples of this: every block downsamples by its scale and then by 4 inside.

    Each 4 * scale must be a whole number (scale_list = default / s for s in 0.25, 0.5, 1, 2, 4 is);
    the released 5-block default [16, 8, 4, 2, 1] needs multiples of 64.
    """
    out = 1
    for s in scale_list:
        q = 4 * float(s)
        if q <= 0 or q != round(q):
            raise ValueError(f"scale_list={list(scale_list)}: 4 * {s} is not a whole number of pixels")
        out = math.lcm(out, int(round(q)))
    return out


class IFNet(nn.Module):
    """RIFE IFNet (v4.22+ family): two frames and a timestep -> the frame in between."""

    def __init__(self, config: RIFEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RIFEConfig()
        for i, (cin, c) in enumerate(zip(cfg.block_inputs, cfg.block_widths, strict=True)):
            setattr(self, f"block{i}", IFBlock(cin, c, cfg.feat_channels, cfg.num_resconv))
        self.encode = Head(cfg.head_width, cfg.head_channels)

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.config.block_widths))]

    def scale_list(self, scale: float = 1.0) -> list[float]:
        """The reference's ``scale_list`` for a flow ``scale`` (0.5 for 4K-like motion, 2 for small)."""
        return [s / scale for s in self.config.scales]

    def forward(
        self, img0: Tensor, img1: Tensor, timestep: Tensor | float, scale_list: Sequence[float] | None = None
    ) -> Tensor:
        """img0, img1: [B, 3, H, W] in [0, 1]; timestep: float or [B] in [0, 1] (0 = img0, 1 = img1).

        H and W must be multiples of ``size_multiple(scale_list)`` (64 for the released default
        scales; pad beforehand). Returns [B, 3, H, W] float32 in [0, 1].
        """
        scale_list = list(self.config.scales if scale_list is None else scale_list)
        if len(scale_list) != len(self.config.block_widths):
            raise ValueError(f"scale_list={scale_list} needs {len(self.config.block_widths)} entries")
        b, _, h, w = img0.shape
        m = size_multiple(scale_list)
        if h % m or w % m or img1.shape != img0.shape:
            raise ValueError(
                f"img0 {tuple(img0.shape)} / img1 {tuple(img1.shape)}: H and W must match and be "
                f"multiples of {m} for scale_list={scale_list}; pad the frames first"
            )
        dtype = self.encode.cnn0.weight.dtype
        img0, img1 = img0.float(), img1.float()
        t = torch.as_tensor(timestep, dtype=torch.float32, device=img0.device).reshape(-1, 1, 1, 1)
        t = t.expand(b, 1, h, w).to(dtype)
        f0, f1 = self.encode(torch.cat((img0, img1)).to(dtype)).chunk(2)

        flow = mask = feat = None
        warped0, warped1 = img0, img1
        for block, scale in zip(self.blocks, scale_list, strict=True):
            if flow is None:
                x = torch.cat((img0.to(dtype), img1.to(dtype), f0, f1, t), 1)
                flow, mask, feat = block(x, None, scale)
            else:
                wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                x = torch.cat((warped0.to(dtype), warped1.to(dtype), wf0, wf1, t, mask.to(dtype), feat), 1)
                delta, mask, feat = block(x, flow, scale)
                # In this family (as in ccvfi's v4.26) each block's mask replaces the previous one (v4.6
                # accumulated it); the flow accumulates.
                flow = flow + delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return (warped0 * weight + warped1 * (1 - weight)).clamp(0, 1)
