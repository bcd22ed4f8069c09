"""HunyuanVideo 1.5: architecture from checkpoint shapes (+ the official config.json), and layout converters.

Pure functions over key names, shapes and tensors: no model construction, no file I/O.

Official layout: Tencent-Hunyuan/HunyuanVideo-1.5 ``transformer/<variant>/`` (config.json +
diffusion_pytorch_model.safetensors) and ``vae/`` (config.json + diffusion_pytorch_model.safetensors), as
read by the official code and by diffusers' ``scripts/convert_hunyuan_video1_5_to_diffusers.py``. Diffusers
layout: ``HunyuanVideo15Transformer3DModel`` / ``AutoencoderKLHunyuanVideo15``. The converters here map
between the two, both ways; the models of this package use the official layout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiTConfig
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAEConfig


def _shape(shapes: Mapping[str, Any], key: str, what: str, ndim: int | None = None) -> tuple[int, ...]:
    return shape_of(shapes, key, ndim, f"a HunyuanVideo 1.5 {what} checkpoint")


def _indices(shapes: Mapping[str, Any], prefix: str) -> int:
    ids = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if ids != set(range(len(ids))):
        raise ValueError(f"{prefix}N indices are not contiguous from 0: {sorted(ids)}")
    return len(ids)


# ---------------------------------------------------------------------------------------------- DiT config

# official config.json fields the shapes determine: checked against them when a config.json is given
_DIT_CHECKED = (
    "hidden_size",
    "heads_num",
    "in_channels",
    "out_channels",
    "mm_double_blocks_depth",
    "text_states_dim",
    "vision_states_dim",
    "use_meanflow",
    "use_cond_type_embedding",
    "patch_size",
)


def _official_dit_json(cfg: dict) -> dict:
    """Official-name fields of an official or a diffusers (``HunyuanVideo15Transformer3DModel``) config.json."""
    if cfg.get("_class_name") != "HunyuanVideo15Transformer3DModel":
        return dict(cfg)
    names = {
        "num_layers": "mm_double_blocks_depth",
        "num_attention_heads": "heads_num",
        "mlp_ratio": "mlp_width_ratio",
        "text_embed_dim": "text_states_dim",
        "image_embed_dim": "vision_states_dim",
        "rope_theta": "rope_theta",
        "rope_axes_dim": "rope_dim_list",
        "use_meanflow": "use_meanflow",
    }
    out = {ours: cfg[theirs] for theirs, ours in names.items() if theirs in cfg}
    if "num_attention_heads" in cfg and "attention_head_dim" in cfg:
        out["hidden_size"] = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    return out


def infer_dit_config(shapes: Mapping[str, Any], config_json: dict | None = None) -> Hunyuan15DiTConfig:
    """Derive the DiT architecture from ``{key: shape}`` (or ``{key: tensor}``) of an official-layout state dict.

    The shapes give every width, depth and optional path; ``rope_dim_list`` and ``rope_theta`` cannot be seen
    in shapes: they come from the official ``config.json`` when given, else the released values
    ((16, 56, 56), 256; for a head dim other than 128 the config.json is required). ``config_json`` may be
    the official one or a diffusers transformer config.json (its names are translated). With it, its
    values are checked against the shapes (a mismatch raises ValueError naming the field, the value and the
    key), and its unsupported options (single-stream blocks, guidance embedding, pooled text vector, a
    linear text projection) raise ValueError.
    """
    what = "transformer"
    pe = _shape(shapes, "img_in.proj.weight", what)  # [C, C_in, pt, ph, pw]
    if len(pe) != 5:
        raise ValueError(f"img_in.proj.weight has shape {pe}, expected [hidden, in, pt, ph, pw]")
    hidden, patch_in, patch = pe[0], pe[1], tuple(pe[2:])
    final = _shape(shapes, "final_layer.linear.weight", what, 2)[0]
    if final % math.prod(patch):
        raise ValueError(f"final_layer.linear.weight rows {final} not divisible by prod(patch_size={patch})")
    out_channels = final // math.prod(patch)
    concat = patch_in == 2 * out_channels + 1
    in_channels = out_channels if concat else patch_in
    head_dim = _shape(shapes, "double_blocks.0.img_attn_q_norm.weight", what, 1)[0]
    if any(k.startswith("single_blocks.") for k in shapes):
        raise ValueError("the checkpoint has single_blocks.N: single-stream blocks are not implemented")
    byt5 = _shape(shapes, "byt5_in.fc1.weight", what, 2) if "byt5_in.fc1.weight" in shapes else None
    vision = (
        _shape(shapes, "vision_in.proj.1.weight", what, 2)[1] if "vision_in.proj.1.weight" in shapes else None
    )
    derived: dict[str, Any] = {
        "patch_size": patch,
        "in_channels": in_channels,
        "concat_condition": concat,
        "out_channels": out_channels,
        "hidden_size": hidden,
        "heads_num": hidden // head_dim,
        "mlp_width_ratio": _shape(shapes, "double_blocks.0.img_mlp.fc1.weight", what, 2)[0] / hidden,
        "mm_double_blocks_depth": _indices(shapes, "double_blocks."),
        "qkv_bias": "double_blocks.0.img_attn_q.bias" in shapes,
        "text_states_dim": _shape(shapes, "txt_in.input_embedder.weight", what, 2)[1],
        "refiner_depth": _indices(shapes, "txt_in.individual_token_refiner.blocks."),
        "byt5_dim": None if byt5 is None else byt5[1],
        "byt5_hidden_dim": 2048 if byt5 is None else byt5[0],
        "vision_states_dim": vision,
        "use_cond_type_embedding": "cond_type_embedding.weight" in shapes,
        "use_meanflow": "time_r_in.mlp.0.weight" in shapes,
    }
    rope_dim_list, rope_theta = ((16, 56, 56), 256.0) if head_dim == 128 else (None, 256.0)
    if config_json is not None:
        cfg = _official_dit_json(config_json)
        unsupported = {
            "mm_single_blocks_depth": 0,
            "guidance_embed": False,
            "text_pool_type": None,
            "text_projection": "single_refiner",
            "qk_norm": True,
            "qk_norm_type": "rms",
            "mlp_act_type": "gelu_tanh",
            "is_reshape_temporal_channels": False,
        }
        for key, supported in unsupported.items():
            if key in cfg and cfg[key] != supported:
                raise ValueError(f"config.json {key}={cfg[key]!r} is not supported (only {supported!r})")
        if "vision_projection" in cfg and (cfg["vision_projection"] == "linear") != (vision is not None):
            raise ValueError(
                f"config.json vision_projection={cfg['vision_projection']!r} does not match the weights: "
                f"vision_in is {'present' if vision is not None else 'absent'}"
            )
        if "glyph_byT5_v2" in cfg and bool(cfg["glyph_byT5_v2"]) != (byt5 is not None):
            raise ValueError(
                f"config.json glyph_byT5_v2={cfg['glyph_byT5_v2']} does not match the weights: "
                f"byt5_in is {'present' if byt5 is not None else 'absent'}"
            )
        for key in _DIT_CHECKED:
            if key not in cfg or (key == "vision_states_dim" and vision is None):
                continue
            value = tuple(cfg[key]) if key == "patch_size" else cfg[key]
            if value != derived[key]:
                raise ValueError(
                    f"config.json {key}={cfg[key]!r} does not match the weights, which give {derived[key]!r}"
                )
        rope_dim_list = tuple(cfg.get("rope_dim_list") or rope_dim_list or ())
        rope_theta = float(cfg.get("rope_theta", rope_theta))
    if not rope_dim_list:
        raise ValueError(
            f"head dim {head_dim} (double_blocks.0.img_attn_q_norm.weight) is not the released 128: "
            "pass the official config.json for rope_dim_list"
        )
    return Hunyuan15DiTConfig(rope_dim_list=rope_dim_list, rope_theta=rope_theta, **derived)


# ---------------------------------------------------------------------------------------------- DiT keys

# official -> diffusers, top level (each maps both .weight and .bias where present)
_DIT_TOP = {
    "time_in.mlp.0": "time_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_embed.timestep_embedder.linear_2",
    "time_r_in.mlp.0": "time_embed.timestep_embedder_r.linear_1",
    "time_r_in.mlp.2": "time_embed.timestep_embedder_r.linear_2",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "byt5_in.layernorm": "context_embedder_2.norm",
    "byt5_in.fc1": "context_embedder_2.linear_1",
    "byt5_in.fc2": "context_embedder_2.linear_2",
    "byt5_in.fc3": "context_embedder_2.linear_3",
    "vision_in.proj.0": "image_embedder.norm_in",
    "vision_in.proj.1": "image_embedder.linear_1",
    "vision_in.proj.3": "image_embedder.linear_2",
    "vision_in.proj.4": "image_embedder.norm_out",
    "img_in.proj": "x_embedder.proj",
    "cond_type_embedding": "cond_type_embed",
    "final_layer.adaLN_modulation.1": "norm_out.linear",  # chunk order swapped (shift, scale) <-> (scale, shift)
    "final_layer.linear": "proj_out",
}
_DIT_REFINER = {  # under txt_in.individual_token_refiner.blocks.N. <-> context_embedder.token_refiner.refiner_blocks.N.
    "norm1": "norm1",
    "norm2": "norm2",
    "self_attn_proj": "attn.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm_out.linear",
}
_DIT_DOUBLE = {  # under double_blocks.N. <-> transformer_blocks.N.
    "img_mod.linear": "norm1.linear",
    "txt_mod.linear": "norm1_context.linear",
    "img_attn_q": "attn.to_q",
    "img_attn_k": "attn.to_k",
    "img_attn_v": "attn.to_v",
    "img_attn_q_norm": "attn.norm_q",
    "img_attn_k_norm": "attn.norm_k",
    "img_attn_proj": "attn.to_out.0",
    "txt_attn_q": "attn.add_q_proj",
    "txt_attn_k": "attn.add_k_proj",
    "txt_attn_v": "attn.add_v_proj",
    "txt_attn_q_norm": "attn.norm_added_q",
    "txt_attn_k_norm": "attn.norm_added_k",
    "txt_attn_proj": "attn.to_add_out",
    "img_mlp.fc1": "ff.net.0.proj",
    "img_mlp.fc2": "ff.net.2",
    "txt_mlp.fc1": "ff_context.net.0.proj",
    "txt_mlp.fc2": "ff_context.net.2",
}
_REFINER_OFF = "txt_in.individual_token_refiner.blocks."
_REFINER_DIF = "context_embedder.token_refiner.refiner_blocks."
_FINAL = "final_layer.adaLN_modulation.1."


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _dit_name_map(keys, to_diffusers: bool) -> dict[str, str]:
    pairs: list[tuple[str, str]] = list(_DIT_TOP.items())
    for prefix_off, prefix_dif, table in (
        (_REFINER_OFF, _REFINER_DIF, _DIT_REFINER),
        ("double_blocks.", "transformer_blocks.", _DIT_DOUBLE),
    ):
        src_prefix = prefix_off if to_diffusers else prefix_dif
        ids = {int(m.group(1)) for k in keys if (m := re.match(re.escape(src_prefix) + r"(\d+)\.", k))}
        for i in sorted(ids):
            pairs += [(f"{prefix_off}{i}.{a}", f"{prefix_dif}{i}.{b}") for a, b in table.items()]
    return dict(pairs) if to_diffusers else {b: a for a, b in pairs}


def official_to_diffusers_dit(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official transformer state dict -> diffusers ``HunyuanVideo15Transformer3DModel`` names.

    The refiner's fused ``self_attn_qkv`` is split into ``to_q/to_k/to_v``; the final modulation's halves
    are swapped (official shift, scale; diffusers scale, shift). Unknown keys raise ValueError.
    """
    names = _dit_name_map(sd.keys(), to_diffusers=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if module.startswith(_REFINER_OFF) and module.endswith(".self_attn_qkv"):
            block = _REFINER_DIF + module[len(_REFINER_OFF) :].split(".")[0]
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0), strict=True):
                out[f"{block}.attn.{name}.{param}"] = part
            continue
        if module not in names:
            raise ValueError(f"unknown HunyuanVideo 1.5 transformer key {key!r} (official layout expected)")
        out[f"{names[module]}.{param}"] = _swap_halves(value) if key.startswith(_FINAL) else value
    return out


def diffusers_to_official_dit(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers ``HunyuanVideo15Transformer3DModel`` state dict -> the official layout (inverse of above)."""
    names = _dit_name_map(sd.keys(), to_diffusers=False)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        m = re.fullmatch(re.escape(_REFINER_DIF) + r"(\d+)\.attn\.(to_q|to_k|to_v)", module)
        if m:
            qkv.setdefault(f"{_REFINER_OFF}{m.group(1)}.self_attn_qkv.{param}", {})[m.group(2)] = value
            continue
        if module not in names:
            raise ValueError(f"unknown diffusers HunyuanVideo15Transformer3DModel key {key!r}")
        official = f"{names[module]}.{param}"
        out[official] = _swap_halves(value) if official.startswith(_FINAL) else value
    for key, parts in qkv.items():
        if set(parts) != {"to_q", "to_k", "to_v"}:
            raise ValueError(
                f"{key}: the diffusers checkpoint lacks {sorted({'to_q', 'to_k', 'to_v'} - set(parts))}"
            )
        out[key] = torch.cat([parts["to_q"], parts["to_k"], parts["to_v"]], dim=0)
    return out


# ---------------------------------------------------------------------------------------------- VAE

_VAE_RESNET = {"norm1": "norm1", "conv1.conv": "conv1.conv", "norm2": "norm2", "conv2.conv": "conv2.conv",
               "nin_shortcut": "conv_shortcut"}  # fmt: skip
_VAE_ATTN = {"norm": "norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "proj_out"}


def _vae_name_map(keys) -> dict[str, str]:
    """Official module name -> diffusers module name, for the modules named in ``keys`` (official)."""
    pairs: dict[str, str] = {}
    for side in ("encoder", "decoder"):
        for name in ("conv_in.conv", "conv_out.conv", "norm_out"):
            pairs[f"{side}.{name}"] = f"{side}.{name}"
        for j, block in enumerate(("block_1", "block_2")):
            for a, b in _VAE_RESNET.items():
                pairs[f"{side}.mid.{block}.{a}"] = f"{side}.mid_block.resnets.{j}.{b}"
        for a, b in _VAE_ATTN.items():
            pairs[f"{side}.mid.attn_1.{a}"] = f"{side}.mid_block.attentions.0.{b}"
    for key in keys:
        m = re.match(r"(encoder\.down|decoder\.up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.", key)
        if not m:
            continue
        level, i = m.group(1), m.group(2)
        dif_level = "encoder.down_blocks" if level == "encoder.down" else "decoder.up_blocks"
        if m.group(4) is not None:
            for a, b in _VAE_RESNET.items():
                pairs[f"{level}.{i}.block.{m.group(4)}.{a}"] = f"{dif_level}.{i}.resnets.{m.group(4)}.{b}"
        else:
            sampler = "downsamplers" if m.group(3) == "downsample" else "upsamplers"
            pairs[f"{level}.{i}.{m.group(3)}.conv.conv"] = f"{dif_level}.{i}.{sampler}.0.conv.conv"
    return pairs


def _rename(sd: Mapping[str, torch.Tensor], names: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if module not in names:
            raise ValueError(f"unknown {what} key {key!r}")
        out[f"{names[module]}.{param}"] = value
    return out


def official_to_diffusers_vae(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VAE state dict -> diffusers ``AutoencoderKLHunyuanVideo15`` names (a pure renaming)."""
    return _rename(sd, _vae_name_map(sd.keys()), "HunyuanVideo 1.5 VAE (official layout)")


def diffusers_to_official_vae(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers ``AutoencoderKLHunyuanVideo15`` state dict -> the official layout (a pure renaming)."""
    official_keys = []
    for key in sd:
        m = re.match(
            r"(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.(resnets\.(\d+)|downsamplers|upsamplers)", key
        )
        if m:
            level = "encoder.down" if m.group(1) == "encoder.down_blocks" else "decoder.up"
            sampler = "downsample" if m.group(3) == "downsamplers" else "upsample"
            part = f"block.{m.group(4)}" if m.group(4) is not None else sampler
            official_keys.append(f"{level}.{m.group(2)}.{part}.x")
    inverse = {b: a for a, b in _vae_name_map(official_keys).items()}
    return _rename(sd, inverse, "diffusers AutoencoderKLHunyuanVideo15")


def infer_vae_config(shapes: Mapping[str, Any], config_json: dict | None = None) -> Hunyuan15VAEConfig:
    """Derive the VAE architecture from official-layout shapes (+ the official ``vae/config.json``).

    Shapes give the channels, depths and latent width; the compression ratios and the latent scaling come
    from the config.json (``ffactor_spatial``, ``ffactor_temporal``, ``scaling_factor``, ``shift_factor``)
    or, without one, the released values (16, 4, 1.03682, none); a diffusers ``AutoencoderKLHunyuanVideo15``
    config.json is accepted too (its compression-ratio names are translated). Config values that the shapes determine are
    checked: a mismatch raises ValueError naming the field.
    """
    what = "VAE"
    levels = _indices(shapes, "decoder.up.")
    enc_levels = _indices(shapes, "encoder.down.")
    if levels != enc_levels or levels == 0:
        raise ValueError(f"encoder has {enc_levels} levels but decoder has {levels}")
    channels = tuple(
        _shape(shapes, f"encoder.down.{i}.block.0.conv1.conv.weight", what, 5)[0] for i in range(levels)
    )
    derived: dict[str, Any] = {
        "in_channels": _shape(shapes, "encoder.conv_in.conv.weight", what, 5)[1],
        "out_channels": _shape(shapes, "decoder.conv_out.conv.weight", what, 5)[0],
        "latent_channels": _shape(shapes, "decoder.conv_in.conv.weight", what, 5)[1],
        "block_out_channels": channels,
        "layers_per_block": _indices(shapes, "encoder.down.0.block."),
    }
    extra: dict[str, Any] = {}
    if config_json is not None and config_json.get("_class_name") == "AutoencoderKLHunyuanVideo15":
        renamed = {
            "spatial_compression_ratio": "ffactor_spatial",
            "temporal_compression_ratio": "ffactor_temporal",
        }
        config_json = {renamed.get(k, k): v for k, v in config_json.items()}
    if config_json is not None:
        for key, value in derived.items():
            if key in config_json:
                given = tuple(config_json[key]) if key == "block_out_channels" else config_json[key]
                if given != value:
                    raise ValueError(
                        f"vae config.json {key}={config_json[key]!r} does not match the weights ({value!r})"
                    )
        names = ("ffactor_spatial", "ffactor_temporal", "scaling_factor", "shift_factor",
                 "downsample_match_channel", "upsample_match_channel")  # fmt: skip
        extra = {k: config_json[k] for k in names if k in config_json}
    return Hunyuan15VAEConfig(**derived, **extra)
