"""HunyuanVideo 1.5 causal video VAE: 32 latent channels, 16x spatial and 4x temporal compression.

Parameter names are the official checkpoint layout (``vae/diffusion_pytorch_model.safetensors`` of
Tencent-Hunyuan/HunyuanVideo-1.5: ``encoder.down.N.block.M.*``, ``encoder.mid.attn_1.*``,
``decoder.up.N.upsample.conv.conv.*``, ...), so ``load_state_dict(strict=True, assign=True)`` works on a model
built on ``meta``. No buffers.

Structure (as the official ``AutoencoderKLConv3D``): causal 3x3x3 convolutions (replicate padding, two past
frames), channel RMS norms, resampling by pixel (un)shuffle with a channel-averaging / channel-repeating
shortcut (the first frame is resampled in space only, so F = 1 + 4k frames <-> 1 + k latent frames), a
mid block with block-causal attention (a token sees every token of its own and earlier frames), and
"shortcut" paths at both ends (encoder output + channel-group mean; decoder input repeated on channels).
The convolution, the norm and the space <-> channels reshapes are the shared video-VAE blocks
(:mod:`causal_conv`, :mod:`video_vae_blocks`); the residual block and the attention keep this checkpoint's
key names (``norm1``/``conv1``/..., ``q``/``k``/``v``) and whole-clip forwards, so they stay here.

Latent normalisation (the official and diffusers pipelines): the DiT works on ``z * scaling_factor``
(``scaling_factor`` = 1.03682 in the released ``vae/config.json``, which has no ``shift_factor``; the
official code subtracts ``shift_factor`` first when one is set). :meth:`encode` returns, and
:meth:`decode` takes, these NORMALISED latents.

Inference only (``no_grad`` on encode/decode). The whole clip goes through in one pass (the mid-block
attention couples all frames), so memory grows with the clip: spatial tiling is a caller's concern.
Precision: RMS norms in float32, convolutions and attention in the run dtype (the dtype of the weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telefuser_cli.models import causal_conv
from telefuser_cli.models.video_vae_blocks import RMSNorm, channels_to_space, mean_shortcut, space_to_channels


@dataclass(frozen=True)
class Hunyuan15VAEConfig:
    """Architecture and latent scaling (field names as in the official ``vae/config.json``)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 32
    block_out_channels: tuple[int, ...] = (128, 256, 512, 1024, 1024)
    layers_per_block: int = 2
    ffactor_spatial: int = 16
    ffactor_temporal: int = 4
    scaling_factor: float = 1.03682
    shift_factor: float | None = None
    downsample_match_channel: bool = True
    upsample_match_channel: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        ch, levels = self.block_out_channels, len(self.block_out_channels)
        n_space = int(math.log2(self.ffactor_spatial))
        n_time = int(math.log2(self.ffactor_temporal))
        if 2**n_space != self.ffactor_spatial or 2**n_time != self.ffactor_temporal or n_time > n_space:
            raise ValueError(
                f"ffactor_spatial={self.ffactor_spatial} and ffactor_temporal={self.ffactor_temporal} must be "
                "powers of two, temporal <= spatial"
            )
        if levels <= n_space:
            raise ValueError(
                f"block_out_channels={ch} gives {levels} levels; {n_space} resamplings need {n_space + 1}"
            )
        if ch[-1] % (2 * self.latent_channels) or ch[-1] % self.latent_channels:
            raise ValueError(
                f"block_out_channels[-1]={ch[-1]} must be divisible by 2*latent_channels="
                f"{2 * self.latent_channels} (encoder shortcut) and latent_channels (decoder shortcut)"
            )
        if any(ch[i] != ch[i - 1] for i in range(n_space + 1, levels)):
            raise ValueError(
                f"block_out_channels={ch}: levels past the last resampling must keep the width "
                "(a width change there needs the official nin_shortcut, which is not implemented)"
            )
        if not (self.downsample_match_channel and self.upsample_match_channel):
            raise ValueError(
                "only downsample_match_channel=True and upsample_match_channel=True are supported"
            )
        for i in range(n_space):
            factor = 8 if i >= n_space - n_time else 4
            if ch[i + 1] % factor or (factor * ch[i]) % ch[i + 1]:
                raise ValueError(f"block_out_channels={ch}: level {i} cannot resample {ch[i]} -> {ch[i + 1]}")
            up_in, up_out, up_factor = ch[::-1][i], ch[::-1][i + 1], 8 if i < n_time else 4
            if (up_factor * up_out) % up_in:
                raise ValueError(
                    f"block_out_channels={ch}: decoder level {i} cannot upsample {up_in} -> {up_out}"
                )

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent pixel along height and width (``ffactor_spatial``)."""
        return self.ffactor_spatial

    @property
    def temporal_compression(self) -> int:
        """Frames per latent frame after the first one (``ffactor_temporal``)."""
        return self.ffactor_temporal

    @property
    def spatial_levels(self) -> int:
        return int(math.log2(self.ffactor_spatial))

    @property
    def temporal_levels(self) -> int:
        return int(math.log2(self.ffactor_temporal))


class CausalConv3d(nn.Module):
    """The shared causal convolution with replicated past frames and edges, whole clip at once, under the
    official key names (``<name>.conv.weight``)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 3):
        super().__init__()
        self.conv = causal_conv.CausalConv3d(
            in_dim, out_dim, kernel, padding=kernel // 2, pad_mode="replicate"
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ResnetBlock(nn.Module):
    """Width-preserving residual block. With matched resampling channels (the only supported setting, and the
    released one) no block changes width, so the official ``nin_shortcut`` 1x1 convolution never exists."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.conv1 = CausalConv3d(dim, dim)
        self.norm2 = RMSNorm(dim)
        self.conv2 = CausalConv3d(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class AttnBlock(nn.Module):
    """Single-head attention over all tokens, block-causal in time (frame i sees frames 0..i)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.q = nn.Conv3d(dim, dim, 1)
        self.k = nn.Conv3d(dim, dim, 1)
        self.v = nn.Conv3d(dim, dim, 1)
        self.proj_out = nn.Conv3d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # [B, 1, L, C]
        # one unmasked call per query frame over the keys of frames <= it: the block-causal result
        # without materialising an [L, L] mask (SDPA directly: head dim C is beyond the flash kernels' limit)
        hw = h * w
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[:, :, i * hw : (i + 1) * hw], k[:, :, : (i + 1) * hw], v[:, :, : (i + 1) * hw]
                )
                for i in range(f)
            ],
            dim=2,
        )
        out = out[:, 0].transpose(1, 2).reshape(b, c, f, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """2x space (and 2x time after the first frame): conv then pixel-unshuffle, plus a channel-mean shortcut."""

    def __init__(self, in_dim: int, out_dim: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        factor = 8 if temporal else 4
        self.conv = CausalConv3d(in_dim, out_dim // factor)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if not self.temporal:
            h = space_to_channels(h, 1, 2)
            return h + mean_shortcut(x, 1, 2, h.shape[1])
        first = space_to_channels(h[:, :, :1], 1, 2)
        h = torch.cat([torch.cat([first, first], dim=1), space_to_channels(h[:, :, 1:], 2, 2)], dim=2)
        out_dim = h.shape[1]
        shortcut = torch.cat(
            [mean_shortcut(x[:, :, :1], 1, 2, out_dim), mean_shortcut(x[:, :, 1:], 2, 2, out_dim)], dim=2
        )
        return h + shortcut


class Upsample(nn.Module):
    """2x space (and 2x time after the first frame): conv then pixel-shuffle, plus a channel-repeat shortcut."""

    def __init__(self, in_dim: int, out_dim: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        factor = 8 if temporal else 4
        self.conv = CausalConv3d(in_dim, out_dim * factor)
        self.repeats = factor * out_dim // in_dim

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if not self.temporal:
            return channels_to_space(h, 1, 2) + channels_to_space(
                x.repeat_interleave(self.repeats, dim=1), 1, 2
            )
        first = channels_to_space(h[:, :, :1], 1, 2)
        h = torch.cat([first[:, : first.shape[1] // 2], channels_to_space(h[:, :, 1:], 2, 2)], dim=2)
        x_first = channels_to_space(x[:, :, :1], 1, 2).repeat_interleave(self.repeats // 2, dim=1)
        x_next = channels_to_space(x[:, :, 1:], 2, 2).repeat_interleave(self.repeats, dim=1)
        return h + torch.cat([x_first, x_next], dim=2)


class Level(nn.Module):
    """One resolution level: ``block.M`` resnets, then ``downsample`` / ``upsample`` where it resamples."""

    def __init__(self, blocks: list[nn.Module], sampler: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.sampler_name = name
        if sampler is not None:
            self.add_module(name, sampler)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        sampler = getattr(self, self.sampler_name, None)
        return x if sampler is None else sampler(x)


class Mid(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.block_1 = ResnetBlock(dim)
        self.attn_1 = AttnBlock(dim)
        self.block_2 = ResnetBlock(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: Hunyuan15VAEConfig):
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        self.down = nn.ModuleList()
        for i, dim in enumerate(ch):
            blocks = [ResnetBlock(dim) for _ in range(cfg.layers_per_block)]
            temporal = i >= cfg.spatial_levels - cfg.temporal_levels
            sampler = Downsample(dim, ch[i + 1], temporal) if i < cfg.spatial_levels else None
            self.down.append(Level(blocks, sampler, "downsample"))
        self.mid = Mid(ch[-1])
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, 1 + 4k, H, W] -> moments [B, 2 * latent_channels, 1 + k, H/16, W/16] (mean, log-variance)."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        b, c, f, hh, ww = h.shape
        out_c = self.conv_out.conv.out_channels
        shortcut = h.view(b, out_c, c // out_c, f, hh, ww).mean(dim=2)
        return self.conv_out(F.silu(self.norm_out(h))) + shortcut


class Decoder(nn.Module):
    def __init__(self, cfg: Hunyuan15VAEConfig):
        super().__init__()
        ch = cfg.block_out_channels[::-1]
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0])
        self.mid = Mid(ch[0])
        self.up = nn.ModuleList()
        for i, dim in enumerate(ch):
            blocks = [ResnetBlock(dim) for _ in range(cfg.layers_per_block + 1)]
            sampler = Upsample(dim, ch[i + 1], i < cfg.temporal_levels) if i < cfg.spatial_levels else None
            self.up.append(Level(blocks, sampler, "upsample"))
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], cfg.out_channels)

    def forward(self, z: Tensor) -> Tensor:
        """z: [B, latent_channels, T, h, w] raw latents -> [B, 3, 1 + 4(T-1), 16h, 16w] (not clamped)."""
        repeats = self.conv_in.conv.out_channels // z.shape[1]
        h = self.conv_in(z) + z.repeat_interleave(repeats, dim=1)
        h = self.mid(h)
        for level in self.up:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Hunyuan15VAE(nn.Module):
    """``encode`` video -> normalised latents, ``decode`` normalised latents -> video in [-1, 1]."""

    def __init__(self, config: Hunyuan15VAEConfig | None = None):
        super().__init__()
        self.config = config = config or Hunyuan15VAEConfig()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latents -> the DiT's latent space: ``(z - shift_factor) * scaling_factor`` (float32)."""
        cfg = self.config
        z = z.float()
        if cfg.shift_factor:
            z = z - cfg.shift_factor
        return z * cfg.scaling_factor

    def denormalize(self, z: Tensor) -> Tensor:
        """The DiT's latents -> raw latents: ``z / scaling_factor + shift_factor`` (float32)."""
        cfg = self.config
        z = z.float() / cfg.scaling_factor
        return z + cfg.shift_factor if cfg.shift_factor else z

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """z: [B, latent_channels, T, h, w] normalised latents -> video [B, 3, 1 + 4(T-1), 16h, 16w] float32,
        clamped to [-1, 1] (the pipelines map it to pixels with ``(x + 1) / 2``)."""
        cfg = self.config
        if z.ndim != 5 or z.shape[1] != cfg.latent_channels:
            raise ValueError(
                f"decode expects z of shape [B, {cfg.latent_channels}, T, h, w], got {tuple(z.shape)}"
            )
        dtype = self.decoder.conv_in.conv.weight.dtype
        return self.decoder(self.denormalize(z).to(dtype)).float().clamp_(-1.0, 1.0)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x: [B, 3, 1 + 4k, H, W] video in [-1, 1], H and W divisible by 16 -> normalised latent mean
        [B, latent_channels, 1 + k, H/16, W/16] float32 (the posterior mode, as both reference pipelines use)."""
        cfg = self.config
        s, ts = cfg.ffactor_spatial, cfg.ffactor_temporal
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"encode expects x of shape [B, {cfg.in_channels}, F, H, W], got {tuple(x.shape)}"
            )
        f, hh, ww = x.shape[2:]
        if (f - 1) % ts or hh % s or ww % s:
            raise ValueError(
                f"encode needs frames = 1 + {ts}*k and height, width divisible by {s}; got frames={f}, "
                f"height={hh}, width={ww}"
            )
        moments = self.encoder(x.to(self.encoder.conv_in.conv.weight.dtype))
        return self.normalize(moments[:, : cfg.latent_channels])
