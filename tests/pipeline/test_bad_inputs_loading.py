"""Bad weights, images, paths and prompts through the real CLI: one line, exit 2, no traceback; and a
16-bit image or an over-long prompt that now work as they should."""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image
from safetensors.torch import load_file, save_file

from telefuser_cli.families.wan.tiny import DIT_FILE

FAST = ["pipeline.num_inference_steps=1", "pipeline.num_frames=5"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _generate(out, *overrides):
    return run_cli("generate", *FAST, f"hydra.run.dir={out}", *overrides)


def _refused(result, out, *phrases: str) -> str:
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    squeezed = "".join(text.split())  # the console wraps long lines, even inside a path
    for phrase in phrases:
        assert "".join(phrase.split()) in squeezed, text
    assert not (out / "video.mp4").exists()
    return text


def _grey(width=64, height=40) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 3 + y * 2) % 256).astype(np.uint8)


def test_sixteen_bit_png_gives_the_video_of_its_eight_bit_twin(tmp_path, i2v_root):
    """The same grey levels stored in 16 bits (v * 257) must give exactly the same run, not a white image."""
    grey = _grey()
    Image.fromarray(grey, "L").save(tmp_path / "grey8.png")
    sixteen = Image.frombytes("I;16", grey.shape[::-1], (grey.astype("<u2") * 257).tobytes())
    sixteen.save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    latents = []
    for name in ("grey8", "grey16"):
        out = tmp_path / name
        result = _generate(out, "model=tiny_wan21_i2v", f"model.root={i2v_root}", "prompt=a ball", "seed=1",
                           f"user.input_image={tmp_path / name}.png", "resolution=64x64",
                           "output.save_latents=true")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        latents.append(load_file(out / "latents.safetensors")["latents"])
    assert torch.equal(latents[0], latents[1])


def test_image_with_a_huge_header_is_refused(tmp_path, i2v_root):
    path = tmp_path / "huge.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = (30000).to_bytes(4, "big") * 2  # the IHDR chunk's width and height
    data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, "big")  # and its checksum over type + data
    path.write_bytes(bytes(data))
    out = tmp_path / "run"
    result = _generate(
        out, "model=tiny_wan21_i2v", f"model.root={i2v_root}", "prompt=x", f"user.input_image={path}"
    )
    _refused(result, out, f"user.input_image={path} has 900,000,000 pixels, more than the limit")


def test_image_that_is_text_is_refused(tmp_path, i2v_root):
    path = tmp_path / "photo.jpg"
    path.write_text("not really a photo")
    out = tmp_path / "run"
    result = _generate(
        out, "model=tiny_wan21_i2v", f"model.root={i2v_root}", "prompt=x", f"user.input_image={path}"
    )
    _refused(result, out, f"user.input_image={path} is not a readable image")


def test_integer_dit_weights_name_the_key_and_dtype(tmp_path, tiny_root):
    root = tmp_path / "model"
    shutil.copytree(tiny_root, root)
    weights = load_file(str(root / DIT_FILE))
    weights["blocks.0.self_attn.q.weight"] = weights["blocks.0.self_attn.q.weight"].to(torch.int8)
    save_file(weights, str(root / DIT_FILE))
    out = tmp_path / "run"
    result = _generate(out, "recipe=tiny", f"model.root={root}", "prompt=x")
    _refused(result, out, f"{root / DIT_FILE}: blocks.0.self_attn.q.weight is stored as int8")


def test_lora_that_is_a_text_file(tmp_path, tiny_root):
    lora = tmp_path / "style.safetensors"
    lora.write_text("trigger: watercolor\n")
    out = tmp_path / "run"
    result = _generate(out, "recipe=tiny", f"model.root={tiny_root}", "prompt=x",
                       f"pipeline.dit_config.lora_configs=[{{path:{lora}}}]")  # fmt: skip
    text = _refused(result, out, f"{lora} is not a safetensors or PyTorch checkpoint (it looks like text")
    assert "code execution" not in text


@pytest.mark.parametrize("kind", ["file", "loop"])
def test_model_root_that_is_not_a_folder(tmp_path, kind):
    root = tmp_path / "weights"
    if kind == "file":
        root.write_text("x")
    else:
        root.symlink_to(root)
    out = tmp_path / "run"
    result = _generate(out, "recipe=tiny", f"model.root={root}", "prompt=x")
    _refused(result, out, f"{root} is a regular file" if kind == "file" else f"{root} is a symlink loop")


def test_over_long_prompt_is_logged_in_the_job_log(tmp_path, tiny_root):
    out = tmp_path / "run"
    prompt = " ".join(["red ball"] * 300)  # 600 words: past UMT5's 512 tokens
    result = _generate(out, "recipe=tiny", f"model.root={tiny_root}", f"prompt={prompt}", "resolution=32x32")
    assert result.exit_code == 0, result.stderr
    log = (out / "telefuser.log").read_text()
    assert "is 601 tokens long, but the UMT5 text encoder reads 512: the last 89 tokens are dropped" in log
    assert log.count("tokens are dropped") == 1  # the default negative prompt fits
