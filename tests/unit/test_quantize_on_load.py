"""Quantize on load: bf16/fp32 checkpoints held as fp8 (per output channel), through the real loaders."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from telefuser_cli.families.wan.tiny import DIT_FILE, T5_FILE
from telefuser_cli.loading import wan
from telefuser_cli.ops.fp8_linear import Fp8Linear, fp8_layers, quantize_per_channel, weights_summary

pytestmark = pytest.mark.numeric

CPU = torch.device("cpu")


def _dit(root, **kwargs):
    files = wan.locate(root, "dit", DIT_FILE)
    return wan.load_dit(
        files, dtype=torch.bfloat16, device=CPU, attn_backend="TORCH_SDPA", expected_task="t2v",
        model_name="tiny", expected_quant=kwargs.pop("expected_quant", "fp32"), **kwargs,
    )  # fmt: skip


def test_dit_quantized_on_load_keeps_the_fp32_layers(tiny_root):
    model = _dit(tiny_root, weights="fp8")
    layers = fp8_layers(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(m.origin == "quantized" and m.scale_kind == "channel" for m in layers.values())
    # what the class keeps in float32 (time embedding and projection, head) stays an nn.Linear in float32
    assert all(any(part in n for part in wan.WanDiT.keep_fp32) for n in linears)
    assert (
        model.head.head.weight.dtype == torch.float32
        and model.time_embedding[0].weight.dtype == torch.float32
    )
    assert sorted({n.split(".")[0] for n in layers}) == ["blocks", "text_embedding"]
    plain = _dit(tiny_root)
    assert not fp8_layers(plain)
    # bf16 -> fp8: the quantized layers take half the bytes (plus a float32 scale per output channel)
    fp8_bytes = weights_summary(model)["fp8_bytes"]
    bf16_bytes = sum(plain.get_submodule(n).weight.nbytes for n in layers)
    scales = sum(m.weight_scale.nbytes for m in layers.values())
    assert fp8_bytes == bf16_bytes // 2 + scales


def test_dit_auto_leaves_a_full_precision_file_alone(tiny_root):
    assert weights_summary(_dit(tiny_root, weights="auto"))["fp8_layers"] == 0
    assert weights_summary(_dit(tiny_root, weights="dequantize"))["fp8_layers"] == 0


def test_text_encoder_quantizes_the_feed_forward_only(tiny_root):
    files = wan.locate(tiny_root, "text_encoder", T5_FILE)
    record: dict = {}
    encoder = wan.load_text_encoder(files, dtype=torch.float32, device=CPU, weights="fp8", record=record)
    names = sorted(fp8_layers(encoder))
    assert names and all(".ffn." in n for n in names)
    assert isinstance(encoder.blocks[0].attn.q, torch.nn.Linear) and not isinstance(
        encoder.blocks[0].attn.q, Fp8Linear
    )
    assert record["text_encoder"]["weights"] == "fp8"
    assert record["text_encoder"]["fp8_layers"] == len(names) == 3 * len(encoder.blocks)
    plain = wan.load_text_encoder(files, dtype=torch.float32, device=CPU)
    ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 12, dtype=torch.long)
    with torch.no_grad():
        got, want = encoder(ids, mask), plain(ids, mask)
    # fp8 rounds each weight by up to 2^-4 of its row's largest: the features move by a few percent at most
    error = ((got - want).abs().max() / want.abs().max()).item()
    assert 0 < error < 0.1


def test_lora_on_fp8_weights_is_dequantized_merged_and_requantized(tmp_path, tiny_root):
    root = tmp_path / "w"
    root.mkdir()
    for item in tiny_root.iterdir():
        if item.name != DIT_FILE:
            (root / item.name).symlink_to(item)
    weights = load_file(tiny_root / DIT_FILE)
    fp8 = {}
    for key, value in weights.items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.ndim == 2:
            fp8[key], fp8[key.removesuffix(".weight") + ".weight_scale"] = quantize_per_channel(value)
        else:
            fp8[key] = value
    save_file(fp8, root / DIT_FILE)
    g = torch.Generator().manual_seed(5)
    q = weights["blocks.0.self_attn.q.weight"]
    lora_path = tmp_path / "lora.safetensors"
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(4, q.shape[1], generator=g),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(q.shape[0], 4, generator=g),
        },
        lora_path,
    )
    loras = [(str(lora_path), 0.5)]
    resident = _dit(root, expected_quant="fp8", weights="auto", loras=loras)
    plain = _dit(root, expected_quant="fp8", weights="dequantize", loras=loras)
    layers = fp8_layers(resident)
    assert layers["blocks.0.self_attn.q"].origin == "lora-requantized"
    assert sum(m.origin == "file" for m in layers.values()) == len(layers) - 1
    merged = layers["blocks.0.self_attn.q"].weight.float()
    want = plain.blocks[0].self_attn.q.weight.float()
    # requantized per output channel: within e4m3's 2^-4 of each row's largest value, plus the bf16
    # rounding of both sides (2^-8 each)
    bound = want.abs().amax(1, keepdim=True) * (2**-4 + 2**-7)
    assert ((merged - want).abs() <= bound).all()
    without = fp8_layers(_dit(root, expected_quant="fp8"))["blocks.0.self_attn.q"].weight.float()
    assert ((merged - without).abs().max() / without.abs().max()).item() > 0.1  # the LoRA is in
