"""HunyuanVideo 1.5 through the CLI on the tiny models: base generation, super-resolution, image-to-video,
refusals."""

from __future__ import annotations

import json
import shutil

import imageio.v2 as imageio
import numpy as np
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


def test_super_resolution_to_1080p(tmp_path):
    """The 1080p SR stage (an SRTo1080pUpsampler) after the base: 1.5x, as from 720p to 1080p."""
    out = tmp_path / "run"
    result = run_cli(
        "generate", "recipe=tiny_hunyuan15", "prompt=a cat", "pipeline.num_inference_steps=1",
        "model.dit_sr=transformer/1080p_sr_distilled", "model.upsampler=upsampler/1080p_sr_distilled",
        "pipeline.sr_resolution=1080p", "pipeline.sr_steps=2", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["run"]["size_written"] == [64, 48]
    assert next(iter(imageio.get_reader(out / "video.mp4"))).shape == (48, 64, 3)


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
        12,  # the official default (8 is the documented faster choice)
        1.0,
        7.0,
    )
    assert dump("model=hunyuan15_720p_t2v")["layer2_inference_config"]["sigma_shift"] == 9.0


def test_super_resolution_needs_a_model_that_has_it():
    result = run_cli("generate", "--dry-run", "recipe=tiny", "prompt=x", "pipeline.enable_sr=true")
    message = " ".join(result.stderr.split())
    assert (
        result.exit_code == 2
        and "pipeline.enable_sr=true: not supported by wan (supported by hunyuan15)" in message
    )


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "input.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((50, 90, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _refused(result, message: str) -> None:
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2, text
    assert message in text, text
    assert "Traceback" not in text


def test_image_to_video(tmp_path, image):
    out = tmp_path / "run"
    result = run_cli(
        "generate", "recipe=tiny_hunyuan15_i2v", "prompt=the ball starts rolling", f"user.input_image={image}",
        "pipeline.num_inference_steps=2", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "config.json").read_text())
    assert document["layer1_model_definition"]["facts"]["task"] == "i2v"
    assert document["run"]["size_written"] == [48, 32]  # the 90x50 image's bucket at the 48x32 budget
    reader = imageio.get_reader(out / "video.mp4")
    assert reader.count_frames() == 5 and next(iter(reader)).shape == (32, 48, 3)


def test_image_to_video_needs_an_image():
    result = run_cli("generate", "recipe=tiny_hunyuan15_i2v", "prompt=x")
    _refused(result, "turns an image into a video: set user.input_image=PATH")


def test_image_to_video_needs_the_image_encoder(tmp_path, image):
    root = tmp_path / "model"
    first = run_cli("generate", "recipe=tiny_hunyuan15_i2v", "prompt=x", f"user.input_image={image}",
                    "pipeline.num_inference_steps=1", f"hydra.run.dir={tmp_path / 'first'}")  # fmt: skip
    assert first.exit_code == 0, first.stderr
    cache = json.loads((tmp_path / "first" / "config.json").read_text())["layer1_model_definition"]["root"]
    shutil.copytree(cache, root)
    shutil.rmtree(root / "vision_encoder")
    result = run_cli("generate", "recipe=tiny_hunyuan15_i2v", "prompt=x", f"user.input_image={image}",
                     f"model.root={root}", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    _refused(result, "image-to-video needs the SigLIP encoder in vision_encoder/siglip/")
    assert not (tmp_path / "run" / "video.mp4").exists()


def test_image_to_video_then_super_resolution(tmp_path, image):
    out = tmp_path / "run"
    result = run_cli(
        "generate", "recipe=tiny_hunyuan15_i2v", "prompt=the ball starts rolling", f"user.input_image={image}",
        "pipeline.num_inference_steps=2", "pipeline.enable_sr=true", "pipeline.sr_steps=2",
        "output.keep_intermediate=true", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["run"]["size_written"] == [64, 48]
    assert next(iter(imageio.get_reader(out / "video.mp4"))).shape == (48, 64, 3)
    assert next(iter(imageio.get_reader(out / "video_pre_sr.mp4"))).shape == (32, 48, 3)


def test_super_resolution_must_match_its_transformer():
    result = run_cli("generate", "--dry-run", "recipe=hunyuan15_1080p_t2v_sr", "prompt=x",
                     "pipeline.sr_resolution=720p")  # fmt: skip
    _refused(result, "is a 1080p SR stage: set pipeline.sr_resolution=1080p")


def test_temporal_tiles_are_for_hunyuan_only():
    result = run_cli("generate", "--dry-run", "recipe=tiny", "prompt=x", "pipeline.tile_frames=4")
    _refused(result, "pipeline.tile_frames=4: not supported by wan (supported by hunyuan15)")


def test_image_to_video_refusals(image):
    # the task is the model's: a text-to-video entry's sampling settings serve the image-to-video model
    mixed = run_cli("generate", "--dry-run", "model=tiny_hunyuan15_i2v", "pipeline=tiny_hunyuan15",
                    "prompt=x", f"user.input_image={image}")  # fmt: skip
    assert mixed.exit_code == 0, mixed.stderr
    unnamed = run_cli("generate", "--dry-run", "recipe=tiny_hunyuan15_i2v", "prompt=x",
                      f"user.input_image={image}", "model.vision_encoder=null")  # fmt: skip
    _refused(unnamed, "names no image encoder: set model.vision_encoder")


@pytest.mark.parametrize("recipe", ["hunyuan15_480p_i2v", "hunyuan15_480p_i2v_step_distill"])
def test_real_image_to_video_recipes_validate(recipe, image):
    config = dump(f"recipe={recipe}")
    assert config["layer1_model_definition"]["facts"]["task"] == "i2v"
    result = run_cli("generate", "--dry-run", f"recipe={recipe}", "prompt=x", f"user.input_image={image}")
    assert result.exit_code == 0, result.stderr
