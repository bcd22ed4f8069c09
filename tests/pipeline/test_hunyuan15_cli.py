"""HunyuanVideo 1.5 through the CLI on the tiny model: base generation, super-resolution, refusals."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import pytest
from helpers import dump, run_cli


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_base_and_super_resolution(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "generate", "recipe=tiny_hunyuan15", 'prompt=a sign that says "open"', "pipeline.num_inference_steps=2",
        "pipeline.save_pre_sr_video=true", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "config.json").read_text())
    assert document["run"]["size_written"] == [64, 48]  # 48x32 base, lifted by 960/640
    final = imageio.get_reader(out / "video.mp4")
    assert next(iter(final)).shape == (48, 64, 3)
    assert next(iter(imageio.get_reader(out / "video_pre_sr.mp4"))).shape == (32, 48, 3)


def test_base_only(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "generate", "recipe=tiny_hunyuan15", "prompt=a cat", "pipeline.enable_sr=false",
        "pipeline.num_inference_steps=2", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert next(iter(imageio.get_reader(out / "video.mp4"))).shape == (32, 48, 3)


def test_official_defaults_and_sr_recipe():
    base = dump("recipe=hunyuan15_480p_t2v")["layer2_inference_config"]
    assert (base["num_inference_steps"], base["sigma_shift"], base["cfg_scale"]) == (50, 5.0, 6.0)
    assert (base["num_frames"], base["fps"], base["sample_solver"]) == (121, 24, "euler")
    sr = dump("recipe=hunyuan15_720p_t2v_sr")
    assert sr["layer2_inference_config"]["enable_sr"] is True
    assert (sr["derived"]["width"], sr["derived"]["height"]) == (848, 480)
    distilled = dump("recipe=hunyuan15_480p_i2v_step_distill")["layer2_inference_config"]
    assert (distilled["num_inference_steps"], distilled["cfg_scale"], distilled["sigma_shift"]) == (
        8,
        1.0,
        7.0,
    )
    assert dump("model=hunyuan15_720p_t2v")["layer2_inference_config"]["sigma_shift"] == 9.0


def test_super_resolution_needs_a_model_that_has_it():
    result = run_cli("generate", "--dry-run", "recipe=tiny", "prompt=x", "pipeline.enable_sr=true")
    assert result.exit_code == 2 and "no super-resolution stage" in " ".join(result.stderr.split())


def test_image_to_video_is_not_available_yet():
    result = run_cli(
        "generate", "--dry-run", "recipe=hunyuan15_480p_i2v", "prompt=x", "user.input_image=x.png"
    )
    assert result.exit_code == 2
