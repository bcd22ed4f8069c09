"""LoRA for the Wan DiT: formats map to the same official modules, merge = manual math, wrong targets refused.

diffusers' own converters (musubi/kohya -> diffusers, official/ComfyUI -> diffusers) are the independent
reference for the name mapping and the alpha scaling: their output, merged through the diffusers-name path,
must give the same weights as the original file merged directly.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from telefuser_cli.errors import UserError
from telefuser_cli.loading.lora import load_lora, lora_patches, merge_lora
from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig

pytestmark = pytest.mark.numeric

lcu = pytest.importorskip("diffusers.loaders.lora_conversion_utils")

CFG = WanDiTConfig(
    model_type="i2v", in_dim=36, dim=64, ffn_dim=96, text_dim=32, out_dim=16, num_heads=2, num_layers=2,
    image_dim=48,
)  # fmt: skip
RANK, ALPHA = 4, 2.0


def official_modules(cfg: WanDiTConfig) -> list[str]:
    """The modules diffusers' Wan LoRA converters cover (attention, image keys, FFN)."""
    out = []
    for i in range(cfg.num_layers):
        out += [f"blocks.{i}.self_attn.{p}" for p in "qkvo"]
        out += [f"blocks.{i}.cross_attn.{p}" for p in ("q", "k", "v", "o", "k_img", "v_img")]
        out += [f"blocks.{i}.ffn.0", f"blocks.{i}.ffn.2"]
    return out


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in WanDiT(CFG).state_dict().items()}


@pytest.fixture(scope="module")
def musubi(weights) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {}
    for m in official_modules(CFG):
        out, inp = weights[m + ".weight"].shape
        name = "lora_unet_" + m.replace(".", "_")
        sd[name + ".lora_down.weight"] = torch.randn(RANK, inp, generator=g)
        sd[name + ".lora_up.weight"] = torch.randn(out, RANK, generator=g)
        sd[name + ".alpha"] = torch.tensor(ALPHA)
    return sd


def to_comfy(musubi: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kohya names -> ComfyUI / official names (``diffusion_model.<module>.lora_down.weight``, ``.alpha``)."""
    names = {m.replace(".", "_"): m for m in official_modules(CFG)}
    out = {}
    for key, t in musubi.items():
        module, _, suffix = key.removeprefix("lora_unet_").partition(".")
        out[f"diffusion_model.{names[module]}.{suffix}"] = t
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> float:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst
    return worst


def test_formats_give_the_same_merge(weights, musubi):
    comfy = to_comfy(musubi)
    # clones: diffusers' converters scale some of the given tensors in place
    diffusers_from_musubi = lcu._convert_musubi_wan_lora_to_diffusers(
        {k: v.clone() for k, v in musubi.items()}
    )
    diffusers_from_comfy = lcu._convert_non_diffusers_wan_lora_to_diffusers(
        {k: v.clone() for k, v in comfy.items()}
    )
    assert any(k.startswith("transformer.blocks.0.attn1.to_q.") for k in diffusers_from_musubi)
    peft_official = {  # PEFT suffixes on official names, alpha folded into lora_A (no alpha key)
        k.replace("lora_down", "lora_A").replace("lora_up", "lora_B"): (
            t * ALPHA / RANK if "down" in k else t
        )
        for k, t in comfy.items()
        if not k.endswith(".alpha")
    }
    assert (
        set(lora_patches(musubi, weights)) == set(lora_patches(comfy, weights)) == set(official_modules(CFG))
    )
    reference = merge_lora(weights, musubi, strength=0.7)
    changed = [k for k in weights if not torch.equal(reference[k], weights[k])]
    assert sorted(changed) == sorted(m + ".weight" for m in official_modules(CFG))
    for other in (comfy, diffusers_from_musubi, diffusers_from_comfy, peft_official):
        assert_same(merge_lora(weights, other, strength=0.7), reference)


def test_merge_equals_manual_and_module_in_place(weights, musubi):
    m = "blocks.1.cross_attn.k_img"
    name = "lora_unet_" + m.replace(".", "_")
    one = {k: v for k, v in musubi.items() if k.startswith(name + ".")}
    merged = merge_lora(weights, one, strength=0.5)
    down, up = one[name + ".lora_down.weight"], one[name + ".lora_up.weight"]
    expected = weights[m + ".weight"] + 0.5 * (ALPHA / RANK) * (up @ down)
    torch.testing.assert_close(merged[m + ".weight"], expected, rtol=0, atol=1e-6)
    assert all(merged[k] is weights[k] for k in weights if k != m + ".weight")  # input untouched, shared

    bf16 = {k: v.to(torch.bfloat16) for k, v in weights.items()}
    out = merge_lora(bf16, one, strength=0.5)[m + ".weight"]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(
        out, (bf16[m + ".weight"].float() + 0.5 * (ALPHA / RANK) * (up @ down)).bfloat16()
    )

    model = WanDiT(CFG)
    model.load_state_dict(weights)
    assert merge_lora(model, one, strength=0.5) is model
    torch.testing.assert_close(model.state_dict()[m + ".weight"], merged[m + ".weight"], rtol=0, atol=0)


def test_conv_lora_and_full_deltas(weights):
    g = torch.Generator().manual_seed(2)
    pe = weights["patch_embedding.weight"]  # [64, 36, 1, 2, 2]
    lora = {
        "diffusion_model.patch_embedding.lora_down.weight": torch.randn(3, *pe.shape[1:], generator=g),
        "diffusion_model.patch_embedding.lora_up.weight": torch.randn(pe.shape[0], 3, 1, 1, 1, generator=g),
        "diffusion_model.blocks.0.norm3.diff": torch.randn(64, generator=g),
        "diffusion_model.blocks.0.norm3.diff_b": torch.randn(64, generator=g),
        "diffusion_model.blocks.0.modulation.diff": torch.randn(1, 6, 64, generator=g),
        "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(2, 64, generator=g),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(64, 2, generator=g),
        "transformer.blocks.0.attn1.to_q.lora_B.bias": torch.randn(64, generator=g),
    }
    out = merge_lora(weights, lora)
    delta = (lora["diffusion_model.patch_embedding.lora_up.weight"].flatten(1)
             @ lora["diffusion_model.patch_embedding.lora_down.weight"].flatten(1)).reshape(pe.shape)  # fmt: skip
    torch.testing.assert_close(out["patch_embedding.weight"], pe + delta)
    torch.testing.assert_close(out["blocks.0.norm3.weight"], weights["blocks.0.norm3.weight"] + lora[
        "diffusion_model.blocks.0.norm3.diff"])  # fmt: skip
    torch.testing.assert_close(out["blocks.0.norm3.bias"], weights["blocks.0.norm3.bias"] + lora[
        "diffusion_model.blocks.0.norm3.diff_b"])  # fmt: skip
    torch.testing.assert_close(out["blocks.0.modulation"], weights["blocks.0.modulation"] + lora[
        "diffusion_model.blocks.0.modulation.diff"])  # fmt: skip
    torch.testing.assert_close(out["blocks.0.self_attn.q.bias"], weights["blocks.0.self_attn.q.bias"] + lora[
        "transformer.blocks.0.attn1.to_q.lora_B.bias"])  # fmt: skip


def test_refusals(weights, musubi, tmp_path):
    with pytest.raises(ValueError, match=r"do(es)? not have.*blocks\.5\.self_attn\.q"):
        merge_lora(weights, {"diffusion_model.blocks.5.self_attn.q.lora_A.weight": torch.zeros(2, 64),
                             "diffusion_model.blocks.5.self_attn.q.lora_B.weight": torch.zeros(64, 2)})  # fmt: skip
    t2v = {k: v for k, v in weights.items() if "img" not in k}
    with pytest.raises(ValueError, match="k_img"):  # an i2v LoRA on a t2v model
        merge_lora(t2v, musubi)
    with pytest.raises(ValueError, match="not LoRA tensors"):
        merge_lora(weights, {"blocks.0.self_attn.q.weight": torch.zeros(64, 64)})
    with pytest.raises(ValueError, match="only its down"):
        merge_lora(weights, {"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(2, 64)})
    with pytest.raises(ValueError, match="has shape"):
        merge_lora(weights, {"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(2, 63),
                             "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(96, 2)})  # fmt: skip
    fp8 = dict(weights, **{"blocks.0.ffn.0.weight": weights["blocks.0.ffn.0.weight"].to(torch.float8_e4m3fn)})
    with pytest.raises(ValueError, match="dequantize"):
        merge_lora(fp8, {k: v for k, v in musubi.items() if "blocks_0_ffn_0" in k})
    with pytest.raises(UserError, match="does not exist"):
        load_lora(tmp_path / "missing.safetensors")
    path = tmp_path / "lora.safetensors"
    save_file(musubi, str(path))
    assert load_lora(path).keys() == musubi.keys()
