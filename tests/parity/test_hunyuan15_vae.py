"""HunyuanVideo 1.5 VAE parity against diffusers' AutoencoderKLHunyuanVideo15 (tiny random weights, float32)."""

from __future__ import annotations

import pytest
import torch

from telefuser_cli.loading.hunyuan15_arch import (
    diffusers_to_official_vae,
    infer_vae_config,
    official_to_diffusers_vae,
)
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE, Hunyuan15VAEConfig

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLHunyuanVideo15  # noqa: E402

# 5 levels as released (16x space: 4 resamplings, the last two also 2x in time), tiny widths
TINY = Hunyuan15VAEConfig(latent_channels=4, block_out_channels=(8, 8, 16, 16, 16), layers_per_block=1)


def tiny_official_state_dict(cfg: Hunyuan15VAEConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        keys = Hunyuan15VAE(cfg).state_dict()
    sd = {}
    for k, t in keys.items():
        if k.endswith(".gamma"):
            sd[k] = 1.0 + 0.2 * torch.randn(t.shape, generator=g)
        elif t.ndim == 1:
            sd[k] = 0.1 * torch.randn(t.shape, generator=g)
        else:
            sd[k] = torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5
    return sd


@pytest.fixture(scope="module")
def models():
    sd = tiny_official_state_dict(TINY)
    with torch.device("meta"):
        ours = Hunyuan15VAE(TINY)
    ours.load_state_dict(sd, strict=True, assign=True)
    ref = AutoencoderKLHunyuanVideo15(
        latent_channels=TINY.latent_channels,
        block_out_channels=TINY.block_out_channels,
        layers_per_block=TINY.layers_per_block,
        scaling_factor=TINY.scaling_factor,
    )
    ref.load_state_dict(official_to_diffusers_vae(sd), strict=True)
    return ours.eval(), ref.eval(), sd


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_layout_round_trip_and_config_inference(models):
    _, ref, sd = models
    back = diffusers_to_official_vae(official_to_diffusers_vae(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert diffusers_to_official_vae(ref.state_dict()).keys() == sd.keys()
    assert infer_vae_config(sd) == TINY
    assert infer_vae_config(sd, {"scaling_factor": 0.5, "latent_channels": 4}).scaling_factor == 0.5
    with pytest.raises(ValueError, match="latent_channels=32"):
        infer_vae_config(sd, {"latent_channels": 32})


@torch.no_grad()
def test_decode_parity(models):
    ours, ref, _ = models
    z = torch.randn(1, TINY.latent_channels, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    expected = ref.decoder(z)
    got = ours.decoder(z)
    assert got.shape == expected.shape == (1, 3, 9, 32, 32)
    err = rel_err(got, expected)
    print(f"decoder max rel err {err:.2e}")
    assert err < 1e-4
    # the public decode takes normalised latents (z * scaling_factor) and clamps to [-1, 1]
    video = ours.decode(z * TINY.scaling_factor)
    assert (video - expected.clamp(-1, 1)).abs().max() < 1e-4


@torch.no_grad()
def test_encode_parity(models):
    ours, ref, _ = models
    x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected = ref.encoder(x)
    got = ours.encoder(x)
    assert got.shape == expected.shape == (1, 2 * TINY.latent_channels, 3, 2, 2)
    err = rel_err(got, expected)
    print(f"encoder max rel err {err:.2e}")
    assert err < 1e-4
    # as the diffusers i2v pipeline: posterior mode times scaling_factor
    mode = ref.encode(x).latent_dist.mode() * ref.config.scaling_factor
    assert rel_err(ours.encode(x), mode) < 1e-4
    with pytest.raises(ValueError, match="frames = 1 \\+ 4"):
        ours.encode(x[:, :, :8])


def test_config_checks():
    with pytest.raises(ValueError, match="levels"):
        Hunyuan15VAEConfig(block_out_channels=(128, 256, 512, 1024))
    with pytest.raises(ValueError, match="divisible by 2\\*latent_channels"):
        Hunyuan15VAEConfig(latent_channels=48)


def test_full_size_layout_matches_diffusers_default():
    with torch.device("meta"):
        ours = Hunyuan15VAE()
        ref = AutoencoderKLHunyuanVideo15()
    converted = {k: tuple(v.shape) for k, v in official_to_diffusers_vae(ours.state_dict()).items()}
    assert converted == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    diffusers_json = dict(ref.config, _class_name="AutoencoderKLHunyuanVideo15")
    assert infer_vae_config(ours.state_dict(), diffusers_json) == ours.config
