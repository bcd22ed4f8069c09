"""Typed schemas of the three configuration layers.

Hydra merges every YAML file of `conf/` onto these dataclasses, so a wrong type or an invalid
enum value is refused by Hydra itself with its own message. Fields of layer 1 that are bound to
the weights carry `FACT` metadata: they cannot be changed per run (see `config/guard.py`).
This module imports nothing heavy: `telefuser --help` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

FACT = {"fact": True}


def fact(default: Any) -> Any:
    """A layer-1 field whose value is bound to the weights."""
    return field(default=default, metadata=FACT)


def spelled(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """An enum whose member names are the values as a person types them (dpm++, 16:9, 720p).

    OmegaConf matches a value to a member by name and refuses any other value in one line listing the
    names; the members are strings (StrEnum), so code reading such a field compares text.
    """
    return StrEnum(name, [(value, value) for value in values])


# ---------------------------------------------------------------- layer 1: the weights


class Family(Enum):
    wan21 = "wan21"
    wan22 = "wan22"
    hunyuan15 = "hunyuan15"


class Task(Enum):
    t2v = "t2v"
    i2v = "i2v"
    flf2v = "flf2v"
    ti2v = "ti2v"


class Quant(Enum):
    bf16 = "bf16"
    fp8 = "fp8"
    fp32 = "fp32"


class FlowType(Enum):
    flow_match = "flow_match"
    meanflow = "meanflow"


@dataclass
class ModelConfig:
    """A set of weights on disk and the facts bound to them.

    Component paths are relative to `root` and may be globs (shards). MoE models name both
    experts (`dit_high`, `dit_low`); they are never told apart by load order.
    """

    name: str = fact("???")
    description: str = ""
    root: str = "???"
    family: Family = fact(Family.wan21)
    task: Task = fact(Task.t2v)
    distill: bool = fact(False)
    moe: bool = fact(False)
    quant: Quant = fact(Quant.bf16)
    flow_type: FlowType = fact(FlowType.flow_match)
    # Spatial size must be a multiple of this (VAE stride x patch size).
    size_divisor: int = fact(16)
    # Sizes the model was trained at, keyed "<resolution>@<aspect>", e.g. "480p@16:9": "832x480".
    preset_sizes: dict[str, str] = field(default_factory=dict, metadata=FACT)
    # Component files (relative to root).
    dit: str | None = None
    dit_high: str | None = None
    dit_low: str | None = None
    text_encoder: str = "models_t5_umt5-xxl-enc-bf16.pth"
    tokenizer: str = "google/umt5-xxl"
    vae: str = "Wan2.1_VAE.pth"
    clip: str | None = None
    # HunyuanVideo 1.5: the glyph (byT5) text encoder, the i2v image encoder (SigLIP: image_encoder/ and
    # feature_extractor/), and the super-resolution transformer and upsampler.
    glyph_encoder: str | None = None
    vision_encoder: str | None = None
    dit_sr: str | None = None
    upsampler: str | None = None


# ---------------------------------------------------------------- layer 2: the algorithm


class OffloadType(Enum):
    NO_CPU_OFFLOAD = "NO_CPU_OFFLOAD"
    MODEL_CPU_OFFLOAD = "MODEL_CPU_OFFLOAD"
    SEQUENTIAL_CPU_OFFLOAD = "SEQUENTIAL_CPU_OFFLOAD"


class AttnImpl(Enum):
    AUTO = "AUTO"
    TORCH_SDPA = "TORCH_SDPA"
    FLASH_ATTN_2 = "FLASH_ATTN_2"
    FLASH_ATTN_3 = "FLASH_ATTN_3"
    SAGE_ATTN = "SAGE_ATTN"


class DType(Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class DeviceType(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class OffloadConfig:
    offload_type: OffloadType = OffloadType.NO_CPU_OFFLOAD
    # SEQUENTIAL_CPU_OFFLOAD: blocks copied ahead on a side stream while one computes (>= 1; more hides
    # slower copies and holds more blocks on the device).
    prefetch_blocks: int = 1
    # SEQUENTIAL_CPU_OFFLOAD: this fraction of the blocks (the first ones) stays on the device, in [0, 1).
    resident_ratio: float = 0.0


@dataclass
class AttentionConfig:
    attn_impl: AttnImpl = AttnImpl.TORCH_SDPA


@dataclass
class LoraConfig:
    path: str = "???"
    strength: float = 1.0


@dataclass
class ParallelConfig:
    dp_degree: int = 1
    cfg_degree: int = 1
    sp_ulysses_degree: int = 1
    sp_ring_degree: int = 1
    pp_degree: int = 1
    tp_degree: int = 1
    enable_fsdp: bool = False

    @property
    def world_size(self) -> int:
        return (
            self.dp_degree
            * self.cfg_degree
            * self.sp_ulysses_degree
            * self.sp_ring_degree
            * self.pp_degree
            * self.tp_degree
        )

    def validate(self, world_size: int) -> None:
        for name in ("dp", "cfg", "sp_ulysses", "sp_ring", "pp", "tp"):
            if getattr(self, f"{name}_degree") < 1:
                raise ValueError(f"parallel_config.{name}_degree must be >= 1")
        if self.world_size != world_size:
            raise ValueError(
                f"parallel degrees multiply to {self.world_size} (dp {self.dp_degree} x cfg {self.cfg_degree} "
                f"x ulysses {self.sp_ulysses_degree} x ring {self.sp_ring_degree} x pp {self.pp_degree} "
                f"x tp {self.tp_degree}) but the world size is {world_size}"
            )


# How linear weights are held: auto (an fp8 file stays fp8 in memory, others in torch_dtype), dequantize
# (everything converted to torch_dtype at load), fp8 (also quantize a bf16/fp32 file at load).
Weights = spelled("Weights", ("auto", "dequantize", "fp8"))


@dataclass
class ModelRuntimeConfig:
    """How one component runs: device, dtype, attention, offload, compile, LoRA, parallelism."""

    offload_config: OffloadConfig = field(default_factory=OffloadConfig)
    device_type: DeviceType = DeviceType.auto
    device_id: int = 0
    lora_configs: list[LoraConfig] = field(default_factory=list)
    torch_dtype: DType = DType.bfloat16
    attention_config: AttentionConfig = field(default_factory=AttentionConfig)
    compile: bool = False
    parallel_config: ParallelConfig = field(default_factory=ParallelConfig)
    # Linear weights: auto (an fp8 file stays fp8 in memory, each layer dequantized as it runs; other files
    # in torch_dtype), dequantize (all converted to torch_dtype at load), fp8 (a bf16/fp32 file quantized to
    # fp8 per output channel at load).
    weights: Weights = Weights.auto
    # fp8 weights multiply with fp8 matmuls (torch._scaled_mm, activations scaled per token): CUDA with
    # compute capability >= 8.9 only, and only on fp8-resident weights.
    fp8_compute: bool = False


Solver = spelled("Solver", ("unipc", "dpm++", "euler"))
SrResolution = spelled("SrResolution", ("720p", "1080p"))


RandDevice = spelled("RandDevice", ("cpu", "cuda"))


@dataclass
class PipelineConfig:
    description: str = ""
    # The DiT's runtime; on a mixture of experts, what both experts use: each leaf of dit_high_config and
    # dit_low_config follows it unless set for that expert (conf/pipeline/base/wan_moe.yaml).
    dit_config: ModelRuntimeConfig | None = field(default_factory=ModelRuntimeConfig)
    dit_high_config: ModelRuntimeConfig | None = None
    dit_low_config: ModelRuntimeConfig | None = None
    text_encoding_config: ModelRuntimeConfig = field(default_factory=ModelRuntimeConfig)
    vae_config: ModelRuntimeConfig = field(
        default_factory=lambda: ModelRuntimeConfig(torch_dtype=DType.float32)
    )
    clip_config: ModelRuntimeConfig | None = None
    sample_solver: Solver = Solver.unipc
    num_inference_steps: int = 50
    # Explicit timesteps (distilled models), e.g. [1000, 750, 500, 250]; overrides the step count.
    timesteps: list[float] | None = None
    # Guidance of a single-DiT model. Mixtures of experts guide each expert with its own scale
    # (cfg_scale_high, cfg_scale_low); their pipelines leave cfg_scale null, and pipeline.cfg_scale=X there
    # sets both experts' scales (conf/pipeline/base/wan_moe.yaml).
    cfg_scale: float | None = 5.0
    cfg_scale_high: float | None = None
    cfg_scale_low: float | None = None
    sigma_shift: float = 5.0
    boundary: float | None = None
    # Distilled MoE models: switch experts before this step instead of at the boundary timestep.
    boundary_step_index: int | None = None
    num_frames: int = 81
    fps: int = 16
    negative_prompt: str = ""
    # Device on which the initial noise is drawn: "cpu" makes a seed mean the same video everywhere.
    rand_device: RandDevice = RandDevice.cpu
    # The conditional and unconditional passes as one batch of 2 (faster, more activation memory).
    cfg_batch: bool = False
    # First-block residual caching: skip the other blocks while the first one's output changes less than
    # this (relative); 0 = off (exact).
    step_cache_threshold: float = 0.0
    # VAE decode in overlapping spatial tiles, [height, width] in latent pixels (HunyuanVideo 1.5 pipelines
    # default to the official 256-pixel tiles: size [16, 16], stride [12, 12]).
    tiled: bool = False
    tile_size: list[int] = field(default_factory=lambda: [34, 34])
    tile_stride: list[int] = field(default_factory=lambda: [18, 16])
    # HunyuanVideo 1.5 only: also tile the decode in time, this many latent frames a tile (0 = off; the Wan
    # VAE already decodes frame by frame through its causal cache).
    tile_frames: int = 0
    # Frame interpolation (RIFE) after decoding, from `fps` to the target fps (user.target_fps wins).
    enable_vfi: bool = False
    # The interpolation network's weights (Practical-RIFE `flownet.pkl`): a model of its own, not a file of
    # the video model's.
    vfi_weights: str | None = None
    target_fps: int | None = None
    vfi_config: ModelRuntimeConfig = field(
        default_factory=lambda: ModelRuntimeConfig(torch_dtype=DType.float32)
    )
    # RIFE's flow scale: 0.5 for 4K-ish inputs, 1 otherwise (as Practical-RIFE's --scale).
    vfi_scale: float = 1.0
    vfi_chunk_size: int = 8
    # HunyuanVideo 1.5 super-resolution: the base video (the user's resolution) lifted to sr_resolution.
    enable_sr: bool = False
    sr_resolution: SrResolution = SrResolution["720p"]
    sr_steps: int = 6
    sr_shift: float = 2.0
    sr_cfg_scale: float = 1.0
    lq_noise_strength: float = 0.7
    save_pre_sr_video: bool = False
    # Keep loaded components and text/image encodings for the next job of the same process (a sweep): a job
    # that uses the same files with the same settings reuses them; false: every job loads everything itself.
    keep_loaded: bool = True


# ---------------------------------------------------------------- layer 3: the person


RESOLUTIONS = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
AspectRatio = spelled("AspectRatio", ("16:9", "9:16", "4:3", "3:4", "1:1", "3:2", "2:3"))


@dataclass
class UserConfig:
    prompt: str = ""
    negative_prompt: str = ""
    # -1 draws a random seed; the seed used is recorded in config.json.
    seed: int = -1
    # "480p", "720p", "1080p" or an explicit "WxH" such as "832x480".
    resolution: str = "480p"
    aspect_ratio: AspectRatio = AspectRatio["16:9"]
    input_image: str | None = None
    end_image: str | None = None
    # Playback rate wanted; frames are interpolated to it when pipeline.enable_vfi is true.
    target_fps: int | None = None
    # A text file of prompts, one per line (UTF-8; blank lines and # comments skipped), each taken literally;
    # with -m, one job per prompt. Instead of user.prompt, which then records the line's text.
    prompt_file: str | None = None
    # Which line of user.prompt_file a job runs (1-based); -m sets it to every prompt's line.
    prompt_line: int | None = None


@dataclass
class OutputConfig:
    save_latents: bool = False
    # ffmpeg quality 0-10 (imageio scale); 10 is near lossless.
    video_quality: int = 8
    # Keep the videos before post-processing too (before frame interpolation; before super-resolution).
    keep_intermediate: bool = False
    # Also write frames.png beside the video: a strip of up to 8 frames, for a person without a player.
    frame_strip: bool = False
    # Write into a directory that already holds a finished run (its record says done, or a video is
    # there), replacing its files; off, such a directory is refused before anything is written.
    overwrite: bool = False


@dataclass
class LauncherConfig:
    # >1: telefuser starts torch.distributed's launcher (torchrun) with this many processes on this node.
    nproc_per_node: int = 1


@dataclass
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    user: UserConfig = field(default_factory=UserConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
