"""A PNG strip of video frames side by side: a glance at a whole clip without a video player."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from telefuser_cli.io.files import atomic_path


def strip_image(frames: np.ndarray, max_frames: int = 8, scale: int = 1, gap: int = 2) -> np.ndarray:
    """[F, H, W, 3] uint8 -> [H*scale, n*(W*scale + gap) - gap, 3] uint8, n = min(F, max_frames) frames
    evenly spaced from the first to the last, separated by white gaps of `gap` pixels."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0 or max_frames < 1 or scale < 1 or gap < 0:
        raise ValueError(f"need >= 1 frame, max_frames >= 1, scale >= 1, gap >= 0 (got {len(frames)} frames, "
                         f"max_frames={max_frames}, scale={scale}, gap={gap})")  # fmt: skip
    count = min(len(frames), max_frames)
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, count)).astype(int))
    chosen = frames[picks].repeat(scale, axis=1).repeat(scale, axis=2)
    _, height, width, _ = chosen.shape
    out = np.full((height, len(picks) * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(chosen):
        out[:, i * (width + gap) : i * (width + gap) + width] = frame
    return out


def write_frame_strip(frames: np.ndarray, path: Path, max_frames: int = 8, scale: int | None = None) -> Path:
    """Write `frames` ([F, H, W, 3] uint8) as one PNG strip at `path`; the file appears only when complete.

    `scale` (nearest-neighbour) defaults to enough to make tiny frames at least 128 pixels tall.
    """
    from PIL import Image

    frames = np.asarray(frames)
    if scale is None:
        scale = max(1, -(-128 // max(1, frames.shape[1]))) if frames.ndim == 4 else 1
    image = strip_image(frames, max_frames=max_frames, scale=scale)
    path = Path(path)
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return path
