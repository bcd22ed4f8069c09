"""The end of a run: one short summary on stdout, read from the job's config.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from telefuser_cli.summary import duration, summary_lines, summary_rows


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _printed(stdout: str) -> dict[str, str]:
    """The summary's rows by label, continuation lines joined to their row."""
    rows: dict[str, str] = {}
    label = ""
    for line in stdout.splitlines():
        if line.startswith(" "):
            rows[label] += " " + line.strip()
        elif line.strip():
            label, _, text = line.partition(" ")
            rows[label] = text.strip()
    return rows


def test_a_run_ends_with_its_summary(tmp_path):
    run = tmp_path / "run"
    result = run_cli("generate", "recipe=tiny", "prompt=a red ball moving right", "output.frame_strip=true",
                     f"hydra.run.dir={run}")  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    record = json.loads((run / "config.json").read_text())["run"]
    rows = _printed(result.stdout)
    assert list(rows) == ["video", "strip", "size", "seed", "time", "memory"]
    assert rows["video"] == str(run / "video.mp4") and (run / "video.mp4").is_file()
    assert rows["strip"] == str(run / "video_frames.png") and (run / "video_frames.png").is_file()
    assert rows["size"] == "32x32, 9 frames @ 16 fps"
    assert rows["seed"] == "7"
    total = sum(record["timings_s"].values())
    assert rows["time"].startswith(f"{duration(total)} total: ")
    for stage, seconds in record["timings_s"].items():
        assert f"{stage} {duration(seconds)}" in rows["time"]
    assert rows["memory"] == f"host {record['peak_memory']['host_rss_gib']:.2f} GiB (peak)"
    assert all(len(line) <= 80 for line in result.stdout.splitlines() if str(run) not in line)
    # the old log line with the timings is in the job's log file only, never on the terminal
    assert "wrote" not in result.stdout + result.stderr
    assert f"wrote {run / 'video.mp4'} (" in (run / "telefuser.log").read_text()


def test_a_dry_run_ends_with_one_line(tmp_path):
    run = tmp_path / "dry"
    result = run_cli("generate", "--dry-run", "recipe=tiny", "prompt=x", f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"dry run: {run}"]


def test_two_stages_of_one_name_keep_both_times(tmp_path):
    """HunyuanVideo 1.5 image to video loads the VAE twice (encode the image, then decode): both are timed,
    recorded and shown. The tiny entry's own default size, without a recipe."""
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8)).save(image)
    run = tmp_path / "i2v"
    result = run_cli("generate", "model=tiny_hunyuan15_i2v", "prompt=x", "seed=1", f"user.input_image={image}",
                     f"hydra.run.dir={run}")  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    timings = json.loads((run / "config.json").read_text())["run"]["timings_s"]
    assert {"load vae", "load vae (2)"} <= set(timings)
    shown = _printed(result.stdout)["time"]
    assert f"load vae {duration(timings['load vae'])}," in shown
    assert f"load vae (2) {duration(timings['load vae (2)'])}" in shown
    assert _printed(result.stdout)["size"] == "48x32, 5 frames @ 24 fps"


DOCUMENT = {
    "derived": {"width": 832, "height": 480, "num_frames": 81, "output_fps": 16},
    "layer3_user_inputs": {"seed": 3},
    "run": {
        "video": "video.mp4",
        "latents": "latents.safetensors",
        "timings_s": {
            "load text encoder": 41.5,
            "denoise": 3725.0,
            "load vae": 2.0,
            "decode": 95.25,
            "load vae (2)": 1.0,
            "write video.mp4": 0.5,
        },
        "peak_memory": {"host_rss_gib": 30.123, "device_gib": 61.5},
        "expert_steps": {"high_noise": 12, "low_noise": 28},
        "frames_written": 161,
        "fps_written": 32,
        "size_written": [1280, 720],
    },
}


def test_the_summary_of_a_moe_run_on_a_gpu(tmp_path):
    rows = dict(summary_rows(DOCUMENT, tmp_path))
    assert rows["latents"] == [str(tmp_path / "latents.safetensors")]
    # what was written: the size after super-resolution, the frames and fps after interpolation
    assert rows["size"] == ["1280x720, 161 frames @ 32 fps"]
    assert rows["time"] == ["1h04m total:", "load text encoder 41.5 s", "denoise 1h02m", "load vae 2.0 s",
                            "decode 1m35s", "load vae (2) 1.0 s", "write video.mp4 0.5 s"]  # fmt: skip
    assert rows["memory"] == ["host 30.12 GiB, device 61.50 GiB (peak)"]
    assert rows["experts"] == ["high noise 12 steps, low noise 28 steps"]
    assert "strip" not in rows


def test_lines_fit_the_width_and_never_break_a_path(tmp_path):
    deep = tmp_path / ("a_long_folder_name_" * 6)
    lines = summary_lines(summary_rows(DOCUMENT, deep), width=60)
    labels = [label.strip() for label, _ in lines if label.strip()]
    assert labels == ["video", "latents", "size", "seed", "time", "memory", "experts"]
    assert len({len(label) for label, _ in lines}) == 1  # one column for the labels
    assert lines[0][1] == str(deep / "video.mp4")  # longer than the line, yet whole
    assert all(len(label) + len(text) <= 60 for label, text in lines if str(deep) not in text)
    start = next(i for i, (label, _) in enumerate(lines) if label.strip() == "time")
    end = next(i for i, (label, _) in enumerate(lines) if label.strip() == "memory")
    assert end - start > 1  # wrapped, between stages only
    assert " ".join(text for _, text in lines[start:end]) == (
        "1h04m total: load text encoder 41.5 s, denoise 1h02m, load vae 2.0 s, decode 1m35s, "
        "load vae (2) 1.0 s, write video.mp4 0.5 s"
    )


def test_the_summary_of_a_record_without_timings(tmp_path):
    rows = dict(summary_rows({"run": {"video": "video.mp4"}, "derived": DOCUMENT["derived"]}, tmp_path))
    assert rows["size"] == ["832x480, 81 frames @ 16 fps"]
    assert rows["time"] == ["not recorded"]
    assert rows["memory"] == ["not measured"]
