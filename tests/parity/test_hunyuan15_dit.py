"""HunyuanVideo 1.5 DiT parity against diffusers' HunyuanVideo15Transformer3DModel (tiny random weights, float32)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import assert_rel_close
from torch.utils._python_dispatch import TorchDispatchMode

import telefuser_cli.ops.rope as rope_ops
from telefuser_cli.loading.hunyuan15_arch import (
    diffusers_to_official_dit,
    infer_dit_config,
    official_to_diffusers_dit,
)
from telefuser_cli.models.hunyuan15_dit import Hunyuan15Context, Hunyuan15DiT, Hunyuan15DiTConfig

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
from diffusers import HunyuanVideo15Transformer3DModel  # noqa: E402

# diffusers hard-codes the ByT5 projection's hidden width to 2048 (as the official ByT5Mapper)
TINY = Hunyuan15DiTConfig(
    patch_size=(1, 2, 2),
    in_channels=4,
    out_channels=4,
    hidden_size=32,
    heads_num=2,
    mm_double_blocks_depth=2,
    rope_dim_list=(4, 6, 6),
    text_states_dim=24,
    byt5_dim=20,
    byt5_hidden_dim=2048,
    vision_states_dim=18,
)
MEANFLOW = dataclasses.replace(TINY, use_meanflow=True)


def tiny_official_state_dict(cfg: Hunyuan15DiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official-layout weights, nothing zero (the official init zeroes cond_type_embedding)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        keys = Hunyuan15DiT(cfg).state_dict()
    sd = {}
    for k, t in keys.items():
        scale = 0.3 if t.ndim == 1 else 1.0 / max(1, t[0].numel()) ** 0.5
        v = torch.randn(t.shape, generator=g) * scale
        if t.ndim == 1 and (
            "norm" in k or "layernorm" in k or k.endswith(("proj.0.weight", "proj.4.weight"))
        ):
            v = 1.0 + v  # norm gains around 1
        sd[k] = v
    return sd


def build_ours(cfg: Hunyuan15DiTConfig, sd: dict[str, torch.Tensor]) -> Hunyuan15DiT:
    with torch.device("meta"):
        model = Hunyuan15DiT(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def build_diffusers(cfg: Hunyuan15DiTConfig, sd: dict[str, torch.Tensor]) -> HunyuanVideo15Transformer3DModel:
    ref = HunyuanVideo15Transformer3DModel(
        in_channels=cfg.patch_in_channels,
        out_channels=cfg.out_channels,
        num_attention_heads=cfg.heads_num,
        attention_head_dim=cfg.head_dim,
        num_layers=cfg.mm_double_blocks_depth,
        num_refiner_layers=cfg.refiner_depth,
        mlp_ratio=cfg.mlp_width_ratio,
        patch_size=cfg.patch_size[1],
        patch_size_t=cfg.patch_size[0],
        text_embed_dim=cfg.text_states_dim,
        text_embed_2_dim=cfg.byt5_dim,
        image_embed_dim=cfg.vision_states_dim,
        rope_theta=cfg.rope_theta,
        rope_axes_dim=cfg.rope_dim_list,
        use_meanflow=cfg.use_meanflow,
    )
    ref.load_state_dict(official_to_diffusers_dit(sd), strict=True)
    return ref.eval()


def inputs(cfg: Hunyuan15DiTConfig, batch: int, text_valid: list[int], glyph_valid: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.patch_in_channels, 3, 4, 4, generator=g)
    t = torch.tensor([937.5, 250.0][:batch])
    text = torch.randn(batch, 7, cfg.text_states_dim, generator=g)
    glyph = torch.randn(batch, 5, cfg.byt5_dim, generator=g)
    text_mask = torch.tensor([[1] * n + [0] * (7 - n) for n in text_valid])
    glyph_mask = torch.tensor([[1] * n + [0] * (5 - n) for n in glyph_valid])
    image = torch.randn(batch, 6, cfg.vision_states_dim, generator=g)
    return x, t, text, text_mask, glyph, glyph_mask, image


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_layout_round_trip_and_config_inference():
    sd = tiny_official_state_dict(MEANFLOW)
    back = diffusers_to_official_dit(official_to_diffusers_dit(sd))
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert infer_dit_config(sd, {"rope_dim_list": [4, 6, 6], "rope_theta": 256}) == MEANFLOW
    with pytest.raises(ValueError, match="hidden_size=64"):
        infer_dit_config(sd, {"rope_dim_list": [4, 6, 6], "hidden_size": 64})
    with pytest.raises(ValueError, match="mm_single_blocks_depth"):
        infer_dit_config(sd, {"rope_dim_list": [4, 6, 6], "mm_single_blocks_depth": 2})
    with pytest.raises(ValueError, match="rope_dim_list"):
        infer_dit_config(sd)  # head dim 16: the split cannot be guessed


@torch.no_grad()
def test_t2v_parity_padded_text():
    sd = tiny_official_state_dict(TINY)
    ours, ref = build_ours(TINY, sd), build_diffusers(TINY, sd)
    x, t, text, tm, glyph, gm, image = inputs(TINY, 1, [5], [3])
    expected = ref(x, t, text, tm, encoder_hidden_states_2=glyph, encoder_attention_mask_2=gm,
                   image_embeds=torch.zeros_like(image), return_dict=False)[0]  # fmt: skip
    got = ours(x, t, text, tm, glyph, gm, image_embeds=None)
    assert got.shape == expected.shape == (1, TINY.out_channels, 3, 4, 4)
    err = rel_err(got, expected)
    print(f"t2v max rel err {err:.2e}")
    assert err < 1e-4
    # the official rule: all-zero image features mean "no image"
    assert torch.equal(ours(x, t, text, tm, glyph, gm, image_embeds=torch.zeros_like(image)), got)


@torch.no_grad()
def test_i2v_meanflow_batch_parity_unequal_padding():
    sd = tiny_official_state_dict(MEANFLOW, seed=3)
    ours, ref = build_ours(MEANFLOW, sd), build_diffusers(MEANFLOW, sd)
    x, t, text, tm, glyph, gm, image = inputs(MEANFLOW, 2, [7, 4], [2, 5])
    t_r = torch.tensor([500.0, 125.0])
    expected = ref(x, t, text, tm, timestep_r=t_r, encoder_hidden_states_2=glyph, encoder_attention_mask_2=gm,
                   image_embeds=image, return_dict=False)[0]  # fmt: skip
    got = ours(x, t, text, tm, glyph, gm, image_embeds=image, timestep_r=t_r)
    err = rel_err(got, expected)
    print(f"i2v meanflow batch max rel err {err:.2e}")
    assert err < 1e-4
    # each sample alone gives the same result as in the padded batch
    alone = ours(x[1:], t[1:], text[1:, :4], tm[1:, :4], glyph[1:], gm[1:], image[1:], t_r[1:])
    assert rel_err(alone, got[1:]) < 1e-5


def test_bf16_runs_and_input_checks():
    sd = {k: v.to(torch.bfloat16) for k, v in tiny_official_state_dict(TINY).items()}
    model = build_ours(TINY, sd)
    x, t, text, tm, glyph, gm, _ = inputs(TINY, 1, [5], [3])
    with torch.no_grad():
        out = model(x, t, text.bfloat16(), tm, glyph.bfloat16(), gm)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="timestep_r"):
        model(x, t, text, tm, timestep_r=t)
    with pytest.raises(ValueError, match=r"\[B, 9, F, H, W\]"):
        model(x[:, :4], t, text, tm)
    with pytest.raises(ValueError, match="no valid token"):
        model(x, t, text, torch.zeros_like(tm))


def test_full_size_layout_matches_diffusers_default():
    """The released architecture, built on meta: same tensors as diffusers' default model, config inferred."""
    with torch.device("meta"):
        ours = Hunyuan15DiT(Hunyuan15DiTConfig())
        ref = HunyuanVideo15Transformer3DModel()
    ours_sd = ours.state_dict()
    converted = {k: tuple(v.shape) for k, v in official_to_diffusers_dit(ours_sd).items()}
    assert converted == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert infer_dit_config(ours_sd) == ours.config
    diffusers_json = dict(ref.config, _class_name="HunyuanVideo15Transformer3DModel")
    assert infer_dit_config(ours_sd, diffusers_json) == ours.config


# A batch of 2 against two batches of 1 is not bitwise (another matmul kernel may serve twice the rows): the
# tolerance of tests/unit/test_batched_cfg.py. Measured on an AMD EPYC: 3.4e-7; swapped contexts give 0.43,
# a zeroed first refiner attention branch 0.14, prefixes swapped inside cat 0.34.
BATCH_TOL = 2e-5


class SyncRecorder(TorchDispatchMode):
    """Records ops that copy a value to the host (a device sync on CUDA)."""

    SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "allclose"}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.SYNC_OPS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def test_prepared_context_is_bitwise_the_raw_one_without_syncs(monkeypatch):
    model = build_ours(MEANFLOW, tiny_official_state_dict(MEANFLOW, seed=3))
    x, t, text, tm, glyph, gm, image = inputs(MEANFLOW, 2, [7, 4], [2, 5])
    t_r = torch.tensor([500.0, 125.0])
    raw = model(x, t, text, tm, glyph, gm, image, t_r)
    context = model.prepare_context(text, tm, glyph, gm, image)
    tables = []
    real = rope_ops.rope_table
    monkeypatch.setattr(rope_ops, "rope_table", lambda *a, **k: tables.append(a) or real(*a, **k))
    with SyncRecorder() as recorder:
        prepared = model(x, t, context, timestep_r=t_r)
        again = model(x, t / 2, context, timestep_r=t_r / 2)
    assert torch.equal(prepared, raw)
    assert recorder.seen == []  # the image rule and the token gathering ran once, in prepare_context
    assert tables == []  # the table of this grid was built by the first forward already
    assert not torch.equal(again, prepared)  # the refiner does depend on t: it reruns
    with pytest.raises(ValueError, match="replaces"):
        model(x, t, context, tm)
    with pytest.raises(ValueError, match="batch 2"):
        model(x[:1], t[:1], context, timestep_r=t_r[:1])


@torch.no_grad()
def test_concatenated_contexts_match_one_pass_each():
    """Batched CFG: two prepared contexts (other text and glyph lengths, one without image) on one batch."""
    model = build_ours(TINY, tiny_official_state_dict(TINY, seed=5))
    x, t, text, tm, glyph, gm, image = inputs(TINY, 2, [7, 4], [2, 5])
    first = model.prepare_context(text[:1], tm[:1], glyph[:1], gm[:1], image[:1])
    second = model.prepare_context(text[1:, :4], tm[1:, :4], glyph[1:], gm[1:], torch.zeros_like(image[1:]))
    both = model(x, t, Hunyuan15Context.cat([first, second]))
    alone = torch.cat([model(x[i : i + 1], t[i : i + 1], c) for i, c in enumerate((first, second))])
    assert_rel_close(both, alone, BATCH_TOL)
