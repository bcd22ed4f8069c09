"""The few lines that end a run on the terminal: what was written, its size, where time and memory went.

They are read from the job's config.json, so the terminal says exactly what the record says. Plain text
(no torch, no rich): the CLI styles the labels and prints the lines as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Memory keys of config.json's run.peak_memory, in the order shown.
_MEMORY = (("host_rss_gib", "host"), ("device_gib", "device"))


def duration(seconds: float) -> str:
    """3.2 s, 2m05s, 1h04m: as precise as a person reads a run's time."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _size(document: dict[str, Any], run: dict[str, Any]) -> str:
    """WxH, frames @ fps of the video written (after super-resolution and frame interpolation)."""
    derived = document.get("derived", {})
    width, height = run.get("size_written") or (derived.get("width"), derived.get("height"))
    frames = run.get("frames_written", derived.get("num_frames"))
    fps = run.get("fps_written", derived.get("output_fps"))
    return f"{width}x{height}, {frames} frames @ {fps} fps"


def _time(timings: dict[str, float]) -> list[str]:
    """The total first, then every stage (stage names are unique: a second `load vae` is `load vae (2)`).

    The total is the sum of the stages: the run's work, without Python's start-up."""
    if not timings:
        return ["not recorded"]
    stages = [f"{name} {duration(seconds)}" for name, seconds in timings.items()]
    return [f"{duration(sum(timings.values()))} total:", *stages]


def _memory(peaks: dict[str, float]) -> str:
    shown = [f"{label} {peaks[key]:.2f} GiB" for key, label in _MEMORY if key in peaks]
    return ", ".join(shown) + " (peak)" if shown else "not measured"


def _experts(steps: dict[str, int]) -> str:
    """high noise 6 steps, low noise 2 steps (config.json names them high_noise, low_noise)."""
    return ", ".join(f"{name.replace('_', ' ')} {count} steps" for name, count in steps.items())


def summary_rows(document: dict[str, Any], output_dir: Path) -> list[tuple[str, list[str]]]:
    """(label, items) per line of the summary of a finished run, from its config.json `document`.

    Items are never split when the lines are wrapped (a path stays whole)."""
    run = document.get("run", {})
    rows: list[tuple[str, list[str]]] = [("video", [str(output_dir / run["video"])])]
    if run.get("frame_strip"):
        rows.append(("strip", [str(output_dir / run["frame_strip"])]))
    if run.get("latents"):
        rows.append(("latents", [str(output_dir / run["latents"])]))
    rows.append(("size", [_size(document, run)]))
    seed = document.get("layer3_user_inputs", {}).get("seed")
    if seed is not None:
        rows.append(("seed", [str(seed)]))
    rows.append(("time", _time(run.get("timings_s", {}))))
    rows.append(("memory", [_memory(run.get("peak_memory", {}))]))
    if run.get("expert_steps"):
        rows.append(("experts", [_experts(run["expert_steps"])]))
    return rows


def _pack(items: list[str], width: int) -> list[str]:
    """Items joined by ", " into lines of at most `width` characters; an item longer than a line gets a
    line of its own rather than being broken."""
    lines: list[str] = []
    for index, item in enumerate(items):
        # the total ("... total:") is followed by a space, the stages by a comma
        text = item if index == len(items) - 1 or item.endswith(":") else f"{item},"
        if lines and len(lines[-1]) + 1 + len(text) <= width:
            lines[-1] += f" {text}"
        else:
            lines.append(text)
    return lines


def summary_lines(rows: list[tuple[str, list[str]]], width: int = 80) -> list[tuple[str, str]]:
    """(label, text) per terminal line: labels padded to one column, long rows wrapped under their text."""
    column = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, items in rows:
        for index, text in enumerate(_pack(items, max(20, width - column))):
            lines.append(((label if index == 0 else "").ljust(column), text))
    return lines
