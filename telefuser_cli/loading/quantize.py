"""Linear weights held in fp8 at run time: kept so from an fp8 file, or quantized when a file is loaded.

:func:`fp8_converter` gives ``build_module`` the step that runs on the model built on meta: every
``nn.Linear`` outside the ``keep`` names (a DiT class's ``keep_fp32``) becomes an ``ops.fp8_linear.Fp8Linear``
whose fp8 weight and float32 scale come from the state dict (an fp8 file: its own values and scales; a
bf16/fp32 file, or weights a LoRA changed: quantized here per output channel, scale = row amax / 448). The
tensors of a replaced layer are renamed to ``<m>.weight_fp8`` / ``<m>.weight_scale``; every other fp8 tensor
of the file is dequantized (float32 for the ``keep`` names, the run dtype otherwise).

Modes (``pipeline.<component>.weights``): ``auto`` keeps an fp8 file fp8 and loads any other file in the run
dtype; ``dequantize`` converts everything to the run dtype at load; ``fp8`` also quantizes a bf16/fp32 file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn as nn

from telefuser_cli.loading.fp8 import (
    DROPPED_SUFFIXES,
    FP8_DTYPES,
    WEIGHT_SCALE_SUFFIXES,
    dequantize_state_dict,
)
from telefuser_cli.ops.fp8_linear import DEQUANTIZE, Fp8Linear, normalized_scale, quantize_per_channel

AUTO, DEQUANTIZE_MODE, FP8 = "auto", "dequantize", "fp8"
MODES = (AUTO, DEQUANTIZE_MODE, FP8)


def _scale_keys(sd: Mapping[str, torch.Tensor], module: str) -> list[str]:
    return [module + s for s in (*WEIGHT_SCALE_SUFFIXES, *DROPPED_SUFFIXES) if module + s in sd]


def dequantize_keys(sd: dict[str, torch.Tensor], weight_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """``sd`` with the fp8 weights among ``weight_keys`` dequantized to float32 (their scales removed): what a
    LoRA merge needs on an fp8 file. Other tensors are shared, not copied."""
    out = dict(sd)
    for key in weight_keys:
        if key in out and out[key].dtype in FP8_DTYPES:
            module = key.removesuffix(".weight")
            part = {k: out.pop(k) for k in (key, *_scale_keys(out, module))}
            out.update(dequantize_state_dict(part, torch.float32))
    return out


def resident_layers(model: nn.Module, keep: tuple[str, ...]) -> dict[str, nn.Linear]:
    """The model's ``nn.Linear`` layers that may hold fp8 weights: all but those whose weight's key contains
    one of ``keep``."""
    return {
        name: m
        for name, m in model.named_modules()
        if type(m) is nn.Linear and not any(part in f"{name}.weight" for part in keep)
    }


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fp8_converter(
    *, mode: str, dtype: torch.dtype, keep: tuple[str, ...], quantize: Iterable[str] = (),
    compute: str = DEQUANTIZE,
) -> Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:  # fmt: skip
    """The step ``build_module`` runs on the meta model: layers swapped, state dict renamed to match.

    mode: AUTO, DEQUANTIZE_MODE or FP8 (see the module docstring). keep: key substrings of the layers that
    stay high precision (a DiT's ``keep_fp32``; fp8 values a file holds there are dequantized to float32,
    then cast as ``build_module`` casts the rest). quantize: further ``<m>.weight`` keys to
    quantize in AUTO mode (weights of an fp8 file that a LoRA merge turned into float32). dtype: the run dtype
    (biases, and the dequantized values of the other fp8 tensors). compute: the fp8 layers' matmul path.
    Raises ValueError for a scale that fits no known convention.
    """
    if mode not in MODES:
        raise ValueError(f"weights mode {mode!r} is none of {', '.join(MODES)}")
    requantize = set(quantize)

    def convert(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sd, resident = dict(sd), {}
        if mode != DEQUANTIZE_MODE:
            for name, linear in resident_layers(model, keep).items():
                key = f"{name}.weight"
                weight = sd.get(key)
                if weight is None or weight.ndim != 2:
                    continue  # build_module names the missing key
                from_file = weight.dtype in FP8_DTYPES
                if not (from_file or mode == FP8 or key in requantize):
                    continue
                scales = _scale_keys(sd, name)
                found = [k for k in scales if k.endswith(WEIGHT_SCALE_SUFFIXES)]
                if len(found) > 1:
                    raise ValueError(f"{key} has two scales: {found}")
                if from_file:
                    scale = sd[found[0]] if found else torch.ones(())
                    fp8, scale, origin = weight, normalized_scale(scale, tuple(weight.shape)), "file"
                else:
                    fp8, scale = quantize_per_channel(weight)
                    origin = "lora-requantized" if key in requantize else "quantized"
                for k in (key, *scales):
                    del sd[k]
                resident[f"{name}.weight_fp8"], resident[f"{name}.weight_scale"] = fp8, scale
                with torch.device("meta"):  # filled by load_state_dict(assign=True), as the rest
                    layer = Fp8Linear(
                        linear.in_features, linear.out_features, weight_dtype=fp8.dtype,
                        scale_shape=tuple(scale.shape), bias=linear.bias is not None, compute_dtype=dtype,
                        origin=origin, compute=compute,
                    )  # fmt: skip
                _set_module(model, name, layer)
        # the rest first: a lightx2v-named ``weight_scale`` there is a scale of a weight still to dequantize
        return {**dequantize_state_dict(sd, dtype, keep_fp32=keep), **resident}

    return convert
