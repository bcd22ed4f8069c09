"""`telefuser generate ... launcher.nproc_per_node=2`: telefuser starts torchrun itself; each parallel layout
writes one output directory (rank 0) whose latents equal the single-process run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

COMMON = ["recipe=tiny", "prompt=a red ball", "seed=3", "resolution=48x48", "pipeline.num_inference_steps=3",
          "pipeline.num_frames=5", "output.save_latents=true"]  # fmt: skip


def _generate(tmp_path, tiny_root, name, *extra):
    out = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    result = subprocess.run(
        [sys.executable, "-m", "telefuser_cli", "generate", *COMMON, f"model.root={tiny_root}",
         f"hydra.run.dir={out}", *extra],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize(
    "layout",
    [
        ["pipeline.dit_config.parallel_config.sp_ulysses_degree=2"],
        ["pipeline.dit_config.parallel_config.cfg_degree=2"],
    ],
    ids=["ulysses2", "cfg2"],
)
def test_launcher_runs_torchrun_and_matches_one_process(tmp_path, tiny_root, layout):
    single = load_file(_generate(tmp_path, tiny_root, "single") / "latents.safetensors")["latents"]
    out = _generate(tmp_path, tiny_root, "parallel", "launcher.nproc_per_node=2", *layout)
    parallel = load_file(out / "latents.safetensors")["latents"]
    error = ((parallel - single).abs().max() / single.abs().max()).item()
    assert error <= 1e-5, error
    assert (out / "video.mp4").is_file()
    assert json.loads((out / "config.json").read_text())["launcher"]["nproc_per_node"] == 2
    assert torch.isfinite(parallel).all()


def test_degrees_must_fill_the_processes(tmp_path, tiny_root):
    result = subprocess.run(
        [sys.executable, "-m", "telefuser_cli", "generate", *COMMON, f"model.root={tiny_root}",
         "launcher.nproc_per_node=2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "world size is 2" in " ".join(result.stderr.split())


def test_hunyuan15_cfg_parallel_matches_one_process(tmp_path):
    """HunyuanVideo 1.5 samples through the shared loop: its two guidance passes split over two processes."""
    common = ["model=tiny_hunyuan15", "prompt=a red ball", "seed=3", "output.save_latents=true"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}

    def run(name, *extra):
        out = tmp_path / name
        result = subprocess.run(
            [sys.executable, "-m", "telefuser_cli", "generate", *common, f"hydra.run.dir={out}", *extra],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return load_file(out / "latents.safetensors")["latents"], json.loads(
            (out / "config.json").read_text()
        )

    single, _ = run("single")
    parallel, record = run(
        "parallel", "launcher.nproc_per_node=2", "pipeline.dit_config.parallel_config.cfg_degree=2"
    )
    assert record["run"]["guidance"] == "cfg-parallel"
    error = ((parallel - single).abs().max() / single.abs().max()).item()
    assert error <= 1e-5, error
