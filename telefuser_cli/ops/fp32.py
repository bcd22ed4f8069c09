"""The float32 islands of the precision policy, shared by the DiTs: norms and the small conditioning linears.

Whatever the run dtype, these read their input and weights in float32 (a no-op cast when the loader kept
the weights in float32, see the models' ``keep_fp32``), as the official code does under float32 autocast.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


def f32_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` in float32 whatever the stored dtype. x: [..., in] -> [..., out] float32."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


def f32_layer_norm(x: torch.Tensor, norm: nn.LayerNorm | None = None, eps: float = EPS) -> torch.Tensor:
    """LayerNorm in float32, returned in float32. x: [..., C].

    ``norm`` gives the shape, eps and affine weights (absent when it has no elementwise affine); None means
    a plain normalisation over the last dim with ``eps``.
    """
    if norm is None:
        return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)


class RMSNorm(nn.Module):
    """RMS norm over the last dim (q/k norms of the DiTs), computed in float32, returned in the input dtype."""

    def __init__(self, dim: int, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)
