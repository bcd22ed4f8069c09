"""io/video.py: only a complete mp4 is published; ffmpeg's failures (a full disk) are one message."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from telefuser_cli.errors import UserError
from telefuser_cli.io import video
from telefuser_cli.io.video import check_complete_mp4, write_video


def noise_frames(count: int = 5, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_writes_a_complete_playable_video_with_its_metadata(tmp_path):
    path = write_video(
        tmp_path / "out" / "video.mp4", noise_frames(), fps=16, metadata={"title": 'a "cat", 猫'}
    )
    check_complete_mp4(path)
    reader = imageio.get_reader(path)
    assert len([frame for frame in reader]) == 5 and reader.get_meta_data()["fps"] == 16.0
    assert [p.name for p in path.parent.iterdir()] == ["video.mp4"]


def _fake_ffmpeg(returncode: int, stderr: bytes, keep: float):
    """An ffmpeg that writes `keep` of a real encoding of the frames, then exits with `returncode`."""
    real = subprocess.run

    def run(command, input, **kwargs):  # noqa: A002 (subprocess.run's own name)
        done = real(command, input=input, **kwargs)
        out = Path(command[-1])
        data = out.read_bytes()
        out.write_bytes(data[: int(len(data) * keep)])
        return subprocess.CompletedProcess(command, returncode, b"", stderr + done.stderr)

    return run


def test_a_full_disk_is_one_message_and_publishes_nothing(tmp_path, monkeypatch):
    final = tmp_path / "video.mp4"
    final.write_bytes(b"the previous video")
    stderr = b"[out#0/mp4 @ 0x1] Error writing trailer: No space left on device\n"
    monkeypatch.setattr(video.subprocess, "run", _fake_ffmpeg(228, stderr, keep=0.5))
    with pytest.raises(UserError) as caught:
        write_video(final, noise_frames(), fps=16, metadata={})
    message = str(caught.value)
    assert message.startswith(f"could not write {final}: no space left on device (")
    assert "written before the disk filled" in message and f"free in {tmp_path}" in message
    assert final.read_bytes() == b"the previous video"  # never half-replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


def test_a_truncated_file_is_never_published_even_when_ffmpeg_says_success(tmp_path, monkeypatch):
    monkeypatch.setattr(video.subprocess, "run", _fake_ffmpeg(0, b"", keep=0.9))
    with pytest.raises(UserError, match="incomplete mp4"):
        write_video(tmp_path / "video.mp4", noise_frames(), fps=16, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk(tmp_path):
    """A 100 KiB tmpfs and a video that does not fit (needs mount permission; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(UserError, match=r"no space left on device \(.* written before the disk filled"):
            write_video(disk / "run" / "video.mp4", noise_frames(30, 64), fps=16, metadata={}, quality=10)
        assert list((disk / "run").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_atomic_files_get_the_mode_of_a_plain_write(tmp_path):
    """safetensors writes 0600; a run's outputs (latents too) follow the umask like every other file."""
    import os

    from safetensors.torch import save_file

    from telefuser_cli.io.files import atomic_path

    with atomic_path(tmp_path / "latents.safetensors") as temporary:
        save_file({"x": torch.zeros(1)}, str(temporary))
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert os.stat(tmp_path / "latents.safetensors").st_mode & 0o777 == plain.stat().st_mode & 0o777
