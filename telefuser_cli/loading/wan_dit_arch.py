"""Wan DiT architecture detection from checkpoint tensor shapes, and the diffusers -> official key converter.

Pure functions over key names and shapes: no model construction, no file I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.wan_dit import MODEL_TYPES, WanDiTConfig

# Fields of the official config.json that are taken from it and checked against the shapes.
_CHECKED_FIELDS = ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "freq_dim")

# diffusers WanTransformer3DModel config.json name -> official name
_DIFFUSERS_CONFIG_NAMES = {
    "in_channels": "in_dim",
    "out_channels": "out_dim",
    "ffn_dim": "ffn_dim",
    "num_attention_heads": "num_heads",
    "num_layers": "num_layers",
    "freq_dim": "freq_dim",
    "eps": "eps",
}


def _shape(shapes: Mapping[str, Any], key: str, ndim: int | None = None) -> tuple[int, ...]:
    return shape_of(shapes, key, ndim, "a Wan DiT checkpoint")


def _official_config(config_json: dict) -> dict:
    """Official-name fields of an official or a diffusers (``_class_name: WanTransformer3DModel``) config.json."""
    if config_json.get("_class_name") != "WanTransformer3DModel":
        return dict(config_json)
    cfg = {
        ours: config_json[theirs] for theirs, ours in _DIFFUSERS_CONFIG_NAMES.items() if theirs in config_json
    }
    if "num_attention_heads" in config_json and "attention_head_dim" in config_json:
        cfg["dim"] = config_json["num_attention_heads"] * config_json["attention_head_dim"]
    return cfg


def infer_dit_config(
    shapes: Mapping[str, torch.Size], config_json: dict | None = None, head_dim: int = 128
) -> WanDiTConfig:
    """Derive the DiT architecture from ``{key: shape}`` (or ``{key: tensor}``) of an official-layout state dict.

    Without ``config_json`` the head count is ``dim // head_dim`` (128 in every released Wan model) and the
    model type follows the weights: ``img_emb.emb_pos`` -> flf2v, ``img_emb`` -> i2v (Wan2.1), in_dim >
    out_dim -> i2v (Wan2.2 A14B: y on channels), 48 latent channels -> ti2v (Wan2.2 VAE), else t2v.
    With ``config_json`` (official, or a diffusers transformer config) its dim / ffn_dim / num_heads /
    num_layers / in_dim / out_dim / freq_dim / model_type / text_len / eps are used, and the ones the shapes
    determine are checked: a mismatch raises ValueError naming the key, the config value and the shape.
    ``text_dim`` always comes from the shapes (the official config.json lacks it).
    """
    pe = _shape(shapes, "patch_embedding.weight")  # [dim, in_dim, pt, ph, pw]
    if len(pe) != 5:
        raise ValueError(f"patch_embedding.weight has shape {pe}, expected [dim, in_dim, pt, ph, pw]")
    dim, in_dim, patch = pe[0], pe[1], pe[2:]
    text_dim = _shape(shapes, "text_embedding.0.weight", 2)[1]
    freq_dim = _shape(shapes, "time_embedding.0.weight", 2)[1]
    ffn_dim = _shape(shapes, "blocks.0.ffn.0.weight", 2)[0]
    layer_ids = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    num_layers = len(layer_ids)
    if layer_ids != set(range(num_layers)):
        raise ValueError(f"block indices are not contiguous from 0: {sorted(layer_ids)}")
    head_out = _shape(shapes, "head.head.weight", 2)[0]
    if head_out % math.prod(patch):
        raise ValueError(f"head.head.weight rows {head_out} not divisible by prod(patch_size={patch})")
    out_dim = head_out // math.prod(patch)
    qk_norm = "blocks.0.self_attn.norm_q.weight" in shapes
    cross_attn_norm = "blocks.0.norm3.weight" in shapes
    image_dim = _shape(shapes, "img_emb.proj.0.weight", 1)[0] if "img_emb.proj.0.weight" in shapes else None
    has_pos = "img_emb.emb_pos" in shapes

    if has_pos:
        shape_type = "flf2v"
    elif image_dim is not None or in_dim > out_dim:
        shape_type = "i2v"
    elif out_dim == 48:
        shape_type = "ti2v"
    else:
        shape_type = "t2v"
    derived = {
        "dim": dim,
        "ffn_dim": ffn_dim,
        "num_layers": num_layers,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "freq_dim": freq_dim,
    }
    where = {
        "dim": "patch_embedding.weight",
        "ffn_dim": "blocks.0.ffn.0.weight",
        "num_layers": f"{num_layers} blocks.N",
        "in_dim": "patch_embedding.weight",
        "out_dim": "head.head.weight",
        "freq_dim": "time_embedding.0.weight",
    }

    text_len, eps, model_type = 512, 1e-6, shape_type
    num_heads = None
    if config_json is not None:
        cfg = _official_config(config_json)
        for key in _CHECKED_FIELDS:
            if key in cfg and key in derived and cfg[key] != derived[key]:
                source = (
                    f"{where[key]} shape {_shape(shapes, where[key])}" if where[key] in shapes else where[key]
                )
                raise ValueError(
                    f"config.json {key}={cfg[key]} does not match the weights: "
                    f"{source} gives {key}={derived[key]}"
                )
        num_heads = cfg.get("num_heads")
        if num_heads is not None and dim % num_heads:
            raise ValueError(
                f"config.json num_heads={num_heads} does not divide dim={dim} "
                f"(patch_embedding.weight shape {pe})"
            )
        text_len = cfg.get("text_len", text_len)
        eps = cfg.get("eps", eps)
        model_type = cfg.get("model_type", model_type)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"config.json model_type={model_type!r} is not one of {MODEL_TYPES}")
        if (model_type == "flf2v") != has_pos:
            raise ValueError(
                f"config.json model_type={model_type!r} does not match the weights: "
                f"img_emb.emb_pos is {'present' if has_pos else 'absent'}"
            )
        if image_dim is not None and model_type not in ("i2v", "flf2v"):
            raise ValueError(
                f"config.json model_type={model_type!r} does not match the weights: img_emb "
                f"(CLIP path, img_emb.proj.0.weight shape {(image_dim,)}) exists only for i2v/flf2v"
            )
        if model_type in ("t2v", "ti2v") and in_dim != out_dim:
            raise ValueError(
                f"config.json model_type={model_type!r} needs in_dim == out_dim, but "
                f"patch_embedding.weight {pe} and head.head.weight give in_dim={in_dim}, "
                f"out_dim={out_dim} (image latents on channels mean i2v)"
            )
        if model_type in ("i2v", "flf2v") and in_dim <= out_dim:
            raise ValueError(
                f"config.json model_type={model_type!r} needs in_dim > out_dim (image latents on "
                f"channels), but patch_embedding.weight {pe} and head.head.weight give "
                f"in_dim={in_dim}, out_dim={out_dim}"
            )
    if num_heads is None:
        if dim % head_dim:
            raise ValueError(
                f"dim={dim} (patch_embedding.weight {pe}) is not divisible by head_dim={head_dim}; "
                "pass a config.json with num_heads"
            )
        num_heads = dim // head_dim
    return WanDiTConfig(
        model_type=model_type,
        patch_size=tuple(patch),
        text_len=text_len,
        in_dim=in_dim,
        dim=dim,
        ffn_dim=ffn_dim,
        freq_dim=freq_dim,
        text_dim=text_dim,
        out_dim=out_dim,
        num_heads=num_heads,
        num_layers=num_layers,
        qk_norm=qk_norm,
        cross_attn_norm=cross_attn_norm,
        eps=eps,
        image_dim=image_dim,
    )


# diffusers WanTransformer3DModel names -> official names. Block-level names are relative to `blocks.N.`.
_TOP_LEVEL = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
    "patch_embedding": "patch_embedding",
    "proj_out": "head.head",
}
_TOP_LEVEL_PARAMS = {
    "scale_shift_table": "head.modulation",
    "condition_embedder.image_embedder.pos_embed": "img_emb.emb_pos",
}
_BLOCK = {
    "attn1": "self_attn",
    "attn2": "cross_attn",
    "norm2": "norm3",  # diffusers' norm2 is the (affine) cross-attention norm, official norm3
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_ATTN = {
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "o",
    "norm_q": "norm_q",
    "norm_k": "norm_k",
    "add_k_proj": "k_img",
    "add_v_proj": "v_img",
    "norm_added_k": "norm_k_img",
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)")


def _convert_key(key: str) -> str | None:
    if key in _TOP_LEVEL_PARAMS:
        return _TOP_LEVEL_PARAMS[key]
    if key.startswith("blocks."):
        if m := re.fullmatch(r"blocks\.(\d+)\.scale_shift_table", key):
            return f"blocks.{m.group(1)}.modulation"
        if not (m := _BLOCK_KEY.fullmatch(key)):
            return None
        n, module, param = m.groups()
        if module in _BLOCK:
            return f"blocks.{n}.{_BLOCK[module]}.{param}"
        attn, _, sub = module.partition(".")
        if attn in ("attn1", "attn2") and sub in _ATTN:
            return f"blocks.{n}.{_BLOCK[attn]}.{_ATTN[sub]}.{param}"
        return None
    module, _, param = key.rpartition(".")
    if module in _TOP_LEVEL and param in ("weight", "bias"):
        return f"{_TOP_LEVEL[module]}.{param}"
    return None


def diffusers_to_official_dit(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``WanTransformer3DModel`` state dict to the official Wan layout (tensors unchanged).

    The inverse of ``diffusers.loaders.single_file_utils.convert_wan_transformer_to_diffusers`` (plus the
    flf2v ``pos_embed``). ``norm_added_q`` (which diffusers itself ignores) is dropped; any other unknown key
    (fused projections, LoRA, another model) raises ValueError listing them.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        if ".norm_added_q." in key:
            continue
        new = _convert_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not part of a diffusers WanTransformer3DModel: {unknown[:8]}"
        )
    return out
