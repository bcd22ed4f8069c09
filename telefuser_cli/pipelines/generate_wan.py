"""One Wan generation, top to bottom: locate, encode, load the DiT(s), denoise, decode, write.

Takes the validated typed settings (no DictConfig) and writes into the job's output directory.
Components are loaded one at a time and released after their stage, so at most one large model
(or the two MoE experts) is resident at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from telefuser_cli.config.schema import ModelRuntimeConfig, OffloadType, RootConfig
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.errors import UserError
from telefuser_cli.io.video import to_uint8_frames
from telefuser_cli.loading import wan as wan_loading
from telefuser_cli.ops.sequence_parallel import parallelize_dit
from telefuser_cli.pipelines.image_inputs import (
    ConditionedDiT,
    ImageCondition,
    clip_files_of,
    needs_image,
    prepare_image_condition,
)
from telefuser_cli.pipelines.outputs import (
    GenerationResult,
    finish_video,
    free_memory,
    model_root,
    result_of,
    save_latents,
    vfi_weights,
)
from telefuser_cli.pipelines.plan import EXPERT_NAMES, build_scheduler, step_schedule
from telefuser_cli.pipelines.wan import (
    Expert,
    batched_cfg_guidance,
    denoise,
    encode_text,
    initial_noise,
    two_pass_guidance,
)
from telefuser_cli.progress import Reporter
from telefuser_cli.runtime.compile import compile_blocks
from telefuser_cli.runtime.device import attention_backend, resolve_device, resolve_dtype
from telefuser_cli.runtime.distributed import (
    CfgParallelGuidance,
    ParallelGroups,
    init_distributed,
    is_main_process,
    validate_parallel,
)
from telefuser_cli.runtime.offload import ModelOffload, apply_sequential_offload
from telefuser_cli.runtime.step_cache import FirstBlockCache, apply_step_cache

log = logging.getLogger(__name__)


@dataclass
class DitSpec:
    """One DiT to load: which files, with which runtime settings and guidance."""

    name: str
    files: wan_loading.ComponentFiles
    runtime: ModelRuntimeConfig
    cfg_scale: float


def _dit_specs(settings: RootConfig, root: Path) -> list[DitSpec]:
    model, pipeline = settings.model, settings.pipeline
    if model.moe:
        return [
            DitSpec("dit_high", wan_loading.locate(root, "dit_high", model.dit_high), pipeline.dit_high_config,
                    pipeline.cfg_scale_high),
            DitSpec("dit_low", wan_loading.locate(root, "dit_low", model.dit_low), pipeline.dit_low_config,
                    pipeline.cfg_scale_low),
        ]  # fmt: skip
    return [
        DitSpec("dit", wan_loading.locate(root, "dit", model.dit), pipeline.dit_config, pipeline.cfg_scale)
    ]


@dataclass
class PlacedDiT:
    """A loaded DiT and how it comes to the device for its steps (model offload) and leaves after."""

    module: torch.nn.Module
    offload: ModelOffload | None = None
    cache: FirstBlockCache | None = None
    record: dict[str, Any] = field(default_factory=dict)
    # False when the blocks come to the device only for their own forward (see pipelines.wan.Expert)
    cache_context: bool = True

    def load(self) -> None:
        if self.offload is not None:
            self.offload.load()

    def release(self) -> None:
        if self.offload is not None:
            self.offload.release()
        if self.cache is not None:
            self.cache.reset()


def _load_dit(
    spec: DitSpec,
    device: torch.device,
    settings: RootConfig,
    groups: ParallelGroups,
    condition: ImageCondition | None,
) -> PlacedDiT:
    """Load, then transform from outside: sequence parallel, compile, step cache, image condition, offload."""
    offload_type = spec.runtime.offload_config.offload_type
    offloaded = offload_type is not OffloadType.NO_CPU_OFFLOAD and device.type != "cpu"
    dit = wan_loading.load_dit(
        spec.files,
        dtype=resolve_dtype(spec.runtime),
        device=torch.device("cpu") if offloaded else device,
        attn_backend=attention_backend(spec.runtime, device),
        expected_task=settings.model.task.value,
        model_name=settings.model.name,
        expected_quant=settings.model.quant.value,
        loras=[(lora.path, lora.strength) for lora in spec.runtime.lora_configs],
    )
    dit = parallelize_dit(dit, groups)
    if spec.runtime.compile:
        compile_blocks(dit)
    placed = PlacedDiT(dit)
    threshold = settings.pipeline.step_cache_threshold
    if threshold > 0:
        placed.cache = apply_step_cache(dit, threshold)
    if offload_type is OffloadType.SEQUENTIAL_CPU_OFFLOAD:
        report, _ = apply_sequential_offload(dit, device)
        placed.cache_context = not report.applied
        placed.record["offload"] = {
            "type": offload_type.name,
            "applied": report.applied,
            "reason": report.reason,
        }
    module = dit if condition is None else ConditionedDiT(dit, condition, dit.patch_embedding.weight.device)
    if offload_type is OffloadType.MODEL_CPU_OFFLOAD:
        placed.offload = ModelOffload(module, device) if offloaded else None
        placed.record["offload"] = {
            "type": offload_type.name,
            "applied": offloaded,
            "reason": "" if offloaded else "the device is the CPU: MODEL_CPU_OFFLOAD is a no-op",
        }
    placed.module = module
    return placed


def _check_parallel(specs: list[DitSpec], groups: ParallelGroups) -> None:
    """Degrees against the world and the heads read from the DiT headers: before any work starts."""
    cfg_scales = [spec.cfg_scale for spec in specs]
    for spec in specs:
        parallel = spec.runtime.parallel_config
        try:
            validate_parallel(
                world_size=groups.world_size, num_heads=wan_loading.dit_architecture(spec.files).num_heads,
                cfg_scales=cfg_scales, cfg_degree=parallel.cfg_degree, ulysses_degree=parallel.sp_ulysses_degree,
                ring_degree=parallel.sp_ring_degree,
            )  # fmt: skip
        except ValueError as error:
            raise UserError(f"pipeline.{spec.name}_config.parallel_config: {error}") from None


def _dit_runtime(settings: RootConfig) -> ModelRuntimeConfig:
    pipeline = settings.pipeline
    return pipeline.dit_high_config if settings.model.moe else pipeline.dit_config


def start_parallel(settings: RootConfig) -> ParallelGroups:
    """Join torch.distributed (under torchrun) and build the DiT's cfg / sequence-parallel groups."""
    parallel = _dit_runtime(settings).parallel_config
    try:
        return init_distributed(parallel.cfg_degree, parallel.sp_ulysses_degree, parallel.sp_ring_degree)
    except ValueError as error:
        raise UserError(f"pipeline parallel_config: {error}") from None


def generate_wan(
    settings: RootConfig,
    plan: RunPlan,
    output_dir: Path,
    config_hash: str = "",
    groups: ParallelGroups | None = None,
) -> GenerationResult | None:
    """Run one generation; returns None on the ranks of a distributed run that write nothing."""
    model, pipeline, user = settings.model, settings.pipeline, settings.user
    root = model_root(settings)
    # 1. Find every file before loading any, so a missing VAE fails in seconds, not after denoising.
    specs = _dit_specs(settings, root)
    t5_files = wan_loading.locate(root, "text_encoder", model.text_encoder)
    vae_files = wan_loading.locate(root, "vae", model.vae)
    tokenizer_path = wan_loading.tokenizer_dir(root, model.tokenizer)
    vfi_path = vfi_weights(root, settings)
    groups = groups or ParallelGroups()
    _check_parallel(specs, groups)
    device = (
        groups.device
        if groups.world_size > 1
        else resolve_device(specs[0].runtime, f"{specs[0].name}_config")
    )
    main = is_main_process()
    text_device = resolve_device(pipeline.text_encoding_config, "text_encoding_config")
    vae_device = resolve_device(pipeline.vae_config, "vae_config")
    clip_files = clip_files_of(settings, root) if needs_image(settings) else None
    guided = any(spec.cfg_scale != 1.0 for spec in specs)
    scheduler = build_scheduler(pipeline)
    schedule = step_schedule(pipeline, model.moe, scheduler)

    with Reporter(enabled=main) as reporter:
        # 2. Image-to-video: the output size follows the image; the condition is encoded up front.
        condition = None
        latent_shape = plan.latent_shape
        if needs_image(settings):
            with reporter.stage("encode image"):
                condition = prepare_image_condition(settings, plan, vae_files, clip_files)
            latent_shape = condition.latent_shape(plan.latent_shape[0], plan.latent_shape[1])
            log.info(
                "image-to-video size %dx%d (from the image's aspect ratio)", condition.width, condition.height
            )
            free_memory()

        # 3. Text: the prompt, and the negative prompt only when some expert is guided.
        with reporter.stage("load text encoder"):
            tokenizer = wan_loading.load_wan_tokenizer(tokenizer_path)
            text_encoder = wan_loading.load_text_encoder(
                t5_files, dtype=resolve_dtype(pipeline.text_encoding_config), device=text_device
            )
        with reporter.stage("encode text"):
            prompts = [user.prompt] + ([plan.negative_prompt] if guided else [])
            features = encode_text(text_encoder, tokenizer, prompts, text_device)
            context = features[0][None].to(device)
            context_null = features[1][None].to(device) if guided else None
        del text_encoder
        free_memory()

        # 4. The DiT(s); offloaded experts wait on the host until their steps.
        placed = []
        for spec in specs:
            with reporter.stage(f"load {spec.name}"):
                placed.append(_load_dit(spec, device, settings, groups, condition))
        experts = [
            Expert(p.module, spec.cfg_scale, p.cache_context) for p, spec in zip(placed, specs, strict=True)
        ]

        def switch(old: int, new: int) -> None:
            placed[old].release()
            placed[new].load()

        placed[schedule[0]].load()

        # 5. Noise and the denoising loop (float32 latents and timesteps throughout).
        latents = initial_noise((1, *latent_shape), user.seed, pipeline.rand_device, device)
        if groups.cfg_degree > 1:
            guidance = CfgParallelGuidance(groups.cfg_group, groups.cfg_rank)
        else:
            guidance = batched_cfg_guidance if pipeline.cfg_batch else two_pass_guidance
        with reporter.stage("denoise", total=scheduler.num_steps) as advance:
            latents = denoise(
                latents, scheduler, experts, schedule, context, context_null, advance, switch, guidance
            )
        run_record: dict[str, Any] = {}
        for spec, p in zip(specs, placed, strict=True):
            if p.cache is not None:
                p.record["step_cache"] = {"calls": p.cache.calls, "skipped": p.cache.skipped}
            if p.record:
                run_record[spec.name] = p.record
        experts.clear()
        placed.clear()
        free_memory()
        if not main:  # every rank holds the same latents; rank 0 decodes and writes
            return None

        latents_path = save_latents(output_dir, latents) if settings.output.save_latents else None

        # 6. Decode, then write.
        with reporter.stage("load vae"):
            vae = wan_loading.load_vae(vae_files, dtype=resolve_dtype(pipeline.vae_config), device=vae_device)
        with reporter.stage("decode"):
            z = latents.to(vae_device)
            if pipeline.tiled:
                video = vae.tiled_decode(z, tuple(pipeline.tile_size), tuple(pipeline.tile_stride))
            else:
                video = vae.decode(z)
        del vae
        free_memory()

        frames = to_uint8_frames(video[0])
        del video
        video_path, extra = finish_video(frames, settings, plan, output_dir, config_hash, reporter, vfi_path)
    if condition is not None:
        extra["size_written"] = [condition.width, condition.height]
    extra.update(run_record)
    if model.moe:
        extra["expert_steps"] = {name: schedule.count(i) for i, name in enumerate(EXPERT_NAMES)}
    return result_of(video_path, device, reporter, latents_path, extra)
