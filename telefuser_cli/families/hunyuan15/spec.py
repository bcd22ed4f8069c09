"""The HunyuanVideo 1.5 family (t2v and i2v, 480p and 720p, distilled variants, super-resolution), torch-free.

What it serves, what it honours, and its checks of a job before anything loads. The pipeline that runs
it is :mod:`telefuser_cli.families.hunyuan15.pipeline`.
"""

from __future__ import annotations

import re
from pathlib import Path

from telefuser_cli.config.schema import Family, ModelConfig, Quant, RootConfig, Task
from telefuser_cli.families.base import SHARED_OPTIONS, FamilySpec, LatentGeometry

SR_RESOLUTIONS = ("720p", "1080p")

# The DiT runtime it honours: placement, attention backend, compile and both offloads (runtime/transforms.py
# applies them from the plan Hunyuan15DiT declares) and CFG parallelism (the shared loop's). Not yet: LoRA (the
# loader reads Wan key layouts) and sequence parallelism (the joint text-video attention has no split yet).
# The offload depth (prefetch_blocks, resident_ratio) is the shared runtime's. Not honoured, so refused away
# from their defaults: ``weights`` and ``fp8_compute`` (its loaders convert every weight to torch_dtype).
_DIT_LEAVES = frozenset(
    {"attention_config.attn_impl", "compile", "offload_config.offload_type", "offload_config.prefetch_blocks",
     "offload_config.resident_ratio", "parallel_config.cfg_degree"}
)  # fmt: skip


class Hunyuan15Spec(FamilySpec):
    def geometry(self, model: ModelConfig) -> LatentGeometry:
        # The HunyuanVideo 1.5 VAE: 32 channels, 4x in time, 16x in space; the DiT's patch is 1x1x1.
        return LatentGeometry(32, 4, 16, (1, 1, 1))

    def problems(self, settings: RootConfig) -> list[str]:
        model, pipeline = settings.model, settings.pipeline
        found = []
        if model.quant is Quant.fp8:
            found.append(
                "model.quant=fp8: not supported by hunyuan15 (supported by wan); its loader reads bf16 or fp32"
            )
        if model.task is Task.i2v and not model.vision_encoder:
            found.append(
                f"model {model.name} is image-to-video but names no image encoder: set model.vision_encoder "
                "(the official layout's vision_encoder/siglip)"
            )
        if not model.dit or pipeline.dit_config is None:
            found.append(f"model {model.name}: model.dit and pipeline.dit_config must be set")
        if pipeline.cfg_scale is None:
            found.append(f"pipeline.cfg_scale is null: model {model.name} needs a guidance scale (1 = none)")
        for key in ("dit_high_config", "dit_low_config", "clip_config"):
            if getattr(pipeline, key) is not None:
                found.append(f"pipeline.{key} is set: not supported by hunyuan15 (one DiT, no CLIP encoder)")
        if pipeline.enable_sr:
            found.extend(_sr_problems(settings))
        return found


def _sr_problems(settings: RootConfig) -> list[str]:
    model, pipeline = settings.model, settings.pipeline
    if not (model.dit_sr and model.upsampler):
        return [
            f"pipeline.enable_sr=true: model {model.name} has no super-resolution stage "
            "(model.dit_sr and model.upsampler)"
        ]
    sr_resolution = pipeline.sr_resolution.value
    if sr_resolution not in SR_RESOLUTIONS:
        return [f"pipeline.sr_resolution={sr_resolution!r} must be 720p or 1080p"]
    found = []
    # Official SR versions are named after their output: 720p_sr_distilled, 1080p_sr_distilled.
    trained = re.match(r"(\d+p)_sr", Path(model.dit_sr).name)
    if trained and trained.group(1) != sr_resolution:
        found.append(
            f"pipeline.sr_resolution={sr_resolution} but model.dit_sr={model.dit_sr} is a "
            f"{trained.group(1)} SR stage: set pipeline.sr_resolution={trained.group(1)}"
        )
    if not 0.0 <= pipeline.lq_noise_strength <= 1.0:
        found.append(f"pipeline.lq_noise_strength={pipeline.lq_noise_strength} must be in [0, 1]")
    return found


SPEC = Hunyuan15Spec(
    name="hunyuan15",
    families=(Family.hunyuan15,),
    tasks=frozenset({Task.t2v, Task.i2v}),
    pipeline="telefuser_cli.families.hunyuan15.pipeline:Hunyuan15Pipeline",
    honoured=SHARED_OPTIONS
    | {
        "tile_frames",
        "enable_sr",
        "sr_resolution",
        "sr_steps",
        "sr_shift",
        "sr_cfg_scale",
        "lq_noise_strength",
        "save_pre_sr_video",
    },
    refused=frozenset({"cfg_scale_high", "cfg_scale_low", "boundary", "boundary_step_index"}),
    runtime={"dit_config": _DIT_LEAVES},
    components={
        "dit": "telefuser_cli.models.hunyuan15_dit.Hunyuan15DiT",
        "text_encoder": "transformers.Qwen2_5_VLForConditionalGeneration (language model)",
        "tokenizer": "transformers.AutoTokenizer",
        "glyph_encoder": "transformers.T5EncoderModel (byT5, Glyph-SDXL-v2)",
        "vision_encoder": "transformers.SiglipVisionModel",
        "vae": "telefuser_cli.models.hunyuan15_vae.Hunyuan15VAE",
        "dit_sr": "telefuser_cli.models.hunyuan15_dit.Hunyuan15DiT",
        "upsampler": "telefuser_cli.models.hunyuan15_upsampler",
    },
    # the 1080p SR stage (1920x1088, 121 frames): 31 x 68 x 120 tokens
    largest_official=("1920x1088 (1080p SR) at 121 frames", 252_960),
)
