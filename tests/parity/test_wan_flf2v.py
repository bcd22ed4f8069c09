"""Wan2.1 FLF2V (first and last frame to video): the official constructions, and a whole tiny generation
against diffusers' ``WanImageToVideoPipeline`` with ``last_image``.

Where diffusers agrees with the official ``first_last_frame2video.py``: the condition video [first, zeros,
last], the mask (first latent frame on all four channels, the last on channel 3), CLIP tokens of both frames
from the penultimate block joined into 514 plus ``emb_pos``, the guidance loop. Where it does not, and what
the comparison does about it:
- CLIP preprocessing: diffusers' ``CLIPImageProcessor`` resizes the short side to 224 (PIL, antialiased) and
  centre-crops; the official code stretches the whole frame to 224x224 with torch bicubic, no antialias. The
  reference pipeline is given a processor doing the official stretch (its CLIP tower stays transformers').
- Frame resizing: diffusers resizes both frames to the output size with PIL lanczos, the official code with
  torch bicubic: the frames here are already at the output size, where both leave them unchanged.
- A last frame of another size: diffusers stretches it to the output size; the official code centre-crops or
  zero-pads it first, with width and height swapped (tested here against hand-computed cases).
- Its single-file converter leaves ``img_emb.emb_pos`` unrenamed (renamed here to ``pos_embed``).
- Its default UniPC grid is not the official one (the official grid is given, as in test_wan_pipeline.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from telefuser_cli.families.wan.image_cond import fit_last_frame, frame_mask
from telefuser_cli.families.wan.tiny import CLIP_FILE, TINY_CLIP, TINY_DIT_FLF2V
from telefuser_cli.loading.checkpoint import read_state_dict
from telefuser_cli.loading.clip_arch import official_to_hf_clip_vision

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import test_wan_pipeline as wan_parity  # noqa: E402  (its tiny diffusers pipeline, grid and CLI helper)
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: E402

# The i2v parity tolerance of tests/parity/test_wan_pipeline.py (max |ours - ref| / max |ref|, final latents).
TOL = 1e-4


# ---------------------------------------------------------------- the mask


def official_mask(lat_h: int, lat_w: int) -> torch.Tensor:
    """The official flf2v mask, step by step as first_last_frame2video.py writes it (81 frames only)."""
    msk = torch.ones(1, 81, lat_h, lat_w)
    msk[:, 1:-1] = 0
    msk = torch.concat([torch.repeat_interleave(msk[:, 0:1], repeats=4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, lat_h, lat_w)
    return msk.transpose(1, 2)[0]


def test_mask_at_81_frames_is_the_official_one():
    ours = frame_mask(81, 3, 5, 4, last=True)
    assert ours.shape == (4, 21, 3, 5)
    torch.testing.assert_close(ours, official_mask(3, 5), rtol=0, atol=0)


@pytest.mark.parametrize("frames", [5, 17, 45])
def test_mask_of_any_4k_plus_1_marks_first_on_all_channels_and_last_on_one(frames):
    m = frame_mask(frames, 1, 1, 4, last=True)[:, :, 0, 0]
    expected = torch.zeros(4, (frames - 1) // 4 + 1)
    expected[:, 0] = 1
    expected[3, -1] = 1
    torch.testing.assert_close(m, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- a last frame of another size


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_last_frame_of_the_first_frames_size_is_untouched():
    last = _image(24, 40)
    assert fit_last_frame(40, 24, last) is last


def test_a_larger_square_last_frame_is_centre_cropped_not_resized():
    last = _image(64, 64)
    torch.testing.assert_close(fit_last_frame(32, 32, last), last[:, 16:48, 16:48], rtol=0, atol=0)


def test_a_smaller_last_frame_is_zero_padded():
    last = _image(16, 16)
    expected = torch.zeros(3, 32, 32)  # zeros: mid-grey in [-1, 1]
    expected[:, 8:24, 8:24] = last
    torch.testing.assert_close(fit_last_frame(32, 32, last), expected, rtol=0, atol=0)


def test_width_and_height_are_swapped_as_the_official_crop_reads_them():
    # first 80x48 (w x h), last 40x24: ratio 2, "size" [80, 48] read as (height 80, width 48):
    # the landscape last frame becomes a portrait 48x80 (w x h), padded by 28 rows and 4 columns each side
    last = _image(24, 40)
    expected = torch.zeros(3, 80, 48)
    expected[:, 28:52, 4:44] = last
    torch.testing.assert_close(fit_last_frame(80, 48, last), expected, rtol=0, atol=0)


def test_crop_on_one_axis_and_pad_on_the_other():
    # first 32x32, last 64x32 (w x h): ratio 1, crop to height 64 (pad 16 rows each side), width 32 (from 16)
    last = _image(32, 64)
    expected = torch.zeros(3, 64, 32)
    expected[:, 16:48] = last[:, :, 16:48]
    torch.testing.assert_close(fit_last_frame(32, 32, last), expected, rtol=0, atol=0)


@pytest.mark.parametrize(("size", "offset"), [(33, 0), (35, 2)])
def test_crop_offsets_round_half_to_even(size, offset):
    # excess 1 -> round(0.5) = 0; excess 3 -> round(1.5) = 2 (neither floor nor round-half-up gives both)
    last = _image(size, size)
    out = fit_last_frame(32, 32, last)
    torch.testing.assert_close(out, last[:, offset : offset + 32, offset : offset + 32], rtol=0, atol=0)


# ---------------------------------------------------------------- a whole generation against diffusers

# The OpenAI CLIP statistics the official CLIPModel normalises with.
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


class OfficialCLIPStretch:
    """An image processor doing what the official ``CLIPModel.visual`` does to a frame: [-1, 1], a bicubic
    stretch to 224x224 (no antialias, no crop), back to [0, 1], then the CLIP normalisation."""

    def __call__(self, images, return_tensors="pt"):
        pixels = []
        for image in images:
            x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            x = F.interpolate((x[None] - 0.5) / 0.5, size=(224, 224), mode="bicubic", align_corners=False)
            pixels.append((x * 0.5 + 0.5 - MEAN) / STD)
        return transformers.BatchFeature({"pixel_values": torch.cat(pixels)})


def reference_transformer(path) -> WanTransformer3DModel:
    cfg = TINY_DIT_FLF2V
    transformer = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=cfg.eps, image_dim=cfg.image_dim, added_kv_proj_dim=cfg.dim,
        pos_embed_seq_len=2 * 257,
    )  # fmt: skip
    converted = convert_wan_transformer_to_diffusers(load_file(path))
    converted["condition_embedder.image_embedder.pos_embed"] = converted.pop("img_emb.emb_pos")
    transformer.load_state_dict(converted, strict=True)
    return transformer.eval()


def reference_clip(path):
    cfg = TINY_CLIP
    model = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(
            hidden_size=cfg.dim,
            intermediate_size=cfg.mlp_dim,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            projection_dim=cfg.out_dim,
            hidden_act="gelu",
            layer_norm_eps=cfg.norm_eps,
        )  # fmt: skip
    )
    missing, unexpected = model.load_state_dict(
        official_to_hf_clip_vision(read_state_dict([path])), strict=False
    )
    assert not unexpected and set(missing) <= {"vision_model.embeddings.position_ids"}
    return model.eval()


@pytest.fixture(scope="module")
def flf2v_root(tmp_path_factory):
    from telefuser_cli.families.tiny import write_tiny

    return write_tiny("tiny_wan21_flf2v", tmp_path_factory.mktemp("flf2v") / "tiny_wan21_flf2v", seed=3)


def _frames(directory, width, height):
    y, x = np.mgrid[0:height, 0:width]
    first = np.stack([x * 3, y * 5, (x + y) % 255], -1).astype(np.uint8)
    last = np.stack([255 - x * 3, (x * y) % 255, y * 4], -1).astype(np.uint8)
    paths = directory / "first.png", directory / "last.png"
    for path, pixels in zip(paths, (first, last), strict=True):
        Image.fromarray(pixels).save(path)
    return paths


def test_flf2v_generation_matches_diffusers_with_last_image(tmp_path, flf2v_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    width, height, steps, shift, cfg, frames, seed = 80, 48, 5, 16.0, 5.0, 9, 11
    first, last = _frames(tmp_path, width, height)
    ours, document = wan_parity._ours(
        tmp_path, "recipe=tiny_flf2v", f"model.root={flf2v_root}", f"prompt={wan_parity.PROMPT}",
        f"pipeline.negative_prompt={wan_parity.NEGATIVE}", f"seed={seed}", f"user.input_image={first}",
        f"user.end_image={last}", f"pipeline.num_inference_steps={steps}", f"pipeline.num_frames={frames}",
        f"resolution={width}x{height}",
    )  # fmt: skip
    assert document["run"]["size_written"] == [width, height]
    pipeline = document["layer2_inference_config"]
    assert (pipeline["sigma_shift"], pipeline["cfg_scale"]) == (shift, cfg)  # the official FLF2V values

    # the t2v test's pipeline of the tiny folder (tokenizer, UMT5, VAE), with the FLF2V transformer
    monkeypatch.setattr(wan_parity, "diffusers_transformer", reference_transformer)
    base = wan_parity.diffusers_pipeline(flf2v_root)
    scheduler = wan_parity.OfficialGridUniPC.from_config(base.scheduler.config)
    scheduler.shift = shift
    pipe = WanImageToVideoPipeline(
        tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae, scheduler=scheduler,
        image_processor=OfficialCLIPStretch(), image_encoder=reference_clip(flf2v_root / CLIP_FILE),
        transformer=base.transformer,
    )  # fmt: skip
    noise = torch.randn((1, 16, (frames - 1) // 4 + 1, height // 8, width // 8),
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    with torch.no_grad():
        reference = pipe(
            image=Image.open(first), last_image=Image.open(last), prompt=wan_parity.PROMPT,
            negative_prompt=wan_parity.NEGATIVE, height=height, width=width, num_frames=frames,
            num_inference_steps=steps, guidance_scale=cfg, latents=noise, output_type="latent",
            max_sequence_length=512,
        ).frames  # fmt: skip
    error = wan_parity.relative_error(ours, reference)
    print(f"FLF2V final latents: max relative error {error:.2e}")
    assert error < TOL
