"""`telefuser generate recipe=tiny_flf2v` end to end: a first and a last frame make a video; a missing last
frame is refused before anything runs; a last frame of another size is cropped or padded as the official
code does (never resized)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image
from safetensors.torch import load_file


def _save(path, pixels: np.ndarray):
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def frames(tmp_path):
    y, x = np.mgrid[0:32, 0:32]
    first = _save(tmp_path / "first.png", np.stack([x * 7, y * 5, (x + y) * 3], -1))
    last = _save(tmp_path / "last.png", np.stack([255 - x * 7, y * 3, (x * y) % 255], -1))
    return first, last


def _generate(out, *overrides: str):
    return run_cli(
        "generate", "recipe=tiny_flf2v", "prompt=a ball rolls", "pipeline.num_inference_steps=3",
        "pipeline.num_frames=9", "output.save_latents=true", f"hydra.run.dir={out}", *overrides,
    )  # fmt: skip


def test_first_and_last_frame_make_a_video(tmp_path, frames):
    first, last = frames
    out = tmp_path / "run"
    result = _generate(out, f"user.input_image={first}", f"user.end_image={last}")
    assert result.exit_code == 0, result.stderr
    assert (out / "video.mp4").stat().st_size > 0
    document = json.loads((out / "config.json").read_text())
    assert document["status"] == "done"
    assert document["layer1_model_definition"]["facts"]["task"] == "flf2v"
    assert document["run"]["size_written"] == [32, 32]
    assert document["layer3_user_inputs"]["end_image"] == str(last)


def test_a_missing_last_frame_is_refused_in_one_line(tmp_path, frames):
    out = tmp_path / "run"
    result = _generate(out, f"user.input_image={frames[0]}")
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "user.end_image=PATH" in message, message
    assert not out.exists()  # refused before the job started


def _latents(out) -> torch.Tensor:
    return load_file(out / "latents.safetensors")["latents"]


def test_a_last_frame_of_another_size_is_centre_cropped_not_resized(tmp_path, frames):
    """The official rule for a 64x64 last frame after a 32x32 first one: its central 32x32, unscaled."""
    first, _ = frames
    y, x = np.mgrid[0:64, 0:64]
    large = np.stack([x * 4, 255 - y * 4, (x * y) % 255], -1)
    runs = {
        "large": _save(tmp_path / "large.png", large),
        "centre": _save(tmp_path / "centre.png", large[16:48, 16:48]),
        "scaled": _save(tmp_path / "scaled.png", np.asarray(Image.fromarray(large.astype(np.uint8)).resize((32, 32)))),
    }  # fmt: skip
    latents = {}
    for name, last in runs.items():
        result = _generate(tmp_path / name, f"user.input_image={first}", f"user.end_image={last}", "seed=3")
        assert result.exit_code == 0, result.stderr
        latents[name] = _latents(tmp_path / name)
    assert torch.equal(latents["large"], latents["centre"])
    assert not torch.allclose(latents["large"], latents["scaled"], rtol=0, atol=1e-4)
