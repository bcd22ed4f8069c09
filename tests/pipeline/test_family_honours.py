"""Options HunyuanVideo 1.5 reads through the shared sampling loop change what runs, and the record says so.

(tests/unit/test_family_options.py checks that every option is honoured or refused; the Wan family's
options have their own tests in tests/pipeline/test_runtime_options.py.)
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.helpers import max_rel_err, run_cli


def _generate(tmp_path, name: str, *overrides: str):
    out = tmp_path / name
    result = run_cli(
        "generate", "model=tiny_hunyuan15", "prompt=a red ball", "seed=3", "output.save_latents=true",
        f"hydra.run.dir={out}", *overrides,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / "config.json").read_text())
    return load_file(str(out / "latents.safetensors"))["latents"], record


@pytest.fixture(scope="module")
def euler(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("hy"), "euler")


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_hunyuan15_samples_with_the_chosen_solver(tmp_path, euler, solver):
    latents, record = _generate(tmp_path, solver, f"pipeline.sample_solver={solver}")
    assert record["layer2_inference_config"]["sample_solver"] == solver
    assert record["sampling"]["timesteps"] != euler[1]["sampling"]["timesteps"]
    # another solver on the same noise: a different trajectory (errors of a few percent on 4 steps)
    assert max_rel_err(latents, euler[0]) > 1e-3


def test_hunyuan15_batched_guidance_equals_two_passes(tmp_path, euler):
    latents, record = _generate(tmp_path, "batched", "pipeline.cfg_batch=true")
    assert record["run"]["guidance"] == "batched" and euler[1]["run"]["guidance"] == "two-pass"
    assert max_rel_err(latents, euler[0]) < 2e-5  # the tolerance of tests/unit/test_batched_cfg.py


def test_hunyuan15_step_cache_and_offload_reach_the_dit(tmp_path, euler):
    latents, record = _generate(tmp_path, "cached", "pipeline.step_cache_threshold=1e9")
    assert record["run"]["dit"]["step_cache"]["skipped"] > 0
    assert max_rel_err(latents, euler[0]) > 1e-3  # skipped blocks: another result
    latents, record = _generate(
        tmp_path, "offload", "pipeline.dit_config.offload_config.offload_type=SEQUENTIAL_CPU_OFFLOAD"
    )
    assert record["run"]["dit"]["offload"]["applied"] is False  # on a CPU: recorded as a no-op
    assert max_rel_err(latents, euler[0]) == 0
