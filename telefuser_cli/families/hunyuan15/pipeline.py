"""The HunyuanVideo 1.5 family at run time: Qwen2.5-VL + byT5 text, the DiT, the optional SR stage, the VAE.

Image-to-video encodes the image first (SigLIP tokens and first-frame VAE latents; the bucket closest to
the image's aspect ratio sets the size). Super-resolution is a second sampling stage: the base latents are
upsampled, noised and refined by the SR transformer (:mod:`.sr`). Text: :mod:`.text`; latents and noise:
:mod:`.latents`; VAE decoding: :mod:`.decode`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from telefuser_cli.config.schema import OffloadType, RootConfig, Task
from telefuser_cli.errors import UserError
from telefuser_cli.families.base import FamilyPipeline, SamplingStage, Step, build_scheduler
from telefuser_cli.families.hunyuan15 import image_cond as ic
from telefuser_cli.families.hunyuan15 import sr
from telefuser_cli.families.hunyuan15.buckets import SIZE_MAP
from telefuser_cli.families.hunyuan15.decode import decode as decode_latents
from telefuser_cli.families.hunyuan15.latents import NOISE_DTYPE, initial_noise, latent_shape, t2v_condition
from telefuser_cli.families.hunyuan15.text import (
    TextConditioning,
    encode_negative_prompts,
    encode_prompts,
    find_crop_start,
)
from telefuser_cli.families.tiny import prepare_root
from telefuser_cli.io.image_tensor import load_image
from telefuser_cli.io.video import to_uint8_frames
from telefuser_cli.loading import hunyuan15 as loading
from telefuser_cli.models.hunyuan15_context import Hunyuan15Context
from telefuser_cli.runtime.device import attention_backend, free_memory, resolve_device, resolve_dtype
from telefuser_cli.runtime.distributed import validate_parallel
from telefuser_cli.runtime.resident import RESIDENT, identity, park, unpark
from telefuser_cli.runtime.transforms import Placed, RuntimeRequest, apply_transforms
from telefuser_cli.schedulers import make_scheduler

log = logging.getLogger(__name__)

# The base resolution each official SR stage lifts (SR_PIPELINE_CONFIGS' base_resolution).
SR_BASE = {"720p": "480p", "1080p": "720p"}


def _sr_size(height: int, width: int, resolution: str, sr_resolution: str) -> tuple[int, int]:
    """(height, width) after SR of a ``height x width`` base video: the official bucket map for bucket sizes,
    else the size ratio of the SR stage's two resolutions, rounded to the VAE's 16 pixels."""
    base = resolution if resolution in SIZE_MAP else SR_BASE[sr_resolution]
    try:
        return sr.sr_target_size(height, width, base, sr_resolution)
    except ValueError:
        ratio = SIZE_MAP[sr_resolution] / SIZE_MAP[base]
        return max(16, round(height * ratio / 16) * 16), max(16, round(width * ratio / 16) * 16)


class Hunyuan15Denoiser:
    """A HunyuanVideo 1.5 DiT with its condition channels and image tokens bound, called per step.

    ``condition``: channels concatenated after the latents ([1, C_cond, T, h, w]), or a function of the
    step's timestep returning them (the SR stage drops its low-resolution condition late in the
    trajectory). ``image_embeds`` ([1, N, D] SigLIP tokens, i2v) go to both guidance branches alike, as in
    both reference pipelines. Meanflow models also get the next timestep as ``timestep_r``.

    The text, glyph and image context is prepared once per run (``Hunyuan15DiT.prepare_context``: the
    projections, the valid-token gathering and what of the text refiner does not depend on t), the same
    numbers as preparing it inside every forward.
    """

    def __init__(
        self, placed: Placed, cfg_scale: float, condition: torch.Tensor | Callable[[float], torch.Tensor],
        image_embeds: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        self.dit = placed.module
        self.cfg_scale = cfg_scale
        self.condition = condition
        self.image_embeds = image_embeds
        self.meanflow = self.dit.config.use_meanflow

    def prepare(self, text: TextConditioning) -> Hunyuan15Context:
        return self.dit.prepare_context(
            text.text, text.text_mask, text.glyph, text.glyph_mask, self.image_embeds
        )

    def join(self, context: Hunyuan15Context, context_null: Hunyuan15Context) -> Hunyuan15Context:
        return Hunyuan15Context.cat([context, context_null])

    def __call__(self, latents: torch.Tensor, step: Step, context: Hunyuan15Context) -> torch.Tensor:
        batch = latents.shape[0]
        cond = self.condition(step.t_value) if callable(self.condition) else self.condition
        x = torch.cat([latents, cond.to(latents.dtype).expand(batch, *cond.shape[1:])], dim=1)
        t_r = step.t_next.expand(batch) if self.meanflow else None
        return self.dit(x, step.t.expand(batch), context, timestep_r=t_r)


@dataclass
class ImageInputs:
    """What the image conditions, on the DiT's device: condition channels [1, C + 1, T, h, w] and SigLIP
    tokens [1, N, D] at the base size, and (with super-resolution) the same at the SR size."""

    condition: torch.Tensor
    tokens: torch.Tensor
    sr_condition: torch.Tensor | None = None
    sr_tokens: torch.Tensor | None = None


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


def _check_quant(facts: loading.DiTFacts, settings: RootConfig, path: Path) -> None:
    """The weights' storage precision against the entry's ``quant`` fact (fp8 weights are not loaded here)."""
    quant = settings.model.quant.value
    if facts.quant == "fp8" or (facts.quant in ("bf16", "fp32") and facts.quant != quant):
        raise UserError(
            f"{path} holds {facts.quant} weights, but model entry '{settings.model.name}' says model.quant={quant}"
            + (
                "; HunyuanVideo 1.5 loads bf16 or fp32 weights in this version"
                if facts.quant == "fp8"
                else ""
            )
        )


class Hunyuan15Pipeline(FamilyPipeline):
    def locate(self) -> None:
        settings = self.settings
        model, pipeline = settings.model, settings.pipeline
        parallel = pipeline.dit_config.parallel_config
        try:
            # its spec refuses sequence parallelism, so the head count plays no part here
            validate_parallel(
                world_size=self.groups.world_size, num_heads=1, cfg_scales=[pipeline.cfg_scale],
                cfg_degree=parallel.cfg_degree,
            )  # fmt: skip
        except ValueError as error:
            raise UserError(f"pipeline.dit_config.parallel_config: {error}") from None
        self.root = root = prepare_root(settings.model)
        self.version = Path(model.dit).name
        self.facts = loading.dit_facts(
            root, self.version
        )  # checks the transformer files before anything loads
        _check_task(self.facts, settings, root / model.dit)
        _check_quant(self.facts, settings, root / model.dit)
        self.i2v = model.task is Task.i2v
        if self.i2v:
            loading.check_vision_encoder(root, model.vision_encoder)
        if pipeline.enable_sr:
            self.sr_version, self.up_version = Path(model.dit_sr).name, Path(model.upsampler).name
            if not loading.dit_facts(root, self.sr_version).super_resolution:
                raise UserError(f"{root / model.dit_sr} is not a super-resolution transformer (model.dit_sr)")
        self._device = (
            self.groups.device
            if self.groups.world_size > 1
            else resolve_device(pipeline.dit_config, "dit_config")
        )
        self.width, self.height = self.plan.width, self.plan.height
        self.image: ImageInputs | None = None
        self.record["meanflow"] = self.facts.meanflow
        self.record["noise_dtype"] = NOISE_DTYPE  # the official pipeline draws its noise in bfloat16

    @property
    def device(self) -> torch.device:
        return self._device

    def guided(self) -> bool:
        pipeline = self.settings.pipeline
        return pipeline.cfg_scale != 1.0 or (pipeline.enable_sr and pipeline.sr_cfg_scale != 1.0)

    def encode_image(self, reporter) -> None:
        """i2v: the image sets the size; its first-frame latents and SigLIP tokens condition. With SR, the SR
        stage gets its own: the image cropped to the SR size, as the official SR pipeline prepares it."""
        if not self.i2v:
            return
        settings, plan = self.settings, self.plan
        user, pipeline = settings.user, settings.pipeline
        original = ic.to_pil(load_image(user.input_image))
        base = ic.bucket_base(user.resolution, plan.width, plan.height)
        width, height = ic.bucket_size(original.width, original.height, base)
        log.info(
            "image-to-video size %dx%d: the bucket of user.resolution=%s closest to the %dx%d image's aspect "
            "ratio (user.aspect_ratio is not used)", width, height, user.resolution, original.width,
            original.height,
        )  # fmt: skip
        sizes = [(width, height)]
        if pipeline.enable_sr:
            sr_height, sr_width = _sr_size(height, width, user.resolution, pipeline.sr_resolution)
            sizes.append((sr_width, sr_height))
        # the same image at the same sizes through the same encoders: encoded once per process
        key = (
            identity("image", [user.input_image]), self._vae_identity(), tuple(sizes), plan.num_frames,
            identity("image encoder", [self.root / settings.model.vision_encoder], runtime=pipeline.text_encoding_config),
            str(self.device),
        )  # fmt: skip
        self.image = RESIDENT.lookup(key, "image encoding") or RESIDENT.store(
            key, self._encode_image(reporter, [ic.crop_to(original, w, h) for w, h in sizes], width, height)
        )
        self.width, self.height = width, height
        self.record["size_written"] = [width, height]

    def _encode_image(self, reporter, images: list, width: int, height: int) -> ImageInputs:
        """SigLIP tokens and first-frame latents of each sized image (the base one, then the SR one)."""
        settings = self.settings
        pipeline = settings.pipeline
        encoder_device = resolve_device(pipeline.text_encoding_config, "text_encoding_config")
        with reporter.stage("load image encoder"):
            encoder, processor = loading.load_vision_encoder(
                self.root, resolve_dtype(pipeline.text_encoding_config), encoder_device,
                settings.model.vision_encoder,
            )  # fmt: skip
        with reporter.stage("encode image"):
            tokens = [
                ic.image_embeds(encoder, processor, im, encoder_device).to(self.device) for im in images
            ]
        del encoder
        with reporter.stage("load vae"):
            vae = self._vae()
        with reporter.stage("encode first frame"):
            frames = latent_shape(1, self.plan.num_frames, height, width)[2]
            conditions = [ic.image_condition(vae, im, frames).to(self.device) for im in images]
        park(vae, resolve_device(pipeline.vae_config, "vae_config"))
        del vae
        free_memory()
        extra = {"sr_condition": conditions[1], "sr_tokens": tokens[1]} if pipeline.enable_sr else {}
        return ImageInputs(conditions[0], tokens[0], **extra)

    def encode_text(self, reporter, prompts: list[str]) -> list[Any]:
        """Qwen2.5-VL (+ byT5 glyph) features of the prompt and the negative prompt; those this process
        encoded before with the same encoders are not encoded again (``pipeline.keep_loaded``)."""
        pipeline, model = self.settings.pipeline, self.settings.model
        runtime = pipeline.text_encoding_config
        text_device = resolve_device(runtime, "text_encoding_config")
        text_dtype = resolve_dtype(runtime)
        folders = [
            self.root / model.text_encoder,
            self.root / loading.BYT5_DIR,
            self.root / model.glyph_encoder,
        ]
        key = identity("text encoder", folders, runtime=runtime, device=str(self.device))
        # the negative prompt (second) gets the glyph features of "", as the official pipeline gives it
        roles = [encode_prompts, encode_negative_prompts][: len(prompts)]
        keys = [(key, role.__name__, prompt) for role, prompt in zip(roles, prompts, strict=True)]
        encoded = [RESIDENT.lookup(k, "text encoding") for k in keys]
        if any(value is None for value in encoded):

            def load():
                llm, tokenizer = loading.load_text_encoder(
                    self.root, text_dtype, text_device, model.text_encoder
                )
                try:
                    crop_start = find_crop_start(tokenizer)
                except ValueError as error:
                    raise UserError(f"text encoder: {self.root / model.text_encoder}: {error}") from None
                byt5, byt5_tokenizer = loading.load_byt5(
                    self.root, text_dtype, text_device, model.glyph_encoder
                )
                return llm, tokenizer, byt5, byt5_tokenizer, crop_start

            with reporter.stage("load text encoders"):
                llm, tokenizer, byt5, byt5_tokenizer, crop_start = RESIDENT.component(
                    key, load, "text encoders"
                )
                unpark(llm, text_device)
                unpark(byt5, text_device)
            with reporter.stage("encode text"), torch.no_grad():
                for index, (role, prompt) in enumerate(zip(roles, prompts, strict=True)):
                    if encoded[index] is None:
                        value = role(llm, tokenizer, byt5, byt5_tokenizer, [prompt], self.device, crop_start)
                        encoded[index] = RESIDENT.store(keys[index], value)
            park(llm, text_device)
            park(byt5, text_device)
            del llm, byt5
            free_memory()
        return encoded

    def _park_device(self) -> torch.device | None:
        """Where a kept DiT without offload computes (it waits on the host between jobs); None with an
        offload, which moves the weights itself."""
        offload = self.settings.pipeline.dit_config.offload_config.offload_type
        return self.device if offload is OffloadType.NO_CPU_OFFLOAD else None

    def _vae_identity(self):
        pipeline, model = self.settings.pipeline, self.settings.model
        return identity("vae", [self.root / model.vae], runtime=pipeline.vae_config)

    def _vae(self):
        """The VAE on its device: kept from an earlier stage or job, or loaded."""
        pipeline, model = self.settings.pipeline, self.settings.model
        device = resolve_device(pipeline.vae_config, "vae_config")
        vae = RESIDENT.component(
            self._vae_identity(),
            lambda: loading.load_vae(self.root, resolve_dtype(pipeline.vae_config), device, model.vae),
            "vae",
        )
        unpark(vae, device)
        return vae

    def _load_dit(self, version: str) -> Placed:
        """The DiT on its device with the runtime transforms the pipeline asks for (compile, step cache,
        offload), applied from the plan its class declares."""
        pipeline = self.settings.pipeline
        runtime = pipeline.dit_config
        request = RuntimeRequest.of(runtime, pipeline.step_cache_threshold, self.device, self.groups)
        attn = attention_backend(runtime, self.device)

        def load() -> Placed:
            dit = loading.load_dit(self.root, version, resolve_dtype(runtime), request.load_device, attn)
            return apply_transforms(dit, request)

        key = identity(
            "dit", [self.root / "transformer" / version], runtime=runtime, device=str(self.device),
            step_cache=pipeline.step_cache_threshold, parallel=(self.groups.world_size, self.groups.cfg_degree),
        )  # fmt: skip
        placed = RESIDENT.component(key, load, "dit" if version == self.version else "dit_sr")
        if runtime.offload_config.offload_type is OffloadType.NO_CPU_OFFLOAD:
            unpark(placed.module, self.device)
        placed.load()
        return placed

    def first_stage(self, reporter, text, text_null) -> SamplingStage:
        pipeline = self.settings.pipeline
        with reporter.stage("load dit"):
            placed = self._load_dit(self.version)
        channels = placed.module.config.out_channels
        shape = latent_shape(1, self.plan.num_frames, self.height, self.width, channels=channels)
        latents = initial_noise(shape, self.settings.user.seed, self.device, str(pipeline.rand_device))
        condition = self.image.condition if self.image else t2v_condition(latents)
        image = self.image.tokens if self.image else None
        denoisers = [Hunyuan15Denoiser(placed, pipeline.cfg_scale, condition, image)]
        return SamplingStage(
            "denoise", denoisers, build_scheduler(pipeline), latents, text, text_null,
            release=_releaser("dit", placed, denoisers, self._park_device()),
        )  # fmt: skip

    def refine_stage(self, reporter, latents, text, text_null, write_intermediate) -> SamplingStage | None:
        """Super-resolution: upsample the base latents, then a few SR steps conditioned on them."""
        settings = self.settings
        pipeline, user = settings.pipeline, settings.user
        if not pipeline.enable_sr:
            return None
        if pipeline.save_pre_sr_video or settings.output.keep_intermediate:
            write_intermediate(latents, "video_pre_sr.mp4")
        base_size = (self.width, self.height)
        self.height, self.width = _sr_size(self.height, self.width, user.resolution, pipeline.sr_resolution)
        with reporter.stage("load sr"):
            placed = self._load_dit(self.sr_version)
            upsampler = loading.load_upsampler(self.root, self.up_version, self.device)
        start, condition = sr.prepare(
            placed.module, upsampler, latents, (self.height // 16, self.width // 16), user.seed,
            lq_noise_strength=pipeline.lq_noise_strength,
            base_condition=self.image.sr_condition if self.image else None,
        )  # fmt: skip
        del upsampler
        self.record["size_written"] = [self.width, self.height]
        log.info("super-resolution %dx%d -> %dx%d", *base_size, self.width, self.height)
        image = self.image.sr_tokens if self.image else None
        denoisers = [Hunyuan15Denoiser(placed, pipeline.sr_cfg_scale, condition, image)]
        scheduler = make_scheduler("euler", pipeline.sr_steps, pipeline.sr_shift)
        return SamplingStage(
            "super-resolve", denoisers, scheduler, start, text, text_null,
            release=_releaser("dit_sr", placed, denoisers, self._park_device()),
        )  # fmt: skip

    def decode(self, reporter, latents: torch.Tensor, stage: str = "decode") -> torch.Tensor:
        settings = self.settings
        pipeline = settings.pipeline
        vae_device = resolve_device(pipeline.vae_config, "vae_config")
        with reporter.stage("load vae"):
            vae = self._vae()
        tile = tuple(pipeline.tile_size) if pipeline.tiled else None
        with reporter.stage(stage):
            video = decode_latents(
                vae, latents.to(vae_device), tile, tuple(pipeline.tile_stride), pipeline.tile_frames or None
            )
        park(vae, vae_device)
        del vae
        free_memory()
        return to_uint8_frames(video[0])


def _releaser(
    name: str, placed: Placed, denoisers: list, park_on: torch.device | None
) -> Callable[[], dict[str, Any]]:
    """Frees the stage's DiT; returns what the record keeps about it (offload, step cache)."""

    def release() -> dict[str, Any]:
        record = placed.record()  # before release, which resets the step cache's counters
        placed.release()
        if park_on is not None:  # kept for the next job (pipeline.keep_loaded): off the device meanwhile
            park(placed.module, park_on)
        denoisers.clear()
        return {name: record} if record else {}

    return release
