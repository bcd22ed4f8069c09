"""Options the chosen family or component would not read are refused in one line, before anything loads."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

REFUSED = [
    (
        [
            "model=tiny_hunyuan15",
            "pipeline.dit_config.parallel_config.sp_ulysses_degree=2",
            "launcher.nproc_per_node=2",
        ],
        "pipeline.dit_config.parallel_config.sp_ulysses_degree=2: not supported by hunyuan15 (supported by wan)",
    ),
    (["model=tiny_hunyuan15", "pipeline.boundary=0.9"], "pipeline.boundary=0.9: not supported by hunyuan15"),
    (
        ["recipe=tiny", "pipeline.vae_config.compile=true"],
        "pipeline.vae_config.compile=true: only the DiT takes it",
    ),
    (
        ["recipe=tiny", "pipeline.text_encoding_config.offload_config.offload_type=SEQUENTIAL_CPU_OFFLOAD"],
        "offload_type=SEQUENTIAL_CPU_OFFLOAD: only the DiT takes it",
    ),
    # flash-attn is not installed here, so this names the missing package first; either way it is refused
    (
        ["recipe=tiny", "pipeline.vae_config.attention_config.attn_impl=FLASH_ATTN_2"],
        "attn_impl=FLASH_ATTN_2",
    ),
    # keys read by nothing are not in the schema at all
    (["recipe=tiny", "pipeline.dit_config.parallel_config.device_ids=[0,1]"], "unknown key"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[o[-1].split("=")[0] for o, _ in REFUSED])
def test_an_option_nothing_reads_is_refused(overrides, message):
    result = run_cli("dump-config", *overrides)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["recipe=tiny", "pipeline.dit_config.compile=true", "pipeline.cfg_batch=true"],
        ["recipe=tiny", "pipeline.sample_solver=euler", "pipeline.step_cache_threshold=0.1"],
        ["recipe=tiny_moe", "pipeline.dit_config.offload_config.offload_type=MODEL_CPU_OFFLOAD"],
        ["model=tiny_hunyuan15", "pipeline.dit_config.torch_dtype=float32"],
        # HunyuanVideo 1.5 samples through the shared loop: every solver, batched guidance
        ["model=tiny_hunyuan15", "pipeline.sample_solver=unipc", "pipeline.cfg_batch=true"],
        ["model=tiny_hunyuan15", "pipeline.step_cache_threshold=0.1", "pipeline.dit_config.compile=true"],
        ["model=tiny_hunyuan15", "pipeline.dit_config.offload_config.offload_type=MODEL_CPU_OFFLOAD"],
    ],
)
def test_the_same_options_where_they_are_read_are_accepted(overrides):
    result = run_cli("dump-config", *overrides)
    assert result.exit_code == 0, result.stderr


def test_an_unknown_entry_name_gets_the_closest_name_in_one_line():
    result = run_cli("dump-config", "recipe=tinyy")
    assert result.exit_code == 2
    assert "no recipe entry is called 'tinyy'; did you mean recipe=tiny?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
