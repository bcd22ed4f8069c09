"""A synthetic world for the tiny trained model: one coloured shape moving over a plain background.

`make_clip` draws a clip and its caption ("a red ball moving left") deterministically from a seed or a
numpy Generator; `analyse_clip` reads a clip back (dominant object colour, centroid trajectory,
direction), which is how tests judge whether a generated video matches its prompt.

Frames are float32 tensors [3, F, H, W] in [-1, 1], the range the VAE works in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Object colours, RGB in [0, 1]: far apart from each other and from the background.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.10, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES: tuple[str, ...] = ("ball", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND: tuple[float, float, float] = (0.25, 0.25, 0.27)

# Every word a caption uses: the tokenizer vocabulary of the tiny trained model.
VOCABULARY: tuple[str, ...] = ("a", "moving", *COLOURS, *SHAPES, *DIRECTIONS)


@dataclass(frozen=True)
class ClipSpec:
    """What a caption says: colour, shape and direction (each one of the vocabulary lists)."""

    colour: str
    shape: str
    direction: str

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.colour, COLOURS, "colour"),
            (self.shape, SHAPES, "shape"),
            (self.direction, DIRECTIONS, "direction"),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction}"

    @classmethod
    def parse(cls, caption: str) -> ClipSpec:
        """The spec of a caption written as `caption` writes it ("a red ball moving left")."""
        words = caption.split()
        if len(words) != 5 or words[0] != "a" or words[3] != "moving":
            raise ValueError(f"caption {caption!r} is not of the form 'a COLOUR SHAPE moving DIRECTION'")
        return cls(words[1], words[2], words[4])


def all_specs() -> list[ClipSpec]:
    """Every caption of the world, in a fixed order."""
    return [ClipSpec(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]


def _coverage(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
    """Soft (anti-aliased) coverage in [0, 1] of a shape centred at (cx, cy) with half-extent `size`."""
    dx, dy = xs - cx, ys - cy
    if shape == "ball":
        distance = np.sqrt(dx**2 + dy**2) - size
    elif shape == "square":
        distance = np.maximum(np.abs(dx), np.abs(dy)) - size * 0.85
    else:  # triangle pointing up: inside the three half-planes of its edges
        half = size * 1.05
        top, bottom = cy - half, cy + half * 0.8
        slope = (bottom - top) / half  # |dx| grows by one per `slope` of height below the apex
        edge = (np.abs(dx) * slope - (ys - top)) / math.hypot(1.0, slope)
        distance = np.maximum(edge, ys - bottom)
    return np.clip(0.5 - distance, 0.0, 1.0)


def make_clip(
    rng: np.random.Generator | int,
    spec: ClipSpec | None = None,
    num_frames: int = 9,
    height: int = 32,
    width: int = 32,
) -> tuple[torch.Tensor, str]:
    """One clip and its caption -> (frames [3, F, H, W] float32 in [-1, 1], caption).

    `rng` is a numpy Generator or a seed; `spec` fixes colour, shape and direction (drawn from `rng`
    otherwise). Size, start position and speed are always drawn: the object stays fully inside the frame
    and travels about 40-55% of the frame along its direction.
    """
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    if spec is None:
        spec = ClipSpec(
            list(COLOURS)[rng.integers(len(COLOURS))],
            SHAPES[rng.integers(len(SHAPES))],
            list(DIRECTIONS)[rng.integers(len(DIRECTIONS))],
        )
    if num_frames < 2 or height < 16 or width < 16:
        raise ValueError(
            f"num_frames={num_frames}, height={height}, width={width}: need >= 2 frames and >= 16 px"
        )
    extent = min(height, width)
    size = extent * rng.uniform(0.14, 0.19)
    ux, uy = DIRECTIONS[spec.direction]
    travel = rng.uniform(0.40, 0.55)
    margin = size + 1.0
    # Along the motion axis: start so that the whole path is inside; across it: anywhere inside.
    starts = []
    for u, length in ((ux, width), (uy, height)):
        distance = travel * length
        if u == 0:
            starts.append(rng.uniform(margin, length - margin))
        else:
            low, high = margin, length - margin - distance
            start = rng.uniform(low, max(low, high))
            starts.append(start if u > 0 else length - start)
    x0, y0 = starts
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    colour = np.array(COLOURS[spec.colour])[:, None, None]
    background = np.array(BACKGROUND)[:, None, None]
    frames = np.empty((3, num_frames, height, width), dtype=np.float32)
    for f in range(num_frames):
        progress = f / (num_frames - 1)
        cx, cy = x0 + ux * travel * width * progress, y0 + uy * travel * height * progress
        alpha = _coverage(spec.shape, xs, ys, cx, cy, size)[None]
        frames[:, f] = background * (1.0 - alpha) + colour * alpha
    return torch.from_numpy(frames * 2.0 - 1.0), spec.caption


@dataclass(frozen=True)
class ClipAnalysis:
    """What a clip shows: `colour` (None when no object is found), `centroids` [(x, y)] per frame in pixels
    (None for frames without an object), `direction` (None when the motion is too small or unclear)."""

    colour: str | None
    centroids: tuple[tuple[float, float] | None, ...]
    direction: str | None
    displacement: tuple[float, float]


def analyse_clip(frames: torch.Tensor | np.ndarray, min_travel: float = 0.12) -> ClipAnalysis:
    """Read a clip back. frames: [3, F, H, W] in [-1, 1] (float) or [F, H, W, 3] uint8.

    Background = the median colour of the border pixels; object pixels differ from it clearly. The
    colour is the palette colour most object pixels are nearest to; the direction is the axis and sign of
    the centroid's displacement from the first to the last frames with an object, if it exceeds
    `min_travel` of the frame size.
    """
    array = frames.detach().float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype == np.uint8:
        rgb = array.astype(np.float32) / 255.0  # [F, H, W, 3]
    else:
        if array.ndim != 4 or array.shape[0] != 3:
            raise ValueError(
                f"frames of shape {array.shape}: expected [3, F, H, W] floats or [F, H, W, 3] uint8"
            )
        rgb = (np.transpose(array, (1, 2, 3, 0)) + 1.0) / 2.0
    num_frames, height, width, _ = rgb.shape
    border = np.concatenate(
        [
            rgb[:, 0].reshape(-1, 3),
            rgb[:, -1].reshape(-1, 3),
            rgb[:, :, 0].reshape(-1, 3),
            rgb[:, :, -1].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    mask = np.linalg.norm(rgb - background, axis=-1) > 0.25  # [F, H, W]
    palette = np.array(list(COLOURS.values()))
    pixels = rgb[mask]
    colour = None
    if len(pixels) >= 3:
        nearest = np.argmin(np.linalg.norm(pixels[:, None] - palette[None], axis=-1), axis=1)
        colour = list(COLOURS)[int(np.bincount(nearest, minlength=len(palette)).argmax())]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    centroids: list[tuple[float, float] | None] = []
    for f in range(num_frames):
        weight = mask[f].sum()
        centroids.append(None if weight < 2 else (float(xs[mask[f]].mean()), float(ys[mask[f]].mean())))
    present = [c for c in centroids if c is not None]
    direction, displacement = None, (0.0, 0.0)
    if len(present) >= 2:
        # Average the first and last few frames so one noisy frame does not decide the direction.
        k = max(1, len(present) // 4)
        first, last = np.mean(present[:k], axis=0), np.mean(present[-k:], axis=0)
        dx, dy = (last - first).tolist()
        displacement = (dx, dy)
        if abs(dx) >= abs(dy) and abs(dx) >= min_travel * width:
            direction = "right" if dx > 0 else "left"
        elif abs(dy) > abs(dx) and abs(dy) >= min_travel * height:
            direction = "down" if dy > 0 else "up"
    return ClipAnalysis(colour, tuple(centroids), direction, displacement)
