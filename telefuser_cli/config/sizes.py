"""Output size from the user's resolution and aspect ratio, within what the model supports, and what
a size costs (latent shape, DiT tokens) checked before anything loads."""

from __future__ import annotations

import math
import re

from telefuser_cli.config.schema import ASPECT_RATIOS, RESOLUTIONS, Family, ModelConfig, Task
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
    if aspect_ratio not in ASPECT_RATIOS:
        hint = ""
        if aspect_ratio.isdigit():
            hint = " (an unquoted 16:9 in a YAML file reads as a base-60 integer: quote it)"
        raise UserError(f"user.aspect_ratio={aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}{hint}")
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


def latent_geometry(family: Family, task: Task) -> tuple[int, int, int]:
    """(latent channels, spatial stride, temporal stride) of the released VAE of the model."""
    if family is Family.hunyuan15:
        return (32, 16, 4)
    return (48, 16, 4) if task is Task.ti2v else (16, 8, 4)


def dit_patch(family: Family) -> tuple[int, int, int]:
    """The DiT's (t, h, w) patch: one token per patch of the latents."""
    return (1, 1, 1) if family is Family.hunyuan15 else (1, 2, 2)


# The largest official setting of each family, in DiT tokens (latent frames x h/patch x w/patch): Wan
# 1280x720 at 81 frames is 21 x 45 x 80; HunyuanVideo 1.5's 1080p SR stage (1920x1088, 121 frames) is
# 31 x 68 x 120. Sizes up to TOKEN_MARGIN times that are allowed (attention grows with its square).
OFFICIAL_MAX_TOKENS = {
    Family.wan21: ("1280x720 at 81 frames", 75_600),
    Family.wan22: ("1280x720 at 81 frames", 75_600),
    Family.hunyuan15: ("1920x1088 (1080p SR) at 121 frames", 252_960),
}
TOKEN_MARGIN = 4
# The longest official clip is 121 frames (HunyuanVideo 1.5, Wan2.2 TI2V-5B); about 4x that, as 4k+1.
MAX_FRAMES = 481
# 4x the longest official side (1920, 1080p): beyond it a video is a thin strip no model was trained on.
MAX_SIDE = 7680


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.3g} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.3g} MiB"


def check_frames(num_frames: int) -> None:
    if num_frames > MAX_FRAMES:
        raise UserError(
            f"pipeline.num_frames={num_frames} is more than {MAX_FRAMES} (about 4x the longest official "
            "clip, 121 frames): lower it"
        )


def latent_shape(model: ModelConfig, width: int, height: int, num_frames: int) -> tuple[int, int, int, int]:
    """[C, T, h, w] of the latents of a `num_frames` x `height` x `width` video (num_frames = 4k+1).

    Raises UserError when the DiT would attend over far more tokens than any official setting, or a
    side is longer than MAX_SIDE, naming the numbers: such a run could only fail after loading every
    model, or run for days.
    """
    channels, spatial, temporal = latent_geometry(model.family, model.task)
    shape = (channels, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)
    patch_t, patch_h, patch_w = dit_patch(model.family)
    grid = (-(-shape[1] // patch_t), shape[2] // patch_h, shape[3] // patch_w)
    tokens = math.prod(grid)
    official, official_tokens = OFFICIAL_MAX_TOKENS[model.family]
    limit = TOKEN_MARGIN * official_tokens
    if tokens > limit:
        grid_text = " x ".join(map(str, grid))
        raise UserError(
            f"user.resolution={width}x{height} at pipeline.num_frames={num_frames} is {tokens:,} DiT tokens "
            f"({grid_text}; float32 latents {_gib(4 * math.prod(shape))}) for model {model.name}: more than "
            f"{limit:,}, {TOKEN_MARGIN}x its family's largest official setting ({official}, "
            f"{official_tokens:,} tokens); lower user.resolution or pipeline.num_frames"
        )
    if max(width, height) > MAX_SIDE:
        raise UserError(
            f"user.resolution={width}x{height}: a side of {max(width, height)} pixels is more than "
            f"{MAX_SIDE} (4x the longest official side, 1920 at 1080p); choose a smaller size"
        )
    return shape
