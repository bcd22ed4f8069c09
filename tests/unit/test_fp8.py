"""fp8 checkpoints: precision detection and dequantization in the ComfyUI and lightx2v conventions."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from telefuser_cli.loading.fp8 import dequantize_state_dict, detect_quant, read_dtypes

pytestmark = pytest.mark.numeric

E4M3 = torch.float8_e4m3fn


def quantize(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (w / scale).to(E4M3)


def test_comfy_scaled_fp8():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 6, generator=g)
    scale = w.abs().max() / 448
    sd = {
        "blocks.0.self_attn.q.weight": quantize(w, scale),
        "blocks.0.self_attn.q.scale_weight": scale.reshape(1),
        "blocks.0.self_attn.q.scale_input": torch.ones(1),
        "blocks.0.self_attn.q.bias": torch.randn(8, generator=g).to(torch.bfloat16),
        "blocks.0.norm3.weight": torch.ones(6),
        "scaled_fp8": torch.empty(0, dtype=E4M3),
    }
    out = dequantize_state_dict(sd, torch.bfloat16)
    assert set(out) == {"blocks.0.self_attn.q.weight", "blocks.0.self_attn.q.bias", "blocks.0.norm3.weight"}
    expected = (sd["blocks.0.self_attn.q.weight"].float() * scale).to(torch.bfloat16)
    assert out["blocks.0.self_attn.q.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(out["blocks.0.self_attn.q.weight"], expected, rtol=0, atol=0)
    # e4m3 keeps 3 mantissa bits: the round trip is within 2^-4 relative of the original
    assert (out["blocks.0.self_attn.q.weight"].float() - w).abs().max() <= w.abs().max() * 2**-4
    assert out["blocks.0.norm3.weight"] is sd["blocks.0.norm3.weight"]  # untouched: build_module casts it


def test_lightx2v_per_channel_and_block_scales():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 3, generator=g) * torch.tensor([[1.0], [10.0], [0.1], [3.0]])
    scale = w.abs().amax(dim=1, keepdim=True) / 448  # [out, 1]
    sd = {"ffn.0.weight": quantize(w, scale), "ffn.0.weight_scale": scale, "ffn.0.input_scale": torch.ones(1)}
    out = dequantize_state_dict(sd, torch.float32)
    assert set(out) == {"ffn.0.weight"}
    torch.testing.assert_close(out["ffn.0.weight"], sd["ffn.0.weight"].float() * scale, rtol=0, atol=0)

    big = torch.randn(130, 260, generator=g)
    block_scale = torch.rand(2, 3, generator=g) + 0.5  # ceil(130/128) x ceil(260/128)
    q = torch.randn(130, 260, generator=g).to(E4M3)
    out = dequantize_state_dict({"w.weight": q, "w.weight_scale": block_scale}, torch.float32)["w.weight"]
    assert out.shape == big.shape
    torch.testing.assert_close(out[127, 255], q[127, 255].float() * block_scale[0, 1])
    torch.testing.assert_close(out[128, 256], q[128, 256].float() * block_scale[1, 2])


def test_plain_fp8_and_errors():
    q = torch.randn(3, 3).to(E4M3)
    out = dequantize_state_dict({"a.weight": q, "a.bias": torch.zeros(3)}, torch.bfloat16)
    torch.testing.assert_close(out["a.weight"], q.to(torch.bfloat16), rtol=0, atol=0)
    with pytest.raises(ValueError, match="have no weight"):
        dequantize_state_dict({"b.scale_weight": torch.ones(1)}, torch.bfloat16)
    with pytest.raises(ValueError, match="fits neither"):
        dequantize_state_dict({"c.weight": q, "c.weight_scale": torch.ones(2)}, torch.bfloat16)
    with pytest.raises(ValueError, match="plain floating dtype"):
        dequantize_state_dict({"a.weight": q}, E4M3)


def test_detect_quant(tmp_path):
    assert detect_quant({"a.weight": E4M3, "a.scale_weight": torch.float32}) == "fp8"
    assert detect_quant({"a.weight": "F8_E4M3"}) == "fp8"
    mixed = {"m.weight": torch.bfloat16, "n.weight": torch.bfloat16, "norm.weight": torch.float32}
    assert detect_quant(mixed) == "bf16"
    shapes = {"m.weight": (1, 1), "n.weight": (1, 1), "norm.weight": (100,)}
    assert detect_quant(mixed, shapes) == "fp32"  # by element count
    assert detect_quant({"x.weight": torch.zeros(2, 2)}) == "fp32"
    with pytest.raises(ValueError, match="no floating-point"):
        detect_quant({"step": torch.int64})
    save_file(
        {"a.weight": torch.zeros(2, 2, dtype=E4M3), "b.weight": torch.zeros(2)},
        str(tmp_path / "m.safetensors"),
    )
    torch.save({"c.weight": torch.zeros(2, dtype=torch.bfloat16)}, tmp_path / "m.pth")
    dtypes = read_dtypes([tmp_path / "m.safetensors", tmp_path / "m.pth"])
    assert dtypes == {"a.weight": E4M3, "b.weight": torch.float32, "c.weight": torch.bfloat16}
    assert detect_quant(dtypes) == "fp8"
