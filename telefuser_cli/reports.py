"""What the CLI says when a command ends: one line for an error, the summary of a run, the table and
`sweep.json` of a sweep, and a bug as one line pointing at its saved traceback.

Torch-free: the job's results and its config.json carry everything said here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from telefuser_cli import terminal

console = Console()
err_console = terminal.console  # the run's console: messages print above its progress bars


def fail(message: str, code: int = 2) -> None:
    # soft_wrap: a long message stays one line (a path is never broken where the terminal wraps it)
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def warn(warnings: list[str]) -> None:
    """Each validation warning once, however many jobs raised it (the jobs keep them in config.json)."""
    for warning in dict.fromkeys(warnings):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)


def debug_enabled() -> bool:
    from telefuser_cli.job import DEBUG_ENV

    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def internal_error(error: BaseException) -> None:
    """A bug: one line naming a file with the traceback (on the terminal too with TELEFUSER_DEBUG=1)."""
    import tempfile
    import traceback

    from telefuser_cli.job import internal_error_message

    if debug_enabled():
        raise error
    try:
        with tempfile.NamedTemporaryFile("w", prefix="telefuser-error-", suffix=".log", delete=False) as file:
            file.write("".join(traceback.format_exception(error)))
        path = Path(file.name)
    except OSError:
        path = None
    fail(internal_error_message(error, path), code=1)


def _show_traceback(result: dict[str, Any]) -> None:
    """With TELEFUSER_DEBUG=1, a job's internal error shows its saved traceback."""
    if debug_enabled() and result.get("traceback"):
        try:
            err_console.print(
                Path(result["traceback"]).read_text(encoding="utf-8"), markup=False, highlight=False
            )
        except OSError:
            pass


def _job_error(ret: Any) -> BaseException | None:
    """The exception a job raised (run_job returns its failures, but a launcher may still report one)."""
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.COMPLETED:
        return None
    return ret._return_value if isinstance(ret._return_value, BaseException) else RuntimeError("job failed")


def report_run(ret: Any) -> None:
    from telefuser_cli.errors import UserError

    error = _job_error(ret)
    if isinstance(error, UserError):
        fail(str(error))
    if error is not None:
        raise error
    result = ret._return_value
    if result.get("status") == "failed":
        _show_traceback(result)
        fail(result["error"], code=1 if result.get("internal") else 2)
    if result.get("status") == "worker":  # a torchrun rank other than 0: rank 0 reports
        return
    if result.get("status") == "dry-run":
        console.print(f"[green]dry run:[/] {escape(result['output_dir'])}", soft_wrap=True, highlight=False)
        return
    _print_summary(Path(result["output_dir"]))


def _print_summary(output_dir: Path) -> None:
    """The end of a run: its files, size, time and memory, as its config.json records them."""
    from telefuser_cli.job import CONFIG_JSON
    from telefuser_cli.summary import summary_lines, summary_rows

    try:
        document = json.loads((output_dir / CONFIG_JSON).read_text(encoding="utf-8"))
        rows = summary_rows(document, output_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:  # the video is there: say where
        console.print(f"[green]output:[/] {escape(str(output_dir))} (no summary: {escape(str(error))})")
        return
    for label, text in summary_lines(rows, console.width):
        # soft_wrap: a path longer than the terminal stays one line, never broken where it wraps
        console.print(f"[green]{label}[/]{escape(text)}", soft_wrap=True, highlight=False)


def _sweep_row(index: int, ret: Any, swept: list[str]) -> dict[str, Any]:
    """One job's outcome for sweep.json, whatever way it ended."""
    from telefuser_cli.config.job_names import short_key, swept_values

    error = _job_error(ret)
    value = ret._return_value if error is None and isinstance(ret._return_value, dict) else {}
    if error is not None:
        error = str(error)
    elif value.get("status") == "failed":
        error = value["error"]
        _show_traceback(value)
    output_dir = value.get("output_dir") or str(ret.hydra_cfg.hydra.runtime.output_dir)
    overrides = list(ret.overrides or [])
    return {
        "index": index,
        "overrides": overrides,
        "swept": {short_key(key): v for key, v in swept_values(overrides, swept).items()},
        "status": "failed" if error is not None else value.get("status"),
        "output_dir": output_dir,
        "video": value.get("video"),
        "seed": value.get("seed"),
        "prompt": value.get("prompt"),
        "settings_sha256": value.get("settings_sha256"),
        "time_s": value.get("time_s"),
        "error": error,
    }


def _shown_path(path: str | None, sweep_dir: Path) -> str:
    """A job's file as the table shows it: relative to the sweep's directory (printed below it)."""
    if not path:
        return ""
    try:
        return str(Path(path).absolute().relative_to(sweep_dir.absolute()))
    except ValueError:
        return path


def _sweep_table(rows: list[dict[str, Any]], sweep_dir: Path) -> Table:
    """One column per swept key, then status, time and video."""
    keys = list(dict.fromkeys(key for row in rows for key in row["swept"]))
    table = Table(title="sweep")
    for column in ("#", *keys, "status", "time", "video"):
        table.add_column(escape(column), overflow="fold")
    for row in rows:
        status = (
            escape(str(row["status"])) if row["error"] is None else f"[red]failed[/]: {escape(row['error'])}"
        )
        time = f"{row['time_s']:.1f} s" if isinstance(row.get("time_s"), (int, float)) else ""
        values = [escape(str(row["swept"].get(key, ""))) for key in keys]
        table.add_row(str(row["index"]), *values, status, time, escape(_shown_path(row["video"], sweep_dir)))
    return table


def _write_views(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """sweep.png and index.html; a failure to draw them is a warning, never the sweep's result."""
    from telefuser_cli.errors import UserError
    from telefuser_cli.sweeps.page import write_page
    from telefuser_cli.sweeps.sheet import write_sheet

    written = []
    for write in (write_sheet, write_page):
        try:
            written.append(write(sweep_dir, rows))
        except (UserError, OSError, ValueError) as error:
            warn([f"could not write the sweep's {write.__name__.removeprefix('write_')}: {error}"])
    return written


def report_sweep(returns: list[Any], swept: list[str] | None = None) -> None:
    """The sweep's table, then sweep.json (the whole record of every job), sweep.png and index.html
    in the sweep's directory; exit 1 when a job failed."""
    from telefuser_cli.io.files import atomic_write_text

    rows = [_sweep_row(index, ret, list(swept or [])) for index, ret in enumerate(returns)]
    sweep_dir = Path(returns[0].hydra_cfg.hydra.sweep.dir) if returns else Path()
    console.print(_sweep_table(rows, sweep_dir))
    if returns:
        document = {"swept_keys": list(swept or []), "jobs": rows}
        atomic_write_text(sweep_dir / "sweep.json", json.dumps(document, indent=2, ensure_ascii=False))
        for path in [sweep_dir / "sweep.json", *_write_views(sweep_dir, rows)]:
            console.print(f"[green]sweep:[/] {escape(str(path))}", soft_wrap=True, highlight=False)
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    if len(counts) > 1 or "skipped (done)" in counts:
        console.print(", ".join(f"{count} {status}" for status, count in counts.items()), highlight=False)
    failures = [row for row in rows if row["error"] is not None]
    if failures:
        lines = [f"{len(failures)} of {len(rows)} jobs failed"]
        lines += [f"job {row['index']} ({' '.join(row['overrides'])}): {row['error']}" for row in failures]
        fail("\n".join(lines), code=1)
