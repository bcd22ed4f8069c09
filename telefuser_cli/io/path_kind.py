"""What a path on disk is, in words, for messages about files the user named (torch-free, stdlib only).

``describe_path(path)`` always returns a short phrase that reads after the path: "is a directory", "is a
regular file", "is a symlink loop", "is a broken symlink (to T)", "does not exist", "is not readable
(permission denied)". ``file_problem`` / ``directory_problem`` return None when the path is what a loader
needs, else that phrase with what was expected, so one message says both what the path is and what it
should be.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["describe_path", "directory_problem", "file_problem"]

_KINDS = (
    (stat.S_ISREG, "is a regular file"),
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a named pipe (FIFO)"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
)
_OTHER = "is not a file or a directory"
_KIND_PHRASES = {phrase for _, phrase in _KINDS} | {_OTHER}


def _error_phrase(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "is a symlink loop"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "is not readable (permission denied)"
    if error.errno == errno.ENOTDIR:
        return "does not exist (a folder on its way is a file)"
    if error.errno == errno.ENAMETOOLONG:
        return "has a name that is too long"
    if error.errno == errno.ENOENT:
        return "does not exist"
    return f"cannot be examined ({error.strerror or error})"


def _kind(mode: int) -> str:
    return next((phrase for test, phrase in _KINDS if test(mode)), _OTHER)


def describe_path(path: str | os.PathLike) -> str:
    """One phrase saying what ``path`` is (symlinks followed; broken and looping ones named as such)."""
    path = Path(path).expanduser()
    try:
        link = path.lstat()
    except OSError as error:
        return _error_phrase(error)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if stat.S_ISLNK(link.st_mode) and error.errno == errno.ENOENT:
            return f"is a broken symlink (to {os.readlink(path)})"
        return _error_phrase(error)
    if stat.S_ISREG(mode) and not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    if stat.S_ISDIR(mode) and not os.access(path, os.R_OK | os.X_OK):
        return "is a directory that is not readable (permission denied)"
    return _kind(mode)


def _expected(path: str | os.PathLike, wanted: str, noun: str) -> str | None:
    phrase = describe_path(path)
    if phrase == wanted:
        return None
    plain_kind = phrase in _KIND_PHRASES
    return f"{phrase}, not a {noun}" if plain_kind else phrase


def file_problem(path: str | os.PathLike) -> str | None:
    """None for a readable regular file, else what the path is, e.g. "is a directory, not a file"."""
    return _expected(path, "is a regular file", "file")


def directory_problem(path: str | os.PathLike) -> str | None:
    """None for a readable directory, else what the path is, e.g. "is a regular file, not a directory"."""
    return _expected(path, "is a directory", "directory")
