"""Atomic file writes: a file appears complete under its name, or not at all.

A write that fails (disk full, read-only directory) ends in one UserError naming the file and the
cause; the partial temporary file is removed, and a file already under the final name is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from telefuser_cli.errors import UserError


def human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def write_error(path: Path, error: OSError, written: int = 0) -> UserError:
    """One message for a failed write; on a full disk, how much was written and how much is free."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{human_bytes(shutil.disk_usage(path.parent).free)} free"
        except OSError:
            free = "free space unknown"
        return UserError(
            f"could not write {path}: no space left on device ({human_bytes(written)} written before the "
            f"disk filled, {free} in {path.parent}); free some space or choose another output directory"
        )
    return UserError(f"could not write {path}: {error.strerror or error}")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: put it back at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; rename it to `path` only if the block succeeds."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        # some writers (safetensors) create 0600 files: every output gets the mode a plain write gets
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as error:
        raise write_error(path, error, _size(temporary)) from None
    finally:
        # (the directory may not exist, or be a file, when the write failed there)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            temporary.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def unwritable_reason(directory: Path) -> str | None:
    """Why `directory` cannot be created or written to, or None when it can.

    Looks at the directory itself or, when it does not exist yet, at its nearest existing ancestor
    (the one `mkdir -p` would create it in).
    """
    existing = Path(directory).absolute()
    try:
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a directory"
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            return f"{existing} is on a read-only file system"
    except OSError as error:
        return f"{error.filename or existing}: {error.strerror or error}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (permission denied)"
    return None
