"""Wan VAE architecture detection from checkpoint keys/shapes, and the diffusers -> official key map.

``Wan2.1_VAE.pth`` and ``Wan2.2_VAE.pth`` carry no config: the layout (flat encoder blocks for Wan2.1,
nested levels ``encoder.downsamples.L.downsamples.N`` for Wan2.2) picks the class, every architecture
field is read off the tensors, and the latent mean/std table is the one of the released VAE with that many
latent channels (``models.wan_vae_stats``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.wan22_vae import Wan22VAE, Wan22VAEConfig
from telefuser_cli.models.wan_vae import WanVAE, WanVAEConfig
from telefuser_cli.models.wan_vae_stats import latent_stats

_ENC_BLOCK = re.compile(r"encoder\.downsamples\.(\d+)\.(\w+)\.")
_ENC_LEVEL = re.compile(r"encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(\w+)\.")


def vae_class(config: WanVAEConfig) -> type[WanVAE]:
    """The model class of an inferred config."""
    return Wan22VAE if isinstance(config, Wan22VAEConfig) else WanVAE


def infer_vae_config(shapes: Mapping[str, torch.Size]) -> WanVAEConfig:
    """The config of an official-layout Wan VAE state dict (a ``Wan22VAEConfig`` for the Wan2.2 layout),
    read from its key names and shapes and checked against a model built from it."""
    if any(_ENC_LEVEL.match(key) for key in shapes):
        cfg = _infer_wan22(shapes)
    else:
        cfg = _infer_wan21(shapes)
    _check_layout(cfg, shapes)
    return cfg


def _infer_wan21(shapes: Mapping[str, torch.Size]) -> WanVAEConfig:
    """Derive the ``WanVAEConfig`` of a Wan2.1-layout state dict from its key names and shapes.

    base width = encoder.conv1 output channels; z_dim = conv2 channels; the encoder's flat block list
    gives the levels (residual blocks until each Resample), num_res_blocks, dim_mult (residual output
    widths / base), temporal downsampling (a Resample with ``time_conv``) and attention scales; z_dim picks
    the latent mean/std. The result is checked against the full key/shape set of a model built from it.
    """
    layout = "a Wan2.1 VAE state dict in the official layout"
    dim = shape_of(shapes, "encoder.conv1.weight", 5, layout)[0]
    z_dim = shape_of(shapes, "conv2.weight", 5, layout)[0]

    kinds: dict[int, str] = {}
    for key in shapes:
        m = _ENC_BLOCK.match(key)
        if m:
            kinds.setdefault(int(m.group(1)), m.group(2))
    if sorted(kinds) != list(range(len(kinds))) or not kinds:
        raise ValueError(f"encoder.downsamples indices are not contiguous: {sorted(kinds)}")

    levels: list[list[int]] = [[]]  # residual-block indices per level
    temporal: list[bool] = []
    attn_scales: set[float] = set()
    for idx in range(len(kinds)):
        kind = kinds[idx]
        if kind == "residual":
            levels[-1].append(idx)
        elif kind == "resample":
            temporal.append(f"encoder.downsamples.{idx}.time_conv.weight" in shapes)
            levels.append([])
        elif kind in ("norm", "to_qkv", "proj"):
            attn_scales.add(1.0 / 2 ** (len(levels) - 1))
        else:
            raise ValueError(f"unknown encoder block encoder.downsamples.{idx}.{kind}")
    counts = {len(level) for level in levels}
    if len(counts) != 1:
        raise ValueError(f"levels have different residual block counts {[len(lv) for lv in levels]}")
    dim_mult = []
    for level in levels:
        width = shape_of(shapes, f"encoder.downsamples.{level[-1]}.residual.6.weight", 5, layout)[0]
        if width % dim:
            raise ValueError(f"level width {width} is not a multiple of the base width {dim}")
        dim_mult.append(width // dim)

    mean, std = latent_stats(z_dim)
    return WanVAEConfig(dim=dim, z_dim=z_dim, dim_mult=tuple(dim_mult), num_res_blocks=counts.pop(),
                        attn_scales=tuple(sorted(attn_scales)), temperal_downsample=tuple(temporal),
                        latent_mean=mean, latent_std=std)  # fmt: skip


def _infer_wan22(shapes: Mapping[str, torch.Size]) -> Wan22VAEConfig:
    """Derive the ``Wan22VAEConfig`` of a Wan2.2-layout state dict from its key names and shapes.

    base width = encoder.conv1 output channels, patch size from its input channels (3 * p * p); z_dim =
    conv2 channels; per encoder level L, the residual blocks ``downsamples.L.downsamples.N`` give
    num_res_blocks and the level width (dim_mult), and its Resample (the block after them) with a
    ``time_conv`` the temporal downsampling: read here, never a class default. The decoder's base width =
    its head width / dim_mult[0].
    """
    layout = "a Wan2.2 VAE state dict in the official layout"
    dim, in_channels = shape_of(shapes, "encoder.conv1.weight", 5, layout)[:2]
    z_dim = shape_of(shapes, "conv2.weight", 5, layout)[0]
    patch = round((in_channels / 3) ** 0.5)
    if 3 * patch * patch != in_channels:
        raise ValueError(f"encoder.conv1 takes {in_channels} channels: not 3 * p * p for a patch size p")

    kinds: dict[int, dict[int, str]] = {}
    for key in shapes:
        m = _ENC_LEVEL.match(key)
        if m:
            kinds.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), m.group(3))
    if sorted(kinds) != list(range(len(kinds))):
        raise ValueError(f"encoder.downsamples levels are not contiguous: {sorted(kinds)}")
    residual = [sorted(i for i, kind in level.items() if kind == "residual") for level in kinds.values()]
    counts = {len(r) for r in residual}
    if len(counts) != 1 or any(r != list(range(len(r))) for r in residual):
        raise ValueError(f"encoder levels have different residual blocks {residual}")
    n = counts.pop()
    temporal = [
        f"encoder.downsamples.{lv}.downsamples.{n}.time_conv.weight" in shapes for lv in range(len(kinds) - 1)
    ]
    dim_mult = []
    for lv in range(len(kinds)):
        width = shape_of(
            shapes, f"encoder.downsamples.{lv}.downsamples.{n - 1}.residual.6.weight", 5, layout
        )[0]
        if width % dim:
            raise ValueError(f"level width {width} is not a multiple of the base width {dim}")
        dim_mult.append(width // dim)
    head = shape_of(shapes, "decoder.head.0.gamma", 4, layout)[0]
    if head % dim_mult[0]:
        raise ValueError(f"decoder head width {head} is not a multiple of dim_mult[0]={dim_mult[0]}")

    mean, std = latent_stats(z_dim)
    return Wan22VAEConfig(dim=dim, z_dim=z_dim, dim_mult=tuple(dim_mult), num_res_blocks=n,
                          temperal_downsample=tuple(temporal), latent_mean=mean, latent_std=std,
                          decoder_dim=head // dim_mult[0], patch_size=patch)  # fmt: skip


def _check_layout(cfg: WanVAEConfig, shapes: Mapping[str, torch.Size]) -> None:
    with torch.device("meta"):
        expected = {k: v.shape for k, v in vae_class(cfg)(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(
        f"{k} {tuple(shapes[k])} != {tuple(expected[k])}"
        for k in set(expected) & set(shapes)
        if tuple(expected[k]) != tuple(shapes[k])
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"state dict does not match the inferred {cfg}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shapes {wrong[:5]} ({len(wrong)})"
        )


_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}  # fmt: skip
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_SIDE = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}


def _resnet_suffix(rest: str) -> str:
    for src, dst in _RESNET.items():
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src) :]
    raise ValueError(f"unknown residual block key suffix {rest!r}")


def diffusers_to_official_vae(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a diffusers ``AutoencoderKLWan`` (Wan2.1 layout) state dict to the official key layout.

    The inverse of ``diffusers.loaders.single_file_utils.convert_wan_vae_to_diffusers``, written for any
    number of residual blocks (diffusers' forward map hard-codes 2). Tensors are not copied.
    """
    n_up = 1 + max(
        (
            int(m.group(1))
            for k in state_dict
            if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k))
        ),
        default=-1,
    )
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        head, rest = parts[0], ".".join(parts[1:])
        if head in _TOP:
            new = f"{_TOP[head]}.{rest}"
        elif head in ("encoder", "decoder") and parts[1] in _SIDE:
            new = f"{head}.{_SIDE[parts[1]]}.{'.'.join(parts[2:])}"
        elif head in ("encoder", "decoder") and parts[1] == "mid_block":
            kind, i, tail = parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"{head}.middle.{2 * i}.{_resnet_suffix(tail)}"
            elif kind == "attentions":
                new = f"{head}.middle.{2 * i + 1}.{tail}"
            else:
                raise ValueError(f"unknown diffusers Wan VAE key {key!r}")
        elif head == "encoder" and parts[1] == "down_blocks":
            idx, tail = parts[2], ".".join(parts[3:])
            if parts[3] in ("resample", "time_conv", "norm", "to_qkv", "proj"):
                new = f"encoder.downsamples.{idx}.{tail}"
            else:
                new = f"encoder.downsamples.{idx}.{_resnet_suffix(tail)}"
        elif head == "decoder" and parts[1] == "up_blocks":
            # Official decoder blocks are flat: per level n_up residual blocks then one Resample.
            level, kind = int(parts[2]), parts[3]
            base = level * (n_up + 1)
            if kind == "resnets":
                new = f"decoder.upsamples.{base + int(parts[4])}.{_resnet_suffix('.'.join(parts[5:]))}"
            elif kind == "upsamplers":
                new = f"decoder.upsamples.{base + n_up}.{'.'.join(parts[5:])}"
            else:
                raise ValueError(f"unknown diffusers Wan VAE key {key!r}")
        else:
            raise ValueError(f"unknown diffusers Wan VAE key {key!r}")
        out[new] = value
    return out
