"""Writing the video: h264 mp4 through imageio-ffmpeg's ffmpeg, atomically, with provenance in the container.

We run ffmpeg ourselves rather than through imageio's writer: that writer never looks at ffmpeg's exit
status, so a disk that fills while the file is finished went unnoticed and a truncated, unplayable mp4
was published. Here the exit status is checked, the file's boxes are verified, and only a complete file
is renamed to its final name.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from telefuser_cli.errors import UserError
from telefuser_cli.io.files import atomic_path


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8, truncating as the official `save_video` does."""
    frames = (video.float().clamp(-1, 1) + 1) / 2
    return (frames * 255).to(torch.uint8).permute(1, 2, 3, 0).contiguous().cpu().numpy()


def ffmpeg_command(
    path: Path, size: tuple[int, int], fps: int, quality: int, metadata: dict[str, str]
) -> list[str]:
    """Raw rgb24 frames on stdin -> h264 (yuv420p) mp4 at `path`; `quality` 0-10 as imageio maps it to crf."""
    import imageio_ffmpeg

    try:
        executable = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise UserError(f"cannot write {path}: {error}") from None
    width, height = size
    crf = int((1 - quality / 10) * 51)
    comment = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    params = ["-metadata", f"comment={comment}"]
    for key in ("title", "description"):
        if key in metadata:
            params += ["-metadata", f"{key}={metadata[key]}"]
    return [
        executable, "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
        "-pix_fmt", "rgb24", "-r", str(fps), "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p",
        "-crf", str(crf), "-v", "error", *params, str(path),
    ]  # fmt: skip


def run_ffmpeg(command: list[str], frames: np.ndarray) -> None:
    """Feed `frames` to ffmpeg; a failure raises OSError (errno ENOSPC when the disk filled)."""
    data = np.ascontiguousarray(frames, dtype=np.uint8)
    try:
        process = subprocess.run(command, input=memoryview(data).cast("B"), capture_output=True, check=False)
    except OSError as error:  # ffmpeg itself could not be started: not a problem of the output file
        raise UserError(f"cannot run ffmpeg ({command[0]}): {error.strerror or error}") from None
    if process.returncode == 0:
        return
    lines = process.stderr.decode("utf-8", "replace").strip().splitlines()
    detail = lines[-1] if lines else f"exit status {process.returncode}"
    code = errno.ENOSPC if "No space left on device" in "\n".join(lines) else errno.EIO
    raise OSError(code, f"ffmpeg failed: {detail}")


def check_complete_mp4(path: Path) -> None:
    """The top-level mp4 boxes must tile the file and include the index (`moov`) and the data (`mdat`);
    ffmpeg writes `moov` last, so a file cut short lacks it or ends inside a box."""
    total = os.path.getsize(path)
    seen, offset = set(), 0
    with open(path, "rb") as file:
        while offset < total:
            file.seek(offset)
            header = file.read(16)
            if len(header) < 8:
                break
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if size == 1 and len(header) == 16:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = total - offset
            if size < 8:
                break
            seen.add(kind)
            offset += size
    if offset != total or not {b"ftyp", b"moov", b"mdat"} <= seen:
        raise OSError(errno.EIO, "ffmpeg wrote an incomplete mp4")


def write_video(path: Path, frames: np.ndarray, fps: int, metadata: dict[str, str], quality: int = 8) -> Path:
    """Write `frames` ([F, H, W, 3] uint8) to `path`; the file appears only when complete."""
    with atomic_path(path) as temporary:
        run_ffmpeg(
            ffmpeg_command(temporary, (frames.shape[2], frames.shape[1]), fps, quality, metadata), frames
        )
        check_complete_mp4(temporary)
    return path
