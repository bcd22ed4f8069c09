"""Wan2.1 CLIP image encoder parity against transformers' CLIPVisionModel (tiny random tower, float32, CPU).

The reference is ``hidden_states[-2]`` (the penultimate layer's output), as diffusers' Wan i2v pipeline
uses it; the official code returns the same (``use_31_block=True``).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from telefuser_cli.errors import UserError
from telefuser_cli.loading.clip_arch import (
    hf_to_official_clip_vision,
    infer_clip_config,
    load_clip_vision,
    official_to_hf_clip_vision,
    visual_state_dict,
)
from telefuser_cli.models.clip_vision import CLIP_MEAN, CLIP_STD, CLIPVisionConfig, WanCLIPVision

pytestmark = pytest.mark.numeric

transformers = pytest.importorskip("transformers")

TINY = CLIPVisionConfig(
    image_size=28, patch_size=14, dim=64, mlp_ratio=4, out_dim=32, num_heads=4, num_layers=3
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def random_model(cfg: CLIPVisionConfig = TINY, seed: int = 0) -> WanCLIPVision:
    g = torch.Generator().manual_seed(seed)
    model = WanCLIPVision(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model.eval()


def hf_model(cfg: CLIPVisionConfig):
    hf_cfg = transformers.CLIPVisionConfig(
        hidden_size=cfg.dim, intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
        projection_dim=cfg.out_dim, hidden_act="gelu", layer_norm_eps=cfg.norm_eps,
    )  # fmt: skip
    return transformers.CLIPVisionModelWithProjection(hf_cfg).eval()


@pytest.fixture(scope="module")
def pair():
    ours = random_model()
    ref = hf_model(TINY)
    missing, unexpected = ref.load_state_dict(official_to_hf_clip_vision(ours.state_dict()), strict=False)
    assert not unexpected and set(missing) <= {"vision_model.embeddings.position_ids"}
    return ours, ref


@torch.no_grad()
def test_features_match_transformers(pair):
    ours, ref = pair
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    out = ours(pixels)
    expected = ref(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert out.shape == (2, TINY.tokens, TINY.dim) == expected.shape
    assert rel_err(out, expected) < 1e-5


def test_hf_round_trip_and_config(pair):
    ours, ref = pair
    back = hf_to_official_clip_vision(ref.state_dict())
    assert set(back) == set(ours.state_dict())
    for key, tensor in ours.state_dict().items():
        torch.testing.assert_close(back[key], tensor, rtol=0, atol=0)
    assert infer_clip_config(ours.state_dict(), head_dim=16) == TINY
    with torch.device("meta"):  # the released ViT-H/14 layout, built without memory
        released = {k: v.shape for k, v in WanCLIPVision().state_dict().items()}
    assert len(released) == 4 + 2 + 2 + 32 * 12  # patch, cls, pos, head; pre/post norm; blocks
    assert infer_clip_config(released) == CLIPVisionConfig()


def test_preprocess_is_the_official_transform():
    model = WanCLIPVision(TINY)
    img = torch.rand(1, 3, 40, 60) * 2 - 1
    out = model.preprocess(img)
    resized = torch.nn.functional.interpolate(img, size=(28, 28), mode="bicubic", align_corners=False)
    expected = ((resized * 0.5 + 0.5) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        CLIP_STD
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    flat = model.preprocess(torch.zeros(1, 3, 7, 9))  # mid-grey: (0.5 - mean) / std everywhere
    torch.testing.assert_close(flat[0, :, 3, 3], (0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD))


def test_load_official_file_keeps_only_visual(tmp_path, pair):
    ours, _ = pair
    full = dict(ours.state_dict())
    full["textual.head.0.weight"] = torch.randn(4, 4)
    full["log_scale"] = torch.tensor(2.6)
    path = tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    torch.save(full, path)
    model = load_clip_vision([path], dtype=torch.float32, device=torch.device("cpu"), head_dim=16)
    pixels = torch.randn(1, 3, 28, 28)
    torch.testing.assert_close(model(pixels), ours(pixels), rtol=0, atol=0)
    assert set(visual_state_dict(full)) == set(ours.state_dict())


def test_load_hf_layout_and_bf16(tmp_path, pair):
    ours, ref = pair
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = load_clip_vision([path], dtype=torch.bfloat16, device=torch.device("cpu"), head_dim=16)
    assert model.visual.transformer[0].attn.to_qkv.weight.dtype == torch.bfloat16
    assert model.visual.pre_norm.weight.dtype == torch.float32
    pixels = torch.randn(1, 3, 28, 28)
    assert rel_err(model(pixels).float(), ours(pixels)) < 3e-2


def test_errors(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"textual.x": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="not a Wan2.1 CLIP image encoder"):
        load_clip_vision([bad], dtype=torch.float32, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="divisible by patch_size"):
        CLIPVisionConfig(image_size=30, patch_size=14)
    with pytest.raises(ValueError, match="must be"):
        WanCLIPVision(TINY)(torch.zeros(1, 3, 32, 32))
