"""A linear layer whose weight stays in fp8 in memory: one layer's weight is dequantized at a time.

:class:`Fp8Linear` holds ``weight_fp8`` (float8_e4m3fn or e5m2, ``[out, in]``) and ``weight_scale`` (float32,
per tensor ``[]``, per output channel ``[out, 1]`` or per 128x128 block ``[ceil(out/128), ceil(in/128)]``) as
buffers, so offload, ``.to(device)`` and compile see them as ordinary module tensors and move the fp8 bytes.
``forward`` dequantizes the weight into the activation's dtype right before ``F.linear``; the product
``fp8.float() * scale`` is the one ``loading.fp8.dequantize_state_dict`` computes, so the result equals a model
dequantized at load.

The optional fp8 matmul (``compute="scaled_mm"``, CUDA with compute capability >= 8.9) quantizes the activation
per token (dynamic amax / 448) and multiplies fp8 by fp8 with ``torch._scaled_mm``; layers it cannot take
(block scales, e5m2 weights, sizes not multiple of 16) run the dequantizing path.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
E4M3_MAX = 448.0  # the largest finite float8_e4m3fn value
BLOCK = 128  # block size of block-wise scales (lightx2v fp8-b128)
DEQUANTIZE, SCALED_MM = "dequantize", "scaled_mm"
_SLICE = 1 << 20  # values of one float32 slice while dequantizing or quantizing (4 MiB)


def scale_kind(scale_shape: tuple[int, ...], weight_shape: tuple[int, int]) -> str:
    """The kind of scale (tensor, channel or block) that ``scale_shape`` is for a weight ``[out, in]``.

    Raises ValueError for a shape that fits none of them.
    """
    out, inp = weight_shape
    if math.prod(scale_shape) == 1:
        return "tensor"
    if tuple(scale_shape) in ((out,), (out, 1)):
        return "channel"
    if tuple(scale_shape) == (math.ceil(out / BLOCK), math.ceil(inp / BLOCK)):
        return "block"
    raise ValueError(
        f"scale of shape {tuple(scale_shape)} fits neither per tensor, per output channel nor per "
        f"{BLOCK}x{BLOCK} block of the weight {tuple(weight_shape)}"
    )


def normalized_scale(scale: torch.Tensor, weight_shape: tuple[int, int]) -> torch.Tensor:
    """The scale as the layer holds it: float32, ``[]``, ``[out, 1]`` or ``[blocks_out, blocks_in]``."""
    kind = scale_kind(tuple(scale.shape), weight_shape)
    scale = scale.float()
    if kind == "tensor":
        return scale.reshape(())
    if kind == "channel":
        return scale.reshape(weight_shape[0], 1)
    return scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(weight.float() * scale).to(dtype)`` for a scale from :func:`normalized_scale` (block scales too).

    Computed in slices of rows (multiples of the 128-row block), so the float32 intermediate is one slice
    (<= 1M values), not the whole weight: the peak is the result plus 4 MiB. Elementwise, so the same values.
    """
    out_features, in_features = weight.shape
    result = torch.empty(out_features, in_features, dtype=dtype, device=weight.device)
    rows = max(BLOCK, (_SLICE // max(in_features, 1)) // BLOCK * BLOCK)
    block = scale.ndim == 2 and scale.shape[0] != out_features  # per 128x128 block ([out, 1] is per channel)
    for start in range(0, out_features, rows):
        part = weight[start : start + rows].to(torch.float32)
        if block:
            s = scale[start // BLOCK : -(-(start + part.shape[0]) // BLOCK)]
            s = s.repeat_interleave(BLOCK, 0)[: part.shape[0]].repeat_interleave(BLOCK, 1)[:, :in_features]
        elif scale.ndim == 2:
            s = scale[start : start + rows]
        else:
            s = scale
        result[start : start + rows] = part.mul_(s)
    return result


def quantize_per_channel(
    weight: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn
) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight [out, in]`` -> (fp8 weight, float32 scale ``[out, 1]`` = row amax / fp8 max).

    A row of zeros gets scale 1 (its fp8 values are zeros either way). Works in slices of rows, as
    :func:`dequantize` does, so no float32 copy of the whole weight is made; the input is never changed.
    """
    out_features, in_features = weight.shape
    limit = torch.finfo(dtype).max
    q = torch.empty(out_features, in_features, dtype=dtype, device=weight.device)
    scale = torch.empty(out_features, 1, dtype=torch.float32, device=weight.device)
    rows = max(1, _SLICE // max(in_features, 1))
    for start in range(0, out_features, rows):
        part = weight[start : start + rows].to(torch.float32, copy=True)
        amax = part.abs().amax(dim=1, keepdim=True)
        s = torch.where(amax > 0, amax / limit, torch.ones_like(amax))
        q[start : start + rows] = part.div_(s).clamp_(-limit, limit)
        scale[start : start + rows] = s
    return q, scale


class Fp8Linear(nn.Module):
    """``nn.Linear`` with an fp8 weight and its float32 scale; bias in the compute dtype.

    ``origin`` says where the fp8 values came from ("file" or "quantized" at load), for the run record.
    ``compute``: DEQUANTIZE (any device) or SCALED_MM (fp8 matmul; see :func:`scaled_mm_problem`).
    """

    def __init__(
        self, in_features: int, out_features: int, *, weight_dtype: torch.dtype,
        scale_shape: tuple[int, ...], bias: bool, compute_dtype: torch.dtype, origin: str = "file",
        compute: str = DEQUANTIZE,
    ) -> None:  # fmt: skip
        super().__init__()
        if weight_dtype not in FP8_DTYPES:
            raise ValueError(f"Fp8Linear holds float8_e4m3fn or float8_e5m2 weights, not {weight_dtype}")
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype, self.origin, self.compute = compute_dtype, origin, compute
        scale_kind(scale_shape, (out_features, in_features))
        self.register_buffer("weight_fp8", torch.empty(out_features, in_features, dtype=weight_dtype))
        self.register_buffer("weight_scale", torch.empty(scale_shape, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=compute_dtype)) if bias else None

    @property
    def scale_kind(self) -> str:
        return scale_kind(tuple(self.weight_scale.shape), (self.out_features, self.in_features))

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight in the compute dtype, made on each read (code written for ``nn.Linear`` that
        reads ``layer.weight``, such as fused CPU kernels, keeps working; it holds one layer's copy)."""
        return dequantize(self.weight_fp8, self.weight_scale, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] -> [..., out] in x's dtype."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.compute == SCALED_MM and x.is_cuda and self._takes_scaled_mm():
            return scaled_mm_linear(x, self.weight_fp8, self.weight_scale, bias)
        return F.linear(x, dequantize(self.weight_fp8, self.weight_scale, x.dtype), bias)

    def _takes_scaled_mm(self) -> bool:
        return (
            self.weight_fp8.dtype == torch.float8_e4m3fn
            and self.scale_kind != "block"
            and self.in_features % 16 == 0
            and self.out_features % 16 == 0
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"weight={str(self.weight_fp8.dtype).removeprefix('torch.')}, scale={self.scale_kind}, "
            f"compute={self.compute}"
        )


def scaled_mm_problem(device: torch.device) -> str | None:
    """Why the fp8 matmul cannot run on ``device`` (None when it can): it needs CUDA with compute capability
    8.9 (Ada) or newer, where fp8 tensor cores exist."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"the device is {device.type}, and the fp8 matmul (torch._scaled_mm) needs a CUDA GPU"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"{name} has compute capability {capability[0]}.{capability[1]}; fp8 matmuls need 8.9 or newer"
    return None


def scaled_mm_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``F.linear`` as an fp8 x fp8 matmul: x quantized per token (amax / 448), the weight's own scale.

    x: [..., in] bf16/fp16/fp32 on CUDA; weight: [out, in] e4m3; weight_scale: [] or [out, 1] -> [..., out].
    On compute capability >= 9.0 with a bf16 activation the scales are applied inside the kernel (row-wise
    scaling); elsewhere the kernel runs unscaled into float32 and the scales multiply its output.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    x_scale = (x2.abs().amax(dim=1, keepdim=True).float() / E4M3_MAX).clamp_(min=1e-12)  # [M, 1]
    xq = (x2.float() / x_scale).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    w_scale = weight_scale.float().reshape(-1, 1).expand(weight.shape[0], 1).reshape(1, -1).contiguous()
    if x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (9, 0):
        out = torch._scaled_mm(xq, weight.t(), scale_a=x_scale, scale_b=w_scale, bias=bias, out_dtype=x.dtype)
    else:
        one = torch.ones((), device=x.device, dtype=torch.float32)
        out = torch._scaled_mm(xq, weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        out = out.mul_(x_scale).mul_(w_scale)
        out = (out if bias is None else out.add_(bias.float())).to(x.dtype)
    return out.reshape(*shape[:-1], weight.shape[0])


def fp8_layers(model: nn.Module) -> dict[str, Fp8Linear]:
    """The model's :class:`Fp8Linear` layers by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Fp8Linear)}


def weights_summary(model: nn.Module) -> dict:
    """What the run record says about how the model holds its weights: the fp8 layers (by origin, scale
    kind and compute path) and the bytes in fp8 and in other dtypes."""
    layers = fp8_layers(model)
    fp8_bytes = sum(m.weight_fp8.nbytes + m.weight_scale.nbytes for m in layers.values())
    total = sum(t.nbytes for t in {id(t): t for t in (*model.parameters(), *model.buffers())}.values())
    summary: dict = {"fp8_layers": len(layers)}
    if layers:
        counts: dict[str, dict[str, int]] = {"origin": {}, "scale": {}, "compute": {}}
        for m in layers.values():
            compute = SCALED_MM if m.compute == SCALED_MM and m._takes_scaled_mm() else DEQUANTIZE
            for what, value in (("origin", m.origin), ("scale", m.scale_kind), ("compute", compute)):
                counts[what][value] = counts[what].get(value, 0) + 1
        summary.update(counts)
    summary["fp8_bytes"] = fp8_bytes
    summary["other_bytes"] = total - fp8_bytes
    return summary
