"""CPU-specific kernels, each behind one function with a plain-PyTorch fallback.

Both use private oneDNN ops (``torch.ops.mkldnn``) that fuse a pass over a large tensor into a matmul or a
convolution. They run only where oneDNN takes the dtype: float32 everywhere, bf16 only where oneDNN has bf16
kernels (not on AVX2-only CPUs, nor under ``ONEDNN_MAX_CPU_ISA=AVX2``: the ops raise there). Everywhere
else, and on other devices, the plain PyTorch expression runs; both paths compute the same thing.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# read once: torch.compile does not trace the queries
_ONEDNN = torch.backends.mkldnn.is_available()
_ONEDNN_BF16 = _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _onednn_takes(t: torch.Tensor) -> bool:
    if not (_ONEDNN and t.is_cpu):
        return False
    return t.dtype == torch.float32 or (t.dtype == torch.bfloat16 and _ONEDNN_BF16)


def linear_gelu(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """GELU(tanh) of ``layer(x)``. x: [..., in] -> [..., out] in x's dtype.

    On CPU the activation runs in oneDNN's matmul epilogue (the kernel Inductor emits for this pattern): one
    pass less over the [B, L, ffn_dim] activations, 5% of a Wan2.1 1.3B block at 1,950 tokens. The matmul is
    the same; the GELU then reads the float32 accumulator instead of its bf16 rounding (float32: ~1e-7 apart).
    Compiled code keeps the plain pattern: Inductor fuses it its own way (its lowering of this op wants
    prepacked weights).
    """
    if _onednn_takes(x) and not torch.compiler.is_compiling():
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "gelu", [], "tanh")
    return F.gelu(layer(x), approximate="tanh")


def add_conv2d_(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]
) -> torch.Tensor:
    """``out += conv2d(x, weight)`` (stride 1, no bias), in place; returns ``out``.

    On CPU oneDNN accumulates straight into ``out``, which saves a temporary as large as ``out`` (fresh
    memory costs page faults) and a pass over it.
    """
    if _onednn_takes(out):
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            out, x, weight, None, list(padding), [1, 1], [1, 1], 1, "add", 1.0, None, [], None
        )
    return out.add_(F.conv2d(x, weight, None, 1, padding))
