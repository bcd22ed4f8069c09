"""Every real HunyuanVideo 1.5 entry carries the official settings of its transformer version.

The expected values are the official tables of Tencent-Hunyuan/HunyuanVideo-1.5 (hyvideo/commons):
PIPELINE_CONFIGS (cfg and shift per version), TRANSFORMER_VERSION_TO_SR_VERSION (which SR stage follows a
base) and SR_PIPELINE_CONFIGS (SR steps and shift per SR version).
"""

from __future__ import annotations

import pytest

from tests.helpers import dump

# version: (guidance scale, flow shift)
PIPELINE_CONFIGS = {
    "480p_t2v": (6.0, 5.0),
    "480p_i2v": (6.0, 5.0),
    "720p_t2v": (6.0, 9.0),
    "720p_i2v": (6.0, 7.0),
    "480p_t2v_distilled": (1.0, 5.0),
    "480p_i2v_distilled": (1.0, 5.0),
    "720p_t2v_distilled": (1.0, 9.0),
    "720p_i2v_distilled": (1.0, 7.0),
    "480p_i2v_step_distilled": (1.0, 7.0),  # the step-distilled release: 8 or 12 steps, shift 7, cfg 1
}
# SR version: (base resolution, SR resolution, steps, shift)
SR_CONFIGS = {"720p_sr_distilled": ("480p", "720p", 6, 2.0), "1080p_sr_distilled": ("720p", "1080p", 8, 2.0)}


@pytest.mark.parametrize("version", sorted(PIPELINE_CONFIGS))
def test_entry_matches_the_official_tables(version):
    config = dump(f"model=hunyuan15_{version}", "prompt=x")
    model, pipeline = config["layer1_model_definition"], config["layer2_inference_config"]
    paths = {component["name"]: component["path"] for component in model["models"]}
    facts = model["facts"]
    assert paths["dit"].endswith(f"transformer/{version}")
    assert facts["task"] == ("i2v" if "i2v" in version else "t2v")
    assert facts["distill"] == ("distilled" in version)
    assert config["pipeline_type"] == f"hunyuan15_{facts['task']}"
    assert (pipeline["cfg_scale"], pipeline["sigma_shift"]) == PIPELINE_CONFIGS[version]
    assert pipeline["num_inference_steps"] == (8 if "step_distilled" in version else 50)
    assert (pipeline["num_frames"], pipeline["fps"]) == (121, 24)

    sr_version = "1080p_sr_distilled" if version.startswith("720p") else "720p_sr_distilled"
    assert paths["dit_sr"].endswith(f"transformer/{sr_version}")
    assert paths["upsampler"].endswith(f"upsampler/{sr_version}")
    base, target, steps, shift = SR_CONFIGS[sr_version]
    assert version.startswith(base)
    assert (pipeline["sr_resolution"], pipeline["sr_steps"], pipeline["sr_shift"]) == (target, steps, shift)


def test_1080p_recipe_runs_the_720p_base_then_1080p_sr():
    config = dump("recipe=hunyuan15_1080p_t2v_sr", "prompt=x")
    pipeline = config["layer2_inference_config"]
    assert config["layer1_model_definition"]["name"] == "hunyuan15_720p_t2v"
    assert config["choices"]["pipeline"] == "hunyuan15_720p_t2v_default"
    assert pipeline["enable_sr"] is True and pipeline["sr_resolution"] == "1080p"
    assert (config["derived"]["width"], config["derived"]["height"]) == (1280, 720)
