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
    "480p_i2v_step_distilled": (1.0, 7.0),  # the step-distilled release: 12 steps (README: 8 or 12), cfg 1
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
    assert (pipeline["cfg_scale"], pipeline["sigma_shift"]) == PIPELINE_CONFIGS[version]
    assert pipeline["num_inference_steps"] == (
        12 if "step_distilled" in version else 50
    )  # the official table
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
    assert config["choices"]["pipeline"] == "hunyuan15_720p_t2v"
    assert pipeline["enable_sr"] is True and pipeline["sr_resolution"] == "1080p"
    assert (config["derived"]["width"], config["derived"]["height"]) == (1280, 720)


# (resolution, aspect ratio) -> (width, height): the official t2v size, worked out by hand from the official
# rule (get_closest_resolution_given_original_size: generate_crop_size_list(base, 16) with base 640 at 480p
# and 960 at 720p, each (w, h) entry read as (h, w), the first entry of closest h/w ratio (rounded to 5
# decimals) to the aspect ratio's). E.g. 720p 9:16: 3600 patches; 45x80 patches (ratio 1.77778) is closest.
OFFICIAL_T2V_SIZES = {
    ("480p", "16:9"): (848, 480), ("480p", "9:16"): (480, 848), ("480p", "4:3"): (720, 544),
    ("480p", "3:4"): (544, 720), ("480p", "1:1"): (640, 640), ("480p", "3:2"): (768, 512),
    ("480p", "2:3"): (512, 768),
    ("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280), ("720p", "4:3"): (1104, 832),
    ("720p", "3:4"): (832, 1104), ("720p", "1:1"): (960, 960), ("720p", "3:2"): (1168, 784),
    ("720p", "2:3"): (784, 1168),
}  # fmt: skip


@pytest.mark.parametrize("resolution", ["480p", "720p"])
def test_t2v_sizes_are_the_official_buckets(resolution):
    for (res, aspect), size in OFFICIAL_T2V_SIZES.items():
        if res != resolution:
            continue
        config = dump(f"model=hunyuan15_{res}_t2v", "prompt=x", f"resolution={res}", f"aspect_ratio={aspect}")
        assert (config["derived"]["width"], config["derived"]["height"]) == size, (res, aspect)
