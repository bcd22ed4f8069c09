"""Speed and memory options through the CLI on the tiny model: batched CFG, offload modes, step cache."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import assert_rel_close, max_rel_err, run_cli
from safetensors.torch import load_file

from telefuser_cli.pipelines.sampling import Batched

pytestmark = pytest.mark.numeric

COMMON = ["recipe=tiny", "prompt=a cat", "seed=5", "resolution=32x32", "pipeline.num_frames=5",
          "pipeline.num_inference_steps=3", "output.save_latents=true"]  # fmt: skip
# Batched CFG against two passes: a batch of 2 may take other kernels than two batches of 1 (an AMX Xeon does),
# so not bitwise. Max relative error of the final latents, float32, measured on an AMD EPYC: 0 under the default
# kernels, ATEN_CPU_CAPABILITY=default/avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=COMPATIBLE and the AVX2 set of
# `make test-kernels`; 1.0e-6 with the batched run's linears summing in another order (K in two halves, or in
# float64). A guidance scale of 3.96 for 4 gives 4.1e-4, 3 for 4 gives 1.0e-2, no guidance 3.1e-2.
BATCH_TOL = 2e-5


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_root) -> torch.Tensor:
    """The final latents with every option at its default, shared by the tests below (one run, not four)."""
    out = tmp_path_factory.mktemp("plain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out)
        latents, record = _run(out, "run", tiny_root)
    assert not {"offload", "step_cache"} & set(record.get("dit", {}))  # both off by default
    return latents


def _run(tmp_path, name, tiny_root, *extra):
    out = tmp_path / name
    result = run_cli("generate", *COMMON, f"model.root={tiny_root}", f"hydra.run.dir={out}", *extra)
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "config.json").read_text())["run"]
    return load_file(out / "latents.safetensors")["latents"], record


def test_batched_cfg_matches_two_passes(tmp_path, tiny_root, plain, monkeypatch):
    batches = []
    real = Batched.__call__

    def spy(self, denoiser, latents, *args):
        batches.append(latents.shape[0])
        return real(self, denoiser, latents, *args)

    monkeypatch.setattr(Batched, "__call__", spy)
    batched, _ = _run(tmp_path, "batched", tiny_root, "pipeline.cfg_batch=true")
    assert batches == [1, 1, 1]  # the option reached the loop: every step went through batched guidance
    assert_rel_close(batched, plain, BATCH_TOL)


@pytest.mark.parametrize("mode", ["MODEL_CPU_OFFLOAD", "SEQUENTIAL_CPU_OFFLOAD"])
def test_offload_on_a_cpu_is_a_reported_no_op(tmp_path, tiny_root, plain, mode):
    offloaded, record = _run(
        tmp_path, "offload", tiny_root, f"pipeline.dit_config.offload_config.offload_type={mode}"
    )
    report = record["dit"]["offload"]
    assert report["type"] == mode and report["applied"] is False and "no-op" in report["reason"]
    assert torch.equal(plain, offloaded)  # nothing was applied: the same kernels on the same data


def test_step_cache_is_off_at_zero_and_recorded_above(tmp_path, tiny_root, plain):
    off, record = _run(tmp_path, "zero", tiny_root, "pipeline.step_cache_threshold=0")
    assert "step_cache" not in record.get("dit", {})  # 0 = off: no cache installed, nothing to record
    assert torch.equal(plain, off)
    cached, record = _run(tmp_path, "cached", tiny_root, "pipeline.step_cache_threshold=1e9")
    # 3 steps x (cond, uncond); only each branch's first call runs every block
    assert record["dit"]["step_cache"] == {"calls": 6, "skipped": 4}
    # skipping blocks changes the result: the option really acts (measured 0.15; round-off is ~1e-6)
    assert max_rel_err(cached, plain) > 1e-3
    result = run_cli("generate", "--dry-run", *COMMON, "pipeline.step_cache_threshold=-1")
    assert result.exit_code == 2 and "must be >= 0" in result.stderr
