"""Crop-and-blend tiled decoding against diffusers' AutoencoderKLHunyuanVideo15.tiled_decode (tiny random
weights, float32): with the same decoder and tile settings the tiling itself is bit-exact; with our decoder
the video agrees to round-off."""

from __future__ import annotations

import pytest
import torch

from telefuser_cli.ops.crop_blend_tiling import crop_blend_decode
from tests.parity.test_hunyuan15_vae import TINY, models  # noqa: F401  (the shared tiny VAE pair)

pytestmark = pytest.mark.numeric


@pytest.mark.parametrize(("tile", "overlap", "size"), [(4, 0.25, (5, 7)), (4, 0.5, (5, 6)), (2, 0.0, (3, 4))])
@torch.no_grad()
def test_matches_diffusers_tiled_decode(models, tile, overlap, size):  # noqa: F811
    ours, ref, _ = models
    z = torch.randn(1, TINY.latent_channels, 1, *size, generator=torch.Generator().manual_seed(5))
    ref.enable_tiling(tile_sample_min_height=tile * 16, tile_sample_min_width=tile * 16)
    ref.tile_latent_min_height = ref.tile_latent_min_width = tile
    ref.tile_overlap_factor = overlap  # set directly: enable_tiling treats 0.0 as "keep the default"
    expected = ref.tiled_decode(z)
    stride = int(tile * (1 - overlap))  # the reference's tile_latent_min_size * (1 - tile_overlap_factor)
    same_decoder = crop_blend_decode(ref.decoder, z, (tile, tile), (stride, stride), scale=16)
    assert same_decoder.shape == expected.shape == (1, 3, 1, size[0] * 16, size[1] * 16)
    assert torch.equal(same_decoder, expected), (same_decoder - expected).abs().max()
    got = crop_blend_decode(ours.decoder, z, (tile, tile), (stride, stride), scale=16)
    assert (got - expected).abs().max() / expected.abs().max() < 1e-5
    assert not torch.allclose(got, ours.decoder(z), atol=1e-3)  # tiles really were decoded apart


@pytest.mark.parametrize(("tile", "stride"), [((4, 4), (0, 2)), ((4, 4), (5, 4)), ((4,), (2,))])
def test_rejects_tiles_that_leave_gaps(tile, stride):
    with pytest.raises(ValueError, match="stride|tile"):
        crop_blend_decode(lambda t: t, torch.zeros(1, 1, 1, 4, 4), tile, stride, scale=16)
