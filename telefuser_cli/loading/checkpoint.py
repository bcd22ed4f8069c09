"""The one way weights are read and placed into a model.

Files: safetensors (single, shards, or a glob) opened lazily, and `.pth` pickles only through
`torch.load(weights_only=True, mmap=True)`, so a pickle that needs code execution is refused.
Models: built on the meta device and filled with `load_state_dict(assign=True, strict=True)`, so
weights are never held twice. Every failure a user can cause ends in a UserError that names the file.
"""

from __future__ import annotations

import glob
import json
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from telefuser_cli.errors import UserError

SAFETENSORS_INDEX = "diffusion_pytorch_model.safetensors.index.json"


def resolve_files(root: Path, pattern: str, component: str) -> list[Path]:
    """The files of one component: `pattern` (relative to root, may be a glob) -> sorted existing paths."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"model root {root} does not exist; set model.root=/path/to/the/weights")
    if not any(root.iterdir()):
        raise UserError(f"model root {root} is empty; it should hold the model's files ({pattern}, ...)")
    matches = sorted(Path(p) for p in glob.glob(str(root / pattern)))
    if not matches:
        present = sorted(p.name for p in root.iterdir())[:12]
        raise UserError(
            f"{component}: no file matches {root / pattern}; expected the official file name "
            f"{pattern!r} under model.root (found: {', '.join(present)})"
        )
    return matches


def _check_shards(files: list[Path]) -> None:
    """A sharded safetensors set with an index must be complete."""
    index = files[0].parent / SAFETENSORS_INDEX
    if len(files) == 1 or not index.is_file():
        return
    try:
        expected = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise UserError(f"{index}: unreadable shard index ({error})") from None
    missing = sorted(expected - {f.name for f in files})
    if missing:
        raise UserError(f"{index} lists shards that are missing: {', '.join(missing[:5])}")


def _read_safetensors(path: Path, out: dict[str, torch.Tensor], shapes_only: bool) -> None:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                if key in out:
                    raise UserError(f"{path}: key {key!r} appears in more than one shard")
                out[key] = handle.get_slice(key).get_shape() if shapes_only else handle.get_tensor(key)
    except SafetensorError as error:
        raise UserError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {error}"
        ) from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error})") from None


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
        # A legacy (non-zip) file cannot be memory-mapped; read it whole, still weights only.
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = _torch_load(path)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"{path}: refused to load: the pickle needs more than plain tensors (code execution) "
            f"and is not loaded for safety ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}"
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path}: expected a dictionary of tensors")
    return data


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    """All tensors of one component (CPU; safetensors and .pth memory-mapped)."""
    files = list(files)
    out: dict[str, torch.Tensor] = {}
    if files and files[0].suffix == ".safetensors":
        _check_shards(files)
    for path in files:
        if path.suffix == ".safetensors":
            _read_safetensors(path, out, shapes_only=False)
        else:
            for key, value in _read_pickle(path).items():
                if key in out:
                    raise UserError(f"{path}: key {key!r} appears in more than one file")
                out[key] = value
    return out


def read_shapes(files: Iterable[Path]) -> dict[str, torch.Size]:
    """Key -> shape without reading tensor data (safetensors headers; .pth via mmap)."""
    shapes: dict[str, torch.Size] = {}
    for path in files:
        if path.suffix == ".safetensors":
            raw: dict = {}
            _read_safetensors(path, raw, shapes_only=True)
            shapes.update({k: torch.Size(v) for k, v in raw.items()})
        else:
            shapes.update({k: v.shape for k, v in _read_pickle(path).items()})
    return shapes


def _first(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _target_dtype(key: str, dtype: torch.dtype, keep_fp32: tuple[str, ...]) -> torch.dtype:
    return torch.float32 if any(part in key for part in keep_fp32) else dtype


def build_module(
    factory: Callable[[], nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    device: torch.device,
    source: str,
    keep_fp32: tuple[str, ...] = (),
) -> nn.Module:
    """Build on meta, check keys and shapes, cast, move, and assign the weights."""
    with torch.device("meta"):
        model = factory()
    expected = model.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        raise UserError(f"{source} does not match {type(model).__name__}: " + "; ".join(parts))
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{source}: {key} has shape {tuple(state_dict[key].shape)}, "
                f"{type(model).__name__} expects {tuple(tensor.shape)}"
            )
    placed = {}
    for key, tensor in state_dict.items():
        target = _target_dtype(key, dtype, keep_fp32) if tensor.is_floating_point() else tensor.dtype
        placed[key] = tensor.to(device=device, dtype=target)
    model.load_state_dict(placed, strict=True, assign=True)
    return model.eval().requires_grad_(False)
