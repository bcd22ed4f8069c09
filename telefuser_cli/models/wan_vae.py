"""Wan2.1 causal video VAE (official ``Wan2.1_VAE.pth`` key layout).

The parameter names are exactly those of the official checkpoint (``encoder.*``, ``conv1``, ``conv2``,
``decoder.*``), so ``load_state_dict(strict=True, assign=True)`` works on a model built on ``meta``.

Causality in time is carried by explicit :class:`CausalCache` objects (the past input frames of every
causal convolution, two per convolution, never copied). ``encode`` runs the encoder on 1 then 4 frames at
a time, as the official code. ``decode`` runs the decoder one frame at a time at every frame rate (each
frame a temporal upsampling makes goes through the rest of the decoder before the next one): the same
result as the official chunks, since every layer is causal and per frame, with a working set of one frame
per stage. Memory grows with neither the frame count nor, beyond the cache, the chunk size.

Non-persistent buffers: ``latent_mean`` and ``latent_inv_std`` (the 16-channel Wan2.1 latent statistics).
A model built on ``meta`` and filled with ``load_state_dict(assign=True)`` must call ``reset_buffers()``;
``.to()`` and the like recompute them in float32 on the new device whatever the dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telefuser_cli.models.causal_conv import CausalCache, CausalConv3d, PastFrames, memory_format_of
from telefuser_cli.ops.tiling import tiled_decode

# Statistics of the Wan2.1 latent space (official ``Wan2_1_VAE``), one value per latent channel.
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of the Wan2.1 VAE (defaults: the released ``Wan2.1_VAE.pth``)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        if self.dim <= 0 or self.num_res_blocks <= 0 or not self.dim_mult or min(self.dim_mult) <= 0:
            raise ValueError(
                f"dim={self.dim}, num_res_blocks={self.num_res_blocks} and dim_mult={self.dim_mult} "
                "must all be positive"
            )
        if self.z_dim != len(WAN21_LATENT_MEAN):
            raise ValueError(
                f"z_dim={self.z_dim} but the Wan2.1 latent mean/std tables have {len(WAN21_LATENT_MEAN)} channels"
            )
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temperal_downsample={self.temperal_downsample} needs one entry per downsampling "
                f"(len(dim_mult) - 1 = {len(self.dim_mult) - 1})"
            )
        # The decoder's spatial upsampling convolutions halve the channel count.
        odd = [self.dim * m for m in self.dim_mult[1:] if (self.dim * m) % 2]
        if odd:
            raise ValueError(
                f"dim * dim_mult must be even after the first level, got {odd} for dim={self.dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def spatial_scale(self) -> int:
        """Pixels per latent pixel along height and width."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_scale(self) -> int:
        """Frames per latent frame after the first one."""
        return 2 ** sum(self.temperal_downsample)


class RMSNorm(nn.Module):
    """Official ``RMS_norm``: L2-normalise over channels, times sqrt(C) and gamma; computed in float32."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, C, ...] -> same shape and dtype."""
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


def _norm_silu(norm: RMSNorm) -> Callable[[Tensor, Tensor], None]:
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
            RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        ])  # fmt: skip
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """x: [B, in_dim, T, H, W] -> [B, out_dim, T, H, W]."""
        h = self.shortcut(x)
        r = self.residual
        y = r[2].step(x, cache, _norm_silu(r[0]))
        # Dropout (r[5]) is identity at inference and the official rate is 0.
        return r[6].step(y, cache, _norm_silu(r[3])).add_(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
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
    """2x spatial up/down sampling, with a causal time conv doubling/halving frames in the 3-D modes."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, dim // 2, 3, padding=1),
            )
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        else:
            raise ValueError(f"Resample mode={mode!r} is not one of upsample2d/3d, downsample2d/3d")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """x: [B, C, T, H, W] -> [B, C/2, T', 2H, 2W] (up) or [B, C, T', H/2, W/2] (down)."""
        if self.mode == "upsample3d":
            x = self._time_upsample(x, cache)
        b, c, t, h, w = x.shape
        if self.mode.startswith("upsample"):
            out = torch.empty((b, c // 2, t, 2 * h, 2 * w), dtype=x.dtype, device=x.device,
                              memory_format=memory_format_of(x))  # fmt: skip
            weight = _subpixel_weight(self.resample[1].weight)
            bias = self.resample[1].bias.repeat(4)
            # [B, C/2, 2h, 2w] viewed as its four pixel phases [B, C/2, h, 2, w, 2].
            phases = out.unflatten(3, (h, 2)).unflatten(5, (w, 2))
            for i in range(t):
                # Frame by frame: the conv output holds all four phases, as large as the frame's output.
                y = F.conv2d(x[:, :, i], weight, bias, padding=1).unflatten(1, (2, 2, c // 2))
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


def _level_blocks(in_dim: int, out_dim: int, n: int, attn: bool, dropout: float) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for _ in range(n):
        blocks.append(ResidualBlock(in_dim, out_dim, dropout))
        if attn:
            blocks.append(AttentionBlock(out_dim))
        in_dim = out_dim
    return blocks


def _middle(dim: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(
        [ResidualBlock(dim, dim, dropout), AttentionBlock(dim), ResidualBlock(dim, dim, dropout)]
    )


class Encoder3d(nn.Module):
    """Video -> 2*z_dim channels per latent frame (official ``Encoder3d``)."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        scale = 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            blocks += _level_blocks(
                in_dim, out_dim, cfg.num_res_blocks, scale in cfg.attn_scales, cfg.dropout
            )
            if i != len(cfg.dim_mult) - 1:
                blocks.append(
                    Resample(out_dim, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d")
                )
                scale /= 2.0
        self.downsamples = nn.ModuleList(blocks)
        self.middle = _middle(dims[-1], cfg.dropout)
        self.head = nn.ModuleList([RMSNorm(dims[-1], images=False), nn.SiLU(),
                                   CausalConv3d(dims[-1], cfg.z_dim * 2, 3, padding=1)])  # fmt: skip

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """One chunk. x: [B, 3, T, H, W] -> [B, 2*z_dim, T', H/s, W/s]."""
        x = self.conv1.step(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head[2].step(x, cache, _norm_silu(self.head[0]))


class Decoder3d(nn.Module):
    """Latent -> video (official ``Decoder3d``)."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.dim * m for m in (mult[-1], *mult[::-1])]
        temperal_upsample = cfg.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], cfg.dropout)
        blocks: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(mult) - 2)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            # The previous level's upsampling conv halved the channels.
            in_dim = in_dim // 2 if i > 0 else in_dim
            blocks += _level_blocks(
                in_dim, out_dim, cfg.num_res_blocks + 1, scale in cfg.attn_scales, cfg.dropout
            )
            if i != len(mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temperal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.ModuleList(blocks)
        self.head = nn.ModuleList([RMSNorm(dims[-1], images=False), nn.SiLU(),
                                   CausalConv3d(dims[-1], 3, 3, padding=1)])  # fmt: skip

    def _split(self) -> tuple[list[nn.Module], list[list[nn.Module]]]:
        """The layers after ``conv1``: those up to the last attention (the only layers that see a whole
        frame), then the rest cut after each temporal upsampling, one frame rate per stage."""
        layers = [*self.middle, *self.upsamples]
        attn = [i for i, layer in enumerate(layers) if isinstance(layer, AttentionBlock)]
        n_global = attn[-1] + 1 if attn else 0
        stages: list[list[nn.Module]] = [[]]
        for layer in layers[n_global:]:
            stages[-1].append(layer)
            if isinstance(layer, Resample) and layer.mode == "upsample3d":
                stages.append([])
        if any(isinstance(layer, Resample) and layer.mode == "upsample3d" for layer in layers[:n_global]):
            raise ValueError("an attention after a temporal upsampling is not supported")
        return layers[:n_global], stages

    def num_stages(self) -> int:
        """How many caches ``forward`` takes."""
        return len(self._split()[1])

    def features(self, x: Tensor, cache: CausalCache) -> Tensor:
        """One latent frame [B, z_dim, 1, h, w] -> the output of the last attention (or of conv1 without
        attention) [B, C, 1, h, w]: everything before it is per frame and needs the whole frame."""
        cache.start_chunk()
        x = self.conv1.step(x, cache)
        for layer in self._split()[0]:
            x = layer(x, cache)
        return x

    def forward(self, x: Tensor, caches: list[CausalCache]) -> Iterator[Tensor]:
        """The ``features`` of one latent frame -> its 1 (first) or temporal_scale output frames, each
        [B, 3, 1, h*s, w*s], in order.

        Depth first: every frame a temporal upsampling makes goes through the rest of the decoder before
        the next one, so only one frame per stage is alive (``caches``: ``num_stages()`` of them). Every
        layer is causal and per frame, so this is the official chunked decode. The layers after the
        features are all convolutions, norms over channels and upsamplings: local in space.
        """
        yield from self._stage(x, 0, self._split()[1], caches)

    def _stage(
        self, x: Tensor, i: int, stages: list[list[nn.Module]], caches: list[CausalCache]
    ) -> Iterator[Tensor]:
        caches[i].start_chunk()
        for layer in stages[i]:
            x = layer(x, caches[i])
        if i + 1 == len(stages):
            yield self.head[2].step(x, caches[i], _norm_silu(self.head[0]))
            return
        for t in range(x.shape[2]):
            yield from self._stage(x[:, :, t : t + 1], i + 1, stages, caches)


class WanVAE(nn.Module):
    """The Wan2.1 VAE: ``encode`` video -> normalised latent, ``decode`` normalised latent -> video."""

    def __init__(self, config: WanVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or WanVAEConfig()
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config)
        self.register_buffer("latent_mean", torch.empty(config.z_dim), persistent=False)
        self.register_buffer("latent_inv_std", torch.empty(config.z_dim), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the latent mean and 1/std tables in float32 on the parameters' device."""
        device = self.conv2.weight.device
        self.latent_mean = torch.tensor(WAN21_LATENT_MEAN, dtype=torch.float32, device=device)
        # The official code multiplies by the float32 reciprocal of std (and divides by it to decode).
        self.latent_inv_std = 1.0 / torch.tensor(WAN21_LATENT_STD, dtype=torch.float32, device=device)

    def _apply(self, fn, recurse=True):
        # .to(bfloat16) & co. would round the tables; latent arithmetic stays float32 (precision policy).
        super()._apply(fn, recurse)
        if not self.conv2.weight.is_meta:
            self.reset_buffers()
        return self

    def _stats(self) -> tuple[Tensor, Tensor]:
        shape = (1, self.config.z_dim, 1, 1, 1)
        return self.latent_mean.view(shape), self.latent_inv_std.view(shape)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """z: [B, 16, T, h, w] normalised latents -> video [B, 3, 1 + 4*(T-1), 8h, 8w] in [-1, 1], float32.

        The spatial scale is 8 and the temporal scale 4 for the released config (see ``WanVAEConfig``).
        """
        z = self._unnormalise(z)
        return self._video(self._features(z), z.shape)

    @torch.no_grad()
    def tiled_decode(self, z: Tensor, tile_size: tuple[int, int], tile_stride: tuple[int, int]) -> Tensor:
        """``decode`` in overlapping spatial tiles (``ops.tiling.tiled_decode``; sizes in latent pixels).

        The layers up to the decoder's mid-block attention run on whole frames first, at latent resolution
        (``C * T * h * w`` values, C = 384 for the released config), so every tile sees the attention of
        the untiled decode; only the local layers after it are tiled. Memory: see ``ops.tiling``.
        """
        features = torch.cat(list(self._features(self._unnormalise(z))), dim=2)
        return tiled_decode(
            lambda tile: self._video((tile[:, :, i : i + 1] for i in range(tile.shape[2])), tile.shape),
            features, tile_size, tile_stride, scale=self.config.spatial_scale,
        )  # fmt: skip

    def _unnormalise(self, z: Tensor) -> Tensor:
        if z.ndim != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(
                f"decode expects z of shape [B, {self.config.z_dim}, T, h, w], got {tuple(z.shape)}"
            )
        mean, inv_std = self._stats()
        return (z.float() / inv_std + mean).to(self.conv2.weight.dtype)

    def _features(self, z: Tensor) -> Iterator[Tensor]:
        """Latents (not normalised) -> the decoder's ``features``, one latent frame at a time."""
        cache = CausalCache()
        for i in range(z.shape[2]):
            x = self.conv2(z[:, :, i : i + 1]).contiguous(memory_format=torch.channels_last_3d)
            yield self.decoder.features(x, cache)

    def _video(self, features: Iterable[Tensor], shape: torch.Size) -> Tensor:
        """The decoder's features of the latent frames of ``shape`` [B, C, T, h, w], one latent frame at a
        time -> video [B, 3, 1 + temporal_scale*(T-1), h*s, w*s] in [-1, 1], float32."""
        cfg = self.config
        b, _, t, h, w = shape
        s = cfg.spatial_scale
        out = torch.empty((b, 3, 1 + cfg.temporal_scale * (t - 1), h * s, w * s), dtype=torch.float32,
                          device=self.conv2.weight.device)  # fmt: skip
        caches = [CausalCache() for _ in range(self.decoder.num_stages())]
        start = 0
        for x in features:
            for frame in self.decoder(x, caches):
                out[:, :, start].copy_(frame[:, :, 0])
                start += 1
        return out.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x: [B, 3, F, H, W] video in [-1, 1], F = 1 + 4k -> normalised latent mean [B, 16, 1 + k, H/8, W/8].

        Returns float32. No sampling: the posterior mean, as the official ``encode``.
        """
        cfg = self.config
        s, ts = cfg.spatial_scale, cfg.temporal_scale
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"encode expects x of shape [B, 3, F, H, W], got {tuple(x.shape)}")
        f, hh, ww = x.shape[2:]
        if (f - 1) % ts or hh % s or ww % s:
            raise ValueError(
                f"encode needs frames = 1 + {ts}*k and height, width divisible by {s}; got frames={f}, "
                f"height={hh}, width={ww}"
            )
        x = x.to(self.conv1.weight.dtype)
        cache = CausalCache()
        chunks = []
        for start, stop in [(0, 1)] + [(1 + ts * i, 1 + ts * (i + 1)) for i in range((f - 1) // ts)]:
            cache.start_chunk()
            chunk = x[:, :, start:stop].contiguous(memory_format=torch.channels_last_3d)
            chunks.append(self.encoder(chunk, cache))
        mu = self.conv1(torch.cat(chunks, dim=2))[:, : cfg.z_dim].float()
        mean, inv_std = self._stats()
        return ((mu - mean) * inv_std).contiguous()
