"""fp8-resident linear layers: the numbers, the bytes, and the runtime transforms (offload, step cache)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from telefuser_cli.families.wan.tiny import TINY_DIT
from telefuser_cli.loading.checkpoint import build_module
from telefuser_cli.loading.fp8 import dequantize_state_dict
from telefuser_cli.loading.quantize import AUTO, DEQUANTIZE_MODE, fp8_converter
from telefuser_cli.models.wan_dit import WanDiT
from telefuser_cli.ops.fp8_linear import (
    Fp8Linear,
    dequantize,
    fp8_layers,
    normalized_scale,
    quantize_per_channel,
    scale_kind,
    scaled_mm_problem,
    weights_summary,
)
from telefuser_cli.runtime.compile import compile_blocks
from telefuser_cli.runtime.offload import SequentialOffloader
from telefuser_cli.runtime.transforms import RuntimeRequest, apply_transforms

# Inductor leaves the complex RoPE product to eager kernels and warns each time; expected here.
pytestmark = [
    pytest.mark.numeric,
    pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex"),
]

E4M3 = torch.float8_e4m3fn


def _layer(out: int, inp: int, scale: torch.Tensor, dtype=torch.bfloat16, seed: int = 0) -> Fp8Linear:
    g = torch.Generator().manual_seed(seed)
    layer = Fp8Linear(
        inp, out, weight_dtype=E4M3, scale_shape=tuple(scale.shape), bias=True, compute_dtype=dtype
    )
    layer.weight_fp8 = torch.randn(out, inp, generator=g).to(E4M3)
    layer.weight_scale = scale.float()
    layer.bias = torch.nn.Parameter(torch.randn(out, generator=g).to(dtype), requires_grad=False)
    return layer


@pytest.mark.parametrize(
    "scale",
    [torch.tensor(0.01), torch.rand(130, 1) + 0.1, torch.rand(2, 3) + 0.1, torch.rand(2, 2) + 0.1],
    ids=["tensor", "channel", "block-ragged", "block"],
)
def test_forward_is_linear_with_the_weight_dequantized_as_at_load(scale):
    out, inp = (130, 260) if scale.shape != (2, 2) else (256, 256)
    layer = _layer(out, inp, scale)
    # what the loader's dequantize-at-load path builds from the same file
    plain = dequantize_state_dict({"w.weight": layer.weight_fp8, "w.weight_scale": scale}, torch.bfloat16)
    x = torch.randn(3, 5, inp).to(torch.bfloat16)
    assert torch.equal(layer.weight, plain["w.weight"])  # same product, same rounding: bitwise
    assert torch.equal(layer(x), F.linear(x, plain["w.weight"], layer.bias))
    assert layer(x.float()).dtype == torch.float32  # computes in the activation's dtype


def test_bytes_are_one_per_weight_plus_the_scale():
    layer = _layer(256, 512, torch.rand(256, 1))
    assert layer.weight_fp8.nbytes == 256 * 512 and layer.weight_fp8.dtype == E4M3
    assert layer.weight_scale.nbytes == 256 * 4
    tensors = {n: t for n, t in (*layer.named_parameters(), *layer.named_buffers())}
    assert set(tensors) == {"bias", "weight_fp8", "weight_scale"}  # what offload and .to() move
    assert sum(t.nbytes for t in tensors.values()) == 256 * 512 + 256 * 4 + 256 * 2


def test_scale_kinds_and_refusal():
    assert scale_kind((1,), (8, 4)) == "tensor" and scale_kind((), (8, 4)) == "tensor"
    assert scale_kind((8, 1), (8, 4)) == "channel" and scale_kind((8,), (8, 4)) == "channel"
    assert scale_kind((2, 1), (200, 4)) == "block"
    assert normalized_scale(torch.ones(8), (8, 4)).shape == (8, 1)
    with pytest.raises(ValueError, match="fits neither"):
        scale_kind((3,), (8, 4))


def test_quantize_per_channel_error_bound_and_zero_rows():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 64, generator=g) * torch.logspace(-3, 2, 16)[:, None]
    w[3] = 0
    q, scale = quantize_per_channel(w)
    assert q.dtype == E4M3 and scale.shape == (16, 1) and scale[3].item() == 1.0
    back = dequantize(q, scale, torch.float32)
    # e4m3 keeps 3 mantissa bits: each value within 2^-4 of its row's largest (relative rounding 2^-4)
    assert ((back - w).abs() <= w.abs().amax(1, keepdim=True) * 2**-4).all()
    assert (back[3] == 0).all()


def test_scaled_mm_is_refused_on_a_cpu():
    assert "needs a CUDA GPU" in scaled_mm_problem(torch.device("cpu"))


def _tiny_fp8(num_layers: int = 3):
    """A tiny DiT state dict with its block linears in lightx2v per-channel fp8, and the same model in plain
    float32 after dequantizing (the reference)."""
    config = dataclasses.replace(TINY_DIT, num_layers=num_layers)
    torch.manual_seed(0)
    dit = WanDiT(config)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.05)
    sd = {}
    for key, value in dit.state_dict().items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.ndim == 2:
            q, scale = quantize_per_channel(value)
            sd[key], sd[key.removesuffix(".weight") + ".weight_scale"] = q, scale
        else:
            sd[key] = value
    return config, sd


def _build(config, sd, mode: str, dtype=torch.float32):
    return build_module(
        lambda: WanDiT(config), sd, dtype=dtype, device=torch.device("cpu"), source="t",
        keep_fp32=WanDiT.keep_fp32, convert=fp8_converter(mode=mode, dtype=dtype, keep=WanDiT.keep_fp32),
    )  # fmt: skip


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(1, 16, 2, 8, 8, generator=g),
        torch.tensor([500.0]),
        torch.randn(1, 7, TINY_DIT.text_dim, generator=g),
    )


def test_resident_model_keeps_fp8_and_matches_dequantized_at_load():
    config, sd = _tiny_fp8()
    resident, plain = _build(config, sd, AUTO), _build(config, sd, DEQUANTIZE_MODE)
    layers = fp8_layers(resident)
    assert len(layers) == 3 * 10  # q, k, v, o of both attentions and the two ffn linears, per block
    assert not fp8_layers(plain)
    summary = weights_summary(resident)
    assert summary["origin"] == {"file": 30} and summary["scale"] == {"channel": 30}
    assert summary["fp8_bytes"] + summary["other_bytes"] < sum(t.nbytes for t in plain.state_dict().values())
    with torch.no_grad():
        assert torch.equal(resident(*_inputs()), plain(*_inputs()))  # same weights, same kernels


def test_sequential_offload_moves_fp8_bytes_and_keeps_the_numbers():
    """On a CPU 'device' the offload copies are real: the fp8 buffers travel as fp8, results unchanged."""
    config, sd = _tiny_fp8()
    dit = _build(config, sd, AUTO)
    with torch.no_grad():
        reference = dit(*_inputs())
        offloader = SequentialOffloader(dit.blocks, torch.device("cpu"), prefetch=2)
        fp8_hosts = [h for copy in offloader.copies for h in copy.host if h.dtype == E4M3]
        assert len(fp8_hosts) == 30  # every fp8 weight has its host copy, in fp8
        assert torch.equal(dit(*_inputs()), reference)
        offloader.remove()


def test_step_cache_and_record_on_fp8_weights():
    config, sd = _tiny_fp8()
    dit = _build(config, sd, AUTO)
    placed = apply_transforms(dit, RuntimeRequest(torch.device("cpu"), step_cache=0.0, weights="auto"))
    with torch.no_grad():
        out = placed.module(*_inputs())
    assert out.shape == (1, 16, 2, 8, 8)
    record = placed.record()
    assert record["weights"]["mode"] == "auto" and record["weights"]["fp8_layers"] == 30
    assert record["step_cache"]["calls"] == 1


def test_compiled_blocks_dequantize_inside_the_compiled_region():
    config, sd = _tiny_fp8(num_layers=2)
    dit = _build(config, sd, AUTO)
    with torch.no_grad():
        reference = dit(*_inputs())
        compile_blocks(dit)
        out = dit(*_inputs())
    # Inductor fuses the dequantization into its own kernels: float32 rounding apart (3.6e-7 measured)
    assert ((out - reference).abs().max() / reference.abs().max()).item() < 1e-5
    assert all(isinstance(m, Fp8Linear) for m in fp8_layers(dit).values())
