"""The one way weights are read and placed into a model.

Files: safetensors (single, shards, or a glob) opened lazily, and `.pth` pickles only through
`torch.load(weights_only=True, mmap=True)`, so a pickle that needs code execution is refused. The format is
read from a file's first bytes, so a file that is no checkpoint (text, an HTML page, a Git LFS pointer) is
named as such rather than reported as an unsafe pickle.
Models: built on the meta device and filled with `load_state_dict(assign=True, strict=True)`, so
weights are never held twice. Every failure a user can cause ends in a UserError that names the file.
"""

from __future__ import annotations

import glob
import json
import pickle
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from telefuser_cli.errors import UserError
from telefuser_cli.io.path_kind import directory_problem, file_problem

SAFETENSORS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
PICKLE_PROTO = 0x80  # pickle protocol 2+ opcode: torch.save's legacy format starts with it


def resolve_files(root: Path, pattern: str, component: str) -> list[Path]:
    """The files of one component: `pattern` (relative to root, may be a glob) -> sorted existing paths."""
    root = Path(root)
    problem = directory_problem(root)
    if problem is not None:
        raise UserError(f"model root {root} {problem}; set model.root=/path/to/the/weights/folder")
    if not any(root.iterdir()):
        raise UserError(f"model root {root} is empty; it should hold the model's files ({pattern}, ...)")
    matches = sorted(Path(p) for p in glob.glob(str(root / pattern)))
    if not matches:
        present = sorted(p.name for p in root.iterdir())[:12]
        raise UserError(
            f"{component}: no file matches {root / pattern}; expected the official file name "
            f"{pattern!r} under model.root (found: {', '.join(present)})"
        )
    for path in matches:
        problem = file_problem(path)
        if problem is not None:
            raise UserError(f"{component}: {path} {problem}; it should be the weights file {pattern!r}")
    return matches


def _check_shards(files: list[Path]) -> None:
    """A sharded safetensors set with an index must be complete."""
    index = files[0].parent / SAFETENSORS_INDEX
    if len(files) == 1 or not index.is_file():
        return
    try:
        expected = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{index}: unreadable shard index ({error})") from None
    missing = sorted(expected - {f.name for f in files})
    if missing:
        raise UserError(f"{index} lists shards that are missing: {', '.join(missing[:5])}")


def _what_it_looks_like(head: bytes) -> str:
    """A few words on what a file that is no checkpoint holds, from its first bytes."""
    text = head.decode("utf-8", errors="replace")
    if "\ufffd" in text[:-3] or any(not (c.isprintable() or c in "\r\n\t") for c in text[:-3]):
        return f"it starts with the bytes {head[:8].hex(' ')}"
    if text.startswith("version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights: run `git lfs pull` where it was cloned"
    if text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return "it is an HTML page (a failed download?)"
    return f"it looks like text: {text.strip()[:40]!r}"


def checkpoint_format(path: Path) -> str:
    """What a weights file holds, from its first bytes (not its name): "safetensors", "zip" (torch.save) or
    "pickle" (torch.save's legacy format). UserError naming the path for anything else."""
    problem = file_problem(path)
    if problem is not None:
        raise UserError(f"{path} {problem}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    if not head:
        raise UserError(f"{path} is empty (0 bytes): an interrupted copy or download?")
    if head[:4] == ZIP_MAGIC:
        return "zip"
    if head[0] == PICKLE_PROTO and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    # safetensors: an 8-byte little-endian header length, then the JSON header; a truncated file still
    # starts so, and its reader reports the truncation.
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    raise UserError(f"{path} is not a safetensors or PyTorch checkpoint ({_what_it_looks_like(head)})")


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
    with warnings.catch_warnings():
        # torch warns about pickle protocols other than 2 before failing or succeeding; the outcome is
        # reported either way, so the warning would only add a second, confusing line.
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        if path.suffix == ".safetensors":
            # torch.load takes a path ending in .safetensors for a safetensors file; an open file it reads
            # in the torch.save format this file was found to hold (not memory-mapped: a rare, misnamed file)
            with open(path, "rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            # A legacy (non-zip) file cannot be memory-mapped; read it whole, still weights only.
            return torch.load(path, map_location="cpu", weights_only=True)


def _reason(error: BaseException) -> str:
    """The informative part of a torch.load error: its first sentence, without the C++ source location."""
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(error)).strip()
    if not text:
        return "the file ends early" if isinstance(error, EOFError) else type(error).__name__
    text = text.splitlines()[0]
    return text.split(". ")[0].rstrip(".")[:200]


def _unpickling_message(path: Path, error: pickle.UnpicklingError) -> str:
    # torch words it "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked"
    found = re.search(r"unsupported global(?:: GLOBAL)? (\S+)", str(error), flags=re.IGNORECASE)
    if found:
        return (
            f"{path}: refused to load: its pickle refers to {found.group(1)}, which would run code; it is "
            "not loaded for safety (use a safetensors file, or a dictionary of tensors saved by torch.save)"
        )
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
    reason = detail.group(1).strip() if detail else _reason(error)
    return (
        f"{path}: refused to load: a Python pickle that torch.load cannot read with weights only (not "
        f"written by torch.save, or corrupt): {reason}"
    )


def _read_pickle(path: Path, kind: str) -> dict[str, torch.Tensor]:
    """A torch.save file (``kind``: "zip" or "pickle", from ``checkpoint_format``) -> its tensors."""
    try:
        data = _torch_load(path)
    except pickle.UnpicklingError as error:
        raise UserError(_unpickling_message(path, error)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, struct.error) as error:
        what = "zip archive" if kind == "zip" else "pickle"
        raise UserError(
            f"{path} is a {what} but not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{_reason(error)}"
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: expected a dictionary of tensors, but the file holds a {type(data).__name__}"
        )
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(
                f"{path}: expected a dictionary of tensors, but entry {key!r} is of type {type(value).__name__}"
            )
    return data


def read_state_dict(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    """All tensors of one component (CPU; safetensors and .pth memory-mapped).

    The format is read from each file's first bytes, so a misnamed file loads (safely) and a file that is
    no checkpoint at all is named as such.
    """
    files = [Path(f) for f in files]
    out: dict[str, torch.Tensor] = {}
    if files and files[0].suffix == ".safetensors":
        _check_shards(files)
    for path in files:
        kind = checkpoint_format(path)
        if kind == "safetensors":
            _read_safetensors(path, out, shapes_only=False)
        else:
            for key, value in _read_pickle(path, kind).items():
                if key in out:
                    raise UserError(f"{path}: key {key!r} appears in more than one file")
                out[key] = value
    return out


def read_shapes(files: Iterable[Path]) -> dict[str, torch.Size]:
    """Key -> shape without reading tensor data (safetensors headers; .pth via mmap)."""
    shapes: dict[str, torch.Size] = {}
    for path in files:
        path = Path(path)
        kind = checkpoint_format(path)
        if kind == "safetensors":
            raw: dict = {}
            _read_safetensors(path, raw, shapes_only=True)
            shapes.update({k: torch.Size(v) for k, v in raw.items()})
        else:
            shapes.update({k: v.shape for k, v in _read_pickle(path, kind).items()})
    return shapes


def _first(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "bool" if dtype == torch.bool else "integer"


def _check_dtype(key: str, found: torch.dtype, wanted: torch.dtype, source: str, model: str) -> None:
    """A tensor must be of the kind the model holds there (floating-point tensors are then cast).

    Without this check, integer weights end in a load_state_dict traceback and complex ones load silently.
    """
    if _kind(found) == _kind(wanted):
        return
    hint = ""
    if _kind(found) == "integer" and _kind(wanted) == "floating-point":
        hint = " (an integer-quantized checkpoint? only bf16, fp16, fp32 and fp8 weights are supported)"
    raise UserError(
        f"{source}: {key} is stored as {dtype_name(found)}, but {model} needs {_kind(wanted)} values "
        f"there{hint}"
    )


_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_SCALE_SUFFIX = ".weight_scale"  # the float32 scale of an fp8 layer (ops.fp8_linear.Fp8Linear)


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
    convert: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Build on meta, check keys and shapes, cast, move, and assign the weights.

    convert: run on the meta model and the state dict before the checks; it may replace modules (fp8
    layers, ``loading.quantize``) and returns the state dict that matches them. A tensor the model holds in
    fp8 keeps that dtype, and its scale (``<m>.weight_scale``) float32; other floating-point tensors are cast.
    """
    with torch.device("meta"):
        model = factory()
    if convert is not None:
        try:
            state_dict = convert(model, dict(state_dict))
        except ValueError as error:
            raise UserError(f"{source}: {error}") from None
    expected = model.state_dict()
    for key in sorted(set(expected) & set(state_dict)):
        _check_dtype(key, state_dict[key].dtype, expected[key].dtype, source, type(model).__name__)
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
        held = expected[key].dtype
        if held in _FP8 or key.endswith(FP8_SCALE_SUFFIX):
            target = held  # fp8 values and their float32 scales stay as the fp8 layer holds them
        elif not tensor.is_floating_point():
            target = tensor.dtype
        else:
            target = _target_dtype(key, dtype, keep_fp32)
        placed[key] = tensor.to(device=device, dtype=target)
    model.load_state_dict(placed, strict=True, assign=True)
    return model.eval().requires_grad_(False)
