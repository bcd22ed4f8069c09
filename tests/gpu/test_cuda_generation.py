"""Whole generations on a CUDA device through the CLI (skipped without one; CI has none).

What only a GPU can show: the device path gives the CPU's latents to float32 round-off, the offload modes
really move weights (and change nothing in the result), bf16 stays close to float32, and config.json records
the device's peak memory. Run them with ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

WAN = ["recipe=tiny", "prompt=a red ball moving right", "seed=3", "resolution=64x64",
       "pipeline.num_frames=9", "pipeline.num_inference_steps=4", "output.save_latents=true"]  # fmt: skip
HUNYUAN = ["recipe=tiny_hunyuan15", "prompt=a cat", "seed=3", "output.save_latents=true"]
COMPONENTS = ("dit_config", "text_encoding_config", "vae_config")


@pytest.fixture(autouse=True)
def _exact_float32(tmp_path, monkeypatch):
    """TF32 off (cuDNN enables it for convolutions by default) so float32 means float32 on both sides."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _run(tmp_path, name: str, common: list[str], device: str, *extra: str):
    out = tmp_path / name
    devices = [f"pipeline.{c}.device_type={device}" for c in COMPONENTS]
    result = run_cli("generate", *common, *devices, f"hydra.run.dir={out}", *extra)
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "config.json").read_text())["run"]
    return load_file(out / "latents.safetensors")["latents"], record


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("common", [WAN, HUNYUAN], ids=["wan", "hunyuan15"])
def test_cuda_float32_equals_cpu_to_round_off(tmp_path, common):
    cpu, _ = _run(tmp_path, "cpu", common, "cpu")
    cuda, record = _run(tmp_path, "cuda", common, "cuda")
    assert _rel(cuda, cpu) < 1e-4
    assert record["peak_memory"]["device_gib"] > 0


@pytest.mark.parametrize("mode", ["MODEL_CPU_OFFLOAD", "SEQUENTIAL_CPU_OFFLOAD"])
def test_offload_changes_nothing_but_memory(tmp_path, mode):
    plain, plain_record = _run(tmp_path, "plain", WAN, "cuda")
    offloaded, record = _run(
        tmp_path, "offload", WAN, "cuda", f"pipeline.dit_config.offload_config.offload_type={mode}"
    )
    assert record["dit"]["offload"]["applied"] is True
    assert torch.equal(plain, offloaded)


def test_bf16_stays_close_to_float32(tmp_path):
    fp32, _ = _run(tmp_path, "fp32", WAN, "cuda")
    bf16, _ = _run(
        tmp_path, "bf16", WAN, "cuda",
        "pipeline.dit_config.torch_dtype=bfloat16", "pipeline.text_encoding_config.torch_dtype=bfloat16",
    )  # fmt: skip
    assert bf16.dtype == torch.float32  # latents stay float32 whatever the network runs in
    assert _rel(bf16, fp32) < 5e-2
