"""The Wan family at run time: one DiT (Wan2.1) or two experts (Wan2.2 A14B), text by UMT5, the Wan VAE.

Image-to-video encodes its condition (VAE latents of the image, and CLIP tokens on Wan2.1 I2V) before the
text; the output size follows the image. The driver (``pipelines/generate.py``) runs the steps in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from telefuser_cli.config.schema import ModelRuntimeConfig, OffloadType, Task
from telefuser_cli.errors import UserError
from telefuser_cli.families.base import FamilyPipeline, SamplingStage, Step, build_scheduler
from telefuser_cli.families.tiny import prepare_root
from telefuser_cli.families.wan.image import ImageCondition, clip_files_of, prepare_image_condition
from telefuser_cli.families.wan.inputs import encode_text, initial_noise
from telefuser_cli.families.wan.spec import EXPERT_NAMES, expert_schedule
from telefuser_cli.families.wan.ti2v import FirstFrame, first_frame
from telefuser_cli.io.video import to_uint8_frames
from telefuser_cli.loading import wan as wan_loading
from telefuser_cli.models.wan_context import ContextCache
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.ops.fp8_linear import scaled_mm_problem
from telefuser_cli.runtime.device import attention_backend, free_memory, resolve_device, resolve_dtype
from telefuser_cli.runtime.distributed import validate_parallel
from telefuser_cli.runtime.resident import RESIDENT, identity, park, unpark
from telefuser_cli.runtime.transforms import Placed, RuntimeRequest, apply_transforms

log = logging.getLogger(__name__)


@dataclass
class DitSpec:
    """One DiT to load: which files, with which runtime settings and guidance."""

    name: str
    files: wan_loading.ComponentFiles
    runtime: ModelRuntimeConfig
    cfg_scale: float


def _pad_tokens(context: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad [B, L, D] to [B, length, D]: the DiT pads to text_len with zeros anyway, so this is exact."""
    return F.pad(context, (0, 0, 0, length - context.shape[1]))


class WanDenoiser:
    """A Wan DiT with its image condition bound (``y`` latents, CLIP tokens), called per step by the loop.

    ``cache_context``: prepare the context once per run (``WanDiT.prepare_context``: the text embedding and
    every block's cross-attention keys and values) rather than in every block at every step. Off only where
    the blocks' weights are not on the device between steps (block-sequential offload).
    ``pinned``: TI2V image-to-video, whose first latent frame is the image's: its tokens get timestep 0.
    """

    def __init__(
        self, dit: WanDiT, cfg_scale: float, cache_context: bool, condition: ImageCondition | None,
        device: torch.device, pinned: FirstFrame | None = None,
    ) -> None:  # fmt: skip
        self.dit = dit
        self.pinned = pinned
        self.cfg_scale = cfg_scale
        self.cache_context = cache_context
        self.y = None if condition is None else condition.y.to(device)
        clip = None if condition is None or dit.config.image_dim is None else condition.clip_fea
        self.clip_fea = None if clip is None else clip.to(device)

    def prepare(self, text: torch.Tensor):
        if not self.cache_context:
            return text
        return self.dit.prepare_context(text, clip_fea=self.clip_fea)

    def join(self, context, context_null):
        """Caches concatenated, or raw features zero-padded to one length (exact: the DiT pads with zeros).

        Concatenating caches copies the text keys and values every step: one pass over 2 x layers x 2 x
        text_len x dim values (Wan2.1 1.3B: 180 MiB, a few hundredths of a percent of the step on a CPU).
        """
        if isinstance(context, ContextCache) and isinstance(context_null, ContextCache):
            return ContextCache.cat([context, context_null])
        if isinstance(context, ContextCache) or isinstance(context_null, ContextCache):
            raise ValueError("batched CFG needs both contexts raw or both prepared (ContextCache)")
        length = max(context.shape[1], context_null.shape[1])
        return torch.cat([_pad_tokens(context, length), _pad_tokens(context_null, length)])

    def __call__(self, latents: torch.Tensor, step: Step, context) -> torch.Tensor:
        t = step.t.expand(latents.shape[0])
        if self.pinned is not None:
            t = self.pinned.token_timesteps(t, latents)
        return self.dit(latents, t, context, y=self.y, clip_fea=self.clip_fea)


class WanPipeline(FamilyPipeline):
    def locate(self) -> None:
        settings = self.settings
        model, pipeline = settings.model, settings.pipeline
        self.root = root = prepare_root(settings.model)
        if model.moe:
            self.dits = [
                DitSpec("dit_high", wan_loading.locate(root, "dit_high", model.dit_high), pipeline.dit_high_config,
                        pipeline.cfg_scale_high),
                DitSpec("dit_low", wan_loading.locate(root, "dit_low", model.dit_low), pipeline.dit_low_config,
                        pipeline.cfg_scale_low),
            ]  # fmt: skip
        else:
            self.dits = [
                DitSpec(
                    "dit", wan_loading.locate(root, "dit", model.dit), pipeline.dit_config, pipeline.cfg_scale
                )
            ]
        self.t5_files = wan_loading.locate(root, "text_encoder", model.text_encoder)
        self.vae_files = wan_loading.locate(root, "vae", model.vae)
        self.tokenizer_path = wan_loading.tokenizer_dir(root, model.tokenizer)
        self.image_task = model.task in (Task.i2v, Task.flf2v)
        # TI2V-5B is text-to-video without an image, image-to-video (first frame pinned) with one
        self.pin_first_frame = model.task is Task.ti2v and bool(settings.user.input_image)
        self.clip_files = clip_files_of(settings, root) if self.image_task else None
        self._check_parallel()
        groups = self.groups
        first = self.dits[0]
        self._device = (
            groups.device if groups.world_size > 1 else resolve_device(first.runtime, f"{first.name}_config")
        )
        for dit in self.dits:  # the device is known now: refuse an fp8 matmul it cannot do before any load
            problem = scaled_mm_problem(self._device) if dit.runtime.fp8_compute else None
            if problem:
                raise UserError(f"pipeline.{dit.name}_config.fp8_compute=true: {problem}; set it to false")
        self.condition: ImageCondition | None = None
        self.pinned: FirstFrame | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    def _check_parallel(self) -> None:
        """Degrees against the world and the heads read from the DiT headers: before any work starts."""
        cfg_scales = [dit.cfg_scale for dit in self.dits]
        for dit in self.dits:
            parallel = dit.runtime.parallel_config
            try:
                validate_parallel(
                    world_size=self.groups.world_size,
                    num_heads=wan_loading.dit_architecture(dit.files).num_heads, cfg_scales=cfg_scales,
                    cfg_degree=parallel.cfg_degree, ulysses_degree=parallel.sp_ulysses_degree,
                    ring_degree=parallel.sp_ring_degree,
                )  # fmt: skip
            except ValueError as error:
                raise UserError(f"pipeline.{dit.name}_config.parallel_config: {error}") from None

    def guided(self) -> bool:
        return any(dit.cfg_scale != 1.0 for dit in self.dits)

    def encode_image(self, reporter) -> None:
        if not (self.pin_first_frame or self.image_task):
            return
        user, pipeline = self.settings.user, self.settings.pipeline
        images = [path for path in (user.input_image, user.end_image) if path]
        # the same image(s) at the same size through the same encoders: encoded once per process
        clip = (
            None
            if self.clip_files is None
            else identity("clip", self.clip_files.files, runtime=pipeline.clip_config)
        )
        key = (
            identity("image", images),
            self._vae_identity(),
            clip,
            self.plan.width * self.plan.height,
            pipeline.num_frames,
        )
        sized = RESIDENT.lookup(key, "image encoding")
        if sized is None:
            with reporter.stage("encode image"):
                vae = self._vae()
                if self.pin_first_frame:
                    patch = wan_loading.dit_architecture(self.dits[0].files).patch_size
                    budget = self.plan.width * self.plan.height
                    sized = first_frame(user.input_image, budget, vae, patch)
                else:
                    sized = prepare_image_condition(self.settings, self.plan, vae, self.clip_files)
                park(vae, resolve_device(pipeline.vae_config, "vae_config"))
                del vae
            RESIDENT.store(key, sized)
        if self.pin_first_frame:
            self.pinned = sized
        else:
            self.condition = sized
        log.info("image-to-video size %dx%d (from the image's aspect ratio)", sized.width, sized.height)
        self.record["size_written"] = [sized.width, sized.height]
        free_memory()

    def _vae_identity(self):
        return identity("vae", self.vae_files.files, runtime=self.settings.pipeline.vae_config)

    def _vae(self):
        """The VAE on its device: kept from an earlier stage or job, or loaded."""
        runtime = self.settings.pipeline.vae_config
        device = resolve_device(runtime, "vae_config")
        vae = RESIDENT.component(
            self._vae_identity(),
            lambda: wan_loading.load_vae(self.vae_files, dtype=resolve_dtype(runtime), device=device),
            "vae",
        )
        unpark(vae, device)
        return vae

    def encode_text(self, reporter, prompts: list[str]) -> list[Any]:
        """UMT5 features of each prompt; a prompt this process encoded before with the same encoder is not
        encoded again (``pipeline.keep_loaded``)."""
        pipeline = self.settings.pipeline
        runtime = pipeline.text_encoding_config
        text_device = resolve_device(runtime, "text_encoding_config")
        key = identity("text encoder", [*self.t5_files.files, self.tokenizer_path], runtime=runtime)
        # each prompt's features with the record entry of the encoder that made them (how its weights are held)
        features = {prompt: RESIDENT.lookup((key, prompt), "text encoding") for prompt in prompts}
        missing = [prompt for prompt, feature in features.items() if feature is None]
        if missing:

            def load():
                entry: dict[str, Any] = {}
                tokenizer = wan_loading.load_wan_tokenizer(self.tokenizer_path)
                encoder = wan_loading.load_text_encoder(
                    self.t5_files, dtype=resolve_dtype(runtime), device=text_device,
                    weights=runtime.weights.value, record=entry,
                )  # fmt: skip
                return tokenizer, encoder, entry

            with reporter.stage("load text encoder"):
                tokenizer, encoder, entry = RESIDENT.component(key, load, "text encoder")
                unpark(encoder, text_device)
            with reporter.stage("encode text"):
                encoded = encode_text(encoder, tokenizer, missing, text_device)
            park(encoder, text_device)
            del encoder
            free_memory()
            for prompt, feature in zip(missing, encoded, strict=True):
                features[prompt] = RESIDENT.store((key, prompt), (feature.cpu(), entry))
        for _, entry in features.values():
            self.record.update(entry)
        return [features[prompt][0][None].to(self.device) for prompt in prompts]

    def _dit_identity(self, dit: DitSpec):
        """Everything that changes what ``_load`` builds for ``dit``."""
        settings, groups = self.settings, self.groups
        return identity(
            "dit", dit.files.files, runtime=dit.runtime, step_cache=settings.pipeline.step_cache_threshold,
            task=settings.model.task, quant=settings.model.quant, device=str(self.device),
            parallel=(groups.world_size, groups.sp_degree, groups.cfg_degree),
        )  # fmt: skip

    def _load(self, dit: DitSpec) -> Placed:
        settings = self.settings
        request = RuntimeRequest.of(
            dit.runtime, settings.pipeline.step_cache_threshold, self.device, self.groups
        )
        module = wan_loading.load_dit(
            dit.files,
            dtype=resolve_dtype(dit.runtime),
            device=request.load_device,
            attn_backend=attention_backend(dit.runtime, self.device),
            expected_task=settings.model.task.value,
            model_name=settings.model.name,
            expected_quant=settings.model.quant.value,
            loras=[(lora.path, lora.strength) for lora in dit.runtime.lora_configs],
            weights=dit.runtime.weights.value,
            fp8_compute=self.device if dit.runtime.fp8_compute else None,
        )
        return apply_transforms(module, request)

    def first_stage(self, reporter, text, text_null) -> SamplingStage:
        pipeline = self.settings.pipeline
        placed: list[Placed] = []
        for dit in self.dits:
            with reporter.stage(f"load {dit.name}"):
                placed.append(
                    RESIDENT.component(self._dit_identity(dit), lambda d=dit: self._load(d), dit.name)
                )
            if dit.runtime.offload_config.offload_type is OffloadType.NO_CPU_OFFLOAD:
                unpark(placed[-1].module, self.device)
        denoisers = [
            WanDenoiser(p.module, dit.cfg_scale, p.cache_context, self.condition, self.device, self.pinned)
            for p, dit in zip(placed, self.dits, strict=True)
        ]
        scheduler = build_scheduler(pipeline)
        schedule = expert_schedule(
            scheduler.timesteps.tolist(), pipeline.boundary, pipeline.boundary_step_index
        ) if self.settings.model.moe else None  # fmt: skip

        def switch(old: int, new: int) -> None:
            placed[old].release()
            placed[new].load()

        placed[schedule[0] if schedule else 0].load()
        shape = self.plan.latent_shape
        sized = self.condition or self.pinned
        if sized is not None:
            shape = sized.latent_shape(shape[0], shape[1])
        latents = initial_noise((1, *shape), self.settings.user.seed, pipeline.rand_device, self.device)
        after_step = None
        if self.pinned is not None:  # frame 0 is the image's latent before the loop and after every step
            latents = self.pinned.pin(latents)
            after_step = self.pinned.after_step

        def release() -> dict[str, Any]:
            record: dict[str, Any] = {
                dit.name: p.record() for dit, p in zip(self.dits, placed, strict=True) if p.record()
            }
            if schedule is not None:
                record["expert_steps"] = {name: schedule.count(i) for i, name in enumerate(EXPERT_NAMES)}
            for dit, p in zip(self.dits, placed, strict=True):  # kept for the next job: as a fresh load
                p.release()  # off the device (model offload), the step cache's state reset
                if dit.runtime.offload_config.offload_type is OffloadType.NO_CPU_OFFLOAD:
                    park(p.module, self.device)
            denoisers.clear()
            placed.clear()
            return record

        return SamplingStage(
            "denoise", denoisers, scheduler, latents, text, text_null, schedule, switch, after_step, release
        )

    def decode(self, reporter, latents: torch.Tensor, stage: str = "decode") -> torch.Tensor:
        pipeline = self.settings.pipeline
        vae_device = resolve_device(pipeline.vae_config, "vae_config")
        with reporter.stage("load vae"):
            vae = self._vae()
        with reporter.stage(stage):
            z = latents.to(vae_device)
            if pipeline.tiled:
                video = vae.tiled_decode(z, tuple(pipeline.tile_size), tuple(pipeline.tile_stride))
            else:
                video = vae.decode(z)
        park(vae, vae_device)
        del vae
        free_memory()
        return to_uint8_frames(video[0])
