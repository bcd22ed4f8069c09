"""A family spec's latent geometry (torch-free, used by every check before loading) is what its VAE says.

The spec cannot import the VAE's config (torch); this ties the two together on each tiny entry, so a VAE
whose compression or channels change cannot leave the size checks and the latent shape behind.
"""

from __future__ import annotations

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from telefuser_cli.config.validate import to_settings
from telefuser_cli.families import spec_of
from telefuser_cli.families.tiny import prepare_root
from telefuser_cli.loading import hunyuan15 as hunyuan15_loading
from telefuser_cli.loading import wan as wan_loading


def _vae(settings):
    root = prepare_root(settings.model)
    if spec_of(settings.model.family).name == "hunyuan15":
        return hunyuan15_loading.load_vae(root, torch.float32, torch.device("cpu"), settings.model.vae)
    files = wan_loading.locate(root, "vae", settings.model.vae)
    return wan_loading.load_vae(files, dtype=torch.float32, device=torch.device("cpu"))


@pytest.mark.parametrize("entry", ["tiny_wan21_random", "tiny_wan21_i2v", "tiny_hunyuan15"])
def test_the_spec_geometry_is_the_vae_config(entry):
    from telefuser_cli.config.hydra_app import HydraApp

    settings = to_settings(HydraApp().compose([f"model={entry}"]))
    GlobalHydra.instance().clear()
    geometry = spec_of(settings.model.family).geometry(settings.model)
    config = _vae(settings).config
    assert (geometry.temporal, geometry.spatial) == (config.temporal_compression, config.spatial_compression)
    # channels: the released VAE's; a tiny HunyuanVideo VAE is narrower (4), and its pipeline reads the
    # latent channels off the loaded DiT, so only the Wan entries (16, read by the Wan pipeline) must agree
    if spec_of(settings.model.family).name == "wan":
        assert geometry.channels == config.latent_channels
