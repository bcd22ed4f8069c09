"""Which GPUs a job may use when several jobs of a sweep run at once on one machine.

Every running job holds an exclusive lock file per GPU it uses (`gpu<N>.lock` in a directory shared
by the sweep's jobs); a job asking for k GPUs takes the first k free ones and waits while there are
not enough. Locks die with their process, so a crashed job frees its GPUs. On a machine without
GPUs nothing is claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from telefuser_cli.errors import UserError

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "telefuser-gpu-locks"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def claim_devices(
    count: int,
    total: int,
    lock_dir: Path = DEFAULT_LOCK_DIR,
    timeout_s: float = 24 * 3600,
    poll_s: float = 2.0,
) -> Iterator[list[int]]:
    """Hold `count` of the machine's `total` GPUs for the duration of the block; yields their indices."""
    if total == 0 or count == 0:
        yield []
        return
    if count > total:
        raise UserError(f"this job needs {count} GPUs but the machine has {total}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    held: dict[int, int] = {}
    try:
        while True:
            for index in range(total):
                if len(held) == count:
                    break
                if index not in held:
                    fd = _try_lock(lock_dir / f"gpu{index}.lock")
                    if fd is not None:
                        held[index] = fd
            if len(held) == count:
                break
            # Not enough free: give back what we hold so two waiting jobs cannot deadlock.
            for fd in held.values():
                os.close(fd)
            held.clear()
            if time.monotonic() > deadline:
                raise UserError(f"no {count} free GPU(s) within {timeout_s:.0f} s (locks in {lock_dir})")
            time.sleep(poll_s)
        yield sorted(held)
    finally:
        for fd in held.values():
            os.close(fd)
