"""RIFE (IFNet) weights: the released ``flownet.pkl`` layout, architecture detection, loading, tiny file.

Practical-RIFE saves ``flownet.pkl`` from a DataParallel model, so its keys carry a ``module.`` prefix;
the file carries no config: every architecture field is read off the tensors. Its loader keeps only the
keys containing ``module.`` and loads them with ``strict=False`` (a file without the prefix would silently
give an untrained network); here a layout that does not match exactly is an error naming the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from telefuser_cli.errors import UserError
from telefuser_cli.loading.checkpoint import build_module, read_state_dict
from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.rife import IFNet, RIFEConfig

PREFIX = "module."
_LAYOUT = "an IFNet (v4.22+) state dict"
_BLOCK = re.compile(r"block(\d+)\.")
_RESCONV = re.compile(r"block0\.convblock\.(\d+)\.")

# A tiny IFNet for tests and `make demo`: the released structure (5 blocks, 8 residual convolutions,
# 8 hand-over features) at small widths.
TINY_RIFE = RIFEConfig(block_widths=(16, 16, 8, 8, 8), head_width=8, head_channels=4, num_resconv=2)


def strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the DataParallel ``module.`` prefix: all keys carry it, or none (returned unchanged)."""
    prefixed = [k for k in sd if k.startswith(PREFIX)]
    if not prefixed:
        return dict(sd)
    if len(prefixed) != len(sd):
        other = next(k for k in sd if not k.startswith(PREFIX))
        raise ValueError(f"mixed key layout: {prefixed[0]!r} has the {PREFIX!r} prefix but {other!r} has not")
    return {k[len(PREFIX) :]: v for k, v in sd.items()}


def infer_rife_config(shapes: Mapping[str, torch.Size]) -> RIFEConfig:
    """The ``RIFEConfig`` of an IFNet state dict (prefix already stripped), from key names and shapes.

    head: ``encode.cnn0`` out channels (width), ``encode.cnn3`` (a transposed convolution, weight
    [in, out, 4, 4]) out channels; blocks: the contiguous ``blockN`` indices, width = ``conv0.1.0`` out
    channels; residual convolutions: ``block0.convblock`` entries; hand-over features: ``lastconv.0``
    out channels / 4 - 5. The result is checked against every key and shape of a model built from it.
    """
    for key in shapes:
        if not (key.startswith("encode.") or _BLOCK.match(key)):
            raise ValueError(f"unknown key {key!r}: not an IFNet (v4.22+) state dict")
    for key in (
        "encode.cnn0.weight",
        "encode.cnn3.weight",
        "block0.conv0.0.0.weight",
        "block0.lastconv.0.weight",
    ):
        if key not in shapes:
            raise ValueError(f"not an IFNet (v4.22+) state dict: no {key!r}")
    indices = sorted({int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))})
    if indices != list(range(len(indices))):
        raise ValueError(f"block indices are not contiguous from 0: {indices}")
    for i in indices:
        if f"block{i}.conv0.1.0.weight" not in shapes:
            raise ValueError(f"not an IFNet (v4.22+) state dict: no 'block{i}.conv0.1.0.weight'")
    out = shape_of(shapes, "block0.lastconv.0.weight", 4, _LAYOUT)[1]
    if out % 4 or out // 4 <= 5:
        raise ValueError(f"block0.lastconv.0.weight has {out} output channels; expected 4 * (5 + features)")
    resconv = {int(m.group(1)) for k in shapes if (m := _RESCONV.match(k))}
    cfg = RIFEConfig(
        block_widths=tuple(shape_of(shapes, f"block{i}.conv0.1.0.weight", 4, _LAYOUT)[0] for i in indices),
        head_width=shape_of(shapes, "encode.cnn0.weight", 4, _LAYOUT)[0],
        head_channels=shape_of(shapes, "encode.cnn3.weight", 4, _LAYOUT)[1],
        feat_channels=out // 4 - 5,
        num_resconv=len(resconv),
    )
    _check_layout(cfg, shapes)
    return cfg


def _check_layout(cfg: RIFEConfig, shapes: Mapping[str, torch.Size]) -> None:
    with torch.device("meta"):
        expected = {k: v.shape for k, v in IFNet(cfg).state_dict().items()}
    for key in sorted(shapes):
        if key not in expected:
            raise ValueError(f"unexpected key {key!r} for the inferred {cfg}")
        if tuple(shapes[key]) != tuple(expected[key]):
            raise ValueError(
                f"{key} has shape {tuple(shapes[key])}, the inferred {cfg} expects {tuple(expected[key])}"
            )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f"missing key {missing[0]!r} ({len(missing)} missing) for the inferred {cfg}")


def load_rife(path: Path, *, device: torch.device, dtype: torch.dtype = torch.float32) -> IFNet:
    """Read ``flownet.pkl`` (weights only, memory-mapped), detect its architecture, build on meta, fill.

    Raises UserError naming the file for unreadable or unsafe files (from ``read_state_dict``) and for a
    layout that is not an IFNet of the supported family (naming the key).
    """
    try:
        sd = strip_module_prefix(read_state_dict([Path(path)]))
        cfg = infer_rife_config({k: v.shape for k, v in sd.items()})
    except ValueError as error:
        raise UserError(f"{path}: not Practical-RIFE interpolation weights (v4.22+): {error}") from None
    return build_module(lambda: IFNet(cfg), sd, dtype=dtype, device=device, source=str(path))


def tiny_rife_state_dict(seed: int, config: RIFEConfig = TINY_RIFE) -> dict[str, torch.Tensor]:
    """Deterministic random IFNet weights (released key layout, without the prefix).

    Uniform fan-in init with betas near 1; the flow/mask heads (``lastconv``) are scaled down so the
    predicted flows stay below a pixel and the result is close to a blend of the two frames: enough to
    show the plumbing, not a trained model.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in IFNet(config).state_dict().items()}
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("beta"):
            value = 0.5 + torch.rand(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if key.endswith("weight") else shape[0]
            value = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(max(fan_in, 1))
            if ".lastconv." in key:
                value = value * 0.05
        sd[key] = value.contiguous()
    return sd


def write_tiny_rife(path: Path, seed: int, config: RIFEConfig = TINY_RIFE) -> Path:
    """Write a tiny ``flownet.pkl`` as released: ``torch.save`` of a dict of tensors, keys prefixed
    ``module.``, loadable with ``torch.load(weights_only=True)``. Written to a temporary name, then renamed."""
    from telefuser_cli.io.files import atomic_path

    path = Path(path)
    sd = {PREFIX + k: v for k, v in tiny_rife_state_dict(seed, config).items()}
    with atomic_path(path) as temporary:
        torch.save(sd, temporary)
    return path
