"""HunyuanVideo 1.5 image-to-video vs diffusers' HunyuanVideo15ImageToVideoPipeline on the same tiny weights.

Same tiny directory (written by ``hunyuan15_tiny``: the 480p_i2v DiT and the SigLIP encoder), image, prompt,
noise, steps and shift, float32. The conditioning pieces (bucket size, crop, cond latents and mask, SigLIP
tokens) are compared one by one, then whole runs: CFG 6, and a meanflow (step-distilled) DiT at CFG 1, whose
``timestep_r`` sequence is compared too.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from telefuser_cli.hunyuan15_tiny import I2V_VERSION, write_tiny_hunyuan15
from telefuser_cli.loading import hunyuan15 as loading
from telefuser_cli.loading.hunyuan15_arch import official_to_diffusers_dit, official_to_diffusers_vae
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.pipelines import hunyuan15 as hy
from telefuser_cli.pipelines import hunyuan15_image_cond as ic
from telefuser_cli.schedulers import make_scheduler
from telefuser_cli.tiny import randomise

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    AutoencoderKLHunyuanVideo15,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Transformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance  # noqa: E402
from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor  # noqa: E402

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


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    root = write_tiny_hunyuan15(tmp_path_factory.mktemp("hy15i2v") / "tiny_hunyuan15", seed=3)
    llm, tokenizer, crop = loading.load_text_encoder(root, torch.float32, DEV)
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
    shape = hy.latent_shape(1, FRAMES, height, width, channels=dit.config.out_channels)
    condition = ic.image_condition(c["vae"], cropped, shape[2])
    noise = hy.initial_noise(shape, seed, DEV)
    args = (c["llm"], c["tokenizer"], c["byt5"], c["byt5_tokenizer"])
    positive = hy.encode_prompts(*args, [PROMPT], DEV, c["crop"], TEXT_LEN)
    negative = hy.encode_prompts(*args, [NEGATIVE], DEV, c["crop"], TEXT_LEN) if cfg_scale != 1 else None
    scheduler = make_scheduler("euler", STEPS, SHIFT)
    latents = hy.denoise(dit, noise.clone(), scheduler, condition, positive, negative, cfg_scale,
                         image_embeds=tokens)  # fmt: skip
    return latents, hy.decode(c["vae"], latents), noise


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


def test_bucket_size_matches_diffusers():
    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=16)
    sizes = [(90, 50), (50, 90), (100, 100), (1920, 1080), (1080, 1920), (300, 1200), (1201, 300), (640, 481),
             (481, 640), (1000, 999), (33, 17)]  # fmt: skip
    for target in (640, 960, 1440, 48, TARGET):
        for w, h in sizes:
            ref_h, ref_w = processor.calculate_default_height_width(height=h, width=w, target_size=target)
            assert ic.bucket_size(w, h, target) == (ref_w, ref_h), (w, h, target)
    # a named resolution uses the official base; an explicit one its pixel budget (same patch count)
    assert ic.bucket_size(1920, 1080, ic.bucket_base("480p", 848, 480)) == (848, 480)
    assert ic.bucket_base("48x32", 48, 32) ** 2 == pytest.approx(48 * 32)


@torch.no_grad()
def test_conditioning_pieces_match_diffusers(components):
    c = components
    pipe = _reference(c, c["dit"], CFG)
    for w, h, seed in ((90, 50, 0), (41, 77, 1)):
        image = make_image(w, h, seed)
        width, height = ic.bucket_size(w, h, TARGET)
        cropped = ic.crop_to(image, width, height)
        ref_cropped = pipe.video_processor.resize(image, height=height, width=width, resize_mode="crop")
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

    pipe = _reference(c, c["dit"], CFG)
    call = dict(
        image=image, prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=FRAMES, num_inference_steps=STEPS
    )
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
    dit.register_forward_pre_hook(lambda m, args: seen["ours"].append(float(args[7][0])))
    pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen["diffusers"].append(float(kwargs["timestep_r"][0])), with_kwargs=True
    )
    image = make_image(90, 50)
    latents, _, noise = _ours(c, dit, image, 1.0)
    ref = pipe(image=image, prompt=PROMPT, num_frames=FRAMES, num_inference_steps=STEPS, latents=noise.clone(),
               output_type="latent", return_dict=False)[0]  # fmt: skip

    # diffusers (like the official pipeline) passes the next timestep, and 0 after the last step
    assert len(seen["ours"]) == len(seen["diffusers"]) == STEPS
    assert seen["ours"][-1] == seen["diffusers"][-1] == 0.0
    assert np.allclose(seen["ours"], seen["diffusers"], rtol=0, atol=1.3e-4)  # the two grids' float32 ulps
    expected = make_scheduler("euler", STEPS, SHIFT).timesteps[1:].tolist() + [0.0]
    assert seen["ours"] == pytest.approx(expected, abs=0)
    err = rel_err(latents, ref)
    print(f"hunyuan15 i2v meanflow latents: max abs {(latents - ref).abs().max().item():.3e}, rel {err:.3e}")
    assert err < 1e-5
