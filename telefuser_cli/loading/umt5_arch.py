"""UMT5 encoder checkpoints: architecture read from tensor shapes, and key-layout converters.

Two layouts exist for the same weights:

- official Wan (``models_t5_umt5-xxl-enc-bf16.pth``): ``token_embedding``, ``blocks.N.{norm1,attn,norm2,ffn,
  pos_embedding}``, ``norm`` -- the layout of ``telefuser_cli.models.umt5.UMT5Encoder``;
- transformers ``UMT5EncoderModel`` (a diffusers ``text_encoder/`` folder): ``shared``,
  ``encoder.block.N.layer.{0,1}...``, ``encoder.final_layer_norm``.

Every tensor keeps its shape and orientation: the converters only rename keys (tensors are not copied).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import torch

from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.umt5 import UMT5Config

__all__ = ["hf_to_official_umt5", "infer_umt5_config", "official_to_hf_umt5"]

T = TypeVar("T")

# Per-block renames: official suffix -> transformers suffix (after `blocks.N.` / `encoder.block.N.`).
_BLOCK_KEYS: dict[str, str] = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gelu branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_GLOBAL_KEYS: dict[str, str] = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}
# transformers ties the encoder's input embedding to `shared`; files may hold either name or both.
_HF_TIED_EMBEDDING = "encoder.embed_tokens.weight"

_OFFICIAL_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_BLOCK = re.compile(r"encoder\.block\.(\d+)\.(.+)")
_HF_TO_OFFICIAL_BLOCK = {v: k for k, v in _BLOCK_KEYS.items()}
_HF_TO_OFFICIAL_GLOBAL = {v: k for k, v in _GLOBAL_KEYS.items()}


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def _block_indices(keys: list[str], pattern: re.Pattern[str]) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := pattern.fullmatch(k))})


def infer_umt5_config(shapes: Mapping[str, torch.Size]) -> UMT5Config:
    """Read a ``UMT5Config`` from the shapes of an official-layout UMT5 encoder state dict.

    ``shapes`` maps key -> shape (a state dict's tensors work too, through their ``.shape``). The file has
    no config: heads and buckets come from ``blocks.0.pos_embedding.embedding.weight`` ([buckets, heads]),
    layers from the block indices; ``eps`` and ``max_distance`` are not stored and keep the T5 defaults.
    """
    shapes = {k: torch.Size(getattr(v, "shape", v)) for k, v in shapes.items()}
    if "shared.weight" in shapes or any(_HF_BLOCK.fullmatch(k) for k in shapes):
        raise ValueError(
            "infer_umt5_config: these keys are in the transformers UMT5EncoderModel layout "
            "(shared / encoder.block.N...); convert them first with hf_to_official_umt5"
        )
    if "pos_embedding.embedding.weight" in shapes:
        raise ValueError(
            "infer_umt5_config: a shared top-level pos_embedding means a T5 (shared_pos=True) checkpoint; "
            "only UMT5 (one relative-position table per block) is supported"
        )
    needed = [
        "token_embedding.weight",
        "norm.weight",
        "blocks.0.attn.q.weight",
        "blocks.0.ffn.fc1.weight",
        "blocks.0.pos_embedding.embedding.weight",
    ]
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise ValueError(
            f"infer_umt5_config: not an official UMT5 encoder state dict, missing {_few(missing)} "
            f"(found {_few(sorted(shapes))})"
        )
    layers = _block_indices(list(shapes), _OFFICIAL_BLOCK)
    if layers != list(range(len(layers))):
        raise ValueError(f"infer_umt5_config: block indices are not 0..N-1 without gaps: {layers}")
    layout = "an official UMT5 encoder state dict"
    vocab_size, dim = shape_of(shapes, "token_embedding.weight", 2, layout)
    dim_attn = shape_of(shapes, "blocks.0.attn.q.weight", 2, layout)[0]
    dim_ffn = shape_of(shapes, "blocks.0.ffn.fc1.weight", 2, layout)[0]
    num_buckets, num_heads = shape_of(shapes, "blocks.0.pos_embedding.embedding.weight", 2, layout)
    cfg = UMT5Config(
        vocab_size=vocab_size,
        dim=dim,
        dim_attn=dim_attn,
        dim_ffn=dim_ffn,
        num_heads=num_heads,
        num_layers=len(layers),
        num_buckets=num_buckets,
    )
    expected = _expected_shapes(cfg)
    wrong = [
        f"{k}: {tuple(shapes[k])} != {tuple(s)}"
        for k, s in expected.items()
        if k in shapes and shapes[k] != s
    ]
    absent = [k for k in expected if k not in shapes]
    extra = [k for k in shapes if k not in expected]
    if wrong or absent or extra:
        parts = []
        if wrong:
            parts.append(f"shape mismatches {_few(wrong)}")
        if absent:
            parts.append(f"missing {_few(absent)}")
        if extra:
            parts.append(f"unexpected {_few(extra)}")
        raise ValueError(f"infer_umt5_config: inconsistent UMT5 state dict for {cfg}: " + "; ".join(parts))
    return cfg


def _expected_shapes(cfg: UMT5Config) -> dict[str, torch.Size]:
    out = {
        "token_embedding.weight": torch.Size([cfg.vocab_size, cfg.dim]),
        "norm.weight": torch.Size([cfg.dim]),
    }
    per_block = {
        "norm1.weight": [cfg.dim],
        "attn.q.weight": [cfg.dim_attn, cfg.dim],
        "attn.k.weight": [cfg.dim_attn, cfg.dim],
        "attn.v.weight": [cfg.dim_attn, cfg.dim],
        "attn.o.weight": [cfg.dim, cfg.dim_attn],
        "pos_embedding.embedding.weight": [cfg.num_buckets, cfg.num_heads],
        "norm2.weight": [cfg.dim],
        "ffn.gate.0.weight": [cfg.dim_ffn, cfg.dim],
        "ffn.fc1.weight": [cfg.dim_ffn, cfg.dim],
        "ffn.fc2.weight": [cfg.dim, cfg.dim_ffn],
    }
    for i in range(cfg.num_layers):
        for suffix, shape in per_block.items():
            out[f"blocks.{i}.{suffix}"] = torch.Size(shape)
    return out


def official_to_hf_umt5(sd: Mapping[str, T]) -> dict[str, T]:
    """Official layout -> transformers ``UMT5EncoderModel`` layout (``load_state_dict(strict=True)``-ready:
    the tied ``encoder.embed_tokens.weight`` is emitted too, as the same tensor as ``shared.weight``)."""
    out: dict[str, T] = {}
    unknown = []
    for key, value in sd.items():
        if key in _GLOBAL_KEYS:
            out[_GLOBAL_KEYS[key]] = value
        elif (m := _OFFICIAL_BLOCK.fullmatch(key)) and m.group(2) in _BLOCK_KEYS:
            out[f"encoder.block.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"official_to_hf_umt5: keys outside the official UMT5 encoder layout: {_few(unknown)}"
        )
    if "shared.weight" in out:
        out[_HF_TIED_EMBEDDING] = out["shared.weight"]
    return out


def hf_to_official_umt5(sd: Mapping[str, T]) -> dict[str, T]:
    """transformers ``UMT5EncoderModel`` layout -> official layout.

    The embedding may be stored as ``shared.weight``, ``encoder.embed_tokens.weight`` or both (tied; the
    first is used). Any other key outside the encoder layout (a decoder, an ``lm_head``) is an error.
    """
    out: dict[str, T] = {}
    unknown = []
    for key, value in sd.items():
        if key == _HF_TIED_EMBEDDING:
            continue
        if key in _HF_TO_OFFICIAL_GLOBAL:
            out[_HF_TO_OFFICIAL_GLOBAL[key]] = value
        elif (m := _HF_BLOCK.fullmatch(key)) and m.group(2) in _HF_TO_OFFICIAL_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_TO_OFFICIAL_BLOCK[m.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"hf_to_official_umt5: keys outside the transformers UMT5EncoderModel layout: {_few(unknown)}"
        )
    if "token_embedding.weight" not in out and _HF_TIED_EMBEDDING in sd:
        out["token_embedding.weight"] = sd[_HF_TIED_EMBEDDING]
    return out
