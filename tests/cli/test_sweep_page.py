"""sweep.png and index.html from a sweep's rows: every job has its row and card, text is escaped, a job
without a readable video still shows why."""

from __future__ import annotations

import numpy as np
from PIL import Image
from test_sweep_resume import page_cards

from telefuser_cli.io.video import write_video
from telefuser_cli.sweeps.page import write_page
from telefuser_cli.sweeps.sheet import THUMB_HEIGHT, write_sheet


def rows(tmp_path):
    good = tmp_path / "000_seed=1"
    frames = np.random.default_rng(0).integers(0, 256, (9, 16, 24, 3), dtype=np.uint8)
    write_video(good / "video.mp4", frames, fps=8, metadata={})
    (good / "config.json").write_text("{}")
    broken = tmp_path / "002_seed=3"
    broken.mkdir()
    (broken / "video.mp4").write_bytes(b"not a video")
    base = {"overrides": [], "seed": 1, "settings_sha256": None, "prompt": 'a "red" <ball> & 猫'}
    return [
        {**base, "index": 0, "swept": {"seed": "1"}, "status": "done", "error": None, "output_dir": str(good),
         "video": str(good / "video.mp4"), "time_s": 1.25},
        {**base, "index": 1, "swept": {"seed": "2"}, "status": "failed", "output_dir": str(tmp_path / "001_seed=2"),
         "error": "<script>alert('x')</script> & more", "video": None, "time_s": None},
        {**base, "index": 2, "swept": {"seed": "3"}, "status": "done", "error": None, "output_dir": str(broken),
         "video": str(broken / "video.mp4"), "time_s": 2.0},
    ]  # fmt: skip


def test_the_page_has_one_escaped_card_per_job(tmp_path):
    write_page(tmp_path, rows(tmp_path))
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    cards = page_cards(tmp_path)  # every src and href resolves; no scripts, no external files
    assert [card["id"] for card in cards] == ["job-0", "job-1", "job-2"]
    assert cards[0]["src"] == ["000_seed=1/video.mp4"] and cards[0]["href"] == ["000_seed=1/config.json"]
    assert "<script>alert('x')</script> & more" in cards[1]["text"] and cards[1]["src"] == []
    assert 'a "red" <ball> & 猫' in cards[0]["text"] and "1.2 s" in cards[0]["text"]


def test_the_sheet_has_a_row_per_job_even_without_a_video(tmp_path):
    path = write_sheet(tmp_path, rows(tmp_path))
    with Image.open(path) as image:
        sheet = np.asarray(image.convert("RGB"))
    assert sheet.shape[0] >= 3 * THUMB_HEIGHT
    row_height = sheet.shape[0] // 3
    frames_part = sheet[:, 280:]
    # the first row is frames (noise), the others a line of text on white
    white = (frames_part == 255).all(axis=-1)
    assert white[:THUMB_HEIGHT].mean() < 0.3
    assert 0.9 < white[row_height:].mean() < 1.0
    assert not list(tmp_path.glob(".*partial*"))
