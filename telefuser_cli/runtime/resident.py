"""Components and encodings kept between the jobs of one process, so a sweep loads and encodes once.

The jobs of a sweep on Hydra's basic launcher (and those of one joblib worker) run one after another in one
process. A component (a DiT with its runtime transforms, a text encoder, a VAE, an image encoder) loaded by
one job is kept for the next while the next asks for the same one: same :class:`Identity`, i.e. the same
files (path, size, modification time) and the same runtime settings (dtype, device, attention, LoRAs,
weight format, compile, offload, step cache, parallel layout: everything of its runtime config). Text
embeddings and image encodings are kept the same way, keyed by the encoder's identity and their inputs.

Memory: before a component of some kind (a DiT, a text encoder, ...) is loaded, every kept component of that
kind that the current job has not used is released first, so a sweep alternating two models never holds
both models' DiTs. And when the host could not hold the component about to load (twice its files, as a
half-precision file may load in float32) beside what is kept, every kept component of another kind is
released too: the next job that needs one loads it again, as a single run would, instead of running out
of memory. At the end of a job, what it did not use is released (a seed sweep keeps no text encoder once
every prompt is encoded).

Only jobs that may have a next one in the process keep anything (a sweep; not a single run, which has
nothing to gain); ``pipeline.keep_loaded=false`` turns it off for a sweep too.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from telefuser_cli.config.dump import to_plain

log = logging.getLogger(__name__)
T = TypeVar("T")
# Encodings kept at most (the oldest goes first): UMT5 features of a long prompt are up to 8 MiB in float32,
# so a sweep over hundreds of prompts keeps a bounded amount.
MAX_ENCODINGS = 64


@dataclass(frozen=True)
class Identity:
    """What makes two loads of a component the same: its kind, its files as they are on disk, and settings."""

    kind: str  # "dit", "text encoder", "vae", "image encoder", "upsampler"
    files: tuple[tuple[str, int, int], ...]  # (resolved path, size, mtime_ns) of every file read
    settings: str  # canonical JSON of the runtime settings that change what is built


def _stat(path: Path) -> list[tuple[str, int, int]]:
    path = Path(path)
    if path.is_dir():  # a tokenizer or an encoder folder: every file in it
        return [entry for child in sorted(path.rglob("*")) if child.is_file() for entry in _stat(child)]
    status = os.stat(path)
    return [(str(path.resolve()), status.st_size, status.st_mtime_ns)]


def identity(kind: str, files: Iterable[Path], **settings: Any) -> Identity:
    """The identity of a component of ``kind`` built from ``files`` with ``settings`` (dataclasses, Enums
    and plain values; they are recorded as canonical JSON)."""
    stats = tuple(entry for path in files for entry in _stat(path))
    text = json.dumps(to_plain(settings), sort_keys=True, ensure_ascii=False, default=str)
    return Identity(kind, stats, text)


@dataclass
class _Held:
    value: Any
    job: int  # the last job that used it


@dataclass
class Resident:
    """The process's kept components and encodings (one per process: :data:`RESIDENT`)."""

    enabled: bool = True
    job: int = 0
    held: dict[Identity, _Held] = field(default_factory=dict)
    encodings: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # what the current job did not load or encode itself

    def start_job(self, enabled: bool) -> None:
        """A new job begins; ``enabled``: it keeps what it loads for a next job (``pipeline.keep_loaded`` in a
        sweep). Off, everything kept is dropped."""
        from telefuser_cli.runtime.device import full_collections

        self.job += 1
        self.enabled = enabled
        self.reused = []
        full_collections(not enabled)  # what this job releases is freed by reference counting, or kept
        if not enabled:
            self.clear()

    def component(self, key: Identity, load: Callable[[], T], label: str) -> T:
        """The component ``key`` names: the kept one, or ``load()`` (after releasing the kept ones of its
        kind that this job has not used). ``label`` names it in the record's ``reused`` list."""
        held = self.held.get(key)
        if held is not None:
            held.job = self.job
            self.reused.append(label)
            log.info("%s: kept from an earlier job (not loaded again)", label)
            return held.value
        self._release_kind(key.kind)
        self._make_room(key)
        value = load()
        if self.enabled:
            self.held[key] = _Held(value, self.job)
        return value

    def lookup(self, key: tuple[Any, ...], label: str) -> Any | None:
        """A kept encoding (text embeddings, an image's latents and tokens) for ``key`` (its encoder's identity
        and its inputs), or None."""
        value = self.encodings.pop(key, None) if self.enabled else None
        if value is not None:
            self.encodings[key] = value  # the most recently used is the last to go
            self.reused.append(label)
        return value

    def store(self, key: tuple[Any, ...], value: Any) -> Any:
        """Keep ``value`` for ``key`` (when enabled); returns it."""
        if self.enabled:
            self.encodings[key] = value
            while len(self.encodings) > MAX_ENCODINGS:
                del self.encodings[next(iter(self.encodings))]
        return value

    def end_job(self) -> None:
        """Release what this job did not use: a later job is unlikely to need it either."""
        unused = [key for key, held in self.held.items() if held.job != self.job]
        for key in unused:
            del self.held[key]
        if unused:
            _collect()

    def _make_room(self, key: Identity) -> None:
        from telefuser_cli.runtime.device import host_available_bytes

        others = [k for k in self.held if k.kind != key.kind]
        available = host_available_bytes()
        if not others or available is None or 2 * sum(size for _, size, _ in key.files) <= available:
            return
        log.info(
            "releasing kept components to make room for the %s (%.1f GiB available)",
            key.kind,
            available / 2**30,
        )
        for other in others:
            del self.held[other]
        _collect()

    def _release_kind(self, kind: str) -> None:
        stale = [key for key, held in self.held.items() if key.kind == kind and held.job != self.job]
        for key in stale:
            log.info("releasing a kept %s that this job does not use", kind)
            del self.held[key]
        if stale:
            _collect()

    def clear(self) -> None:
        had = bool(self.held)
        self.held.clear()
        self.encodings.clear()
        if had:
            _collect()


def park(module: Any, device: Any) -> None:
    """A kept component waits for the next job in host memory, so the device holds what a single run holds.

    On a CPU there is nothing to move."""
    if str(device) != "cpu":
        module.to("cpu")


def unpark(module: Any, device: Any) -> None:
    """Back to ``device`` for this job's stage (see :func:`park`)."""
    if str(device) != "cpu":
        module.to(device)


def _collect() -> None:
    """Free the released components' memory now (host and device), before the next load."""
    from telefuser_cli.runtime.device import free_memory

    gc.collect()
    free_memory()


RESIDENT = Resident()
