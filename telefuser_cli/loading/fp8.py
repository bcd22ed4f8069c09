"""fp8 checkpoints: what precision a file holds, and plain weights from fp8 ones (scales applied).

Conventions met in released Wan fp8 files (all keep the official key names for the weights):
- plain fp8: ``<m>.weight`` in float8_e4m3fn (or e5m2), no scale: the value is the weight.
- ComfyUI "scaled fp8": ``<m>.scale_weight`` (float32, one element) next to each fp8 ``<m>.weight``; an empty
  ``scaled_fp8`` marker tensor; sometimes ``<m>.scale_input`` (activation scale for fp8 matmuls).
- lightx2v: ``<m>.weight_scale`` (float32), per output channel ``[out, 1]``, per tensor, or per 128x128 block
  ``[ceil(out/128), ceil(in/128)]`` (its ``fp8-b128`` scheme); optional ``<m>.input_scale``.
In all of them the weight is ``fp8.float() * scale``. Activation scales only serve fp8 matmul kernels; a
dequantized model does not use them, so they are dropped with the markers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from telefuser_cli.errors import UserError
from telefuser_cli.loading.checkpoint import checkpoint_format, read_state_dict

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")  # ComfyUI, lightx2v
DROPPED_SUFFIXES = (".scale_input", ".input_scale")
MARKER_KEYS = ("scaled_fp8",)
BLOCK = 128  # the block size of block-wise fp8 scales (lightx2v fp8-b128, DeepSeek-style)

_SAFETENSORS_DTYPES = {
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
}
_KIND = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp32"}


def read_dtypes(files: Iterable[Path]) -> dict[str, torch.dtype | str]:
    """Key -> dtype without reading tensor data (safetensors headers; ``.pth`` through mmap).

    Dtypes torch has no name for here (integers) are kept as the safetensors string ("I64", ...).
    """
    out: dict[str, torch.dtype | str] = {}
    for path in files:
        path = Path(path)
        if checkpoint_format(path) == "safetensors":
            try:
                with safe_open(str(path), framework="pt", device="cpu") as handle:
                    for key in handle.keys():
                        name = handle.get_slice(key).get_dtype()
                        out[key] = _SAFETENSORS_DTYPES.get(name, name)
            except (SafetensorError, OSError) as error:
                raise UserError(f"{path} is not a readable safetensors file: {error}") from None
        else:
            out.update({k: v.dtype for k, v in read_state_dict([path]).items()})
    return out


# safetensors names of the dtypes torch has no use for here, as torch would print them
_OTHER_NAMES = {"BOOL": "bool", "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32",
                "U32": "uint32", "I64": "int64", "U64": "uint64", "C64": "complex64"}  # fmt: skip


def _dtype_label(dtype: torch.dtype | str) -> str:
    if isinstance(dtype, str):
        return _OTHER_NAMES.get(dtype, dtype)
    return str(dtype).removeprefix("torch.")


def _as_dtype(value) -> torch.dtype | str:
    if isinstance(value, torch.Tensor):
        return value.dtype
    if isinstance(value, str):
        return _SAFETENSORS_DTYPES.get(value, value)
    return value


def detect_quant(dtypes: Mapping[str, object], shapes: Mapping[str, object] | None = None) -> str:
    """The storage precision of a checkpoint: "fp8", "bf16", "fp16" or "fp32".

    dtypes: key -> torch dtype, safetensors dtype string ("F8_E4M3", "BF16", ...) or tensor. Any fp8 tensor
    makes it "fp8". Otherwise the floating dtype holding most ``*.weight`` elements (by count of keys when
    ``shapes`` is not given) wins: official files keep small tables in float32 next to bf16 matrices.
    Raises ValueError for a checkpoint without floating ``*.weight`` tensors.
    """
    resolved = {k: _as_dtype(v) for k, v in dtypes.items()}
    if any(d in FP8_DTYPES for d in resolved.values()):
        return "fp8"
    totals: dict[str, int] = {}
    for key, dtype in resolved.items():
        if key.endswith(".weight") and dtype in _KIND:
            size = 1 if shapes is None else math.prod(tuple(getattr(shapes[key], "shape", shapes[key])))
            totals[_KIND[dtype]] = totals.get(_KIND[dtype], 0) + size
    if not totals:
        found = sorted({_dtype_label(d) for k, d in resolved.items() if k.endswith(".weight")})
        raise ValueError(
            f"no floating-point *.weight tensors among {len(resolved)} keys (weights stored as "
            f"{', '.join(found) or 'nothing'}; integer-quantized checkpoints are not supported)"
        )
    return max(totals, key=totals.__getitem__)


def _scale_key(sd: Mapping[str, torch.Tensor], weight_key: str) -> str | None:
    module = weight_key.removesuffix(".weight")
    found = [module + s for s in WEIGHT_SCALE_SUFFIXES if module + s in sd]
    if len(found) > 1:
        raise ValueError(f"{weight_key} has two scales: {found}")
    return found[0] if found else None


def _expand_scale(scale: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    """A per-tensor, per-output-channel or per-128-block scale -> broadcastable to ``weight`` (float32)."""
    scale = scale.float()
    out = weight.shape[0]
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == out and (scale.ndim == 1 or scale.shape[1:].numel() == 1):
        return scale.reshape(out, *([1] * (weight.ndim - 1)))
    if weight.ndim == 2 and scale.shape == (math.ceil(out / BLOCK), math.ceil(weight.shape[1] / BLOCK)):
        rows = scale.repeat_interleave(BLOCK, 0)[:out]
        return rows.repeat_interleave(BLOCK, 1)[:, : weight.shape[1]]
    raise ValueError(
        f"{key}: scale of shape {tuple(scale.shape)} fits neither per tensor, per output channel nor per "
        f"{BLOCK}x{BLOCK} block of the weight {tuple(weight.shape)}"
    )


def dequantize_state_dict(
    sd: Mapping[str, torch.Tensor], dtype: torch.dtype, keep_fp32: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Plain weights from an fp8 (optionally scaled) state dict.

    Every weight with a scale becomes ``(weight.float() * scale).to(dtype)``; unscaled fp8 tensors are cast
    to ``dtype``; keys containing one of ``keep_fp32`` go to float32 instead (no rounding through ``dtype``
    on their way to the float32 the model keeps them in). Scale, activation-scale and marker keys are
    removed. Other tensors are returned unchanged (the loader's ``build_module`` casts them, keeping its
    float32 tables). Raises ValueError for a scale without its weight or a scale shape that fits no known
    convention.
    """
    if dtype in FP8_DTYPES or not dtype.is_floating_point:
        raise ValueError(f"dequantize to a plain floating dtype (bfloat16, float32), not {dtype}")
    scales = {k for k in sd if k.endswith(WEIGHT_SCALE_SUFFIXES)}
    orphans = sorted(s for s in scales if s.rpartition(".")[0] + ".weight" not in sd)
    if orphans:
        raise ValueError(f"{len(orphans)} weight scales have no weight: {orphans[:5]}")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        if key in scales or key in MARKER_KEYS or key.endswith(DROPPED_SUFFIXES):
            continue
        scale_key = _scale_key(sd, key) if key.endswith(".weight") else None
        target = torch.float32 if any(part in key for part in keep_fp32) else dtype
        if scale_key is not None:
            scale = _expand_scale(sd[scale_key], tensor, scale_key)
            out[key] = (tensor.float() * scale).to(target)
        elif tensor.dtype in FP8_DTYPES:
            out[key] = tensor.to(target)
        else:
            out[key] = tensor
    return out
