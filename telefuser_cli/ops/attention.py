"""The one attention dispatch point.

All attention in telefuser goes through :func:`attention` (or a function from :func:`get_attention_fn`,
resolved once at model construction). Tensors are ``[B, L, H, D]`` in and out; non-causal, no mask, softmax
scale ``1/sqrt(D)``.

Optional GPU kernels are imported lazily, inside the selector, so a CPU install without them imports and runs
this module. FlashAttention and SageAttention only take fp16/bf16: float32 inputs are cast to bf16 for the
kernel and the result is cast back (as the official Wan ``flash_attention`` wrapper does).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# backend name -> (module to import, how to install it)
_BACKENDS: dict[str, tuple[str | None, str]] = {
    "TORCH_SDPA": (None, "part of torch"),
    "FLASH_ATTN_2": (
        "flash_attn",
        "pip install telefuser[gpu]  (the flash-attn package; needs CUDA to build)",
    ),
    "FLASH_ATTN_3": (
        "flash_attn_interface",
        "build FlashAttention-3 from the flash-attention repository's hopper/ directory "
        "(python setup.py install); Hopper GPUs only",
    ),
    "SAGE_ATTN": ("sageattention", "pip install sageattention"),
}


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # SDPA wants [B, H, L, D]; the transposes are views. Callers that can hand over [B, H, L, D]-contiguous
    # memory (see ops.rope.apply_rope(heads_first=True)) make these views contiguous for free.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _half(fn: Callable[..., torch.Tensor]) -> AttentionFn:
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dtype = q.dtype
        if dtype not in (torch.float16, torch.bfloat16):
            q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        return fn(q, k, v).to(dtype)

    return run


def _import(name: str):
    module_name, install = _BACKENDS[name]
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # a broken CUDA extension raises OSError/RuntimeError, not only ImportError
        raise ValueError(
            f"attention backend {name!r} needs the {module_name!r} module, which is not importable here "
            f"({type(exc).__name__}: {exc}). Install it with: {install}; or use attention backend 'TORCH_SDPA'."
        ) from exc


def check_backend(name: str) -> None:
    """Raise ValueError if ``name`` is unknown or its kernel package is not importable (message says how to fix)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {sorted(_BACKENDS)}")
    if _BACKENDS[name][0] is not None:
        _import(name)


def available_backends() -> list[str]:
    """Backends whose packages import in this environment (TORCH_SDPA always)."""
    found = []
    for name in _BACKENDS:
        try:
            check_backend(name)
        except ValueError:
            continue
        found.append(name)
    return found


@functools.cache
def get_attention_fn(backend: str = "TORCH_SDPA") -> AttentionFn:
    """Resolve a backend name to ``fn(q, k, v) -> out`` on ``[B, L, H, D]``; raises ValueError as check_backend."""
    check_backend(backend)
    if backend == "TORCH_SDPA":
        return _sdpa
    if backend == "FLASH_ATTN_2":
        flash_attn = _import(backend)
        return _half(lambda q, k, v: flash_attn.flash_attn_func(q, k, v))
    if backend == "FLASH_ATTN_3":
        fa3 = _import(backend)

        def fa3_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = fa3.flash_attn_func(q, k, v)
            # older FA3 builds return (out, softmax_lse)
            return out[0] if isinstance(out, tuple) else out

        return _half(fa3_fn)
    sageattention = _import(backend)
    return _half(lambda q, k, v: sageattention.sageattn(q, k, v, tensor_layout="NHD", is_causal=False))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "TORCH_SDPA") -> torch.Tensor:
    """Scaled dot-product attention. q: [B, Lq, H, D], k/v: [B, Lk, H, D] -> [B, Lq, H, D] (q's dtype)."""
    return get_attention_fn(backend)(q, k, v)
