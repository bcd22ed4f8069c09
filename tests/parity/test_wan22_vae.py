"""Wan2.2 VAE parity against diffusers' AutoencoderKLWan in its Wan2.2 configuration (tiny random
weights, float32, CPU), its loader, geometry and tiled decode.

diffusers ships no official -> diffusers converter for the Wan2.2 VAE (``convert_wan_vae_to_diffusers``
is Wan2.1's), so ``tests/wan22_vae_keys.py`` maps the official key names to diffusers' ones; the diffusers
model is configured as its Wan2.2 VAE config: ``is_residual=True``, ``patch_size=2``, 12 in/out
channels, ``decoder_base_dim``, ``scale_factor_spatial=16``, the 48-entry mean/std.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import max_rel_err as rel_err
from helpers import randomize_vae as randomize_

from telefuser_cli.families.wan.tiny import TINY_VAE22, VAE22_FILE, write_wan22_vae
from telefuser_cli.loading.wan import ComponentFiles, load_vae, vae_architecture
from telefuser_cli.loading.wan_vae_arch import infer_vae_config
from telefuser_cli.models.video_vae_blocks import patchify, unpatchify
from telefuser_cli.models.wan22_vae import Wan22VAE, Wan22VAEConfig
from telefuser_cli.models.wan_vae_stats import WAN22_LATENT_MEAN, WAN22_LATENT_STD

pytestmark = pytest.mark.numeric

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402
from wan22_vae_keys import diffusers_wan22_vae  # noqa: E402

TINY = Wan22VAEConfig(dim=8, decoder_dim=12)
TOL = 1e-4  # the Wan2.1 VAE parity tolerance (max abs error / max abs reference)


def stats(cfg: Wan22VAEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, cfg.z_dim, 1, 1, 1)
    return torch.tensor(cfg.latent_mean).view(shape), (1.0 / torch.tensor(cfg.latent_std)).view(shape)


def reference_decode(ref: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """As diffusers' WanPipeline: de-normalise with latents / (1/std) + mean, then decode (TINY)."""
    mean, inv_std = stats(TINY)
    return ref.decode(z / inv_std + mean).sample


def reference_encode(ref: AutoencoderKLWan, x: torch.Tensor) -> torch.Tensor:
    mean, inv_std = stats(TINY)
    return (ref.encode(x).latent_dist.mean - mean) * inv_std


@pytest.fixture(scope="module")
def pair() -> tuple[Wan22VAE, AutoencoderKLWan]:
    ours = randomize_(Wan22VAE(TINY))
    ref = diffusers_wan22_vae(TINY, ours.state_dict())
    return ours, ref


@torch.no_grad()
def test_decode_matches_diffusers(pair):
    ours, ref = pair
    z = torch.randn(1, 48, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    out, expected = ours.decode(z), reference_decode(ref, z)
    assert out.shape == (1, 3, 9, 32, 48) and out.dtype == torch.float32
    assert out.abs().max() <= 1.0
    # Outputs must not be mostly clamped, or the comparison would be vacuous.
    assert (expected.abs() < 1).float().mean() > 0.5
    err = rel_err(out, expected)
    print(f"decode max_abs={(out - expected).abs().max().item():.3e} rel={err:.3e}")
    assert err < TOL


@torch.no_grad()
def test_encode_matches_diffusers(pair):
    ours, ref = pair
    x = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out, expected = ours.encode(x), reference_encode(ref, x)
    assert out.shape == (1, 48, 3, 2, 3) and out.dtype == torch.float32
    err = rel_err(out, expected)
    print(f"encode max_abs={(out - expected).abs().max().item():.3e} rel={err:.3e}")
    assert err < TOL


@torch.no_grad()
def test_single_latent_frame_gives_one_frame(pair):
    ours, ref = pair
    z = torch.randn(1, 48, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    out = ours.decode(z)
    assert out.shape == (1, 3, 1, 32, 32)
    assert rel_err(out, reference_decode(ref, z)) < TOL


@torch.no_grad()
def test_narrowing_temporal_level_matches_diffusers():
    """A decoder level that both doubles the frames and halves the width (not in the released layout,
    where the two temporal levels keep their width): its shortcut's two time phases then come from
    different channels, so keeping the right one on the first frame is visible."""
    cfg = Wan22VAEConfig(dim=4, decoder_dim=4, temperal_downsample=(True, False, False))
    ours = randomize_(Wan22VAE(cfg), seed=5)
    ref = diffusers_wan22_vae(cfg, ours.state_dict())
    mean, inv_std = stats(cfg)
    z = torch.randn(1, 48, 2, 2, 3, generator=torch.Generator().manual_seed(6))
    out, expected = ours.decode(z), ref.decode(z / inv_std + mean).sample
    assert out.shape == (1, 3, 3, 32, 48)
    assert rel_err(out, expected) < TOL
    # 1 + 4k frames: the reference encodes in chunks of 4 frames whatever the temporal compression
    x = torch.rand(1, 3, 5, 32, 48, generator=torch.Generator().manual_seed(7)) * 2 - 1
    assert rel_err(ours.encode(x), (ref.encode(x).latent_dist.mean - mean) * inv_std) < TOL


def test_patchify_is_the_official_channel_order():
    """Channel (c, column phase, row phase), as the official ``b c f (h q) (w r) -> b (c r q) f h w``."""
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(1, 2, 3, 4, 6)
    packed = patchify(x, 2)
    assert packed.shape == (1, 8, 3, 2, 3)
    # source pixel (channel 1, frame 2, row 3, column 4): block (1, 2), row phase 1, column phase 0
    assert packed[0, 1 * 4 + 0 * 2 + 1, 2, 1, 2] == x[0, 1, 2, 3, 4]
    assert torch.equal(unpatchify(packed, 2), x)


@pytest.mark.parametrize(
    "cfg",
    [
        Wan22VAEConfig(),
        TINY,
        # temporal downsampling at other levels than the released one: read from the weights
        Wan22VAEConfig(dim=4, decoder_dim=4, temperal_downsample=(True, False, True)),
        Wan22VAEConfig(
            dim=4, decoder_dim=8, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True)
        ),
    ],
)
def test_infer_config_round_trip(cfg):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Wan22VAE(cfg).state_dict().items()}
    inferred = infer_vae_config(shapes)
    assert type(inferred) is Wan22VAEConfig and inferred == cfg


def test_infer_config_rejects_foreign_layout():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Wan22VAE(TINY).state_dict().items()}
    with pytest.raises(ValueError, match="missing"):
        infer_vae_config(
            {k: v for k, v in shapes.items() if k != "decoder.upsamples.0.upsamples.3.time_conv.bias"}
        )
    with pytest.raises(ValueError, match="decoder.head.0.gamma"):
        infer_vae_config({k: v for k, v in shapes.items() if k != "decoder.head.0.gamma"})


def test_geometry_and_statistics():
    cfg = Wan22VAEConfig()
    assert (cfg.latent_channels, cfg.temporal_compression, cfg.spatial_compression) == (48, 4, 16)
    assert (cfg.latent_mean, cfg.latent_std) == (WAN22_LATENT_MEAN, WAN22_LATENT_STD)
    assert len(WAN22_LATENT_MEAN) == len(WAN22_LATENT_STD) == 48
    small = Wan22VAEConfig(
        dim=4, decoder_dim=8, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, False)
    )
    assert (small.temporal_compression, small.spatial_compression) == (2, 8)
    with pytest.raises(ValueError, match="attention only in the middle"):
        Wan22VAEConfig(attn_scales=(0.5,))
    with pytest.raises(ValueError, match="frames=4"):
        Wan22VAE(small).encode(torch.zeros(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="divisible by 16"):
        Wan22VAE(TINY).encode(torch.zeros(1, 3, 5, 24, 32))


@torch.no_grad()
def test_meta_construction_and_assign_load(pair):
    ours, _ = pair
    sd = {k: v.clone() for k, v in ours.state_dict().items()}
    assert not any("latent" in k for k in sd)  # the statistics are config values, not weights
    with torch.device("meta"):
        model = Wan22VAE(infer_vae_config({k: v.shape for k, v in sd.items()}))
    assert model.config == TINY
    model.load_state_dict(sd, strict=True, assign=True)  # and nothing else: the model is complete
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    z = torch.randn(1, 48, 2, 2, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(model.eval().decode(z), ours.decode(z))


@torch.no_grad()
def test_loader_builds_the_wan22_vae_from_a_checkpoint(tmp_path):
    write_wan22_vae(tmp_path, torch.Generator().manual_seed(0))
    files = ComponentFiles("vae", (tmp_path / VAE22_FILE,), diffusers=False)
    assert vae_architecture(files) == TINY_VAE22
    vae = load_vae(files, dtype=torch.float32, device=torch.device("cpu"))
    assert type(vae) is Wan22VAE and vae.config == TINY_VAE22
    c = vae.config
    assert (c.latent_channels, c.temporal_compression, c.spatial_compression) == (48, 4, 16)
    video = vae.decode(torch.randn(1, 48, 2, 1, 2, generator=torch.Generator().manual_seed(4)))
    assert video.shape == (1, 3, 5, 16, 32) and video.isfinite().all()


@torch.no_grad()
def test_tiled_decode_close_to_untiled():
    """Tiles over the layers after the mid-block attention; the gap is set by the decoder's receptive
    field (random weights: attention projection zeroed as the official init, residual branches scaled
    down), not by the blend. One tile covering everything is the untiled decode exactly."""
    vae = randomize_(Wan22VAE(TINY), seed=11)
    for name, p in vae.decoder.named_parameters():
        if name.endswith("proj.weight"):
            p.zero_()
        elif name.endswith("residual.6.weight"):
            p.mul_(0.3)
    z = torch.randn(1, 48, 2, 10, 10, generator=torch.Generator().manual_seed(8))
    full = vae.decode(z)
    assert torch.equal(vae.tiled_decode(z, (10, 10), (10, 10)), full)
    tiled = vae.tiled_decode(z, (8, 8), (2, 2))
    assert tiled.shape == full.shape == (1, 3, 5, 160, 160)
    psnr = 10 * math.log10(4.0 / (tiled - full).pow(2).mean().item())  # peak-to-peak of [-1, 1] is 2
    print(f"tiled vs untiled PSNR={psnr:.1f} dB")
    assert psnr > 40
