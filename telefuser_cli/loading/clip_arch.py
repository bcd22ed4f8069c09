"""Wan2.1 CLIP image encoder: architecture from shapes, the visual part of the official file, HF converters.

The official ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` holds ``visual.*``, ``textual.*``
and ``log_scale``; only ``visual.*`` is kept. diffusers-layout Wan i2v repositories ship the same tower as a
transformers ``CLIPVisionModel(WithProjection)`` (``image_encoder/``): ``hf_to_official_clip_vision`` maps it
to the official names (q/k/v fused into ``to_qkv``), ``official_to_hf_clip_vision`` is its inverse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from telefuser_cli.errors import UserError
from telefuser_cli.loading.checkpoint import build_module, read_state_dict
from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.clip_vision import CLIPVisionConfig, WanCLIPVision

CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
PREFIX = "visual."
HEAD_DIM = 80  # 1280 / 16 heads in the released ViT-H/14; head count is not visible in the shapes


def _shape(shapes: Mapping[str, Any], key: str, ndim: int | None = None) -> tuple[int, ...]:
    return shape_of(shapes, key, ndim, "an open-clip visual tower")


def infer_clip_config(shapes: Mapping[str, Any], head_dim: int = HEAD_DIM) -> CLIPVisionConfig:
    """``{key: shape or tensor}`` of the official layout (``visual.`` prefix optional) -> CLIPVisionConfig."""
    shapes = {k.removeprefix(PREFIX): v for k, v in shapes.items()}
    pe = _shape(shapes, "patch_embedding.weight")  # [dim, 3, p, p]
    if len(pe) != 4 or pe[1] != 3 or pe[2] != pe[3]:
        raise ValueError(f"patch_embedding.weight has shape {pe}, expected [dim, 3, p, p]")
    dim, patch = pe[0], pe[2]
    tokens = _shape(shapes, "pos_embedding", 3)[1]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ValueError(f"pos_embedding has {tokens} tokens, expected 1 + a square number of patches")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"transformer\.(\d+)\.", k))}
    if layers != set(range(len(layers))):
        raise ValueError(f"transformer block indices are not contiguous from 0: {sorted(layers)}")
    if dim % head_dim:
        raise ValueError(f"dim={dim} (patch_embedding.weight {pe}) is not divisible by head_dim={head_dim}")
    return CLIPVisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        dim=dim,
        mlp_ratio=_shape(shapes, "transformer.0.mlp.0.weight", 2)[0] / dim,
        out_dim=_shape(shapes, "head", 2)[1],
        num_heads=dim // head_dim,
        num_layers=len(layers),
    )


def visual_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of a full open-clip checkpoint (textual tower and ``log_scale`` dropped)."""
    out = {k: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    if not out:
        raise ValueError(f"no visual.* keys (first keys: {sorted(state_dict)[:5]})")
    return out


_HF_TOP = {
    "embeddings.patch_embedding.weight": "patch_embedding.weight",
    "pre_layrnorm.weight": "pre_norm.weight",
    "pre_layrnorm.bias": "pre_norm.bias",
    "post_layernorm.weight": "post_norm.weight",
    "post_layernorm.bias": "post_norm.bias",
}
_HF_BLOCK = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.out_proj": "attn.proj",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
}
_HF_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")


def hf_to_official_clip_vision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPVisionModel[WithProjection]`` state dict -> official ``visual.*`` state dict.

    ``visual_projection.weight`` [out, dim] becomes ``visual.head`` [dim, out]; ``position_ids`` is dropped.
    Unknown keys raise ValueError listing them.
    """
    sd = {k.removeprefix("vision_model."): v for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, t in sd.items():
        if key == "embeddings.position_ids":
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = t
        elif key == "embeddings.class_embedding":
            out["cls_embedding"] = t.reshape(1, 1, -1)
        elif key == "embeddings.position_embedding.weight":
            out["pos_embedding"] = t[None]
        elif key == "visual_projection.weight":
            out["head"] = t.t().contiguous()
        elif m := _HF_LAYER.fullmatch(key):
            n, module, param = m.groups()
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"transformer.{n}.attn.to_qkv.{param}", {})[module.split(".")[1][0]] = t
            elif module in _HF_BLOCK:
                out[f"transformer.{n}.{_HF_BLOCK[module]}.{param}"] = t
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not part of a CLIP vision tower: {unknown[:8]}")
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{key}: q/k/v projections incomplete (have {sorted(parts)})")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {PREFIX + k: v for k, v in out.items()}


def official_to_hf_clip_vision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``visual.*`` -> transformers ``CLIPVisionModelWithProjection`` names (for tests and export)."""
    top = {v: k for k, v in _HF_TOP.items()}
    block = {v: k for k, v in _HF_BLOCK.items()}
    out: dict[str, torch.Tensor] = {}
    for key, t in state_dict.items():
        key = key.removeprefix(PREFIX)
        if key in top:
            out[f"vision_model.{top[key]}"] = t
        elif key == "cls_embedding":
            out["vision_model.embeddings.class_embedding"] = t.reshape(-1)
        elif key == "pos_embedding":
            out["vision_model.embeddings.position_embedding.weight"] = t[0]
        elif key == "head":
            out["visual_projection.weight"] = t.t().contiguous()
        elif m := re.fullmatch(r"transformer\.(\d+)\.(.+)\.(weight|bias)", key):
            n, module, param = m.groups()
            prefix = f"vision_model.encoder.layers.{n}"
            if module == "attn.to_qkv":
                for name, part in zip("qkv", t.chunk(3), strict=True):
                    out[f"{prefix}.self_attn.{name}_proj.{param}"] = part
            elif module in block:
                out[f"{prefix}.{block[module]}.{param}"] = t
            else:
                raise ValueError(f"unknown key {key!r}")
        else:
            raise ValueError(f"unknown key {key!r}")
    return out


def load_clip_vision(
    files: Iterable[Path], *, dtype: torch.dtype, device: torch.device, head_dim: int = HEAD_DIM
) -> WanCLIPVision:
    """The official CLIP ``.pth`` (or an HF ``CLIPVisionModel`` safetensors) -> WanCLIPVision, eval, no grad.

    The official code runs this model in float16 on GPU; LayerNorms stay float32 here whatever ``dtype``.
    """
    files = list(files)
    source = ", ".join(str(f) for f in files)
    state_dict = read_state_dict(files)
    try:
        if any(k.startswith("vision_model.") for k in state_dict):
            state_dict = hf_to_official_clip_vision(state_dict)
            if PREFIX + "head" not in state_dict:
                # A CLIPVisionModel without projection: the head is never used by forward (penultimate
                # block features), so an all-zero one of the released width stands in for the layout.
                dim = state_dict[PREFIX + "patch_embedding.weight"].shape[0]
                state_dict[PREFIX + "head"] = torch.zeros(dim, CLIPVisionConfig.out_dim)
        else:
            state_dict = visual_state_dict(state_dict)
        config = infer_clip_config(state_dict, head_dim=head_dim)
    except ValueError as error:
        raise UserError(f"{source}: not a Wan2.1 CLIP image encoder ({error})") from None
    return build_module(
        lambda: WanCLIPVision(config), state_dict, dtype=dtype, device=device, source=source,
        keep_fp32=("norm",),
    )  # fmt: skip
