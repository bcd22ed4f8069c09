"""Wan2.1 VAE parity against diffusers' AutoencoderKLWan (tiny random weights, float32, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import max_rel_err as rel_err
from helpers import randomize_vae as randomize_

from telefuser_cli.loading.wan_vae_arch import diffusers_to_official_vae, infer_vae_config
from telefuser_cli.models.causal_conv import add_conv2d_
from telefuser_cli.models.wan_vae import WanVAE, WanVAEConfig
from telefuser_cli.models.wan_vae_stats import WAN21_LATENT_MEAN, WAN21_LATENT_STD
from telefuser_cli.ops.tiling import tile_starts, tiled_decode

pytestmark = pytest.mark.numeric

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers  # noqa: E402

# diffusers' official->diffusers converter hard-codes 2 residual blocks and 4 levels with one decoder
# shortcut (the released layout), so the converter-based tests use that shape at a tiny width.
TINY = WanVAEConfig(dim=8, dim_mult=(1, 2, 4, 4), num_res_blocks=2)
TOL = 1e-4


def diffusers_vae(cfg: WanVAEConfig) -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=cfg.dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks,
        attn_scales=list(cfg.attn_scales), temperal_downsample=list(cfg.temperal_downsample),
    ).eval()  # fmt: skip


def stats() -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, 16, 1, 1, 1)
    return torch.tensor(WAN21_LATENT_MEAN).view(shape), (1.0 / torch.tensor(WAN21_LATENT_STD)).view(shape)


def reference_decode(ref: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """As diffusers' WanPipeline: de-normalise with latents / (1/std) + mean, then decode."""
    mean, inv_std = stats()
    return ref.decode(z / inv_std + mean).sample


def reference_encode(ref: AutoencoderKLWan, x: torch.Tensor) -> torch.Tensor:
    mean, inv_std = stats()
    return (ref.encode(x).latent_dist.mean - mean) * inv_std


@pytest.fixture(scope="module")
def pair() -> tuple[WanVAE, AutoencoderKLWan]:
    ours = randomize_(WanVAE(TINY))
    ref = diffusers_vae(TINY)
    ref.load_state_dict(convert_wan_vae_to_diffusers(dict(ours.state_dict())), strict=True)
    return ours, ref


@torch.no_grad()
def test_decode_matches_diffusers(pair):
    ours, ref = pair
    z = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    out, expected = ours.decode(z), reference_decode(ref, z)
    assert out.shape == (1, 3, 9, 32, 32) and out.dtype == torch.float32
    assert out.abs().max() <= 1.0
    # Outputs must not be mostly clamped, or the comparison would be vacuous.
    assert (expected.abs() < 1).float().mean() > 0.5
    err = rel_err(out, expected)
    print(f"decode max_abs={(out - expected).abs().max().item():.3e} rel={err:.3e}")
    assert err < TOL


@torch.no_grad()
def test_encode_matches_diffusers(pair):
    ours, ref = pair
    x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out, expected = ours.encode(x), reference_encode(ref, x)
    assert out.shape == (1, 16, 3, 4, 4)
    err = rel_err(out, expected)
    print(f"encode max_abs={(out - expected).abs().max().item():.3e} rel={err:.3e}")
    assert err < TOL


@torch.no_grad()
def test_single_latent_frame_gives_one_frame(pair):
    ours, ref = pair
    z = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    out = ours.decode(z)
    assert out.shape == (1, 3, 1, 32, 32)
    assert rel_err(out, reference_decode(ref, z)) < TOL


@torch.no_grad()
def test_diffusers_to_official_general_layout():
    """A diffusers model with 1 residual block and another dim_mult: our inverse map loads it strictly
    and reproduces its decode and encode (diffusers' own forward converter cannot express this layout)."""
    cfg = WanVAEConfig(
        dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1, temperal_downsample=(False, True, True)
    )
    ref = randomize_(diffusers_vae(cfg), seed=4)
    official = diffusers_to_official_vae(ref.state_dict())
    assert infer_vae_config({k: v.shape for k, v in official.items()}) == cfg
    ours = WanVAE(cfg).eval()
    ours.load_state_dict(official, strict=True)
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    assert rel_err(ours.decode(z), reference_decode(ref, z)) < TOL
    x = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    assert rel_err(ours.encode(x), reference_encode(ref, x)) < TOL


def test_diffusers_to_official_round_trip(pair):
    ours, _ = pair
    sd = ours.state_dict()
    back = diffusers_to_official_vae(convert_wan_vae_to_diffusers(dict(sd)))
    assert back.keys() == sd.keys()
    assert all(back[k] is sd[k] for k in sd)


@pytest.mark.parametrize(
    "cfg",
    [
        WanVAEConfig(),
        TINY,
        WanVAEConfig(dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, False)),
        WanVAEConfig(dim=4, dim_mult=(1, 2, 4, 4), num_res_blocks=3, temperal_downsample=(True, True, False)),
        WanVAEConfig(dim=4, dim_mult=(1, 2, 4, 4), attn_scales=(0.5,)),
    ],
)
def test_infer_config_round_trip(cfg):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVAE(cfg).state_dict().items()}
    assert infer_vae_config(shapes) == cfg


def test_infer_config_rejects_foreign_layout():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVAE(TINY).state_dict().items()}
    with pytest.raises(ValueError, match="conv2.weight"):
        infer_vae_config({k: v for k, v in shapes.items() if k != "conv2.weight"})
    with pytest.raises(ValueError, match="missing"):
        infer_vae_config({k: v for k, v in shapes.items() if k != "decoder.head.2.bias"})


@torch.no_grad()
def test_meta_construction_and_assign_load(pair):
    ours, _ = pair
    sd = {k: v.clone() for k, v in ours.state_dict().items()}
    assert not any("latent" in k for k in sd)  # the statistics are config values, not weights
    with torch.device("meta"):
        model = WanVAE(infer_vae_config({k: v.shape for k, v in sd.items()}))
    assert model.config.latent_mean == WAN21_LATENT_MEAN and model.config.latent_std == WAN21_LATENT_STD
    model.load_state_dict(sd, strict=True, assign=True)  # and nothing else: the model is complete
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(model.eval().decode(z), ours.decode(z))


@torch.no_grad()
def test_tiled_decode_blends_exactly_for_a_local_decoder():
    """A decoder with no spatial context (pointwise, 8x nearest upsampling) must come back unchanged:
    this checks tile placement and that the blend weights sum to one everywhere."""
    proj = torch.randn(3, 16, generator=torch.Generator().manual_seed(9))

    def local(z):
        x = torch.einsum("oc,bcthw->bothw", proj, z)
        return x.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)

    z = torch.randn(1, 16, 2, 13, 11, generator=torch.Generator().manual_seed(10))
    tiled = tiled_decode(local, z, tile_size=(6, 5), tile_stride=(4, 3), scale=8)
    torch.testing.assert_close(tiled, local(z), rtol=1e-5, atol=1e-5)
    # One tile covering everything is exactly the untiled decode.
    assert torch.equal(tiled_decode(local, z, (13, 11), (13, 11)), local(z))


@torch.no_grad()
def test_tiled_decode_close_to_untiled():
    """Tiled vs untiled VAE decode. The gap is set by the decoder's receptive field, not by the blend:
    random weights mix far more than trained ones, so this decoder has the official zero init of the
    attention projection (no global mixing) and residual branches scaled by 0.3 (more local)."""
    vae = randomize_(WanVAE(TINY), seed=11)
    for name, p in vae.decoder.named_parameters():
        if name.endswith("proj.weight"):
            p.zero_()
        elif name.endswith("residual.6.weight"):
            p.mul_(0.3)
    z = torch.randn(1, 16, 1, 20, 20, generator=torch.Generator().manual_seed(8))
    full = vae.decode(z)
    tiled = tiled_decode(vae.decode, z, tile_size=(16, 16), tile_stride=(4, 4), scale=8)
    assert tiled.shape == full.shape
    psnr = 10 * math.log10(4.0 / (tiled - full).pow(2).mean().item())  # peak-to-peak of [-1, 1] is 2
    print(f"tiled vs untiled PSNR={psnr:.1f} dB")
    assert psnr > 40


def test_tiling_validation_and_starts():
    assert tile_starts(12, 8, 4) == [0, 4]
    assert tile_starts(13, 8, 4) == [0, 4, 5]
    assert tile_starts(5, 8, 4) == [0]
    z = torch.zeros(1, 16, 1, 8, 8)
    with pytest.raises(ValueError, match=r"tile_stride=\(6, 4\).*tile_size=\(4, 4\)"):
        tiled_decode(lambda t: t, z, (4, 4), (6, 4))
    with pytest.raises(ValueError, match="tile_size"):
        tiled_decode(lambda t: t, z, (0, 4), (1, 1))


def test_config_validation():
    with pytest.raises(ValueError, match="z_dim=8"):
        WanVAEConfig(z_dim=8)
    with pytest.raises(ValueError, match="temperal_downsample"):
        WanVAEConfig(temperal_downsample=(True,))
    vae = WanVAE(WanVAEConfig(dim=4, dim_mult=(1, 2), temperal_downsample=(True,)))
    with pytest.raises(ValueError, match="frames=4"):
        vae.encode(torch.zeros(1, 3, 4, 16, 16))


@torch.no_grad()
def test_bf16_run_keeps_float32_latent_statistics():
    mean, std = tuple(0.25 * i for i in range(16)), tuple(0.5 + i for i in range(16))
    cfg = WanVAEConfig(dim=4, dim_mult=(1, 2), temperal_downsample=(True,), latent_mean=mean, latent_std=std)
    vae = WanVAE(cfg).to(torch.bfloat16)
    z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    shape = (1, 16, 1, 1, 1)
    # the official arithmetic in float32: divide by the float32 reciprocal of std, add the mean
    raw = z / (1.0 / torch.tensor(std)).view(shape) + torch.tensor(mean).view(shape)
    assert vae.denormalize(z).dtype == torch.float32 and torch.equal(vae.denormalize(z), raw)
    assert torch.equal(
        vae.normalize(raw), (raw - torch.tensor(mean).view(shape)) * (1.0 / torch.tensor(std)).view(shape)
    )
    out = vae.decode(z)
    assert out.shape == (1, 3, 3, 4, 4) and out.dtype == torch.float32
    assert vae.encode(torch.zeros(1, 3, 3, 4, 4)).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_add_conv2d_in_place(dtype):
    """float32 takes oneDNN's in-place accumulation on CPU, float16 the generic add (as on CUDA)."""
    g = torch.Generator().manual_seed(12)
    ring = torch.randn(2, 8, 2, 6, 7, generator=g).contiguous(memory_format=torch.channels_last_3d)
    x, weight = ring[:, :, 1], torch.randn(4, 8, 3, 3, 3, generator=g)[:, :, 2]
    out = torch.randn(2, 4, 6, 7, generator=g)
    expected = out.double() + torch.nn.functional.conv2d(x.double(), weight.double(), padding=1)
    got = out.to(dtype)
    assert add_conv2d_(got, x.to(dtype), weight.to(dtype), (1, 1)) is got
    torch.testing.assert_close(
        got.double(),
        expected,
        rtol=1e-5 if dtype == torch.float32 else 2e-3,
        atol=1e-5 if dtype == torch.float32 else 1e-2,
    )
