"""Image-to-video inputs, LoRA merging and fp8 weights through the real CLI on tiny models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image
from safetensors.torch import load_file, save_file

from telefuser_cli.families.wan.tiny import DIT_FILE

FAST = ["pipeline.num_inference_steps=2", "pipeline.num_frames=5", "output.save_latents=true"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _image(path, width=64, height=40):
    y, x = np.mgrid[0:height, 0:width]
    Image.fromarray(np.stack([x * 4, y * 6, x * 0 + 128], -1).astype(np.uint8)).save(path)
    return path


def _run(out, *overrides):
    result = run_cli("generate", *FAST, f"hydra.run.dir={out}", *overrides)
    return result, out


def test_wan21_image_to_video_with_clip_follows_the_image_aspect(tmp_path, i2v_root):
    image = _image(tmp_path / "in.png")
    result, out = _run(
        tmp_path / "run", "model=tiny_wan21_i2v", f"model.root={i2v_root}", "prompt=a ball",
        f"user.input_image={image}", "resolution=64x64",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "config.json").read_text())
    assert document["run"]["size_written"] == [80, 48]  # 64x40 image under a 64*64 pixel budget
    assert tuple(load_file(out / "latents.safetensors")["latents"].shape) == (16, 2, 6, 10)


def test_image_to_video_needs_an_existing_image(tmp_path, i2v_root):
    result, _ = _run(tmp_path / "run", "model=tiny_wan21_i2v", f"model.root={i2v_root}", "prompt=x")
    assert result.exit_code == 2 and "user.input_image=PATH" in result.stderr
    result, _ = _run(tmp_path / "run", "model=tiny_wan21_i2v", "prompt=x", "user.input_image=nope.png")
    assert result.exit_code == 2 and "user.input_image=nope.png does not exist" in result.stderr


def _lora_for(dit_path, path, rank=2):
    """A PEFT-style LoRA on every self-attention q projection of the tiny DiT."""
    weights = load_file(dit_path)
    generator = torch.Generator().manual_seed(0)
    lora = {}
    for key, weight in weights.items():
        if key.endswith("self_attn.q.weight"):
            module = key.removesuffix(".weight")
            lora[f"diffusion_model.{module}.lora_A.weight"] = torch.randn(
                rank, weight.shape[1], generator=generator
            )
            lora[f"diffusion_model.{module}.lora_B.weight"] = torch.randn(
                weight.shape[0], rank, generator=generator
            )
    save_file(lora, path)
    return path


def test_lora_strength_changes_the_result_and_zero_is_a_no_op(tmp_path, tiny_root):
    lora = _lora_for(tiny_root / DIT_FILE, tmp_path / "style.safetensors")
    common = ["recipe=tiny", f"model.root={tiny_root}", "prompt=a cat", "seed=3", "resolution=32x32"]
    latents = {}
    for name, extra in (
        ("plain", []),
        ("zero", [f"+pipeline.dit_config.lora_configs=[{{path:'{lora}',strength:0.0}}]"]),
        ("full", [f"+pipeline.dit_config.lora_configs=[{{path:'{lora}',strength:1.0}}]"]),
    ):
        result, out = _run(tmp_path / name, *common, *extra)
        assert result.exit_code == 0, result.stderr
        latents[name] = load_file(out / "latents.safetensors")["latents"]
    assert torch.equal(latents["plain"], latents["zero"])
    assert not torch.allclose(latents["plain"], latents["full"], atol=1e-3)


def test_missing_lora_file_is_refused_before_loading(tmp_path):
    result, _ = _run(
        tmp_path / "run",
        "recipe=tiny",
        "prompt=x",
        "+pipeline.dit_config.lora_configs=[{path:'none.safetensors'}]",
    )
    assert result.exit_code == 2 and "lora_configs[0].path=none.safetensors does not exist" in result.stderr


def test_fp8_weights_under_a_full_precision_entry_are_refused(tmp_path, tiny_root):
    root = tmp_path / "weights"
    shutil.copytree(tiny_root, root)
    weights = load_file(root / DIT_FILE)
    save_file(
        {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in weights.items()}, root / DIT_FILE
    )
    result, out = _run(tmp_path / "run", "recipe=tiny", f"model.root={root}", "prompt=x")
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "holds fp8 weights" in text and "model.quant=fp32" in text
    assert not (out / "video.mp4").exists()
