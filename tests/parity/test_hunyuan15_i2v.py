"""HunyuanVideo 1.5 image-to-video vs diffusers' HunyuanVideo15ImageToVideoPipeline on the same tiny weights.

Same tiny directory (written by ``families/hunyuan15/tiny.py``: the 480p_i2v DiT and the SigLIP encoder), image, prompt,
noise, steps and shift, float32. The conditioning pieces (bucket size, crop, cond latents and mask, SigLIP
tokens) are compared one by one, then whole runs: CFG 6, and a meanflow (step-distilled) DiT at CFG 1, whose
``timestep_r`` sequence is compared too.

Where diffusers departs from the official pipeline (Tencent-Hunyuan/HunyuanVideo-1.5), the reference is the
official step, replicated here: the bucket choice (official: the closest ratio; diffusers: the closest not
more elongated than the image), the crop (official: scaled side rounded, torchvision centre crop; diffusers:
floored, pasted at ``width // 2 - src_w // 2``; diffusers is then handed the officially cropped image, which
it leaves as it is) and the bfloat16 noise draw.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from telefuser_cli.families.hunyuan15 import image_cond as ic
from telefuser_cli.families.hunyuan15.decode import decode
from telefuser_cli.families.hunyuan15.latents import initial_noise, latent_shape
from telefuser_cli.families.hunyuan15.pipeline import Hunyuan15Denoiser
from telefuser_cli.families.hunyuan15.text import encode_prompts, find_crop_start
from telefuser_cli.families.hunyuan15.tiny import I2V_VERSION, write_tiny_hunyuan15
from telefuser_cli.families.tiny import randomise
from telefuser_cli.loading import hunyuan15 as loading
from telefuser_cli.loading.hunyuan15_arch import official_to_diffusers_dit, official_to_diffusers_vae
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.pipelines.sampling import sample
from telefuser_cli.runtime.transforms import Placed
from telefuser_cli.schedulers import make_scheduler

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    AutoencoderKLHunyuanVideo15,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Transformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance  # noqa: E402
from diffusers.pipelines.hunyuan_video1_5.image_processor import (  # noqa: E402
    HunyuanVideo15ImageProcessor,
    generate_crop_size_list,  # diffusers' copy of the official function (identical)
)

PROMPT = 'a red ball rolling past a sign with the text "hello"'
NEGATIVE = ""
STEPS, SHIFT, CFG = 3, 5.0, 6.0
FRAMES = 5
TARGET = 39  # bucket base: round((39/16)**2) = 6 patches of 16 px; a 90x50 image gets the 48x32 bucket
TEXT_LEN = 48  # our max_length and diffusers' tokenizer_max_length (1000 released; shorter keeps it fast)
DEV = torch.device("cpu")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def make_image(width: int, height: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    # smooth gradients plus noise: the Lanczos resize and the crop both matter
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    return Image.fromarray((base + rng.random((height, width, 3)) * 55).astype(np.uint8))


def official_bucket(image_w: int, image_h: int, base: float) -> tuple[int, int]:
    """Official ``get_closest_resolution_given_original_size``, replicated: the (w, h) entries of
    ``generate_crop_size_list(base, 16)`` read as (h, w), ratios h/w rounded to 5 places, and the FIRST
    entry of smallest |ratio - image h/w| (numpy ``argmin``; ``min`` keeps the first too). -> (width, height)"""
    buckets = generate_crop_size_list(base_size=base, patch_size=16)
    ratios = [round(float(h) / float(w), 5) for h, w in buckets]
    aspect = float(image_h) / float(image_w)
    h, w = buckets[min(range(len(buckets)), key=lambda i: abs(ratios[i] - aspect))]
    return w, h


def official_vae_crop(image, width: int, height: int):
    """Official ``get_image_condition_latents``' pixels, replicated without torchvision: ``Resize`` to the
    scaled sides rounded (``int(round(side * scale))``; PIL Lanczos for a PIL image), then ``CenterCrop`` at
    torchvision's offsets ``int(round((scaled - size) / 2.0))``."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    scaled_w, scaled_h = int(round(image.width * scale)), int(round(image.height * scale))
    resized = image.resize((scaled_w, scaled_h), Image.LANCZOS)
    left, top = int(round((scaled_w - width) / 2.0)), int(round((scaled_h - height) / 2.0))
    return resized.crop((left, top, left + width, top + height))


def official_siglip_crop(image, width: int, height: int):
    """Official ``resize_and_center_crop`` (SigLIP's input), replicated: the same resize, then PIL's ``crop``
    of the float box ``((scaled_w - width) / 2, (scaled_h - height) / 2, (scaled_w + width) / 2, ...)``."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    scaled_w, scaled_h = int(round(image.width * scale)), int(round(image.height * scale))
    resized = image.resize((scaled_w, scaled_h), Image.LANCZOS)
    box = ((scaled_w - width) / 2, (scaled_h - height) / 2, (scaled_w + width) / 2, (scaled_h + height) / 2)
    return resized.crop(box)


def official_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The official ``prepare_latents``, replicated: ``torch.randn`` on a seeded CPU generator in bfloat16,
    then float32 (the official loop promotes it at the first step)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, device="cpu", dtype=torch.bfloat16).to(DEV).float()


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    root = write_tiny_hunyuan15(tmp_path_factory.mktemp("hy15i2v") / "tiny_hunyuan15", seed=3)
    llm, tokenizer = loading.load_text_encoder(root, torch.float32, DEV)
    crop = find_crop_start(tokenizer)
    byt5, byt5_tokenizer = loading.load_byt5(root, torch.float32, DEV)
    dit = loading.load_dit(root, I2V_VERSION, torch.float32, DEV)
    vae = loading.load_vae(root, torch.float32, DEV)
    siglip, processor = loading.load_vision_encoder(root, torch.float32, DEV)
    return dict(root=root, llm=llm, tokenizer=tokenizer, crop=crop, byt5=byt5, byt5_tokenizer=byt5_tokenizer, dit=dit,
                vae=vae, siglip=siglip, processor=processor)  # fmt: skip


def _reference(c: dict, dit: Hunyuan15DiT, cfg_scale: float) -> HunyuanVideo15ImageToVideoPipeline:
    cfg = dit.config
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=cfg.patch_in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.heads_num,
        attention_head_dim=cfg.head_dim, num_layers=cfg.mm_double_blocks_depth, num_refiner_layers=cfg.refiner_depth,
        mlp_ratio=cfg.mlp_width_ratio, patch_size=cfg.patch_size[1], patch_size_t=cfg.patch_size[0],
        text_embed_dim=cfg.text_states_dim, text_embed_2_dim=cfg.byt5_dim, image_embed_dim=cfg.vision_states_dim,
        rope_theta=cfg.rope_theta, rope_axes_dim=cfg.rope_dim_list, use_meanflow=cfg.use_meanflow,
        target_size=TARGET,
    )  # fmt: skip
    transformer.load_state_dict(official_to_diffusers_dit(dit.state_dict()), strict=True)
    vcfg = c["vae"].config
    ref_vae = AutoencoderKLHunyuanVideo15(
        latent_channels=vcfg.latent_channels, block_out_channels=vcfg.block_out_channels,
        layers_per_block=vcfg.layers_per_block, scaling_factor=vcfg.scaling_factor,
    )  # fmt: skip
    ref_vae.load_state_dict(official_to_diffusers_vae(c["vae"].state_dict()), strict=True)
    pipe = HunyuanVideo15ImageToVideoPipeline(
        text_encoder=c["llm"], tokenizer=c["tokenizer"], transformer=transformer.eval(), vae=ref_vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), text_encoder_2=c["byt5"],
        tokenizer_2=c["byt5_tokenizer"], guider=ClassifierFreeGuidance(guidance_scale=cfg_scale),
        image_encoder=c["siglip"], feature_extractor=c["processor"],
    )  # fmt: skip
    pipe.prompt_template_encode_start_idx = c["crop"]  # 108 for the released tokenizer; ours is another one
    pipe.tokenizer_max_length = TEXT_LEN
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def _ours(c: dict, dit: Hunyuan15DiT, image, cfg_scale: float, seed: int = 7):
    """Our i2v run from a PIL image: (final latents, video [B, 3, F, H, W] in [-1, 1], noise)."""
    width, height = ic.bucket_size(image.width, image.height, TARGET)
    cropped = ic.crop_to(image, width, height)
    tokens = ic.image_embeds(c["siglip"], c["processor"], cropped, DEV)
    shape = latent_shape(1, FRAMES, height, width, channels=dit.config.out_channels)
    condition = ic.image_condition(c["vae"], cropped, shape[2])
    noise = initial_noise(shape, seed, DEV)
    args = (c["llm"], c["tokenizer"], c["byt5"], c["byt5_tokenizer"])
    positive = encode_prompts(*args, [PROMPT], DEV, c["crop"], TEXT_LEN)
    negative = encode_prompts(*args, [NEGATIVE], DEV, c["crop"], TEXT_LEN) if cfg_scale != 1 else None
    scheduler = make_scheduler("euler", STEPS, SHIFT)
    denoiser = Hunyuan15Denoiser(Placed(dit), cfg_scale, condition, tokens)
    latents = sample(noise.clone(), scheduler, [denoiser], positive, negative)
    return latents, decode(c["vae"], latents), noise


def test_vision_encoder_folder_errors(components, tmp_path):
    from telefuser_cli.errors import UserError

    with pytest.raises(UserError, match="image-to-video needs the SigLIP encoder in vision_encoder/siglip/"):
        loading.load_vision_encoder(tmp_path, torch.float32, DEV)
    # weights only as a pickle: refused (never unpickled), one clear error
    root = tmp_path / "pickled"
    siglip = root / loading.SIGLIP_DIR
    shutil.copytree(components["root"] / loading.SIGLIP_DIR, siglip)
    model = siglip / loading.SIGLIP_MODEL
    torch.save(components["siglip"].state_dict(), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with pytest.raises(UserError, match="image encoder: cannot load .* no file named model.safetensors"):
        loading.load_vision_encoder(root, torch.float32, DEV)


def test_bucket_size_follows_the_official_rule():
    sizes = [(90, 50), (50, 90), (100, 100), (1920, 1080), (1080, 1920), (300, 1200), (1201, 300), (640, 481),
             (481, 640), (1000, 999), (33, 17), (97, 61), (1000, 1500), (1500, 1000), (720, 1280)]  # fmt: skip
    for target in (640, 960, 1440, 48, TARGET):
        for w, h in sizes:
            assert ic.bucket_size(w, h, target) == official_bucket(w, h, target), (w, h, target)
    # a 9:16 image at 720p: the official 720x1280 (45x80 patches, ratio 1.77778, slightly taller than the
    # image); diffusers keeps to ratios no taller than the image and picks 720x1264
    assert ic.bucket_size(1080, 1920, 960) == (720, 1280)
    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=16)
    assert processor.calculate_default_height_width(height=1920, width=1080, target_size=960) == (1264, 720)
    # a named resolution uses the official base; an explicit one its pixel budget (same patch count)
    assert ic.bucket_size(1920, 1080, ic.bucket_base("480p", 848, 480)) == (848, 480)
    assert ic.bucket_base("48x32", 48, 32) ** 2 == pytest.approx(48 * 32)


def test_crop_rounds_and_centres_as_the_official_code():
    from PIL import Image

    # worked by hand: 97x61 to 48x32: scale max(48/97, 32/61) = 0.52459; 97 * 0.52459 = 50.89 -> 51 (diffusers
    # floors to 50); left = round((51 - 48) / 2) = round(1.5) = 2 (diffusers pastes at 24 - 25: offset 1)
    assert ic.cover_crop(97, 61, 48, 32) == (51, 32, 2, 0)
    assert ic.cover_crop(90, 50, 48, 32) == (58, 32, 5, 0)  # 57.6 -> 58, round(5.0)
    assert ic.cover_crop(49, 32, 48, 32) == (49, 32, 0, 0)  # round(0.5) = 0: half to even
    assert ic.cover_crop(51, 32, 48, 32) == (51, 32, 2, 0)  # round(1.5) = 2
    assert ic.cover_crop(32, 53, 32, 48) == (32, 53, 0, 2)  # round(2.5) = 2, on the height
    assert ic.cover_crop(48, 32, 48, 32) == (48, 32, 0, 0)
    image = make_image(97, 61, 2)
    expected = image.resize((51, 32), Image.LANCZOS).crop((2, 0, 50, 32))
    ours = ic.crop_to(image, 48, 32)
    assert ours.size == (48, 32) and np.array_equal(np.asarray(ours), np.asarray(expected))
    # the official SigLIP path (PIL crop of a float box) and VAE path (torchvision offsets) give these pixels
    for w, h in ((97, 61), (90, 50), (41, 77), (49, 32), (32, 53), (200, 45), (45, 200)):
        image = make_image(w, h, 3)
        for width, height in ((48, 32), (32, 48), (64, 64)):
            ours = np.asarray(ic.crop_to(image, width, height))
            assert np.array_equal(ours, np.asarray(official_vae_crop(image, width, height))), (w, h)
            assert np.array_equal(ours, np.asarray(official_siglip_crop(image, width, height))), (w, h)


def test_crop_offsets_are_torchvision_center_crop():
    """Where torchvision is installed (the official code's dependency), its centre crop of the scaled image is
    ours; without it, test_crop_rounds_and_centres_as_the_official_code checks the rule by hand."""
    tvf = pytest.importorskip("torchvision.transforms.functional")
    for w, h in ((97, 61), (90, 50), (49, 32), (51, 32), (32, 53), (45, 200)):
        image = make_image(w, h, 4)
        for width, height in ((48, 32), (32, 48)):
            scaled_w, scaled_h, _, _ = ic.cover_crop(w, h, width, height)
            resized = tvf.resize(image, [scaled_h, scaled_w], interpolation=tvf.InterpolationMode.LANCZOS)
            expected = tvf.center_crop(resized, [height, width])
            assert np.array_equal(np.asarray(ic.crop_to(image, width, height)), np.asarray(expected)), (w, h)


@torch.no_grad()
def test_conditioning_pieces_match_diffusers(components):
    """diffusers' cond latents, mask and SigLIP tokens of the officially cropped image are ours."""
    c = components
    pipe = _reference(c, c["dit"], CFG)
    for w, h, seed in ((90, 50, 0), (41, 77, 1), (97, 61, 2)):
        image = make_image(w, h, seed)
        width, height = ic.bucket_size(w, h, TARGET)
        cropped = ic.crop_to(image, width, height)
        ref_cropped = official_vae_crop(image, width, height)
        assert np.array_equal(np.asarray(cropped), np.asarray(ref_cropped))

        latents = torch.zeros(1, 4, 2, height // 16, width // 16)
        cond_ref, mask_ref = pipe.prepare_cond_latents_and_mask(
            latents, ref_cropped, 1, height, width, torch.float32, DEV
        )
        ours = ic.image_condition(c["vae"], cropped, 2)
        assert ours.shape == (1, 5, 2, height // 16, width // 16)
        assert torch.equal(ours[:, 4:], mask_ref) and ours[0, 4, 0].eq(1).all() and ours[0, 4, 1].eq(0).all()
        assert ours[:, :4, 1:].eq(0).all() and ours[:, :4, 0].abs().max() > 0
        assert rel_err(ours[:, :4], cond_ref) < 1e-5

        tokens = ic.image_embeds(c["siglip"], c["processor"], cropped, DEV)
        ref_tokens = pipe.encode_image(ref_cropped, 1, DEV, torch.float32)
        assert tokens.shape == (1, 16, c["dit"].config.vision_states_dim)
        assert torch.equal(tokens, ref_tokens)
    # the image loader's [-1, 1] tensor maps back to the same 8-bit image
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
    assert np.array_equal(np.asarray(ic.to_pil(pixels)), np.asarray(image))


@torch.no_grad()
def test_i2v_latents_and_video_match_diffusers(components):
    c = components
    image = make_image(90, 50)
    latents, video, noise = _ours(c, c["dit"], image, CFG)
    assert video.shape == (1, 3, FRAMES, 32, 48)
    assert torch.equal(noise, official_noise(noise.shape, 7))

    pipe = _reference(c, c["dit"], CFG)
    # diffusers gets the officially cropped image (its own crop differs: scaled width 57 instead of 58); it
    # picks the same 48x32 bucket for it and leaves it as it is
    call = dict(
        image=official_vae_crop(image, 48, 32), prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=FRAMES,
        num_inference_steps=STEPS,
    )  # fmt: skip
    ref = pipe(**call, latents=noise.clone(), output_type="latent", return_dict=False)[0]
    err = rel_err(latents, ref)
    print(f"hunyuan15 i2v latents: max abs {(latents - ref).abs().max().item():.3e}, rel {err:.3e}")
    # measured 1.1e-5 (4.2e-6 when ours is handed diffusers' timestep grid: the two grids are float32 ulps
    # apart, see test_hunyuan15_pipeline), CFG 6 amplifying it; a wrong frame, mask or token gives > 1e-2
    assert err < 3e-5

    ref_video = pipe(**call, latents=noise.clone(), output_type="pt", return_dict=False)[0]  # [B, F, 3, H, W]
    ours = ((video + 1) / 2).permute(0, 2, 1, 3, 4)
    verr = rel_err(ours, ref_video)
    print(f"hunyuan15 i2v video: max abs {(ours - ref_video).abs().max().item():.3e}, rel {verr:.3e}")
    assert verr < 3e-5


@torch.no_grad()
def test_meanflow_i2v_and_timestep_r_match_diffusers(components):
    c = components
    cfg = dataclasses.replace(c["dit"].config, use_meanflow=True)
    dit = Hunyuan15DiT(cfg)
    randomise(dit, torch.Generator().manual_seed(11), bias_std=0.1)
    dit.eval()
    pipe = _reference(c, dit, 1.0)  # step-distilled: no guidance

    seen: dict[str, list[float]] = {"ours": [], "diffusers": []}
    dit.register_forward_pre_hook(
        lambda m, args, kwargs: seen["ours"].append(float(kwargs["timestep_r"][0])), with_kwargs=True
    )
    pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen["diffusers"].append(float(kwargs["timestep_r"][0])), with_kwargs=True
    )
    image = make_image(90, 50)
    latents, _, noise = _ours(c, dit, image, 1.0)
    ref = pipe(image=official_vae_crop(image, 48, 32), prompt=PROMPT, num_frames=FRAMES,  # official crop
               num_inference_steps=STEPS, latents=noise.clone(), output_type="latent", return_dict=False)[0]  # fmt: skip

    # diffusers (like the official pipeline) passes the next timestep, and 0 after the last step
    assert len(seen["ours"]) == len(seen["diffusers"]) == STEPS
    assert seen["ours"][-1] == seen["diffusers"][-1] == 0.0
    assert np.allclose(seen["ours"], seen["diffusers"], rtol=0, atol=1.3e-4)  # the two grids' float32 ulps
    expected = make_scheduler("euler", STEPS, SHIFT).timesteps[1:].tolist() + [0.0]
    assert seen["ours"] == pytest.approx(expected, abs=0)
    err = rel_err(latents, ref)
    print(f"hunyuan15 i2v meanflow latents: max abs {(latents - ref).abs().max().item():.3e}, rel {err:.3e}")
    assert err < 1e-5
