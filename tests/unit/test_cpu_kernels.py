"""The Wan DiT's CPU kernel choice for GELU(tanh) of a linear layer: oneDNN's fused matmul epilogue where oneDNN
takes the dtype, plain PyTorch otherwise. Both paths, in float32 and bf16, against float64.

Run on other kernels too (ONEDNN_MAX_CPU_ISA=AVX2: oneDNN has no bf16 matmul there, as on AVX2-only CPUs, so bf16
must take the plain path rather than raise).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_rel_close

import telefuser_cli.models.wan_dit as wan_dit

pytestmark = pytest.mark.numeric

# Max relative error against float64, measured on an AMD EPYC (default kernels, ONEDNN_MAX_CPU_ISA=AVX2,
# ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE), either path: float32 3.1e-7 to 3.2e-7, bf16 3.1e-3 to
# 3.4e-3 (one bf16 ulp of the largest value is 3.9e-3). GELU(erf) instead of GELU(tanh) gives 1.9e-4 in
# float32; a missing GELU gives 1.06.
TOLERANCES = {torch.float32: 2e-6, torch.bfloat16: 8e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("onednn", [True, False])
def test_linear_gelu_matches_float64(monkeypatch, dtype, onednn):
    monkeypatch.setattr(wan_dit, "_ONEDNN", wan_dit._ONEDNN and onednn)
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 256).to(dtype)
    x = torch.randn(2, 48, 64).to(dtype)
    with torch.no_grad():
        got = wan_dit._linear_gelu(x, layer)
        exact = F.gelu(F.linear(x.double(), layer.weight.double(), layer.bias.double()), approximate="tanh")
    assert got.dtype == dtype
    assert_rel_close(got.double(), exact, TOLERANCES[dtype])
