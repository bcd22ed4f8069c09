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


def test_hunyuan15_reads_the_quant_fact():
    """model.quant is checked against the DiT's stored precision, as on Wan; fp8 is refused in one line."""
    import copy
    from pathlib import Path

    from telefuser_cli.config.schema import Family, ModelConfig, Quant, RootConfig
    from telefuser_cli.errors import UserError
    from telefuser_cli.families import problems
    from telefuser_cli.families.hunyuan15.pipeline import _check_quant
    from telefuser_cli.loading.hunyuan15 import DiTFacts

    settings = RootConfig(model=ModelConfig(name="hy", root="/", family=Family.hunyuan15, dit="t"))
    settings.model.quant = Quant.bf16
    facts = DiTFacts(meanflow=False, super_resolution=False, vision=False, resolution=None, task=None)
    _check_quant(facts, settings, Path("/w"))  # bf16 weights, bf16 entry
    for stored in ("fp32", "fp8"):
        with pytest.raises(UserError, match=f"holds {stored} weights"):
            _check_quant(DiTFacts(False, False, False, None, None, quant=stored), settings, Path("/w"))
    fp8 = copy.deepcopy(settings)
    fp8.model.quant = Quant.fp8
    assert any(p.startswith("model.quant=fp8: not supported by hunyuan15") for p in problems(fp8))
