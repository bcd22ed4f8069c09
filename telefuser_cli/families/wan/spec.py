"""The Wan family (Wan2.1 t2v / i2v / flf2v, Wan2.2 A14B mixtures of experts and their distilled variants,
Wan2.2 TI2V-5B text-to-video), torch-free.

What it serves, what it honours, and its checks of a job before anything loads. The pipeline that runs
it is :mod:`telefuser_cli.families.wan.pipeline`.
"""

from __future__ import annotations

from typing import Any

from telefuser_cli.config.schema import Family, ModelConfig, RootConfig, Task
from telefuser_cli.families.base import SHARED_OPTIONS, FamilySpec, LatentGeometry

EXPERT_NAMES = ("high_noise", "low_noise")
# Settings only a mixture of experts reads; on one DiT they are refused.
_MOE_ONLY = ("cfg_scale_high", "cfg_scale_low", "boundary", "boundary_step_index")

# Everything the DiT runtime offers except the parallel strategies this version does not implement.
_DIT_LEAVES = frozenset(
    {
        "offload_config.offload_type", "offload_config.prefetch_blocks", "offload_config.resident_ratio",
        "lora_configs", "attention_config.attn_impl", "compile", "weights", "fp8_compute",
        "parallel_config.cfg_degree", "parallel_config.sp_ulysses_degree", "parallel_config.sp_ring_degree",
    }
)  # fmt: skip
# The UMT5 text encoder's linears can be held in fp8 (loading.wan.load_text_encoder); no fp8 matmul there.
_TEXT_LEAVES = frozenset({"weights"})


def expert_schedule(
    timesteps: list[float], boundary: float | None, boundary_step_index: int | None = None
) -> list[int]:
    """Per step: 0 for the high-noise expert, 1 for the low-noise one.

    The official rule: high while t >= boundary * 1000; an explicit ``boundary_step_index`` (distilled
    models) puts the switch before that step instead. Without either, every step uses expert 0.
    """
    if boundary_step_index is not None:
        return [0 if i < boundary_step_index else 1 for i in range(len(timesteps))]
    if boundary is None:
        return [0] * len(timesteps)
    threshold = boundary * 1000
    return [0 if float(t) >= threshold else 1 for t in timesteps]


class WanSpec(FamilySpec):
    def geometry(self, model: ModelConfig) -> LatentGeometry:
        # The Wan2.2 VAE of TI2V-5B: 48 channels, 16x spatial; the Wan2.1 VAE: 16 channels, 8x.
        if model.task is Task.ti2v:
            return LatentGeometry(48, 4, 16, (1, 2, 2))
        return LatentGeometry(16, 4, 8, (1, 2, 2))

    def problems(self, settings: RootConfig) -> list[str]:
        model, pipeline = settings.model, settings.pipeline
        found = []
        if pipeline.clip_config is not None and not model.clip:
            found.append(
                f"pipeline.clip_config is set, but model {model.name} has no CLIP image encoder (model.clip); "
                "leave pipeline.clip_config null"
            )
        if model.task is Task.flf2v:
            found.extend(_flf2v_problems(settings))
        if model.moe:
            found.extend(_moe_problems(settings))
        else:
            found.extend(_single_dit_problems(settings))
        return found

    def sampling_record(self, settings: RootConfig, timesteps: list[float]) -> dict[str, Any]:
        if not settings.model.moe:
            return {}
        pipeline = settings.pipeline
        schedule = expert_schedule(timesteps, pipeline.boundary, pipeline.boundary_step_index)
        return {"expert_steps": {name: schedule.count(i) for i, name in enumerate(EXPERT_NAMES)}}


def _flf2v_problems(settings: RootConfig) -> list[str]:
    """FLF2V: two frames given, CLIP tokens of both feed the DiT, and they are two distinct pixel frames."""
    model, pipeline = settings.model, settings.pipeline
    found = []
    if not model.clip:
        found.append(
            f"model {model.name} is first-last-frame-to-video: its DiT reads CLIP tokens of both frames, so "
            "model.clip must name the CLIP image encoder"
        )
    elif pipeline.clip_config is None:
        found.append(f"model {model.name} uses CLIP image features: set pipeline.clip_config")
    if pipeline.num_frames < 5:
        found.append(
            f"pipeline.num_frames={pipeline.num_frames}: model {model.name} needs a first and a last frame "
            "apart, at least 5 frames (4k+1 with k >= 1)"
        )
    return found


def _moe_problems(settings: RootConfig) -> list[str]:
    model, pipeline = settings.model, settings.pipeline
    moe = f"model {model.name} is a mixture of experts"
    if pipeline.dit_high_config is None or pipeline.dit_low_config is None:
        return [
            f"{moe}: pipeline.dit_high_config and pipeline.dit_low_config must be set (choose a wan22 pipeline)"
        ]
    found = []
    if pipeline.boundary_step_index is not None:
        if pipeline.boundary_step_index < 0:
            found.append(f"pipeline.boundary_step_index={pipeline.boundary_step_index} must be >= 0")
    elif pipeline.boundary is None or not 0.0 < pipeline.boundary < 1.0:
        found.append(f"{moe}: pipeline.boundary must be in (0, 1)")
    if pipeline.cfg_scale_high is None or pipeline.cfg_scale_low is None:
        found.append(
            f"{moe}: set pipeline.cfg_scale (both experts) or pipeline.cfg_scale_high and pipeline.cfg_scale_low"
        )
    if not (model.dit_high and model.dit_low):
        found.append(f"{moe}: model.dit_high and model.dit_low")
    if pipeline.dit_high_config.parallel_config != pipeline.dit_low_config.parallel_config:
        found.append("pipeline.dit_high_config and dit_low_config must use the same parallel_config")
    return found


def _single_dit_problems(settings: RootConfig) -> list[str]:
    model, pipeline = settings.model, settings.pipeline
    if not model.dit or pipeline.dit_config is None:
        return [f"model {model.name}: model.dit and pipeline.dit_config must be set"]
    found = []
    for key in _MOE_ONLY:
        value = getattr(pipeline, key)
        if value is not None:
            found.append(
                f"pipeline.{key}={value}: model {model.name} has one DiT, not a mixture of experts; "
                "its guidance is pipeline.cfg_scale"
            )
    for key in ("dit_high_config", "dit_low_config"):
        if getattr(pipeline, key) is not None:  # set by a config file (an override is refused earlier)
            found.append(
                f"pipeline.{key} is set, but model {model.name} has one DiT, not a mixture of experts; "
                "its runtime settings are pipeline.dit_config"
            )
    if pipeline.cfg_scale is None:
        found.append(f"pipeline.cfg_scale is null: model {model.name} needs a guidance scale (1 = none)")
    return found


# Options of the super-resolution stage and the temporal decode tiling belong to HunyuanVideo 1.5.
_NOT_WAN = frozenset(
    {"tile_frames", "enable_sr", "sr_resolution", "sr_steps", "sr_shift", "sr_cfg_scale", "lq_noise_strength",
     "save_pre_sr_video"}
)  # fmt: skip

SPEC = WanSpec(
    name="wan",
    families=(Family.wan21, Family.wan22),
    tasks=frozenset({Task.t2v, Task.i2v, Task.flf2v, Task.ti2v}),
    pipeline="telefuser_cli.families.wan.pipeline:WanPipeline",
    honoured=SHARED_OPTIONS | {"cfg_scale_high", "cfg_scale_low", "boundary", "boundary_step_index"},
    refused=_NOT_WAN,
    runtime={
        "dit_config": _DIT_LEAVES,
        "dit_high_config": _DIT_LEAVES,
        "dit_low_config": _DIT_LEAVES,
        "text_encoding_config": _TEXT_LEAVES,
    },
    components={
        "dit": "telefuser_cli.models.wan_dit.WanDiT",
        "dit_high": "telefuser_cli.models.wan_dit.WanDiT",
        "dit_low": "telefuser_cli.models.wan_dit.WanDiT",
        "text_encoder": "telefuser_cli.models.umt5.UMT5Encoder",
        "tokenizer": "transformers.AutoTokenizer",
        "vae": "telefuser_cli.models.wan_vae.WanVAE",
        "clip": "telefuser_cli.models.clip_vision.WanCLIPVision",
    },
    largest_official=("1280x720 at 81 frames", 75_600),
)
