"""sweep.png: one row per job, its swept values as a label, then frames of its video evenly spaced.

A job without a video (failed, dry run, unreadable file) gets its row too, with the reason as text.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from telefuser_cli.io.files import atomic_path

SHEET = "sweep.png"
FRAMES = 6
THUMB_HEIGHT = 96  # frames are scaled to this height (tiny 32x32 videos become visible)
LABEL_WIDTH = 280
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
ERROR = (180, 0, 0)
_CHARS_PER_LINE = 44  # PIL's default bitmap font is about 6 pixels wide per character


def row_label(row: dict[str, Any]) -> str:
    """The text left of a job's frames: index, swept values, status and time."""
    values = ", ".join(f"{key}={value}" for key, value in row.get("swept", {}).items())
    time = f" {row['time_s']:.1f} s" if isinstance(row.get("time_s"), (int, float)) else ""
    prompt = str(row.get("prompt") or "")
    prompt = prompt if len(prompt) <= 80 else prompt[:79] + "…"
    return f"#{row['index']} {values}\n{row['status']}{time}\n{prompt}"


def _thumbnails(video: Path) -> list[Any]:
    from PIL import Image

    from telefuser_cli.io.video_read import read_frames

    images = []
    for frame in read_frames(video, FRAMES):
        image = Image.fromarray(frame)
        width = max(1, round(image.width * THUMB_HEIGHT / image.height))
        resample = Image.NEAREST if image.height < THUMB_HEIGHT else Image.BILINEAR
        images.append(image.resize((width, THUMB_HEIGHT), resample))
    return images


def _row_content(row: dict[str, Any]) -> tuple[list[Any], str | None]:
    """(thumbnails, None), or ([], the text shown instead)."""
    if row.get("error"):
        return [], f"error: {row['error']}"
    if not row.get("video"):
        return [], f"no video ({row['status']})"
    try:
        return _thumbnails(Path(row["video"])), None
    except (OSError, ValueError, RuntimeError) as error:  # imageio raises these for a damaged file
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]  # not ffmpeg's banner
        return [], f"video unreadable: {first_line}"


def _draw_text(
    draw: Any, xy: tuple[int, int], text: str, width_chars: int, fill: tuple[int, int, int]
) -> None:
    lines = [piece for line in text.splitlines() for piece in (textwrap.wrap(line, width_chars) or [""])]
    draw.multiline_text(xy, "\n".join(lines[:7]), fill=fill)  # 7 lines of the default font fit a row


def sheet_image(rows: list[dict[str, Any]]) -> Any:
    """The contact sheet as a PIL image."""
    from PIL import Image, ImageDraw

    contents = [_row_content(row) for row in rows]
    frames_width = max(
        [sum(image.width + GAP for image in thumbs) for thumbs, _ in contents]
        + [FRAMES * (THUMB_HEIGHT + GAP)]
    )
    width = LABEL_WIDTH + frames_width + GAP
    height = max(1, len(rows)) * (THUMB_HEIGHT + GAP) + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for number, (row, (thumbs, text)) in enumerate(zip(rows, contents, strict=True)):
        top = GAP + number * (THUMB_HEIGHT + GAP)
        _draw_text(draw, (GAP, top + 2), row_label(row), _CHARS_PER_LINE, TEXT)
        x = LABEL_WIDTH
        for image in thumbs:
            sheet.paste(image, (x, top))
            x += image.width + GAP
        if text is not None:
            fill = ERROR if row.get("error") else TEXT
            _draw_text(draw, (LABEL_WIDTH, top + 2), text, max(20, frames_width // 6), fill)
    return sheet


def write_sheet(sweep_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Write sweep.png into `sweep_dir`; the file appears only when complete."""
    path = Path(sweep_dir) / SHEET
    image = sheet_image(rows)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return path
