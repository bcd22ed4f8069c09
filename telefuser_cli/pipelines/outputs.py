"""What every generation shares after (and around) sampling: memory hygiene, the model directory,
latents, frame interpolation, the video file, and the record that config.json keeps."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from telefuser_cli.config.schema import RootConfig
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.errors import UserError
from telefuser_cli.io.files import atomic_path
from telefuser_cli.io.strip import write_frame_strip
from telefuser_cli.io.video import write_video
from telefuser_cli.loading.rife_arch import load_rife
from telefuser_cli.pipelines.vfi import interpolate, interpolation_plan, network_calls
from telefuser_cli.progress import Reporter, stage_of
from telefuser_cli.runtime.device import peak_memory, resolve_device, resolve_dtype
from telefuser_cli.terminal import FILE_ONLY

log = logging.getLogger(__name__)

VIDEO = "video.mp4"
LATENTS = "latents.safetensors"


@dataclass
class GenerationResult:
    video_path: Path
    device: str
    timings: dict[str, float]
    peak_memory: dict[str, float]
    latents_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What config.json records about the run."""
        return {
            "video": self.video_path.name,
            "latents": self.latents_path.name if self.latents_path else None,
            "timings_s": self.timings,
            "peak_memory": self.peak_memory,
            **self.extra,
        }


def _is_oom(error: BaseException) -> bool:
    # torch's CPU allocator raises a plain RuntimeError; numpy and Python raise MemoryError
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(error)


@contextmanager
def oom_as_user_error(stage: str | None = None) -> Iterator[None]:
    """Out of memory in `stage` (default: the progress stage the error escaped from) becomes one message
    with what to try instead."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
        if _is_oom(error):
            where = stage or stage_of(error)
            raise UserError(
                f"out of memory{f' during {where}' if where else ''}; try pipeline.tiled=true (VAE decode in "
                "tiles), a smaller resolution or fewer frames, or "
                "pipeline.dit_config.offload_config.offload_type=MODEL_CPU_OFFLOAD"
            ) from None
        raise


def save_latents(output_dir: Path, latents: torch.Tensor, name: str = LATENTS) -> Path:
    """[1, C, T, h, w] -> `latents.safetensors` (key `latents`, float32 [C, T, h, w])."""
    path = output_dir / name
    with atomic_path(path) as temporary:
        save_file({"latents": latents[0].float().cpu().contiguous()}, str(temporary))
    return path


def vfi_weights(settings: RootConfig) -> Path | None:
    """The RIFE weights when interpolation is on (checked before any model loads)."""
    if not settings.pipeline.enable_vfi:
        return None
    path = Path(settings.pipeline.vfi_weights).expanduser()
    if not path.is_file():
        raise UserError(
            f"pipeline.enable_vfi=true but the interpolation weights {path} do not exist; "
            "set pipeline.vfi_weights=/path/to/flownet.pkl (Practical-RIFE) or pipeline.enable_vfi=false"
        )
    return path


def _interpolate(frames: np.ndarray, path: Path, settings: RootConfig, plan: RunPlan, reporter: Reporter):
    """RIFE from the pipeline's fps to the plan's output fps; returns the frames and what to record."""
    pipeline = settings.pipeline
    runtime = pipeline.vfi_config
    device = resolve_device(runtime, "vfi_config")
    with reporter.stage("load interpolation"):
        rife = load_rife(path, device=device, dtype=resolve_dtype(runtime))
    calls = network_calls(interpolation_plan(len(frames), pipeline.fps, plan.output_fps))
    source_frames = len(frames)
    with reporter.stage("interpolate", total=max(1, math.ceil(calls / pipeline.vfi_chunk_size))) as advance:
        frames = interpolate(
            rife, frames, pipeline.fps, plan.output_fps, device, chunk_size=pipeline.vfi_chunk_size,
            scale=pipeline.vfi_scale, advance=advance,
        )  # fmt: skip
    record = {
        "base_fps": pipeline.fps,
        "target_fps": plan.output_fps,
        "model_path": str(path),
        "source_frames": source_frames,
        "output_frames": int(len(frames)),
        "scale": pipeline.vfi_scale,
    }
    return frames, record


def finish_video(
    frames: np.ndarray,
    settings: RootConfig,
    plan: RunPlan,
    output_dir: Path,
    settings_hash: str,
    reporter: Reporter,
    vfi_path: Path | None,
    name: str = VIDEO,
) -> tuple[Path, dict[str, Any]]:
    """Interpolate (if asked) and write `frames` ([F, H, W, 3] uint8); returns the path and the record.

    With output.keep_intermediate the video before interpolation is kept too (`<name>_before_vfi.mp4`).
    """
    record: dict[str, Any] = {}
    user = settings.user
    metadata = {
        "title": user.prompt,
        "prompt": user.prompt,
        "seed": str(user.seed),
        "model": settings.model.name,
        # config/settings_hash.py: what determines this video, as config.json's settings_sha256
        "settings_sha256": settings_hash,
        "encoder": "telefuser",
    }

    def write(frames: np.ndarray, filename: str, fps: int) -> Path:
        with reporter.stage(f"write {filename}"):
            return write_video(
                output_dir / filename,
                frames,
                fps=fps,
                metadata=metadata,
                quality=settings.output.video_quality,
            )

    if vfi_path is not None:
        if settings.output.keep_intermediate:
            record["before_vfi"] = write(
                frames, f"{Path(name).stem}_before_vfi.mp4", settings.pipeline.fps
            ).name
        frames, record["vfi"] = _interpolate(frames, vfi_path, settings, plan, reporter)
    path = write(frames, name, plan.output_fps)
    record.update({"frames_written": int(len(frames)), "fps_written": plan.output_fps})
    if settings.output.frame_strip:
        strip = write_frame_strip(frames, path.with_name(f"{path.stem}_frames.png"))
        record["frame_strip"] = strip.name
    return path, record


def result_of(
    video_path: Path,
    device: torch.device,
    reporter: Reporter,
    latents_path: Path | None,
    extra: dict[str, Any],
) -> GenerationResult:
    result = GenerationResult(
        video_path=video_path,
        device=str(device),
        timings=reporter.timings,
        peak_memory=peak_memory(device),
        latents_path=latents_path,
        extra=extra,
    )
    timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in reporter.timings.items())
    # the log file keeps this line; the terminal gets the CLI's summary of config.json instead
    log.info("wrote %s (%s)", video_path, timings, extra=FILE_ONLY)
    return result
