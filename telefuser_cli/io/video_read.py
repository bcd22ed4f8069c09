"""Reading frames back from a written video, without torch (the sweep's contact sheet uses it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_frames(path: Path, count: int) -> np.ndarray:
    """[n, H, W, 3] uint8: `count` frames of the video at `path` evenly spaced from its first to its last
    (n = min(count, its frames)). Raises OSError or ValueError when the file cannot be decoded."""
    import imageio.v2 as imageio

    with imageio.get_reader(str(path), format="ffmpeg") as reader:
        total = reader.count_frames()  # the metadata's nframes can be inf or an estimate
        if total < 1:
            raise ValueError(f"{path}: no frames")
        picks = set(np.round(np.linspace(0, total - 1, min(count, total))).astype(int).tolist())
        frames = [np.asarray(frame)[..., :3] for index, frame in enumerate(reader) if index in picks]
    if not frames:
        raise ValueError(f"{path}: no frames could be decoded")
    return np.stack(frames).astype(np.uint8)
