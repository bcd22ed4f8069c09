"""Speed and memory options through the CLI on the tiny model: batched CFG, offload modes, step cache."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

COMMON = ["recipe=tiny", "prompt=a cat", "seed=5", "resolution=32x32", "pipeline.num_frames=5",
          "pipeline.num_inference_steps=3", "output.save_latents=true"]  # fmt: skip


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _run(tmp_path, name, tiny_root, *extra):
    out = tmp_path / name
    result = run_cli("generate", *COMMON, f"model.root={tiny_root}", f"hydra.run.dir={out}", *extra)
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "config.json").read_text())["run"]
    return load_file(out / "latents.safetensors")["latents"], record


def test_batched_cfg_equals_two_passes_bitwise(tmp_path, tiny_root):
    two_pass, _ = _run(tmp_path, "two", tiny_root)
    batched, _ = _run(tmp_path, "batched", tiny_root, "pipeline.cfg_batch=true")
    assert torch.equal(two_pass, batched)


@pytest.mark.parametrize("mode", ["MODEL_CPU_OFFLOAD", "SEQUENTIAL_CPU_OFFLOAD"])
def test_offload_on_a_cpu_is_a_reported_no_op(tmp_path, tiny_root, mode):
    plain, _ = _run(tmp_path, "plain", tiny_root)
    offloaded, record = _run(
        tmp_path, "offload", tiny_root, f"pipeline.dit_config.offload_config.offload_type={mode}"
    )
    assert torch.equal(plain, offloaded)
    assert record["dit"]["offload"]["applied"] is False and "no-op" in record["dit"]["offload"]["reason"]


def test_step_cache_is_recorded_and_exact_at_zero(tmp_path, tiny_root):
    plain, _ = _run(tmp_path, "plain", tiny_root)
    cached, record = _run(tmp_path, "cached", tiny_root, "pipeline.step_cache_threshold=1e9")
    assert record["dit"]["step_cache"]["skipped"] > 0
    assert not torch.equal(plain, cached)  # skipping blocks changes the result: the option really acts
    result = run_cli("generate", "--dry-run", *COMMON, "pipeline.step_cache_threshold=-1")
    assert result.exit_code == 2 and "must be >= 0" in result.stderr
