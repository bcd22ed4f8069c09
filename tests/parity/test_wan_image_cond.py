"""i2v / flf2v image conditioning against diffusers' WanImageToVideoPipeline.prepare_latents (tiny VAE, fp32).

diffusers resizes the input image with PIL (lanczos) in its video processor and the official code stretches it
with torch bicubic; both then run the same encode + mask. The comparison is therefore given an image that is
already at the target size (where our bicubic resize is the identity), so it isolates the conditioning itself.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from telefuser_cli.errors import UserError
from telefuser_cli.families.wan.image_cond import (
    clip_features,
    condition_latents,
    frame_mask,
    i2v_size,
    resize_bicubic,
)
from telefuser_cli.families.wan.tiny import TINY_VAE
from telefuser_cli.io.image_tensor import load_image
from telefuser_cli.models.clip_vision import CLIPVisionConfig, WanCLIPVision
from telefuser_cli.models.wan_vae import WanVAE

pytestmark = pytest.mark.numeric

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline  # noqa: E402
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers  # noqa: E402

TOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def vaes() -> tuple[WanVAE, AutoencoderKLWan]:
    g = torch.Generator().manual_seed(0)
    ours = WanVAE(TINY_VAE).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * math.sqrt(3 / p[0].numel()))
    cfg = TINY_VAE
    ref = AutoencoderKLWan(
        base_dim=cfg.dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks,
        attn_scales=list(cfg.attn_scales), temperal_downsample=list(cfg.temperal_downsample),
    ).eval()  # fmt: skip
    ref.load_state_dict(convert_wan_vae_to_diffusers(dict(ours.state_dict())), strict=True)
    return ours, ref


def diffusers_condition(ref: AutoencoderKLWan, image, frames, height, width, last=None) -> torch.Tensor:
    """Run diffusers' own prepare_latents on a stand-in pipeline object that holds only what it reads."""
    pipe = SimpleNamespace(
        vae=ref, config=SimpleNamespace(expand_timesteps=False),
        vae_scale_factor_temporal=4, vae_scale_factor_spatial=8,
    )  # fmt: skip
    _, cond = WanImageToVideoPipeline.prepare_latents(
        pipe, image[None], 1, 16, height, width, frames, dtype=torch.float32, device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0), last_image=None if last is None else last[None],
    )  # fmt: skip
    return cond


@torch.no_grad()
def test_i2v_condition_matches_diffusers(vaes):
    ours, ref = vaes
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 16, 32, generator=g) * 2 - 1
    y = condition_latents(ours, image, num_frames=9, width=32, height=16)
    expected = diffusers_condition(ref, image, 9, 16, 32)
    assert y.shape == (1, 20, 3, 2, 4) == expected.shape and y.dtype == torch.float32
    torch.testing.assert_close(y[:, :4], expected[:, :4], rtol=0, atol=0)  # the mask, exactly
    assert rel_err(y, expected) < TOL


@torch.no_grad()
def test_flf2v_condition_matches_diffusers(vaes):
    ours, ref = vaes
    g = torch.Generator().manual_seed(2)
    first, last = (torch.rand(3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
    y = condition_latents(ours, first, num_frames=9, width=16, height=16, end_image=last)
    expected = diffusers_condition(ref, first, 9, 16, 16, last=last)
    assert y.shape == (1, 20, 3, 2, 2)
    torch.testing.assert_close(y[:, :4], expected[:, :4], rtol=0, atol=0)
    assert rel_err(y, expected) < TOL


def test_frame_mask_layout():
    m = frame_mask(9, 1, 1, 4)[:, :, 0, 0]  # [4, T=3]
    assert m.tolist() == [[1, 0, 0]] * 4
    m = frame_mask(9, 1, 1, 4, last=True)[:, :, 0, 0]
    # pixel frames 1..8 fill latent frames 1 and 2 in groups of four; the last one is frame 8
    assert m.tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 1]]


def test_i2v_size_official_examples():
    # hand-computed with the official formula: lat = sqrt(area * h/w) // 8 // 2 * 2
    # 1000x600 at 832*480: sqrt(399360*0.6) = 489.5 -> 61 -> 60 -> 480; sqrt(399360/0.6) = 815.8 -> 101 -> 100 -> 800
    assert i2v_size(1000, 600, 832 * 480, vae_stride=8) == (800, 480)
    # float rounding in the official formula: 399360 * (480/832) = 230399.99999999997, sqrt just under 480,
    # so an 832x480 image at the 480p budget gives 832x464 in the official code (the transposed case does not)
    assert i2v_size(832, 480, 832 * 480, vae_stride=8) == (832, 464)
    assert i2v_size(480, 832, 832 * 480, vae_stride=8) == (480, 832)
    assert i2v_size(1280, 720, 1280 * 720, vae_stride=8) == (1280, 720)
    # sqrt(399360) = 631.9 -> 78 -> 78 -> 624
    assert i2v_size(1024, 1024, 832 * 480, vae_stride=8) == (624, 624)
    with pytest.raises(UserError, match="aspect ratio"):
        i2v_size(4000, 10, 64 * 64, vae_stride=8)


def test_load_and_resize(tmp_path):
    rgba = np.zeros((6, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 6, 10) and img.dtype == torch.float32
    # half-transparent red is composited over white (io.image_file.ALPHA_BACKGROUND): green = blue = 127
    assert img[0].eq(1).all() and img[1:].eq((torch.tensor(127.0) / 255 - 0.5) / 0.5).all()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="not a readable image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(UserError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    x = torch.randn(3, 6, 10)
    torch.testing.assert_close(resize_bicubic(x, 10, 6), x)  # same size: the identity
    out = resize_bicubic(x, 16, 8)
    expected = torch.nn.functional.interpolate(x[None], size=(8, 16), mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@torch.no_grad()
def test_clip_features_shapes():
    clip = WanCLIPVision(
        CLIPVisionConfig(image_size=28, patch_size=14, dim=32, out_dim=8, num_heads=2, num_layers=2)
    )
    a, b = torch.rand(3, 20, 30) * 2 - 1, torch.rand(3, 40, 10) * 2 - 1
    one = clip_features(clip, a)
    two = clip_features(clip, a, b)
    assert one.shape == (1, 5, 32) and two.shape == (1, 10, 32)
    torch.testing.assert_close(two[:, :5], one)


@torch.no_grad()
def test_condition_feeds_an_i2v_dit(vaes):
    """y and clip_fea have the shapes the i2v / flf2v DiT takes (16 noise + 20 condition channels)."""
    from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig

    ours, _ = vaes
    # the DiT takes exactly 257 tokens per image: the released 224 / 14 geometry at a tiny width
    clip = WanCLIPVision(CLIPVisionConfig(dim=32, out_dim=8, num_heads=2, num_layers=2))
    image = torch.rand(3, 24, 64) * 2 - 1  # stretched to the size i2v_size picks
    # sqrt(768 * 0.375) = 16.97 -> 16; sqrt(768 / 0.375) = 45.25 -> 32
    width, height = i2v_size(64, 24, 768, vae_stride=8)
    assert (width, height) == (32, 16)
    for model_type, end in (("i2v", None), ("flf2v", torch.rand(3, 16, 32) * 2 - 1)):
        cfg = WanDiTConfig(
            model_type=model_type, in_dim=36, dim=64, ffn_dim=64, text_dim=16, out_dim=16, num_heads=2,
            num_layers=1, image_dim=32,
        )  # fmt: skip
        dit = WanDiT(cfg).eval()
        y = condition_latents(ours, image, 5, width, height, end_image=end)
        noise = torch.randn(1, 16, *y.shape[2:])
        fea = clip_features(clip, image, end)
        out = dit(noise, torch.tensor([500.0]), torch.randn(1, 7, 16), y=y, clip_fea=fea)
        assert out.shape == noise.shape and torch.isfinite(out).all()
