"""Running the real CLI in-process and reading what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from telefuser_cli.cli import app


def run_cli(*args: str):
    """Invoke `telefuser ARGS` in-process; returns the click Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def dump(*overrides: str) -> dict:
    result = run_cli("dump-config", *overrides)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def job_dirs(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.rglob("config.json"))
