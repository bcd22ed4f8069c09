"""The generation entry point: picks the model family's pipeline (imports torch)."""

from __future__ import annotations

from pathlib import Path

from telefuser_cli.config.schema import Family, RootConfig
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.pipelines.generate_wan import generate_wan, start_parallel
from telefuser_cli.pipelines.outputs import GenerationResult, oom_as_user_error
from telefuser_cli.runtime.distributed import ParallelGroups

__all__ = ["generate", "start_parallel"]


def generate(
    settings: RootConfig,
    plan: RunPlan,
    output_dir: Path,
    config_hash: str = "",
    groups: ParallelGroups | None = None,
) -> GenerationResult | None:
    """Run one generation; returns None on the ranks of a distributed run that write nothing.

    Every allocation of the run (loading, noise, encoding, decoding, writing) is inside one out-of-memory
    guard, which names the progress stage that ran out.
    """
    with oom_as_user_error():
        if settings.model.family is Family.hunyuan15:
            from telefuser_cli.pipelines.generate_hunyuan15 import generate_hunyuan15

            return generate_hunyuan15(settings, plan, output_dir, config_hash, groups)
        return generate_wan(settings, plan, output_dir, config_hash, groups)
