"""UMT5 text encoder (encoder half only), in the official Wan `models_t5_umt5-xxl-enc-bf16.pth` key layout.

Parameter names (``model.state_dict()``) are exactly the official ones::

    token_embedding.weight                         [vocab_size, dim]
    blocks.N.norm1.weight                          [dim]
    blocks.N.attn.{q,k,v}.weight                   [dim_attn, dim]
    blocks.N.attn.o.weight                         [dim, dim_attn]
    blocks.N.norm2.weight                          [dim]
    blocks.N.ffn.gate.0.weight                     [dim_ffn, dim]   (gelu-tanh branch)
    blocks.N.ffn.fc1.weight                        [dim_ffn, dim]   (linear branch)
    blocks.N.ffn.fc2.weight                        [dim, dim_ffn]
    blocks.N.pos_embedding.embedding.weight        [num_buckets, num_heads]  (one table per layer)
    norm.weight                                    [dim]

The module holds no buffers at all: the relative-position bucket indices are integer functions of the
sequence length and are computed in ``forward``. A model built under ``with torch.device("meta"):`` is
therefore complete after ``load_state_dict(sd, strict=True, assign=True)``; nothing needs resetting.

Inference only: the official dropout (0.1) is a training detail and is not represented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["UMT5_XXL", "UMT5Config", "UMT5Encoder", "relative_position_buckets"]


@dataclass(frozen=True)
class UMT5Config:
    """Architecture of a UMT5 encoder. The official file carries no config; see ``infer_umt5_config``."""

    vocab_size: int
    dim: int
    dim_attn: int
    dim_ffn: int
    num_heads: int
    num_layers: int
    num_buckets: int = 32
    eps: float = 1e-6
    # Relative positions at or beyond this distance share the last bucket (T5's `max_distance`).
    max_distance: int = 128

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "dim_attn", "dim_ffn", "num_heads", "num_layers"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"UMT5Config.{name} must be positive, got {value}")
        if self.dim_attn % self.num_heads != 0:
            raise ValueError(
                f"UMT5Config: dim_attn={self.dim_attn} is not divisible by num_heads={self.num_heads}"
            )
        # Bidirectional bucketing halves the buckets, then halves again into exact and log-spaced ranges.
        if self.num_buckets < 4 or self.num_buckets % 2 != 0:
            raise ValueError(f"UMT5Config: num_buckets must be even and >= 4, got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 4:
            raise ValueError(
                f"UMT5Config: max_distance={self.max_distance} must exceed num_buckets//4="
                f"{self.num_buckets // 4} (the exact-position range)"
            )
        if self.eps <= 0:
            raise ValueError(f"UMT5Config.eps must be positive, got {self.eps}")

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads


# google/umt5-xxl encoder as used by Wan2.1 / Wan2.2.
UMT5_XXL = UMT5Config(
    vocab_size=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24, num_buckets=32
)


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int, device: torch.device | None = None
) -> torch.Tensor:
    """Bidirectional T5 relative-position bucket of every (query, key) pair.

    Returns ``[length, length]`` long, entry ``[i, j]`` the bucket of ``j - i``: half of the buckets for
    keys before the query and half for keys after; within each half, small distances get one bucket each
    and larger ones log-spaced buckets up to ``max_distance``.
    """
    rel = torch.arange(length, device=device)[None, :] - torch.arange(length, device=device)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    max_exact = half // 2
    # log(0) = -inf for rel == 0 turns into a garbage long, but torch.where discards it (rel < max_exact).
    log_ratio = torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(rel < max_exact, rel, large)


class _RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, statistics in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        # The official code rounds to the weight's dtype before scaling by the weight.
        return self.weight * xf.to(self.weight.dtype)


class _GELUTanh(nn.Module):
    """gelu with the tanh approximation, written out as the official code (and transformers' gelu_new) do,
    so that bf16 rounding happens at the same places."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class _Attention(nn.Module):
    def __init__(self, dim: int, dim_attn: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim]; bias: [B, H, L, L] additive (relative position + key padding) -> [B, L, dim]."""
        b, length, _ = x.shape
        q, k, v = (
            proj(x).view(b, length, self.num_heads, self.head_dim) for proj in (self.q, self.k, self.v)
        )
        # T5 folds the scale into the initialisation of q: no 1/sqrt(head_dim) here. The logits are formed
        # in the run dtype and only the softmax runs in float32, exactly as the official code: in bf16 this is
        # bit-identical to it, whereas a fused SDPA kernel (transformers' path) keeps the logits in float32
        # and lands ~1e-2 (relative) away, as far as bf16 rounding itself moves the output.
        logits = torch.einsum("binc,bjnc->bnij", q, k) + bias
        weights = torch.softmax(logits.float(), dim=-1).type_as(logits)
        out = torch.einsum("bnij,bjnc->binc", weights, v)
        return self.o(out.reshape(b, length, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, dim_ffn: int) -> None:
        super().__init__()
        # A Sequential so that the key is `gate.0.weight`, as in the official file.
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), _GELUTanh())
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim] -> [B, L, dim]."""
        return self.fc2(self.fc1(x) * self.gate(x))


class _RelativeBias(nn.Module):
    def __init__(self, num_buckets: int, num_heads: int, max_distance: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int) -> torch.Tensor:
        """-> [1, H, L, L] bias in the table's dtype."""
        idx = relative_position_buckets(
            length, self.num_buckets, self.max_distance, self.embedding.weight.device
        )
        return self.embedding(idx).permute(2, 0, 1).unsqueeze(0)


def _fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    # As the official code: fp16 activations of T5 can overflow; bf16 and fp32 cannot, and skip this
    # check (it would cost a host sync per block).
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(min=-limit, max=limit)
    return x


class _Block(nn.Module):
    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.norm1 = _RMSNorm(cfg.dim, cfg.eps)
        self.attn = _Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = _RMSNorm(cfg.dim, cfg.eps)
        self.ffn = _FeedForward(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = _RelativeBias(cfg.num_buckets, cfg.num_heads, cfg.max_distance)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim]; padding: [B, 1, 1, L] bool, True on padded keys -> [B, L, dim]."""
        # As official: masked logits get the dtype's most negative value (not -inf), so a row whose keys
        # are all padding gets a uniform softmax instead of NaN.
        pos = self.pos_embedding(x.shape[1]).to(x.dtype)
        bias = torch.where(padding, torch.finfo(x.dtype).min, pos)
        x = _fp16_clamp(x + self.attn(self.norm1(x), bias))
        return _fp16_clamp(x + self.ffn(self.norm2(x)))


class UMT5Encoder(nn.Module):
    """UMT5 encoder. Build with a ``UMT5Config``; run in the dtype of its parameters (bf16 or fp32)."""

    def __init__(self, cfg: UMT5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_layers))
        self.norm = _RMSNorm(cfg.dim, cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids: [B, L] long token ids; mask: [B, L], nonzero on real tokens, 0 on padding.

        Returns ``[B, L, dim]`` in the parameters' dtype. Padding positions only stop being attended to as
        keys; their own rows are computed like any other (callers trim to the true length, as official).
        """
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"UMT5Encoder: ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must both be [B, L]"
            )
        x = self.token_embedding(ids)
        padding = (mask == 0)[:, None, None, :]
        for block in self.blocks:
            x = block(x, padding)
        return self.norm(x)
