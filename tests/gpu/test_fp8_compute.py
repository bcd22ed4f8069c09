"""The fp8 matmul path (torch._scaled_mm) against the dequantizing path, on a CUDA device with fp8 tensor cores
(skipped elsewhere; CI has none). Run with ``benchmarks/gpu_check.sh`` or ``pytest tests/gpu``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from telefuser_cli.ops.fp8_linear import (
    DEQUANTIZE,
    SCALED_MM,
    Fp8Linear,
    dequantize,
    quantize_per_channel,
    scaled_mm_linear,
    scaled_mm_problem,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or scaled_mm_problem(torch.device("cuda")) is not None,
        reason="needs a CUDA device with compute capability >= 8.9",
    ),
]


def _layer(scale_kind: str, compute: str) -> Fp8Linear:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(512, 1024, generator=g) / 32
    if scale_kind == "channel":
        fp8, scale = quantize_per_channel(weight)
    else:
        scale = weight.abs().max() / 448
        fp8 = (weight / scale).to(torch.float8_e4m3fn)
        scale = scale.reshape(())
    layer = Fp8Linear(
        1024, 512, weight_dtype=torch.float8_e4m3fn, scale_shape=tuple(scale.shape), bias=True,
        compute_dtype=torch.bfloat16, compute=compute,
    )  # fmt: skip
    layer.weight_fp8, layer.weight_scale = fp8, scale.float()
    layer.bias = torch.nn.Parameter(
        torch.randn(512, generator=g).to(torch.bfloat16) / 10, requires_grad=False
    )
    return layer.cuda()


@pytest.mark.parametrize("scale_kind", ["tensor", "channel"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_scaled_mm_matches_the_dequantized_path(scale_kind, dtype):
    x = torch.randn(2, 300, 1024, generator=torch.Generator().manual_seed(1)).to("cuda", dtype)
    fast, slow = _layer(scale_kind, SCALED_MM), _layer(scale_kind, DEQUANTIZE)
    with torch.no_grad():
        got, want = fast(x), slow(x)
    assert got.dtype == dtype and got.shape == (2, 300, 512)
    # the activation's per-token fp8 rounding (3 mantissa bits, 2^-4 relative at most per value) averages
    # over the 1024 products of each output: a few 1e-2 of the largest output at most
    error = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
    assert error < 5e-2
    exact = F.linear(
        x.float(), dequantize(fast.weight_fp8, fast.weight_scale, torch.float32), fast.bias.float()
    )
    assert ((got.float() - exact).abs().max() / exact.abs().max()).item() < 5e-2


def test_scaled_mm_linear_handles_a_token_of_zeros():
    layer = _layer("channel", SCALED_MM)
    x = torch.zeros(4, 1024, device="cuda", dtype=torch.bfloat16)
    out = scaled_mm_linear(x, layer.weight_fp8, layer.weight_scale, layer.bias)
    torch.testing.assert_close(out, layer.bias.expand(4, -1), rtol=0, atol=1e-2)
