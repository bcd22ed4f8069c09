"""Wan DiT parity against diffusers' WanTransformer3DModel (tiny random weights, float32, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from telefuser_cli.loading.wan_dit_arch import diffusers_to_official_dit, infer_dit_config
from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig
from telefuser_cli.ops.attention import attention, available_backends, check_backend, get_attention_fn

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
from diffusers import WanTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: E402

TINY = dict(dim=32, ffn_dim=64, freq_dim=32, text_dim=24, num_heads=2, num_layers=2)
T2V = WanDiTConfig(model_type="t2v", in_dim=16, out_dim=16, **TINY)
I2V_CLIP = WanDiTConfig(model_type="i2v", in_dim=36, out_dim=16, image_dim=20, **TINY)
FLF2V = WanDiTConfig(model_type="flf2v", in_dim=36, out_dim=16, image_dim=20, **TINY)
TI2V = WanDiTConfig(model_type="ti2v", in_dim=48, out_dim=48, **TINY)


def tiny_official_state_dict(cfg: WanDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official layout; nothing zero (the official init zeroes head.head.weight
    and every linear bias, which would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        keys = WanDiT(cfg).state_dict()
    sd = {}
    for k, t in keys.items():
        scale = 0.5 if t.ndim == 1 else 1.0 / max(1, t[0].numel()) ** 0.5
        v = torch.randn(t.shape, generator=g) * scale
        if k.endswith("norm_q.weight") or k.endswith("norm_k.weight") or ".proj.0.weight" in k:
            v = 1.0 + v  # norm gains around 1
        sd[k] = v
    return sd


def build_ours(cfg: WanDiTConfig, sd: dict[str, torch.Tensor]) -> WanDiT:
    with torch.device("meta"):
        model = WanDiT(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def build_diffusers(cfg: WanDiTConfig, sd: dict[str, torch.Tensor]) -> WanTransformer3DModel:
    ref = WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
        image_dim=cfg.image_dim,
        added_kv_proj_dim=cfg.dim if cfg.image_dim is not None else None,
        pos_embed_seq_len=cfg.clip_tokens if cfg.model_type == "flf2v" else None,
    )
    converted = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in sd.items()})
    if "img_emb.emb_pos" in converted:  # diffusers' single-file converter does not rename it
        converted["condition_embedder.image_embedder.pos_embed"] = converted.pop("img_emb.emb_pos")
    ref.load_state_dict(converted, strict=True)
    return ref.eval()


def inputs(cfg: WanDiTConfig, seed: int = 1, frames: int = 5, size: int = 8, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.out_dim, frames, size, size, generator=g)
    y = (
        torch.randn(batch, cfg.in_dim - cfg.out_dim, frames, size, size, generator=g)
        if cfg.in_dim > cfg.out_dim
        else None
    )
    t = torch.tensor([937.0, 311.5][:batch])
    context = torch.randn(batch, 7, cfg.text_dim, generator=g)
    clip = torch.randn(batch, cfg.clip_tokens, cfg.image_dim, generator=g) if cfg.image_dim else None
    return x, t, context, y, clip


def run_diffusers(ref, cfg, x, t, context, y, clip):
    padded = torch.nn.functional.pad(context, (0, 0, 0, cfg.text_len - context.shape[1]))  # official padding
    hidden = x if y is None else torch.cat([x, y], dim=1)
    if clip is not None and cfg.model_type == "flf2v":
        clip = clip.reshape(-1, clip.shape[1] // 2, clip.shape[2])  # diffusers takes [2B, 257, D]
    with torch.no_grad():
        return ref(hidden, t, padded, encoder_hidden_states_image=clip, return_dict=False)[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("cfg", [T2V, I2V_CLIP, FLF2V], ids=["t2v", "i2v_clip", "flf2v"])
def test_forward_matches_diffusers(cfg: WanDiTConfig) -> None:
    sd = tiny_official_state_dict(cfg)
    ours, ref = build_ours(cfg, sd), build_diffusers(cfg, sd)
    x, t, context, y, clip = inputs(cfg, batch=2 if cfg.model_type == "t2v" else 1)
    with torch.no_grad():
        out = ours(x, t, context, y=y, clip_fea=clip)
    expected = run_diffusers(ref, cfg, x, t, context, y, clip)
    assert out.dtype == torch.float32 and out.shape == expected.shape == x.shape
    err = rel_err(out, expected)
    print(f"{cfg.model_type}: max abs {(out - expected).abs().max().item():.3e} max rel {err:.3e}")
    assert err < 1e-4


def test_wan22_i2v_without_clip_and_ti2v_per_token_timesteps() -> None:
    i2v = dataclasses.replace(T2V, model_type="i2v", in_dim=36)  # Wan2.2 A14B i2v: y on channels, no CLIP
    for cfg in (i2v, TI2V):
        sd = tiny_official_state_dict(cfg)
        ours, ref = build_ours(cfg, sd), build_diffusers(cfg, sd)
        x, t, context, y, _ = inputs(cfg)
        if cfg.model_type == "ti2v":  # first latent frame conditioned: timestep 0 on its tokens
            tokens = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
            t = torch.full((1, tokens), 700.0)
            t[:, : tokens // x.shape[2]] = 0.0
        with torch.no_grad():
            out = ours(x, t, context, y=y)
        err = rel_err(out, run_diffusers(ref, cfg, x, t, context, y, None))
        print(f"{cfg.model_type}: max rel {err:.3e}")
        assert err < 1e-4


def test_meta_construction_and_official_layout() -> None:
    sd = tiny_official_state_dict(I2V_CLIP)
    model = build_ours(I2V_CLIP, sd)
    assert not any(p.is_meta for p in model.parameters()) and not list(model.buffers())
    assert set(model.state_dict()) == set(sd)
    # the official layout is exactly what diffusers' converter understands (strict load above, here round trip)
    official_keys = {
        "patch_embedding.weight",
        "time_projection.1.weight",
        "blocks.1.norm3.weight",
        "blocks.0.cross_attn.k_img.weight",
        "blocks.0.cross_attn.norm_k_img.weight",
        "img_emb.proj.4.bias",
        "head.head.weight",
        "head.modulation",
        "blocks.1.modulation",
    }
    assert official_keys <= set(sd)
    assert not any(k.startswith("blocks.0.norm1") or k.startswith("blocks.0.norm2") for k in sd)
    eager = WanDiT(I2V_CLIP).eval()
    eager.load_state_dict(sd, strict=True)
    x, t, context, y, clip = inputs(I2V_CLIP)
    with torch.no_grad():
        assert torch.equal(model(x, t, context, y=y, clip_fea=clip), eager(x, t, context, y=y, clip_fea=clip))


def test_infer_config_round_trip_and_mismatch() -> None:
    for cfg in (T2V, I2V_CLIP, FLF2V, TI2V, dataclasses.replace(T2V, model_type="i2v", in_dim=36)):
        shapes = {k: v.shape for k, v in tiny_official_state_dict(cfg).items()}
        assert infer_dit_config(shapes, head_dim=cfg.head_dim) == cfg
        cfg_json = {
            "model_type": cfg.model_type,
            "dim": cfg.dim,
            "ffn_dim": cfg.ffn_dim,
            "freq_dim": cfg.freq_dim,
            "in_dim": cfg.in_dim,
            "out_dim": cfg.out_dim,
            "num_heads": cfg.num_heads,
            "num_layers": cfg.num_layers,
            "text_len": 512,
            "eps": 1e-6,
        }
        assert infer_dit_config(shapes, cfg_json) == cfg
    with pytest.raises(ValueError, match=r"ffn_dim=128 .*blocks\.0\.ffn\.0\.weight.*64"):
        infer_dit_config(shapes, {**cfg_json, "ffn_dim": 128})
    with pytest.raises(ValueError, match="num_layers=3"):
        infer_dit_config(shapes, {**cfg_json, "num_layers": 3})
    with pytest.raises(ValueError, match="model_type='t2v'"):
        infer_dit_config(shapes, {**cfg_json, "model_type": "t2v"})
    with pytest.raises(ValueError, match="num_heads=3"):
        infer_dit_config(shapes, {**cfg_json, "num_heads": 3})
    # a diffusers transformer/config.json is understood too
    diff_json = {
        "_class_name": "WanTransformer3DModel",
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 36,
        "out_channels": 16,
        "ffn_dim": 64,
        "num_layers": 2,
        "freq_dim": 32,
    }
    assert infer_dit_config(shapes, diff_json).num_heads == 2


def test_diffusers_to_official_round_trip() -> None:
    for cfg in (T2V, I2V_CLIP, FLF2V):
        sd = tiny_official_state_dict(cfg)
        diff = build_diffusers(cfg, sd).state_dict()
        back = diffusers_to_official_dit(diff)
        assert set(back) == set(sd)
        assert all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="attn1.to_qkv"):
        diffusers_to_official_dit({**diff, "blocks.0.attn1.to_qkv.weight": torch.zeros(1)})


def test_bf16_close_to_fp32() -> None:
    sd = tiny_official_state_dict(T2V)
    fp32 = build_ours(T2V, sd)
    bf16 = build_ours(
        T2V, {k: v if any(s in k for s in WanDiT.keep_fp32) else v.bfloat16() for k, v in sd.items()}
    )
    assert bf16.time_projection[1].weight.dtype == torch.float32
    assert bf16.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    x, t, context, _, _ = inputs(T2V)
    with torch.no_grad():
        a, b = fp32(x, t, context), bf16(x, t, context)
    assert b.dtype == torch.float32
    err = rel_err(b, a)
    print(f"bf16 vs fp32: max rel {err:.3e}")
    assert err < 5e-2
    # a plain .to(bf16) of the whole model also runs (forward upcasts the float32-policy parameters)
    with torch.no_grad():
        assert rel_err(fp32.to(torch.bfloat16)(x, t, context), a) < 5e-2


def test_input_validation() -> None:
    model = build_ours(I2V_CLIP, tiny_official_state_dict(I2V_CLIP))
    x, t, context, y, clip = inputs(I2V_CLIP)
    with pytest.raises(ValueError, match="needs y"):
        model(x, t, context, clip_fea=clip)
    with pytest.raises(ValueError, match="clip_fea is missing"):
        model(x, t, context, y=y)
    with pytest.raises(ValueError, match="text_len=512"):
        model(x, t, torch.zeros(1, 513, I2V_CLIP.text_dim), y=y, clip_fea=clip)
    with pytest.raises(ValueError, match="flf2v"):
        WanDiTConfig(model_type="flf2v", in_dim=36)
    with pytest.raises(ValueError, match="num_heads=5"):
        WanDiTConfig(dim=32, num_heads=5)


def test_attention_backends() -> None:
    assert "TORCH_SDPA" in available_backends()
    check_backend("TORCH_SDPA")
    with pytest.raises(ValueError, match="unknown attention backend 'XFORMERS'"):
        check_backend("XFORMERS")
    for name in ("FLASH_ATTN_2", "FLASH_ATTN_3", "SAGE_ATTN"):
        if name in available_backends():
            continue
        with pytest.raises(ValueError, match="not importable"):
            get_attention_fn(name)
    if "FLASH_ATTN_2" not in available_backends():
        with pytest.raises(ValueError, match=r"pip install telefuser\[gpu\]"):
            WanDiT(T2V, attn_backend="FLASH_ATTN_2")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 3, 8, generator=g) for _ in range(3))
    w = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / 8**0.5, dim=-1)
    torch.testing.assert_close(
        attention(q, k, v), torch.einsum("bhlm,bmhd->blhd", w, v), atol=1e-6, rtol=1e-5
    )
