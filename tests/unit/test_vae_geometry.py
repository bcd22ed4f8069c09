"""The video VAEs' common interface: geometry and latent statistics on ``vae.config``, complete after a
``meta`` build + ``load_state_dict(assign=True)``, and the shared blocks of ``models.video_vae_blocks``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from telefuser_cli.families.wan.image import ImageCondition
from telefuser_cli.families.wan.image_cond import condition_latents
from telefuser_cli.loading.wan_vae_arch import infer_vae_config
from telefuser_cli.models.causal_conv import CausalConv3d
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE, Hunyuan15VAEConfig
from telefuser_cli.models.video_vae_blocks import channels_to_space, mean_shortcut, space_to_channels
from telefuser_cli.models.wan_vae import WanVAE, WanVAEConfig
from telefuser_cli.models.wan_vae_stats import WAN21_LATENT_MEAN, WAN21_LATENT_STD

# Wan with 2 resamplings, one of them temporal: 4x space, 2x time.
WAN_SMALL = WanVAEConfig(dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, False))
HY_TINY = Hunyuan15VAEConfig(latent_channels=4, block_out_channels=(8, 8, 16, 16, 16), layers_per_block=1)


@pytest.mark.parametrize(
    ("config", "geometry"),
    [
        (WanVAEConfig(), (16, 4, 8)),
        (WAN_SMALL, (16, 2, 4)),
        (Hunyuan15VAEConfig(), (32, 4, 16)),
    ],
)
def test_geometry_is_read_the_same_way_on_every_vae(config, geometry):
    assert (config.latent_channels, config.temporal_compression, config.spatial_compression) == geometry


def test_the_loader_picks_the_latent_statistics_by_latent_width():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVAE(WAN_SMALL).state_dict().items()}
        cfg = infer_vae_config(shapes)
        assert (cfg.latent_mean, cfg.latent_std) == (WAN21_LATENT_MEAN, WAN21_LATENT_STD)
        odd = WanVAEConfig(
            dim=4,
            dim_mult=(1, 2),
            temperal_downsample=(True,),
            z_dim=8,
            latent_mean=(0.0,) * 8,
            latent_std=(1.0,) * 8,
        )
        odd_shapes = {k: v.shape for k, v in WanVAE(odd).state_dict().items()}
    with pytest.raises(ValueError, match="no released Wan VAE has z_dim=8"):
        infer_vae_config(odd_shapes)
    with pytest.raises(ValueError, match="latent_mean has 16"):
        WanVAEConfig(z_dim=8)


def _random_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(v.shape, generator=g) * 0.2 + 1.0 * k.endswith("gamma")
        for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("make", [lambda: WanVAE(WAN_SMALL), lambda: Hunyuan15VAE(HY_TINY)])
@torch.no_grad()
def test_a_meta_built_vae_is_complete_after_an_assign_load(make):
    eager = make().eval()
    weights = _random_weights(eager)
    eager.load_state_dict(weights)
    with torch.device("meta"):
        loaded = make().eval()
    loaded.load_state_dict(weights, strict=True, assign=True)  # no other call
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    c = loaded.config
    z = torch.randn(1, c.latent_channels, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    video = loaded.decode(z)
    assert video.shape == (
        1,
        3,
        1 + c.temporal_compression,
        2 * c.spatial_compression,
        3 * c.spatial_compression,
    )
    assert torch.equal(video, eager.decode(z))


@torch.no_grad()
def test_image_condition_follows_the_vae_stride():
    vae = WanVAE(WAN_SMALL).eval()  # stride 4, 2 frames per latent frame
    y = condition_latents(vae, torch.zeros(3, 10, 10), num_frames=5, width=12, height=8)
    assert y.shape == (1, 2 + 16, 3, 2, 3)  # 2 mask channels (one per pixel frame of a latent frame)
    cond = ImageCondition(y, None, width=12, height=8, vae_stride=4)
    assert cond.latent_shape(16, 3) == (16, 3, 2, 3)
    with pytest.raises(ValueError, match="VAE stride 4"):
        condition_latents(vae, torch.zeros(3, 10, 10), num_frames=5, width=10, height=8)


@pytest.mark.parametrize("channels_outer", [False, True])
def test_space_to_channels_order_and_inverse(channels_outer):
    c, ft, fs = 3, 2, 2
    x = torch.arange(c * 4 * 6 * 4, dtype=torch.float32).view(1, c, 4, 6, 4)
    packed = space_to_channels(x, ft, fs, channels_outer)
    assert packed.shape == (1, c * 8, 2, 3, 2)
    assert torch.equal(channels_to_space(packed, ft, fs, channels_outer), x)
    # where source pixel (channel 1, frame 1, row 2, column 1) lands: block (0, 1, 0), phase (1, 0, 1)
    phase = (1 * fs + 0) * fs + 1
    channel = 1 * ft * fs * fs + phase if channels_outer else phase * c + 1
    assert packed[0, channel, 0, 1, 0] == x[0, 1, 1, 2, 1]
    # the shortcut averages groups of consecutive packed channels
    assert torch.equal(mean_shortcut(x, ft, fs, 6, channels_outer), packed.view(1, 6, 4, 2, 3, 2).mean(dim=2))


@torch.no_grad()
def test_causal_conv_pads_the_past_with_zeros_or_the_first_frame():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 3, 5, 5, generator=g)
    for mode in ("zeros", "replicate"):
        conv = CausalConv3d(2, 3, 3, padding=1, pad_mode=mode)
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        y = conv(x)
        assert y.shape == (1, 3, 3, 5, 5)
        # the first output frame: the past taps see zeros, or two copies of frame 0
        taps = conv.weight[:, :, 2] if mode == "zeros" else conv.weight.sum(dim=2)
        frame = x[:, :, 0] if mode == "zeros" else F.pad(x[:, :, 0], (1, 1, 1, 1), mode="replicate")
        first = F.conv2d(frame, taps, conv.bias, padding=1 if mode == "zeros" else 0)
        torch.testing.assert_close(y[:, :, 0], first, rtol=1e-5, atol=1e-5)
