"""Output size from the user's resolution and aspect ratio, within what the model supports, and what
a size costs (latent shape, DiT tokens) checked before anything loads."""

from __future__ import annotations

import math
import re

from telefuser_cli.config.schema import RESOLUTIONS, AspectRatio, ModelConfig
from telefuser_cli.errors import UserError

_EXPLICIT = re.compile(r"^(\d+)x(\d+)$")


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple - 1e-9)) * multiple


def _nearest_multiples(value: int, multiple: int) -> list[int]:
    if value % multiple == 0:
        return [value]
    below = max(multiple, value // multiple * multiple)
    return sorted({below, below + multiple})


def parse_aspect_ratio(aspect_ratio: str) -> tuple[int, int]:
    if aspect_ratio not in AspectRatio.__members__:
        hint = ""
        if aspect_ratio.isdigit():
            hint = " (an unquoted 16:9 in a YAML file reads as a base-60 integer: quote it)"
        raise UserError(
            f"user.aspect_ratio={aspect_ratio!r} is not one of {', '.join(AspectRatio.__members__)}{hint}"
        )
    width, height = aspect_ratio.split(":")
    return int(width), int(height)


def resolve_size(resolution: str, aspect_ratio: str, model: ModelConfig) -> tuple[int, int]:
    """(width, height) in pixels.

    An explicit `WxH` is taken as is and must be divisible by the model's `size_divisor`.
    A named resolution is a pixel budget (480p = 854x480 pixels) shaped by the aspect ratio and
    rounded up to the divisor, unless the model entry names the size it was trained at for that
    preset (Wan: 832x480 for 480p at 16:9).
    """
    divisor = model.size_divisor
    explicit = _EXPLICIT.match(resolution)
    if explicit:
        width, height = int(explicit.group(1)), int(explicit.group(2))
        if width % divisor or height % divisor:
            options = [
                f"{w}x{h}"
                for w in _nearest_multiples(width, divisor)
                for h in _nearest_multiples(height, divisor)
            ]
            raise UserError(
                f"user.resolution={resolution}: width and height must be divisible by {divisor} for "
                f"model {model.name}; nearest valid sizes: {', '.join(options)}"
            )
        if width <= 0 or height <= 0:
            raise UserError(f"user.resolution={resolution}: width and height must be positive")
        return width, height
    if resolution not in RESOLUTIONS:
        raise UserError(
            f"user.resolution={resolution!r} is not one of {', '.join(RESOLUTIONS)} "
            "nor an explicit size such as 832x480"
        )
    preset = model.preset_sizes.get(f"{resolution}@{aspect_ratio}")
    parse_aspect_ratio(aspect_ratio)
    if preset:
        width, height = (int(v) for v in preset.split("x"))
        return width, height
    aspect_w, aspect_h = parse_aspect_ratio(aspect_ratio)
    budget_w, budget_h = RESOLUTIONS[resolution]
    area = budget_w * budget_h
    width = math.sqrt(area * aspect_w / aspect_h)
    height = math.sqrt(area * aspect_h / aspect_w)
    return _round_up(width, divisor), _round_up(height, divisor)


# ---------------------------------------------------------------- what a size costs


# The longest official clip is 121 frames (HunyuanVideo 1.5, Wan2.2 TI2V-5B); about 4x that, as 4k+1.
MAX_FRAMES = 481
# 4x the longest official side (1920, 1080p): beyond it a video is a thin strip no model was trained on.
MAX_SIDE = 7680


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.3g} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.3g} MiB"


def check_frames(num_frames: int) -> None:
    if num_frames > MAX_FRAMES:
        raise UserError(
            f"pipeline.num_frames={num_frames} is more than {MAX_FRAMES} (about 4x the longest official "
            "clip, 121 frames): lower it"
        )
