"""Wan2.2 TI2V-5B through the CLI on the tiny fixture: text-to-video, and image-to-video from one image."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import torch
from helpers import dump, run_cli
from safetensors.torch import load_file


def test_tiny_ti2v_text_to_video_writes_a_video_and_48_channel_latents(tmp_path):
    out = tmp_path / "run"
    result = run_cli("generate", "recipe=tiny_ti2v", "prompt=a red ball moving right",
                     "output.save_latents=true", f"hydra.run.dir={out}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    frames = [frame for frame in imageio.get_reader(out / "video.mp4")]  # its length is unknown: no list()
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)
    latents = load_file(out / "latents.safetensors")["latents"]
    # 48 channels; 5 frames -> 2 latent frames; 64 px / 16 -> 4
    assert latents.dtype == torch.float32 and tuple(latents.shape) == (48, 2, 4, 4)
    assert torch.isfinite(latents).all()


def test_tiny_ti2v_image_to_video_sizes_from_the_image_and_writes_a_video(tmp_path):
    """A 90x50 image under the 64x64 budget: the official rule gives 64x64 (cover-resized, centre-cropped)."""
    from PIL import Image

    image = tmp_path / "wide.png"
    Image.new("RGB", (90, 50), (200, 30, 30)).save(image)
    out = tmp_path / "run"
    result = run_cli("generate", "recipe=tiny_ti2v", "prompt=a red ball", f"user.input_image={image}",
                     "output.save_latents=true", f"hydra.run.dir={out}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "config.json").read_text())
    assert document["run"]["size_written"] == [64, 64]
    assert document["layer3_user_inputs"]["input_image"] == str(image)
    frames = [frame for frame in imageio.get_reader(out / "video.mp4")]
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)


def test_ti2v_with_a_missing_image_fails_in_one_line_before_anything(tmp_path):
    out = tmp_path / "run"
    result = run_cli("generate", "recipe=tiny_ti2v", "prompt=x", f"user.input_image={tmp_path / 'none.png'}",
                     f"hydra.run.dir={out}")  # fmt: skip
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "user.input_image=" in message, message
    assert not out.exists()


def test_dump_config_of_the_official_entry_still_works():
    document = dump("model=wan22_ti2v_5b")
    assert "timesteps" in str(document)
