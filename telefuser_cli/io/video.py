"""Writing the video: h264 mp4 via imageio-ffmpeg, atomically, with provenance in the container."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from telefuser_cli.errors import UserError
from telefuser_cli.io.files import atomic_path


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8, truncating as the official `save_video` does."""
    frames = (video.float().clamp(-1, 1) + 1) / 2
    return (frames * 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu().numpy()


def write_video(path: Path, frames: np.ndarray, fps: int, metadata: dict[str, str], quality: int = 8) -> Path:
    """Write `frames` ([F, H, W, 3] uint8) to `path`; the file appears only when complete."""
    import imageio.v2 as imageio

    comment = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    params = ["-metadata", f"comment={comment}"]
    for key in ("title", "description"):
        if key in metadata:
            params += ["-metadata", f"{key}={metadata[key]}"]
    try:
        with atomic_path(path) as temporary:
            writer = imageio.get_writer(
                temporary, format="FFMPEG", fps=fps, codec="libx264", quality=quality,
                output_params=params, macro_block_size=1,
            )  # fmt: skip
            try:
                for frame in frames:
                    writer.append_data(frame)
            finally:
                writer.close()
    except (OSError, RuntimeError) as error:
        raise UserError(f"could not write {path}: {error}") from None
    return path
