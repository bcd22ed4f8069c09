"""One HunyuanVideo 1.5 generation: encode (Qwen2.5-VL + byT5; i2v: the image through SigLIP and the VAE),
denoise, optional super-resolution (t2v), decode, write. The model pieces live in pipelines/hunyuan15*.py;
this file only orders them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from telefuser_cli.config.schema import RootConfig, Task
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.errors import UserError
from telefuser_cli.io.video import to_uint8_frames
from telefuser_cli.loading import hunyuan15 as loading
from telefuser_cli.pipelines import hunyuan15 as hy
from telefuser_cli.pipelines import hunyuan15_image_cond as ic
from telefuser_cli.pipelines.hunyuan15_sr import SIZE_MAP, sr_target_size, super_resolve
from telefuser_cli.pipelines.outputs import (
    GenerationResult,
    finish_video,
    free_memory,
    model_root,
    result_of,
    save_latents,
    vfi_weights,
)
from telefuser_cli.pipelines.wan_image_cond import load_image
from telefuser_cli.progress import Reporter
from telefuser_cli.runtime.device import attention_backend, resolve_device, resolve_dtype
from telefuser_cli.runtime.distributed import ParallelGroups
from telefuser_cli.schedulers import make_scheduler

log = logging.getLogger(__name__)


# The base resolution each official SR stage lifts (SR_PIPELINE_CONFIGS' base_resolution).
SR_BASE = {"720p": "480p", "1080p": "720p"}


def _sr_size(height: int, width: int, resolution: str, sr_resolution: str) -> tuple[int, int]:
    """(height, width) after SR of a ``height x width`` base video: the official bucket map for bucket sizes,
    else the size ratio of the SR stage's two resolutions, rounded to the VAE's 16 pixels."""
    base = resolution if resolution in SIZE_MAP else SR_BASE[sr_resolution]
    try:
        return sr_target_size(height, width, base, sr_resolution)
    except ValueError:
        ratio = SIZE_MAP[sr_resolution] / SIZE_MAP[base]
        return max(16, round(height * ratio / 16) * 16), max(16, round(width * ratio / 16) * 16)


def _decode(vae, latents: torch.Tensor, settings: RootConfig, reporter: Reporter, stage: str, device):
    pipeline = settings.pipeline
    tile = tuple(pipeline.tile_size) if pipeline.tiled else None
    with reporter.stage(stage):
        video = hy.decode(
            vae, latents.to(device), tile, tuple(pipeline.tile_stride), pipeline.tile_frames or None
        )
    return to_uint8_frames(video[0])


def _check_task(facts: loading.DiTFacts, settings: RootConfig, path: Path) -> None:
    """The base transformer must suit the entry's task: i2v needs ``vision_in``; config.json's
    ``ideal_task`` (when it names t2v or i2v) must agree, since t2v and i2v weights have the same shapes."""
    task = settings.model.task.value
    if facts.task in ("t2v", "i2v") and facts.task != task:
        raise UserError(
            f"{path} is a {facts.task} transformer (config.json ideal_task), but model entry "
            f"'{settings.model.name}' is {task}"
        )
    if settings.model.task is Task.i2v and not facts.vision:
        raise UserError(f"{path} has no vision_in (SigLIP image tokens): not an image-to-video transformer")


@dataclass
class ImageInputs:
    """What the image conditions, on the DiT's device: condition channels [1, C + 1, T, h, w] and SigLIP
    tokens [1, N, D] at the base size, and (with super-resolution) the same at the SR size."""

    condition: torch.Tensor
    tokens: torch.Tensor
    width: int
    height: int
    sr_condition: torch.Tensor | None = None
    sr_tokens: torch.Tensor | None = None


def _image_inputs(root: Path, settings: RootConfig, plan: RunPlan, reporter: Reporter, device) -> ImageInputs:
    """i2v: the image sets the size; its first-frame latents and SigLIP tokens condition. With SR, the SR
    stage gets its own: the image cropped to the SR size, as the official SR pipeline prepares it."""
    user, pipeline = settings.user, settings.pipeline
    original = ic.to_pil(load_image(user.input_image))
    base = ic.bucket_base(user.resolution, plan.width, plan.height)
    width, height = ic.bucket_size(original.width, original.height, base)
    log.info(
        "image-to-video size %dx%d: the bucket of user.resolution=%s closest to the %dx%d image's aspect "
        "ratio (user.aspect_ratio is not used)", width, height, user.resolution, original.width, original.height,
    )  # fmt: skip
    sizes = [(width, height)]
    if pipeline.enable_sr:
        sr_height, sr_width = _sr_size(height, width, user.resolution, pipeline.sr_resolution)
        sizes.append((sr_width, sr_height))
    images = [ic.crop_to(original, w, h) for w, h in sizes]
    encoder_device = resolve_device(pipeline.text_encoding_config, "text_encoding_config")
    with reporter.stage("load image encoder"):
        encoder, processor = loading.load_vision_encoder(
            root, resolve_dtype(pipeline.text_encoding_config), encoder_device, settings.model.vision_encoder
        )
    with reporter.stage("encode image"):
        tokens = [ic.image_embeds(encoder, processor, image, encoder_device).to(device) for image in images]
    del encoder
    vae_device = resolve_device(pipeline.vae_config, "vae_config")
    with reporter.stage("load vae"):
        vae = loading.load_vae(root, resolve_dtype(pipeline.vae_config), vae_device, settings.model.vae)
    with reporter.stage("encode first frame"):
        frames = hy.latent_shape(1, plan.num_frames, height, width)[2]
        conditions = [ic.image_condition(vae, image, frames).to(device) for image in images]
    del vae
    free_memory()
    sr = {"sr_condition": conditions[1], "sr_tokens": tokens[1]} if pipeline.enable_sr else {}
    return ImageInputs(conditions[0], tokens[0], width, height, **sr)


def generate_hunyuan15(
    settings: RootConfig,
    plan: RunPlan,
    output_dir: Path,
    config_hash: str = "",
    groups: ParallelGroups | None = None,
) -> GenerationResult | None:
    model, pipeline, user = settings.model, settings.pipeline, settings.user
    if groups is not None and groups.world_size > 1:
        raise UserError("HunyuanVideo 1.5 runs on one process in this version; drop the parallel degrees")
    root = model_root(settings)
    version = Path(model.dit).name
    facts = loading.dit_facts(root, version)  # checks the transformer files before anything loads
    _check_task(facts, settings, root / model.dit)
    i2v = model.task is Task.i2v
    if i2v:
        loading.check_vision_encoder(root, model.vision_encoder)
    if pipeline.enable_sr:
        sr_version, up_version = Path(model.dit_sr).name, Path(model.upsampler).name
        if not loading.dit_facts(root, sr_version).super_resolution:
            raise UserError(f"{root / model.dit_sr} is not a super-resolution transformer (model.dit_sr)")
    vfi_path = vfi_weights(root, settings)
    device = resolve_device(pipeline.dit_config, "dit_config")
    text_device = resolve_device(pipeline.text_encoding_config, "text_encoding_config")
    vae_device = resolve_device(pipeline.vae_config, "vae_config")
    text_dtype = resolve_dtype(pipeline.text_encoding_config)
    guided = pipeline.cfg_scale != 1.0 or (pipeline.enable_sr and pipeline.sr_cfg_scale != 1.0)

    with Reporter() as reporter:
        # 0. Image-to-video: the image sets the size; its first-frame latents and SigLIP tokens condition.
        image = _image_inputs(root, settings, plan, reporter, device) if i2v else None
        width, height = (image.width, image.height) if image else (plan.width, plan.height)

        # 1. Text: Qwen2.5-VL features and byT5 glyph features (quoted text), negative only when guided.
        with reporter.stage("load text encoders"):
            llm, tokenizer, crop_start = loading.load_text_encoder(
                root, text_dtype, text_device, model.text_encoder
            )
            byt5, byt5_tokenizer = loading.load_byt5(root, text_dtype, text_device, model.glyph_encoder)
        with reporter.stage("encode text"):
            with torch.no_grad():
                positive = hy.encode_prompts(
                    llm, tokenizer, byt5, byt5_tokenizer, [user.prompt], device, crop_start
                )
                negative = (
                    hy.encode_prompts(
                        llm, tokenizer, byt5, byt5_tokenizer, [plan.negative_prompt], device, crop_start
                    )
                    if guided
                    else None
                )
        del llm, byt5
        free_memory()

        # 2. The base model.
        with reporter.stage("load dit"):
            attn = attention_backend(pipeline.dit_config, device)
            dit = loading.load_dit(root, version, resolve_dtype(pipeline.dit_config), device, attn)
        channels = dit.config.out_channels
        shape = hy.latent_shape(1, plan.num_frames, height, width, channels=channels)
        latents = hy.initial_noise(shape, user.seed, device)
        condition = image.condition if image else hy.t2v_condition(latents)
        scheduler = make_scheduler(
            "euler", pipeline.num_inference_steps, pipeline.sigma_shift, pipeline.timesteps
        )
        with reporter.stage("denoise", total=scheduler.num_steps) as advance:
            latents = hy.denoise(
                dit, latents, scheduler, condition, positive, negative if pipeline.cfg_scale != 1.0 else None,
                pipeline.cfg_scale, advance, image.tokens if image else None,
            )  # fmt: skip
        del dit
        free_memory()

        with reporter.stage("load vae"):
            vae = loading.load_vae(root, resolve_dtype(pipeline.vae_config), vae_device, model.vae)
        extra: dict = {"meanflow": facts.meanflow}
        if i2v:
            extra["size_written"] = [width, height]
        if pipeline.enable_sr:
            if pipeline.save_pre_sr_video or settings.output.keep_intermediate:
                frames = _decode(vae, latents, settings, reporter, "decode base", vae_device)
                finish_video(
                    frames, settings, plan, output_dir, config_hash, reporter, None, name="video_pre_sr.mp4"
                )
            # 3. Super-resolution: upsample the latents, then a few SR steps conditioned on them.
            base_size = (width, height)
            height, width = _sr_size(height, width, user.resolution, pipeline.sr_resolution)
            with reporter.stage("load sr"):
                sr_dit = loading.load_dit(root, sr_version, resolve_dtype(pipeline.dit_config), device, attn)
                upsampler = loading.load_upsampler(root, up_version, device)
            with reporter.stage("super-resolve", total=pipeline.sr_steps) as advance:
                latents = super_resolve(
                    sr_dit, upsampler, latents, (height // 16, width // 16), positive,
                    negative if pipeline.sr_cfg_scale != 1.0 else None, user.seed, steps=pipeline.sr_steps,
                    shift=pipeline.sr_shift, cfg_scale=pipeline.sr_cfg_scale,
                    lq_noise_strength=pipeline.lq_noise_strength, on_step=advance,
                    base_condition=image.sr_condition if image else None,
                    image_embeds=image.sr_tokens if image else None,
                )  # fmt: skip
            del sr_dit, upsampler
            free_memory()
            extra["size_written"] = [width, height]
            log.info("super-resolution %dx%d -> %dx%d", *base_size, width, height)

        latents_path = save_latents(output_dir, latents) if settings.output.save_latents else None
        frames = _decode(vae, latents, settings, reporter, "decode", vae_device)
        del vae
        free_memory()
        video_path, record = finish_video(frames, settings, plan, output_dir, config_hash, reporter, vfi_path)
    return result_of(video_path, device, reporter, latents_path, {**record, **extra})
