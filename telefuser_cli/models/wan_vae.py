"""Wan2.1 causal video VAE (official ``Wan2.1_VAE.pth`` key layout).

The parameter names are exactly those of the official checkpoint (``encoder.*``, ``conv1``, ``conv2``,
``decoder.*``), so ``load_state_dict(strict=True, assign=True)`` works on a model built on ``meta``.

Causality in time is carried by explicit :class:`CausalCache` objects (the past input frames of every
causal convolution, two per convolution, never copied). ``encode`` runs the encoder on 1 then 4 frames at
a time, as the official code. ``decode`` runs the decoder one frame at a time at every frame rate (each
frame a temporal upsampling makes goes through the rest of the decoder before the next one): the same
result as the official chunks, since every layer is causal and per frame, with a working set of one frame
per stage. Memory grows with neither the frame count nor, beyond the cache, the chunk size.

No buffers: the latent mean and std are config values (``WanVAEConfig.latent_mean`` / ``latent_std``, chosen
by the loader for the identified VAE), made float32 tensors in ``encode`` / ``decode``; a model built on
``meta`` and filled with ``load_state_dict(assign=True)`` is complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from telefuser_cli.models.causal_conv import CausalCache, CausalConv3d
from telefuser_cli.models.video_vae_blocks import AttentionBlock, Resample, ResidualBlock, RMSNorm, norm_silu
from telefuser_cli.models.wan_vae_stats import WAN21_LATENT_MEAN, WAN21_LATENT_STD
from telefuser_cli.ops.tiling import tiled_decode


@dataclass(frozen=True)
class WanVAEConfig:
    """Architecture and latent statistics of the Wan2.1 VAE (defaults: the released ``Wan2.1_VAE.pth``).

    ``latent_mean`` / ``latent_std``: one entry per latent channel; ``encode`` returns
    ``(mu - latent_mean) / latent_std`` and ``decode`` inverts it.
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    # Not in the repr: 2 x z_dim numbers would bury the architecture in messages.
    latent_mean: tuple[float, ...] = field(default=WAN21_LATENT_MEAN, repr=False)
    latent_std: tuple[float, ...] = field(default=WAN21_LATENT_STD, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        object.__setattr__(self, "latent_mean", tuple(float(m) for m in self.latent_mean))
        object.__setattr__(self, "latent_std", tuple(float(s) for s in self.latent_std))
        if self.dim <= 0 or self.num_res_blocks <= 0 or not self.dim_mult or min(self.dim_mult) <= 0:
            raise ValueError(
                f"dim={self.dim}, num_res_blocks={self.num_res_blocks} and dim_mult={self.dim_mult} "
                "must all be positive"
            )
        if not len(self.latent_mean) == len(self.latent_std) == self.z_dim:
            raise ValueError(
                f"z_dim={self.z_dim} but latent_mean has {len(self.latent_mean)} and latent_std "
                f"{len(self.latent_std)} entries: give one per latent channel"
            )
        if min(self.latent_std) <= 0:
            raise ValueError(f"latent_std={self.latent_std} must be positive")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temperal_downsample={self.temperal_downsample} needs one entry per downsampling "
                f"(len(dim_mult) - 1 = {len(self.dim_mult) - 1})"
            )
        self._check_widths()
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    def _check_widths(self) -> None:
        # The decoder's spatial upsampling convolutions halve the channel count.
        odd = [self.dim * m for m in self.dim_mult[1:] if (self.dim * m) % 2]
        if odd:
            raise ValueError(
                f"dim * dim_mult must be even after the first level, got {odd} for dim={self.dim}"
            )

    @property
    def latent_channels(self) -> int:
        return self.z_dim

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent pixel along height and width."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_compression(self) -> int:
        """Frames per latent frame after the first one."""
        return 2 ** sum(self.temperal_downsample)


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
    """Video -> 2*z_dim channels per latent frame (official ``Encoder3d``).

    ``in_channels``: 3 (RGB), or 3 * p * p for a VAE that patchifies its input. ``_levels`` makes the
    blocks between ``conv1`` and the middle: the Wan2.1 flat list here, Wan2.2 levels in a subclass.
    """

    def __init__(self, cfg: WanVAEConfig, in_channels: int = 3) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.downsamples = nn.ModuleList(self._levels(cfg, dims))
        self.middle = _middle(dims[-1], cfg.dropout)
        self.head = nn.ModuleList([RMSNorm(dims[-1]), nn.SiLU(),
                                   CausalConv3d(dims[-1], cfg.z_dim * 2, 3, padding=1)])  # fmt: skip

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        """One chunk. x: [B, 3, T, H, W] -> [B, 2*z_dim, T', H/s, W/s]."""
        x = self.conv1.step(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head[2].step(x, cache, norm_silu(self.head[0]))

    @staticmethod
    def _levels(cfg: WanVAEConfig, dims: list[int]) -> list[nn.Module]:
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
        return blocks


class Decoder3d(nn.Module):
    """Latent -> video (official ``Decoder3d``).

    ``dim``: the base width (default ``cfg.dim``; the Wan2.2 decoder is wider than its encoder);
    ``out_channels``: 3, or 3 * p * p for a VAE that unpatchifies its output. ``_levels`` makes the
    blocks after the middle: the Wan2.1 flat list here, Wan2.2 levels in a subclass.
    """

    def __init__(self, cfg: WanVAEConfig, dim: int | None = None, out_channels: int = 3) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [(dim or cfg.dim) * m for m in (mult[-1], *mult[::-1])]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], cfg.dropout)
        self.upsamples = nn.ModuleList(self._levels(cfg, dims))
        self.head = nn.ModuleList([RMSNorm(dims[-1]), nn.SiLU(),
                                   CausalConv3d(dims[-1], out_channels, 3, padding=1)])  # fmt: skip

    @staticmethod
    def _levels(cfg: WanVAEConfig, dims: list[int]) -> list[nn.Module]:
        temperal_upsample = cfg.temperal_downsample[::-1]
        blocks: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(cfg.dim_mult) - 2)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            # The previous level's upsampling conv halved the channels.
            in_dim = in_dim // 2 if i > 0 else in_dim
            blocks += _level_blocks(
                in_dim, out_dim, cfg.num_res_blocks + 1, scale in cfg.attn_scales, cfg.dropout
            )
            if i != len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temperal_upsample[i] else "upsample2d"))
                scale *= 2.0
        return blocks

    def _split(self) -> tuple[list[nn.Module], list[list[nn.Module]]]:
        """The layers after ``conv1``: those up to the last attention (the only layers that see a whole
        frame), then the rest cut after each temporal upsampling (a Resample, or a Wan2.2 level holding
        one: ``upsamples_time``), one frame rate per stage."""
        layers = [*self.middle, *self.upsamples]
        attn = [i for i, layer in enumerate(layers) if isinstance(layer, AttentionBlock)]
        n_global = attn[-1] + 1 if attn else 0
        stages: list[list[nn.Module]] = [[]]
        for layer in layers[n_global:]:
            stages[-1].append(layer)
            if getattr(layer, "upsamples_time", False):
                stages.append([])
        if any(getattr(layer, "upsamples_time", False) for layer in layers[:n_global]):
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
        """The ``features`` of one latent frame -> its 1 (first) or temporal_compression output frames, each
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
            yield self.head[2].step(x, caches[i], norm_silu(self.head[0]))
            return
        for t in range(x.shape[2]):
            yield from self._stage(x[:, :, t : t + 1], i + 1, stages, caches)


class WanVAE(nn.Module):
    """The Wan2.1 VAE: ``encode`` video -> normalised latent, ``decode`` normalised latent -> video.

    A subclass with another config, encoder and decoder classes and pixel packing (``_pack`` /
    ``_unpack``) is the Wan2.2 VAE (``models.wan22_vae``); the chunking, caches and tiling are these.
    """

    encoder_class: type[nn.Module] = Encoder3d
    decoder_class: type[nn.Module] = Decoder3d

    def __init__(self, config: WanVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or WanVAEConfig()
        self.encoder = self.encoder_class(config)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = self.decoder_class(config)

    def _pack(self, x: Tensor) -> Tensor:
        """Video [B, 3, F, H, W] -> the encoder's input (as is)."""
        return x

    def _unpack(self, x: Tensor) -> Tensor:
        """The decoder's output frames -> video [B, 3, F, H, W] (as is)."""
        return x

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The latent mean and 1/std, [1, z_dim, 1, 1, 1] float32 whatever the model's dtype (precision
        policy). The official code multiplies by the float32 reciprocal of std (and divides by it)."""
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latent_mean, dtype=torch.float32, device=device)
        inv_std = 1.0 / torch.tensor(self.config.latent_std, dtype=torch.float32, device=device)
        return mean.view(shape), inv_std.view(shape)

    def normalize(self, mu: Tensor) -> Tensor:
        """Raw latents -> the DiT's latent space: ``(mu - latent_mean) / latent_std`` (float32)."""
        mean, inv_std = self._stats(mu.device)
        return (mu.float() - mean) * inv_std

    def denormalize(self, z: Tensor) -> Tensor:
        """The DiT's latents -> raw latents: ``z * latent_std + latent_mean`` (float32)."""
        mean, inv_std = self._stats(z.device)
        return z.float() / inv_std + mean

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """z: [B, z_dim, T, h, w] normalised latents -> video [B, 3, 1 + 4*(T-1), s*h, s*w] in [-1, 1], float32.

        s = ``config.spatial_compression`` (8 for Wan2.1, 16 for Wan2.2); 4 is the released temporal one.
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
            features, tile_size, tile_stride, scale=self.config.spatial_compression,
        )  # fmt: skip

    def _unnormalise(self, z: Tensor) -> Tensor:
        if z.ndim != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(
                f"decode expects z of shape [B, {self.config.z_dim}, T, h, w], got {tuple(z.shape)}"
            )
        return self.denormalize(z).to(self.conv2.weight.dtype)

    def _features(self, z: Tensor) -> Iterator[Tensor]:
        """Latents (not normalised) -> the decoder's ``features``, one latent frame at a time."""
        cache = CausalCache()
        for i in range(z.shape[2]):
            x = self.conv2(z[:, :, i : i + 1]).contiguous(memory_format=torch.channels_last_3d)
            yield self.decoder.features(x, cache)

    def _video(self, features: Iterable[Tensor], shape: torch.Size) -> Tensor:
        """The decoder's features of the latent frames of ``shape`` [B, C, T, h, w], one latent frame at a
        time -> video [B, 3, 1 + temporal_compression*(T-1), h*s, w*s] in [-1, 1], float32."""
        cfg = self.config
        b, _, t, h, w = shape
        s = cfg.spatial_compression
        out = torch.empty((b, 3, 1 + cfg.temporal_compression * (t - 1), h * s, w * s), dtype=torch.float32,
                          device=self.conv2.weight.device)  # fmt: skip
        caches = [CausalCache() for _ in range(self.decoder.num_stages())]
        start = 0
        for x in features:
            for frame in self.decoder(x, caches):
                out[:, :, start].copy_(self._unpack(frame)[:, :, 0])
                start += 1
        return out.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x: [B, 3, F, H, W] video in [-1, 1], F = 1 + 4k -> normalised latent mean [B, z_dim, 1 + k, H/s, W/s].

        Returns float32. No sampling: the posterior mean, as the official ``encode``.
        """
        cfg = self.config
        s, ts = cfg.spatial_compression, cfg.temporal_compression
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"encode expects x of shape [B, 3, F, H, W], got {tuple(x.shape)}")
        f, hh, ww = x.shape[2:]
        if (f - 1) % ts or hh % s or ww % s:
            raise ValueError(
                f"encode needs frames = 1 + {ts}*k and height, width divisible by {s}; got frames={f}, "
                f"height={hh}, width={ww}"
            )
        x = self._pack(x.to(self.conv1.weight.dtype))
        cache = CausalCache()
        chunks = []
        for start, stop in [(0, 1)] + [(1 + ts * i, 1 + ts * (i + 1)) for i in range((f - 1) // ts)]:
            cache.start_chunk()
            chunk = x[:, :, start:stop].contiguous(memory_format=torch.channels_last_3d)
            chunks.append(self.encoder(chunk, cache))
        mu = self.conv1(torch.cat(chunks, dim=2))[:, : cfg.z_dim]
        return self.normalize(mu).contiguous()
