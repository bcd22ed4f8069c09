"""The CPU kernels of ``ops.cpu_kernels``: oneDNN's fused op where oneDNN takes the dtype, plain PyTorch
otherwise. Each function, both paths, in float32 and bf16, against float64; and which path ran.

Run on other kernels too (ONEDNN_MAX_CPU_ISA=AVX2: oneDNN has no bf16 kernels there, as on AVX2-only CPUs, so
bf16 must take the plain path rather than raise).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_rel_close

import telefuser_cli.ops.cpu_kernels as cpu_kernels

pytestmark = pytest.mark.numeric

# Max relative error against float64, measured on an AMD EPYC (default kernels, ONEDNN_MAX_CPU_ISA=AVX2,
# ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE), either path: linear+GELU float32 3.1e-7 to 3.2e-7, bf16
# 3.1e-3 to 3.4e-3 (one bf16 ulp of the largest value is 3.9e-3); GELU(erf) instead of GELU(tanh) gives 1.9e-4
# in float32, a missing GELU 1.06. Conv accumulate (default kernels and ONEDNN_MAX_CPU_ISA=AVX2, either path):
# float32 2.6e-7, bf16 3.3e-3; a dropped accumulation (out = conv) gives 0.14.
TOLERANCES = {torch.float32: 2e-6, torch.bfloat16: 8e-3}
DTYPES = [torch.float32, torch.bfloat16]


def _onednn(monkeypatch, dtype, enabled: bool) -> bool:
    """Switch the oneDNN path on or off; True when it will run for ``dtype`` on this machine."""
    monkeypatch.setattr(cpu_kernels, "_ONEDNN", cpu_kernels._ONEDNN and enabled)
    return cpu_kernels._onednn_takes(torch.empty(0, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("onednn", [True, False])
def test_linear_gelu_matches_float64(monkeypatch, dtype, onednn):
    fused = _onednn(monkeypatch, dtype, onednn)
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 256).to(dtype)
    x = torch.randn(2, 48, 64).to(dtype)
    with torch.no_grad():
        got = cpu_kernels.linear_gelu(x, layer)
        exact = F.gelu(F.linear(x.double(), layer.weight.double(), layer.bias.double()), approximate="tanh")
        if fused:
            path = torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "gelu", [], "tanh")
        else:
            path = F.gelu(layer(x), approximate="tanh")
    assert got.dtype == dtype
    assert torch.equal(got, path)  # the path this machine and switch select is the one that ran
    assert_rel_close(got.double(), exact, TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("onednn", [True, False])
def test_add_conv2d_accumulates_in_place(monkeypatch, dtype, onednn):
    fused = _onednn(monkeypatch, dtype, onednn)
    g = torch.Generator().manual_seed(12)
    # the causal convolution's case: the input is one frame of a channels-last-3d ring
    ring = torch.randn(2, 8, 2, 6, 7, generator=g).contiguous(memory_format=torch.channels_last_3d)
    x, weight = ring[:, :, 1].to(dtype), torch.randn(4, 8, 3, 3, generator=g).to(dtype)
    start = torch.randn(2, 4, 6, 7, generator=g).to(dtype)
    exact = start.double() + F.conv2d(x.double(), weight.double(), padding=1)
    got = start.clone()
    assert cpu_kernels.add_conv2d_(got, x, weight, (1, 1)) is got
    if not fused:
        assert torch.equal(got, start + F.conv2d(x, weight, None, 1, (1, 1)))
    assert_rel_close(got.double(), exact, TOLERANCES[dtype])


def test_plain_path_on_other_devices_and_dtypes():
    """float16 is not taken by oneDNN here: the plain expression runs (as on CUDA)."""
    assert not cpu_kernels._onednn_takes(torch.empty(0, dtype=torch.float16))
    assert not cpu_kernels._onednn_takes(torch.empty(0, device="meta"))
