"""Tiny models: a family's official directory layout filled with small deterministic random weights.

They go through exactly the loading code real weights do, on any CPU in seconds; tests, demos and the
`tiny_*` model entries use them. Each family's ``tiny`` module registers its makers here by name.

A tiny model entry is a fixture, not a fact of a video model: it points ``model.root`` at a folder directly
in telefuser's cache (``paths.cache_dir()``) named after a maker, and :func:`prepare_root` writes that
folder the first time a generation needs it. Nothing else is ever written on a user's behalf.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from telefuser_cli.paths import cache_dir

if TYPE_CHECKING:
    from telefuser_cli.config.schema import ModelConfig

log = logging.getLogger(__name__)

# Importing one of these registers that family's makers; done on first need, as they import the models.
FAMILY_MAKERS = ("telefuser_cli.families.wan.tiny", "telefuser_cli.families.hunyuan15.tiny")


@dataclasses.dataclass(frozen=True)
class TinyMaker:
    write: Callable[[Path, int], None]  # fills a new, empty folder from a seed
    marker: str  # the file whose presence means the model is complete (written last, or by the last step)
    # Adds to a complete folder what the maker has written only since (a folder cached by an older version).
    update: Callable[[Path], None] | None = None


_REGISTRY: dict[str, TinyMaker] = {}


def register(name: str, marker: str, update: Callable[[Path], None] | None = None):
    """Decorator: register ``write(directory, seed)`` as tiny model ``name``."""

    def add(write: Callable[[Path, int], None]) -> Callable[[Path, int], None]:
        if name in _REGISTRY:
            raise ValueError(f"tiny model {name!r} is registered twice")
        _REGISTRY[name] = TinyMaker(write, marker, update)
        return write

    return add


def makers() -> dict[str, TinyMaker]:
    """Every registered tiny model, by name."""
    for module in FAMILY_MAKERS:
        importlib.import_module(module)
    return dict(_REGISTRY)


def _maker(kind: str) -> TinyMaker:
    known = makers()
    if kind not in known:
        raise ValueError(f"unknown tiny model {kind!r}; choose one of {', '.join(known)}")
    return known[kind]


# ---------------------------------------------------------------- helpers shared by the families' makers


def randomise(model: torch.nn.Module, generator: torch.Generator, bias_std: float = 0.02) -> None:
    """Every parameter random, nothing zero (the official inits zero some, which would hide bugs):
    matrices scaled by 1/sqrt(fan-in), norm scales near 1, biases small."""
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim >= 2 and not name.endswith("gamma"):
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            elif "norm" in name or name.endswith("gamma"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(bias_std * torch.randn(param.shape, generator=generator))


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """The module's state dict as one safetensors file (the official layouts' diffusion_pytorch_model)."""
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---------------------------------------------------------------- writing a tiny model, once


def write_tiny(kind: str, directory: Path, seed: int = 0) -> Path:
    """Write tiny model `kind` into `directory` (created; must not hold another model's files).

    Files are written into a temporary sibling and moved into place, so an interrupted run
    leaves nothing half-written.
    """
    maker = _maker(kind)
    directory = Path(directory).expanduser()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; choose a new directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        maker.write(staging, seed)
        _default_modes(staging)
        if directory.exists():
            directory.rmdir()
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _default_modes(folder: Path) -> None:
    """Give every file and folder below `folder` (itself included) the mode a plain write gets under the
    umask, as the other cache files have: mkdtemp makes 0700 and safetensors writes 0600, which would
    lock the rest of a shared cache's users out."""
    probe = folder / ".mode-probe"
    probe.touch()
    file_mode = probe.stat().st_mode & 0o777  # 0o666 less the umask
    probe.unlink()
    probe.mkdir()
    folder_mode = probe.stat().st_mode & 0o777  # 0o777 less the umask
    probe.rmdir()
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(folder_mode if path.is_dir() else file_mode)
    folder.chmod(folder_mode)


def ensure_tiny(kind: str, directory: Path) -> Path:
    """Tiny model `kind` at `directory`, created on first use (safe if two jobs race to create it)."""
    maker = _maker(kind)
    directory = Path(directory).expanduser()
    marker = directory / maker.marker
    if marker.exists():
        if maker.update:
            maker.update(directory)
        return directory
    log.info("creating the tiny model %s in %s (first use)", kind, directory)
    try:
        return write_tiny(kind, directory)
    except (FileExistsError, OSError):
        if marker.exists():  # another job finished it first
            return directory
        raise


def fixture_kind(root: Path) -> str | None:
    """The tiny model that `root` is the fixture folder of: a folder directly in telefuser's cache named
    after a maker. None for any other folder (those are never written)."""
    try:
        resolved = Path(root).expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop: not a fixture; locating the files reports it
        return None
    if resolved.parent != cache_dir().resolve():
        return None
    return resolved.name if resolved.name in makers() else None


def prepare_root(model: ModelConfig) -> Path:
    """The weights' directory of a model entry; a tiny fixture folder is written on first use."""
    root = Path(model.root).expanduser()
    kind = fixture_kind(root)
    if kind is not None:
        ensure_tiny(kind, root)
    return root
