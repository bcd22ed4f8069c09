"""The one driver: every family's generation in the same numbered steps (imports torch).

1. locate    every file of the run is found and checked before anything loads
2. image     image-to-video: the image is encoded (the output size may follow it)
3. text      the prompt, and the negative prompt only when some pass is guided
4. stage     the family loads its DiT(s) and draws the noise
5. sample    the one sampling loop (pipelines/sampling.py) runs the trajectory
6. refine    further stages from the latents (HunyuanVideo 1.5 super-resolution), each sampled as in 5
7. decode    the VAE turns the final latents into frames
8. write     frame interpolation (optional), the video, and the record config.json keeps

Each step frees what it loaded before the next one starts, except what the process keeps for its next job
(``runtime/resident.py``, ``pipeline.keep_loaded``); the progress reporter times every stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telefuser_cli.config.schema import RootConfig
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.errors import UserError
from telefuser_cli.families import pipeline_class
from telefuser_cli.families.base import FamilyPipeline, SamplingStage
from telefuser_cli.pipelines.outputs import (
    GenerationResult,
    finish_video,
    oom_as_user_error,
    result_of,
    save_latents,
    vfi_weights,
)
from telefuser_cli.pipelines.sampling import Batched, CfgParallel, Guidance, TwoPass, sample
from telefuser_cli.progress import Reporter
from telefuser_cli.runtime.device import free_memory
from telefuser_cli.runtime.distributed import ParallelGroups, init_distributed, is_main_process
from telefuser_cli.runtime.resident import RESIDENT

__all__ = ["generate", "start_parallel"]


def start_parallel(settings: RootConfig) -> ParallelGroups:
    """Join torch.distributed (under torchrun) and build the DiT's cfg / sequence-parallel groups.

    A mixture of experts' experts share one parallel layout (the Wan spec checks it), so the first DiT's is it.
    """
    pipeline = settings.pipeline
    runtime = pipeline.dit_high_config if settings.model.moe else pipeline.dit_config
    parallel = runtime.parallel_config
    try:
        return init_distributed(parallel.cfg_degree, parallel.sp_ulysses_degree, parallel.sp_ring_degree)
    except ValueError as error:
        raise UserError(f"pipeline parallel_config: {error}") from None


def _guidance(settings: RootConfig, groups: ParallelGroups) -> Guidance:
    if groups.cfg_degree > 1:
        return CfgParallel(groups.cfg_group, groups.cfg_rank)
    return Batched() if settings.pipeline.cfg_batch else TwoPass()


def _run(stage: SamplingStage, guidance: Guidance, reporter: Reporter) -> tuple[Any, dict[str, Any]]:
    with reporter.stage(stage.name, total=stage.scheduler.num_steps) as advance:
        latents = sample(
            stage.latents, stage.scheduler, stage.denoisers, stage.text, stage.text_null,
            schedule=stage.schedule, guidance=guidance, on_step=advance, on_switch=stage.on_switch,
            after_step=stage.after_step,
        )  # fmt: skip
    stage.latents = None  # the starting noise is no longer needed
    record = stage.release()
    free_memory()
    return latents, {**record, "guidance": guidance.name}


def generate(
    settings: RootConfig,
    plan: RunPlan,
    output_dir: Path,
    config_hash: str = "",
    groups: ParallelGroups | None = None,
    keep: bool = False,
) -> GenerationResult | None:
    """Run one generation; returns None on the ranks of a distributed run that write nothing.

    ``keep``: another job may follow in this process (a sweep), so what this one loads and encodes is kept
    for it when ``pipeline.keep_loaded`` (``runtime/resident.py``).

    Every allocation of the run is inside one out-of-memory guard, which names the stage that ran out.
    """
    groups = groups or ParallelGroups()
    RESIDENT.start_job(keep and settings.pipeline.keep_loaded)
    try:
        result = _generate(settings, plan, output_dir, config_hash, groups)
    except BaseException:  # what a failed job kept may be half-moved or mid-trajectory: start clean
        RESIDENT.clear()
        raise
    RESIDENT.end_job()
    return result


def _generate(
    settings: RootConfig, plan: RunPlan, output_dir: Path, config_hash: str, groups: ParallelGroups
) -> GenerationResult | None:
    with oom_as_user_error():
        family: FamilyPipeline = pipeline_class(settings.model)(settings, plan, groups)
        family.locate()  # 1
        vfi_path = vfi_weights(settings)
        main = is_main_process()
        guidance = _guidance(settings, groups)
        with Reporter(enabled=main) as reporter:
            family.encode_image(reporter)  # 2
            prompts = [settings.user.prompt] + ([plan.negative_prompt] if family.guided() else [])
            text, *rest = family.encode_text(reporter, prompts)  # 3
            text_null = rest[0] if rest else None
            stage = family.first_stage(reporter, text, text_null)  # 4
            latents, record = _run(stage, guidance, reporter)  # 5
            family.record.update(record)

            def write_intermediate(latents, name: str) -> None:
                if main:
                    frames = family.decode(reporter, latents, "decode base")
                    finish_video(frames, settings, plan, output_dir, config_hash, reporter, None, name=name)

            # every rank refines (a guided stage exchanges its passes), each holding the same latents
            stage = family.refine_stage(reporter, latents, text, text_null, write_intermediate)
            if stage is not None:
                latents, record = _run(stage, guidance, reporter)  # 6
                family.record.update(record)
            if not main:  # rank 0 decodes and writes
                return None
            del text, text_null
            latents_path = save_latents(output_dir, latents) if settings.output.save_latents else None
            frames = family.decode(reporter, latents)  # 7
            del latents
            video_path, written = finish_video(  # 8
                frames, settings, plan, output_dir, config_hash, reporter, vfi_path
            )
    # what this job took from earlier ones instead of loading or encoding it (pipeline.keep_loaded)
    reused = {"reused": list(dict.fromkeys(RESIDENT.reused)), "kept_for_next_job": RESIDENT.enabled}
    return result_of(
        video_path, family.device, reporter, latents_path, {**written, **family.record, **reused}
    )
