"""Wan2.2 causal video VAE (official ``Wan2.2_VAE.pth`` key layout, the TI2V-5B VAE).

A 4x8x8 causal VAE inside a 2x2 patchify (16x spatial, 4x temporal, 48 latent channels). Against the
Wan2.1 VAE (``models.wan_vae``), whose chunked encode, frame-at-a-time decode, caches, normalisation and
tiled decode it inherits: the input is patchified onto 12 channels and the output unpatchified from 12;
every level is a :class:`DownLevel` / :class:`UpLevel` with a parameter-free shortcut around its
residual blocks and resampling; the decoder's upsamplings keep their width; the decoder has its own base
width (``decoder_dim``). Parameter names are the official ones (``encoder.downsamples.L.downsamples.N``,
``decoder.upsamples.L.upsamples.N``), so a real checkpoint loads with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from telefuser_cli.models.video_vae_blocks import DownLevel, UpLevel, patchify, unpatchify
from telefuser_cli.models.wan_vae import Decoder3d, Encoder3d, WanVAE, WanVAEConfig
from telefuser_cli.models.wan_vae_stats import WAN22_LATENT_MEAN, WAN22_LATENT_STD


@dataclass(frozen=True)
class Wan22VAEConfig(WanVAEConfig):
    """Architecture and latent statistics of the Wan2.2 VAE (defaults: the released ``Wan2.2_VAE.pth``).

    ``dim`` is the encoder's base width, ``decoder_dim`` the decoder's; ``patch_size`` the pixel patch
    folded onto channels before the encoder (and unfolded after the decoder).
    """

    dim: int = 160
    z_dim: int = 48
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latent_mean: tuple[float, ...] = field(default=WAN22_LATENT_MEAN, repr=False)
    latent_std: tuple[float, ...] = field(default=WAN22_LATENT_STD, repr=False)
    decoder_dim: int = 256
    patch_size: int = 2

    def _check_widths(self) -> None:
        if self.decoder_dim <= 0 or self.patch_size <= 0:
            raise ValueError(
                f"decoder_dim={self.decoder_dim} and patch_size={self.patch_size} must be positive"
            )
        if self.attn_scales:
            raise ValueError(
                f"attn_scales={self.attn_scales}: the Wan2.2 VAE has attention only in the middle"
            )
        # The shortcuts fold each level's ft x 2 x 2 blocks onto channels and average (encoder) or
        # repeat (decoder) whole groups of them.
        up = self.temperal_downsample[::-1]
        enc = [self.dim * m for m in (1, *self.dim_mult)]
        dec = [self.decoder_dim * m for m in (self.dim_mult[-1], *self.dim_mult[::-1])]
        for i in range(len(self.dim_mult) - 1):
            if enc[i] * 4 * (1 + self.temperal_downsample[i]) % enc[i + 1]:
                raise ValueError(f"encoder level {i}: {enc[i]} -> {enc[i + 1]} channels is no whole group")
            if dec[i + 1] * 4 * (1 + up[i]) % dec[i]:
                raise ValueError(f"decoder level {i}: {dec[i]} -> {dec[i + 1]} channels is no whole group")
        if enc[-2] % enc[-1]:
            raise ValueError(f"encoder last level: {enc[-2]} -> {enc[-1]} channels is no whole group")

    @property
    def spatial_compression(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)


class Wan22Encoder(Encoder3d):
    """Patchified video -> 2*z_dim channels per latent frame (official Wan2.2 ``Encoder3d``)."""

    def __init__(self, cfg: Wan22VAEConfig) -> None:
        super().__init__(cfg, in_channels=3 * cfg.patch_size**2)

    @staticmethod
    def _levels(cfg: Wan22VAEConfig, dims: list[int]) -> list[nn.Module]:
        last = len(cfg.dim_mult) - 1
        return [
            DownLevel(dims[i], dims[i + 1], cfg.num_res_blocks,
                      temporal=i < last and cfg.temperal_downsample[i], down=i < last, dropout=cfg.dropout)
            for i in range(last + 1)
        ]  # fmt: skip


class Wan22Decoder(Decoder3d):
    """Latent -> patchified video (official Wan2.2 ``Decoder3d``): one more residual block per level."""

    def __init__(self, cfg: Wan22VAEConfig) -> None:
        super().__init__(cfg, dim=cfg.decoder_dim, out_channels=3 * cfg.patch_size**2)

    @staticmethod
    def _levels(cfg: Wan22VAEConfig, dims: list[int]) -> list[nn.Module]:
        last = len(cfg.dim_mult) - 1
        up = cfg.temperal_downsample[::-1]
        return [
            UpLevel(dims[i], dims[i + 1], cfg.num_res_blocks + 1,
                    temporal=i < last and up[i], up=i < last, dropout=cfg.dropout)
            for i in range(last + 1)
        ]  # fmt: skip


class Wan22VAE(WanVAE):
    """The Wan2.2 VAE: ``encode`` video -> normalised latent [B, 48, 1 + k, H/16, W/16], ``decode`` back."""

    encoder_class = Wan22Encoder
    decoder_class = Wan22Decoder

    def __init__(self, config: Wan22VAEConfig | None = None) -> None:
        super().__init__(config or Wan22VAEConfig())

    def _pack(self, x: Tensor) -> Tensor:
        return patchify(x, self.config.patch_size)

    def _unpack(self, x: Tensor) -> Tensor:
        return unpatchify(x, self.config.patch_size)
