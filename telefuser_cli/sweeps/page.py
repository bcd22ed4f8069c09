"""index.html: a self-contained page of a sweep, one card per job.

Each card has the job's video (`<video controls>`), its swept values, its status or error, its time and
a link to its config.json; paths are relative to the page, so the sweep folder can be moved or copied
whole. No scripts, no external files: the CSS is inline. All text is escaped.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from telefuser_cli.io.files import atomic_write_text

PAGE = "index.html"
CONFIG_JSON = "config.json"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
h1 { font-size: 1.3rem; }
.cards { display: flex; flex-wrap: wrap; gap: 1rem; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.75rem; width: 320px; }
.card video { width: 100%; background: #000; image-rendering: pixelated; }
.card h2 { font-size: 1rem; margin: 0 0 0.4rem; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 0.6rem; margin: 0.4rem 0; }
.card dt { color: #666; }
.card dd { margin: 0; word-break: break-word; }
.status-done, .status-skipped { color: #176f2c; }
.status-failed { color: #b00020; }
.error { color: #b00020; white-space: pre-wrap; word-break: break-word; }
"""


def _relative(path: str | Path, page_dir: Path) -> str:
    """`path` as a URL relative to the page (forward slashes, each part escaped)."""
    from urllib.parse import quote

    relative = os.path.relpath(Path(path).resolve(), page_dir.resolve())
    return quote(Path(relative).as_posix(), safe="/=,")  # `=` and `,` are plain in a path: names stay legible


def _card(row: dict[str, Any], page_dir: Path) -> str:
    esc = html.escape
    status = str(row.get("status") or "unknown")
    parts = [f'<div class="card" id="job-{int(row["index"])}">', f"<h2>#{int(row['index'])}</h2>"]
    video = row.get("video")
    if video and Path(video).is_file():
        parts.append(f'<video controls preload="metadata" src="{esc(_relative(video, page_dir))}"></video>')
    items = [(key, str(value)) for key, value in row.get("swept", {}).items()]
    items.append(("status", status))
    if isinstance(row.get("time_s"), (int, float)):
        items.append(("time", f"{row['time_s']:.1f} s"))
    if row.get("seed") is not None and "seed" not in row.get("swept", {}):
        items.append(("seed", str(row["seed"])))
    if row.get("prompt"):
        items.append(("prompt", str(row["prompt"])))
    parts.append("<dl>")
    for key, value in items:
        css = f' class="status-{esc(status.split()[0])}"' if key == "status" else ""
        parts.append(f"<dt>{esc(key)}</dt><dd{css}>{esc(value)}</dd>")
    parts.append("</dl>")
    if row.get("error"):
        parts.append(f'<p class="error">{esc(str(row["error"]))}</p>')
    config = Path(row["output_dir"]) / CONFIG_JSON if row.get("output_dir") else None
    if config is not None and config.is_file():
        parts.append(f'<a class="config" href="{esc(_relative(config, page_dir))}">config.json</a>')
    parts.append("</div>")
    return "\n".join(parts)


def page_html(rows: list[dict[str, Any]], page_dir: Path, title: str) -> str:
    cards = "\n".join(_card(row, page_dir) for row in rows)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f'<div class="cards">\n{cards}\n</div>\n</body>\n</html>\n'
    )


def write_page(sweep_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Write index.html into `sweep_dir`."""
    path = Path(sweep_dir) / PAGE
    done = sum(1 for row in rows if row.get("error") is None)
    title = f"sweep {Path(sweep_dir).name}: {len(rows)} jobs, {done} without error"
    atomic_write_text(path, page_html(rows, Path(sweep_dir), title))
    return path
