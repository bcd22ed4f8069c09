"""LoRA for the Wan DiT: read the common file formats, map them to official module names, merge into weights.

Formats (one file may use any prefix; the module part decides):
- official names, PEFT or kohya suffixes: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight`` /
  ``lora_B`` (or ``lora_down`` / ``lora_up``), optional ``<module>.alpha`` (ComfyUI, lightx2v, Wan trainers);
- diffusers names: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (mapped with ``diffusers_to_official_dit``;
  ``lora_B.bias`` is a bias delta);
- kohya / musubi-tuner: ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` + ``.alpha`` (dots flattened to
  underscores; resolved against the target's own module names, so no guessing);
- full deltas: ``<module>.diff`` (added to the weight) and ``<module>.diff_b`` (added to the bias), as in the
  lightx2v distillation LoRAs.
The merge: ``W += strength * (alpha / rank) * up @ down`` (alpha defaults to rank: scale 1, the PEFT default for
files without alpha), computed in float32 and cast back to W's dtype.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from telefuser_cli.errors import UserError
from telefuser_cli.io.path_kind import file_problem
from telefuser_cli.loading.checkpoint import read_state_dict
from telefuser_cli.loading.wan_dit_arch import diffusers_to_official_dit

PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "model.")
KOHYA_PREFIX = "lora_unet_"
_SUFFIX = re.compile(
    r"(?P<module>.+?)\.(?:(?P<part>lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up)(?:\.default)?\.weight"
    r"|(?P<bias>lora_B\.bias)|(?P<other>alpha|diff|diff_b))$"
)
_PART = {
    "lora_A": "down",
    "lora_down": "down",
    "lora.down": "down",
    "lora_B": "up",
    "lora_up": "up",
    "lora.up": "up",
}
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


@dataclass
class LoraPatch:
    """What one LoRA file changes in one module (official name): a low-rank pair and/or full deltas."""

    down: torch.Tensor | None = None  # [rank, in, ...]
    up: torch.Tensor | None = None  # [out, rank, ...]
    alpha: float | None = None
    diff: torch.Tensor | None = None  # full weight delta
    diff_b: torch.Tensor | None = None  # bias delta

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]


def load_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file (safetensors, or a weights-only ``.pt``/``.pth``) -> its tensors; UserError if unreadable."""
    path = Path(path).expanduser()
    problem = file_problem(path)
    if problem is not None:
        raise UserError(f"LoRA file {path} {problem}")
    return read_state_dict([path])


def _strip_prefix(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _official_module(name: str, modules: set[str], kohya: Mapping[str, str]) -> str | None:
    """A LoRA module name in any supported format -> the official module name in ``modules``, or None."""
    if name.startswith(KOHYA_PREFIX):
        return kohya.get(name[len(KOHYA_PREFIX) :])
    name = _strip_prefix(name)
    if name in modules:
        return name
    try:
        converted = next(iter(diffusers_to_official_dit({name + ".weight": torch.empty(0)})))
    except ValueError:
        return None
    official = converted.removesuffix(".weight")
    return official if official in modules else None


def _check_dtype(key: str, tensor: torch.Tensor, alpha: bool) -> None:
    """LoRA matrices must be floating point (``.float()`` would quietly turn integer or complex values into
    weights); an alpha may be any real number."""
    if tensor.is_floating_point() or (alpha and not tensor.is_complex() and tensor.dtype != torch.bool):
        return
    raise ValueError(
        f"{key} is stored as {str(tensor.dtype).removeprefix('torch.')}; LoRA "
        f"{'alphas must be real numbers' if alpha else 'matrices must be floating point (bf16, fp16, fp32)'}"
    )


def lora_patches(lora_sd: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> dict[str, LoraPatch]:
    """Group a LoRA state dict by the official module it changes.

    target_keys: the model's state-dict keys (official layout); a module is ``<m>`` for a key ``<m>.weight``
    (or a bare parameter such as ``blocks.0.modulation`` for a ``.diff``). Raises ValueError naming the first
    few keys that are not LoRA tensors or that target no module of the model, and for incomplete pairs.
    """
    keys = set(target_keys)
    modules = {k.removesuffix(".weight") for k in keys if k.endswith(".weight")} | keys
    kohya = {m.replace(".", "_"): m for m in modules}
    patches: dict[str, LoraPatch] = {}
    not_lora, unknown = [], []
    for key, tensor in lora_sd.items():
        match = _SUFFIX.fullmatch(key)
        if match is None:
            not_lora.append(key)
            continue
        _check_dtype(key, tensor, alpha=match["other"] == "alpha")
        module = _official_module(match["module"], modules, kohya)
        if module is None:
            unknown.append(key)
            continue
        patch = patches.setdefault(module, LoraPatch())
        if match["part"]:
            setattr(patch, _PART[match["part"]], tensor)
        elif match["bias"] or match["other"] == "diff_b":
            patch.diff_b = tensor
        elif match["other"] == "diff":
            patch.diff = tensor
        else:
            patch.alpha = float(tensor.float().reshape(-1)[0])
    if not_lora:
        raise ValueError(f"{len(not_lora)} keys are not LoRA tensors (lora_A/B, lora_down/up, alpha, diff): "
                         f"{sorted(not_lora)[:5]}")  # fmt: skip
    if unknown:
        raise ValueError(
            f"{len(unknown)} LoRA keys target layers this model does not have (a LoRA for another model or "
            f"size?): {sorted(unknown)[:5]}"
        )
    for module, patch in patches.items():
        if (patch.down is None) != (patch.up is None):
            raise ValueError(f"LoRA for {module} has only its {'down' if patch.up is None else 'up'} matrix")
        if patch.down is None and patch.alpha is not None:
            raise ValueError(f"LoRA for {module} has an alpha but no down/up matrices")
    return patches


def _weight_key(module: str, keys: set[str]) -> str:
    return module + ".weight" if module + ".weight" in keys else module


def _merged(weight: torch.Tensor, delta: torch.Tensor, strength: float, key: str) -> torch.Tensor:
    if weight.dtype in _FP8:
        raise ValueError(f"{key} is fp8: dequantize the checkpoint (loading.fp8) before merging a LoRA")
    return (weight.float() + strength * delta.to(weight.device)).to(weight.dtype)


def _as_shape(delta: torch.Tensor, weight: torch.Tensor, what: str, key: str) -> torch.Tensor:
    """A [out, ...] delta with the weight's element count -> the weight's shape (conv LoRAs come flattened)."""
    if delta.numel() != weight.numel() or delta.shape[0] != weight.shape[0]:
        raise ValueError(
            f"LoRA {what} for {key} has shape {tuple(delta.shape)}, the weight {tuple(weight.shape)}"
        )
    return delta.reshape(weight.shape)


def _updates(params: Mapping[str, torch.Tensor], patches: Mapping[str, LoraPatch], strength: float):
    """(key, new tensor) for every parameter the patches change."""
    keys = set(params)
    for module, patch in patches.items():
        wkey = _weight_key(module, keys)
        weight = params[wkey]
        delta = None
        if patch.down is not None:
            down, up = patch.down.float().flatten(1), patch.up.float().flatten(1)
            if up.shape[1] != down.shape[0]:
                raise ValueError(f"LoRA for {module}: up {tuple(patch.up.shape)} and down "
                                 f"{tuple(patch.down.shape)} ranks differ")  # fmt: skip
            delta = _as_shape(patch.scale * (up @ down), weight, "up @ down", wkey)
        if patch.diff is not None:
            diff = _as_shape(patch.diff.float(), weight, "diff", wkey)
            delta = diff if delta is None else delta + diff
        if delta is not None:
            yield wkey, _merged(weight, delta, strength, wkey)
        if patch.diff_b is not None:
            bkey = module + ".bias"
            if bkey not in keys:
                raise ValueError(f"LoRA has a bias delta for {module}, which has no bias")
            yield bkey, _merged(params[bkey], _as_shape(patch.diff_b.float(), params[bkey], "diff_b", bkey),
                                strength, bkey)  # fmt: skip


def merge_lora(
    target: Mapping[str, torch.Tensor] | nn.Module, lora_sd: Mapping[str, torch.Tensor], strength: float = 1.0
) -> dict[str, torch.Tensor] | nn.Module:
    """Merge a LoRA into official-layout weights.

    target: a state dict (returned as a new dict; unchanged tensors shared, the input left as it was) or a
    module (its parameters updated in place, returned). Each changed tensor is computed as
    ``(W.float() + strength * delta).to(W.dtype)``. Raises ValueError for keys that target no layer of the
    model (naming the first few), incomplete pairs, mismatched shapes and fp8 targets.
    """
    if isinstance(target, nn.Module):
        params = dict(target.named_parameters())
        updates = dict(_updates(params, lora_patches(lora_sd, target.state_dict().keys()), strength))
        with torch.no_grad():
            for key, value in updates.items():
                params[key].copy_(value)
        return target
    out = dict(target)
    out.update(_updates(target, lora_patches(lora_sd, target.keys()), strength))
    return out
