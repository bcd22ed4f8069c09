"""Wan2.2 TI2V-5B through the CLI: text-to-video runs on the tiny fixture; image-to-video is refused."""

from __future__ import annotations

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


def test_ti2v_with_an_image_is_refused_in_one_line_before_anything(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"not read")
    for dry in (["--dry-run"], []):
        out = tmp_path / f"run{len(dry)}"
        result = run_cli("generate", *dry, "recipe=tiny_ti2v", "prompt=x", f"user.input_image={image}",
                         f"hydra.run.dir={out}")  # fmt: skip
        assert result.exit_code == 2
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert (
            "image-to-video with model tiny_wan22_ti2v (ti2v) is not available in this version: "
            "run it without user.input_image" in message
        )
        assert not out.exists()


def test_dump_config_of_the_official_entry_still_works():
    document = dump("model=wan22_ti2v_5b")
    assert "timesteps" in str(document)
