"""Where the packaged configuration lives: inside an installed wheel, or in a source checkout."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "telefuser's configuration directory was not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall the package"
    )


def config_dir() -> Path:
    """`conf/`: shipped as `telefuser_cli/_conf` in a wheel, at the repository root in a checkout."""
    return _first_existing(_PACKAGE / "_conf", _PACKAGE.parent / "conf")


def cache_dir() -> Path:
    """Where models created on first use (the tiny model) are kept."""
    return Path(os.environ.get("TELEFUSER_CACHE", "~/.cache/telefuser")).expanduser()
