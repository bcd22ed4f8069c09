"""Cross-layer validation of one job, before anything is loaded.

Everything here is cheap (no torch import, no file reads beyond `stat`), so every job of a sweep is
checked before the first one starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from telefuser_cli.config.guard import not_utf8_message
from telefuser_cli.config.prompt_file import prompt_of
from telefuser_cli.config.schema import (
    AttnImpl,
    ModelRuntimeConfig,
    RootConfig,
    Task,
)
from telefuser_cli.config.sizes import check_frames, resolve_size
from telefuser_cli.errors import UserError
from telefuser_cli.io.path_kind import file_problem
from telefuser_cli.paths import config_dir

_ATTENTION_PACKAGES = {
    AttnImpl.FLASH_ATTN_2: ("flash_attn", "pip install 'telefuser[gpu]' (flash-attn 2)"),
    AttnImpl.FLASH_ATTN_3: (
        "flash_attn_interface",
        "flash-attn 3 (build from the flash-attention repo, hopper/)",
    ),
    AttnImpl.SAGE_ATTN: ("sageattention", "pip install sageattention"),
}


@dataclass(frozen=True)
class RunPlan:
    """What one job will produce, derived from the validated settings."""

    width: int
    height: int
    num_frames: int
    negative_prompt: str  # effective: the user's, then the pipeline's default
    world_size: int
    output_fps: int  # the written video's rate (the interpolation target when enable_vfi)
    warnings: tuple[str, ...] = ()  # allowed but unusual settings: printed once, recorded in config.json
    # [C, T, h, w]: set by the model family's check (telefuser_cli.families.check), which knows its VAE
    latent_shape: tuple[int, ...] = ()


def to_settings(cfg: DictConfig) -> RootConfig:
    """The typed settings of one job: DictConfig stops here (interpolations resolved)."""
    node = OmegaConf.masked_copy(cfg, ["model", "pipeline", "user", "output", "launcher"])
    try:
        settings = OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        # e.g. pipeline.dit_config=null on a mixture of experts, whose expert configs follow it
        key = getattr(error, "full_key", None)
        message = str(getattr(error, "msg", error)).splitlines()[0]
        raise UserError(f"{key}: {message}" if key else message) from None
    settings = RootConfig(**settings) if isinstance(settings, dict) else settings
    _read_prompt_file(settings)
    return settings


def _read_prompt_file(settings: RootConfig) -> None:
    """user.prompt_file: the job's prompt is the text on its line (recorded as user.prompt)."""
    user = settings.user
    if user.prompt_file is None:
        if user.prompt_line is not None:
            raise UserError(
                f"user.prompt_line={user.prompt_line} chooses a line of user.prompt_file: give it too"
            )
        return
    if user.prompt:
        raise UserError(
            "user.prompt and user.prompt_file both given: give the prompt on the command line or in the file"
        )
    user.prompt_line, user.prompt = prompt_of(user.prompt_file, user.prompt_line)


def _leaves(value: Any, name: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf below a settings object, as overrides name them."""
    if dataclasses.is_dataclass(value):
        for field_ in dataclasses.fields(value):
            yield from _leaves(getattr(value, field_.name), f"{name}.{field_.name}" if name else field_.name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{name}.{index}")
    else:
        yield name, value


def check_values(settings: RootConfig) -> None:
    """Every float of every layer is finite and every string is UTF-8, wherever it was set.

    nan or inf guidance gives an all-black video and a config.json that is not JSON; text that is not
    UTF-8 fails only when the first file is written.
    """
    for name, value in _leaves(settings, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name}={value}: must be a finite number")
        if isinstance(value, str):
            message = not_utf8_message(name, value)
            if message:
                raise UserError(message)


def effective_negative_prompt(user: str, default: str) -> str:
    """The user's negative prompt followed by the pipeline's default, joined by one separator."""
    user = re.sub(r"[\s,，;；]+$", "", user.strip())
    default = default.strip()
    return ", ".join(part for part in (user, default) if part)


def _nearest_frames(num_frames: int) -> str:
    below = max(1, (num_frames - 1) // 4 * 4 + 1)
    return f"{below} or {below + 4}"


def _runtime_configs(settings: RootConfig) -> dict[str, ModelRuntimeConfig]:
    """The runtime configs of the components that run (on a mixture of experts, the experts': their
    leaves follow dit_config unless set per expert)."""
    pipeline = settings.pipeline
    named = {
        "dit_config": None if settings.model.moe else pipeline.dit_config,
        "dit_high_config": pipeline.dit_high_config,
        "dit_low_config": pipeline.dit_low_config,
        "text_encoding_config": pipeline.text_encoding_config,
        "vae_config": pipeline.vae_config,
        "clip_config": pipeline.clip_config,
        "vfi_config": pipeline.vfi_config if pipeline.enable_vfi else None,
    }
    return {name: value for name, value in named.items() if value is not None}


def _check_runtime(name: str, runtime: ModelRuntimeConfig) -> None:
    impl = runtime.attention_config.attn_impl
    if impl in _ATTENTION_PACKAGES:
        module, how = _ATTENTION_PACKAGES[impl]
        if importlib.util.find_spec(module) is None:
            raise UserError(
                f"pipeline.{name}.attention_config.attn_impl={impl.name} needs the '{module}' package, "
                f"which is not installed: {how}; or use TORCH_SDPA"
            )
    for index, lora in enumerate(runtime.lora_configs):
        if not name.startswith("dit"):
            raise UserError(f"pipeline.{name}.lora_configs: LoRA applies to the DiT only (dit_config, ...)")
        problem = file_problem(lora.path)
        if problem:
            raise UserError(f"pipeline.{name}.lora_configs[{index}].path={lora.path} {problem}")


def _check_weights_and_offload(name: str, runtime: ModelRuntimeConfig, quant: str) -> None:
    """Ranges of the offload depth, and fp8 matmuls only where the weights stay fp8 (the device itself is
    checked when the DiT loads: that needs torch)."""
    offload = runtime.offload_config
    if offload.prefetch_blocks < 1:
        raise UserError(
            f"pipeline.{name}.offload_config.prefetch_blocks={offload.prefetch_blocks} must be >= 1 "
            "(blocks copied ahead while one computes)"
        )
    if not 0.0 <= offload.resident_ratio < 1.0:
        raise UserError(
            f"pipeline.{name}.offload_config.resident_ratio={offload.resident_ratio} must be in [0, 1) "
            "(the fraction of blocks kept on the device; 1 would be no offload: NO_CPU_OFFLOAD)"
        )
    deep = offload.prefetch_blocks != 1 or offload.resident_ratio != 0.0
    if deep and offload.offload_type.value != "SEQUENTIAL_CPU_OFFLOAD":
        raise UserError(
            f"pipeline.{name}.offload_config.prefetch_blocks / resident_ratio apply to block-sequential "
            f"offload only; set pipeline.{name}.offload_config.offload_type=SEQUENTIAL_CPU_OFFLOAD"
        )
    if not runtime.fp8_compute or not name.startswith("dit"):
        return  # on other components the family refuses it (model.quant is the DiT's precision)
    weights = runtime.weights.value
    if weights == "dequantize" or (weights == "auto" and quant != "fp8"):
        why = (
            "converts them to torch_dtype"
            if weights == "dequantize"
            else f"keeps model.quant={quant} weights"
        )
        raise UserError(
            f"pipeline.{name}.fp8_compute=true needs fp8-resident weights, but pipeline.{name}.weights={weights} "
            f"{why}; set pipeline.{name}.weights=fp8"
        )
    if runtime.device_type.value == "cpu":
        raise UserError(
            f"pipeline.{name}.fp8_compute=true needs a CUDA GPU with fp8 tensor cores (compute capability "
            f">= 8.9), but pipeline.{name}.device_type=cpu"
        )


def _warnings(settings: RootConfig) -> tuple[str, ...]:
    """What is allowed but unusual: shown once by the CLI before the run, and kept in its record."""
    model, pipeline = settings.model, settings.pipeline
    found = []
    if model.distill:
        scales = [pipeline.cfg_scale, pipeline.cfg_scale_high, pipeline.cfg_scale_low]
        if any(scale not in (None, 1.0) for scale in scales):
            found.append(
                f"model {model.name} is distilled without guidance; cfg scales other than 1 are unusual"
            )
    return tuple(found)


def _world_size(settings: RootConfig) -> int:
    """Processes of this run: torchrun's (inside it) or the ones telefuser will start."""
    if settings.launcher.nproc_per_node < 1:
        raise UserError(f"launcher.nproc_per_node={settings.launcher.nproc_per_node} must be >= 1")
    return int(os.environ.get("WORLD_SIZE", settings.launcher.nproc_per_node))


def _check_parallel(settings: RootConfig, world_size: int) -> None:
    """Only the DiT is parallelised (text encoder and VAE run on every rank): its degrees must fill the world."""
    pipeline = settings.pipeline
    dits = {n: r for n, r in _runtime_configs(settings).items() if n.startswith("dit")}
    for name, runtime in dits.items():
        parallel = runtime.parallel_config
        unsupported = {
            k: getattr(parallel, k)
            for k in ("dp_degree", "pp_degree", "tp_degree")
            if getattr(parallel, k) != 1
        }
        if unsupported or parallel.enable_fsdp:
            raise UserError(
                f"pipeline.{name}.parallel_config: only cfg_degree, sp_ulysses_degree and sp_ring_degree are "
                f"available in this version (got {unsupported or 'enable_fsdp=true'})"
            )
        try:
            parallel.validate(world_size)
        except ValueError as error:
            raise UserError(f"pipeline.{name}.parallel_config: {error}") from None
        if parallel.cfg_degree not in (1, 2):
            raise UserError(
                f"pipeline.{name}.parallel_config.cfg_degree={parallel.cfg_degree} must be 1 or 2"
            )
    if pipeline.step_cache_threshold < 0:
        raise UserError(
            f"pipeline.step_cache_threshold={pipeline.step_cache_threshold} must be >= 0 (0 = off)"
        )
    if pipeline.step_cache_threshold > 0 and any(
        r.parallel_config.sp_ulysses_degree * r.parallel_config.sp_ring_degree > 1 for r in dits.values()
    ):
        raise UserError("pipeline.step_cache_threshold > 0 cannot be combined with sequence parallelism")


VFI_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
# Interpolated frames per generated frame, at most (16 -> 256 fps).
MAX_VFI_FACTOR = 16


def _check_vfi(settings: RootConfig) -> int:
    """The fps of the written video: the target when interpolating, else the pipeline's."""
    pipeline, user = settings.pipeline, settings.user
    target = user.target_fps if user.target_fps is not None else pipeline.target_fps
    if not pipeline.enable_vfi:
        if user.target_fps is not None and user.target_fps != pipeline.fps:
            raise UserError(
                f"user.target_fps={user.target_fps} differs from pipeline.fps={pipeline.fps}: "
                "set pipeline.enable_vfi=true to interpolate frames"
            )
        return pipeline.fps
    if target is None:
        raise UserError(
            "pipeline.enable_vfi=true needs a target: user.target_fps=32 (or pipeline.target_fps)"
        )
    if target < pipeline.fps:
        raise UserError(
            f"target fps {target} is below the generated {pipeline.fps} fps; interpolation only adds frames"
        )
    if target > MAX_VFI_FACTOR * pipeline.fps:
        raise UserError(
            f"target fps {target} is more than {MAX_VFI_FACTOR}x the generated {pipeline.fps} fps (its "
            f"{pipeline.num_frames} frames would become over {MAX_VFI_FACTOR * pipeline.num_frames}); lower it"
        )
    if not pipeline.vfi_weights:
        raise UserError(
            "pipeline.enable_vfi=true but pipeline.vfi_weights names no interpolation weights: "
            "set pipeline.vfi_weights=/path/to/flownet.pkl (Practical-RIFE)"
        )
    if pipeline.vfi_scale not in VFI_SCALES:
        raise UserError(f"pipeline.vfi_scale={pipeline.vfi_scale} must be one of {VFI_SCALES}")
    if pipeline.vfi_chunk_size < 1:
        raise UserError(f"pipeline.vfi_chunk_size={pipeline.vfi_chunk_size} must be >= 1")
    return target


# The models are trained on this many timesteps: the DiT's time embedding cannot tell finer ones apart.
NUM_TRAIN_TIMESTEPS = 1000
_GRID = {
    "unipc": "gives the DiT integer timesteps in [0, 1000), so more steps repeat timesteps",
    "dpm++": "gives the DiT integer timesteps in [0, 1000], so more steps repeat timesteps",
    "euler": "spaces its steps over the 1000 training timesteps: more would be finer than the DiT tells apart",
}


def _check_steps(settings: RootConfig) -> None:
    """A step count or timestep list the solver's grid can represent (schedulers/ builds the grids)."""
    pipeline = settings.pipeline
    solver = pipeline.sample_solver
    if pipeline.timesteps is None:
        steps = pipeline.num_inference_steps
        if steps < 1:
            raise UserError(f"pipeline.num_inference_steps={steps} must be >= 1")
        if steps > NUM_TRAIN_TIMESTEPS:
            raise UserError(
                f"pipeline.num_inference_steps={steps}: at most {NUM_TRAIN_TIMESTEPS}; "
                f"sample_solver={solver} {_GRID[solver]}"
            )
        return
    timesteps = list(pipeline.timesteps)
    if solver != "euler":
        raise UserError(
            f"pipeline.timesteps is set, but explicit timesteps need pipeline.sample_solver=euler "
            f"(the step-distilled samplers are Euler), not {solver}"
        )
    ordered = all(later < earlier for earlier, later in zip(timesteps, timesteps[1:], strict=False))
    inside = all(0 < t <= NUM_TRAIN_TIMESTEPS for t in timesteps)
    if not timesteps or not ordered or not inside or len(timesteps) > NUM_TRAIN_TIMESTEPS:
        raise UserError(
            f"pipeline.timesteps={timesteps}: give 1 to {NUM_TRAIN_TIMESTEPS} strictly decreasing values in "
            f"(0, {NUM_TRAIN_TIMESTEPS}], e.g. [1000,750,500,250]"
        )


# The tasks that take user.input_image: i2v and flf2v need one, TI2V-5B (ti2v) takes one if given (its
# first frame) and runs text-to-video without.
IMAGE_TASKS = (Task.i2v, Task.flf2v, Task.ti2v)


def packaged_models(tasks: tuple[Task, ...]) -> list[str]:
    """The packaged model entries (conf/model/) of these tasks, read from their YAML (no Hydra)."""
    values = {task.value for task in tasks}
    names = []
    for path in sorted((config_dir() / "model").glob("*.yaml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(entry, dict) and entry.get("task") in values:
            names.append(path.stem)
    return names


def _check_images(settings: RootConfig, require_image: bool) -> None:
    """An input image goes to a model that takes one, a last frame to one that takes a last frame."""
    user, model = settings.user, settings.model
    if user.input_image and model.task not in IMAGE_TASKS:
        raise UserError(
            f"user.input_image={user.input_image}: model {model.name} is {model.task.value} and takes no "
            f"image; models that do: {', '.join(packaged_models(IMAGE_TASKS))}"
        )
    if user.end_image and model.task is not Task.flf2v:
        takers = ", ".join(packaged_models((Task.flf2v,))) or "none is packaged in this version"
        raise UserError(
            f"user.end_image={user.end_image}: model {model.name} ({model.task.value}) takes no last frame; "
            f"only first-last-frame (flf2v) models do: {takers}"
        )
    if not require_image:
        return
    if model.task in (Task.i2v, Task.flf2v) and not user.input_image:
        raise UserError(f"model {model.name} turns an image into a video: set user.input_image=PATH")
    if model.task is Task.flf2v and not user.end_image:
        raise UserError(
            f"model {model.name} turns a first and a last frame into a video: set user.end_image=PATH too"
        )
    for key in ("input_image", "end_image"):
        path = getattr(user, key)
        problem = file_problem(path) if path else None
        if problem:
            raise UserError(f"user.{key}={path} {problem}")


def validate(settings: RootConfig, *, require_prompt: bool = True) -> RunPlan:
    """Every check a job can fail before loading anything; raises UserError."""
    user, pipeline, model = settings.user, settings.pipeline, settings.model
    check_values(settings)
    if require_prompt and not user.prompt.strip():
        raise UserError('user.prompt is empty: pass prompt="a cat surfing a wave"')
    if pipeline.num_frames < 1 or (pipeline.num_frames - 1) % 4:
        raise UserError(
            f"pipeline.num_frames={pipeline.num_frames} must be of the form 4k+1 "
            f"(the VAE compresses time by 4); nearest valid: {_nearest_frames(pipeline.num_frames)}"
        )
    check_frames(pipeline.num_frames)
    _check_steps(settings)
    if pipeline.fps < 1:
        raise UserError(f"pipeline.fps={pipeline.fps} must be >= 1")
    if pipeline.sigma_shift <= 0:
        raise UserError(f"pipeline.sigma_shift={pipeline.sigma_shift} must be > 0")
    if (
        len(pipeline.tile_size) != 2
        or len(pipeline.tile_stride) != 2
        or not (
            0 < pipeline.tile_stride[0] <= pipeline.tile_size[0]
            and 0 < pipeline.tile_stride[1] <= pipeline.tile_size[1]
        )
    ):
        raise UserError(
            f"pipeline.tile_size={list(pipeline.tile_size)} and pipeline.tile_stride={list(pipeline.tile_stride)} "
            "are [height, width] in latent pixels with 0 < stride <= size"
        )
    if pipeline.tile_frames < 0:
        raise UserError(
            f"pipeline.tile_frames={pipeline.tile_frames}: latent frames per temporal tile (>= 0, 0 = off)"
        )
    if not 0 <= settings.output.video_quality <= 10:
        raise UserError(f"output.video_quality={settings.output.video_quality} must be in 0..10")
    if user.seed < -1 or user.seed >= 2**63:
        raise UserError(f"user.seed={user.seed}: use a non-negative integer, or -1 for a random seed")
    _check_images(settings, require_image=require_prompt)
    target_fps = _check_vfi(settings)
    width, height = resolve_size(user.resolution, user.aspect_ratio, model)
    world_size = _world_size(settings)
    for name, runtime in _runtime_configs(settings).items():
        _check_runtime(name, runtime)
        _check_weights_and_offload(name, runtime, model.quant.value)
    _check_parallel(settings, world_size)
    negative = effective_negative_prompt(user.negative_prompt, pipeline.negative_prompt)
    return RunPlan(width, height, pipeline.num_frames, negative, world_size, target_fps, _warnings(settings))
