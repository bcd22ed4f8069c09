"""A whole tiny generation against diffusers' WanPipeline on the same weights, prompts and noise.

Our side runs the real CLI (`generate ... output.save_latents=true`); diffusers' side runs
`WanPipeline.__call__` with its own tokenizer call, UMT5 (transformers), transformer, guidance loop and
UniPC solver. diffusers' default UniPC grid is not the official one, so its scheduler is given the
official grid (linspace(0.999, 0) shifted, computed here from the formula) through `set_timesteps(sigmas=)`;
it then feeds the transformer integer timesteps, as the official code does.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)

from telefuser_cli.families.wan.tiny import (  # noqa: E402
    DIT_FILE,
    T5_FILE,
    TINY_DIT,
    TINY_T5,
    TINY_VAE,
    TOKENIZER_DIR,
    VAE_FILE,
)
from telefuser_cli.loading import wan as wan_loading  # noqa: E402
from telefuser_cli.loading.checkpoint import read_state_dict  # noqa: E402
from telefuser_cli.loading.tokenizer import load_tokenizer  # noqa: E402
from telefuser_cli.loading.umt5_arch import official_to_hf_umt5  # noqa: E402

STEPS, SHIFT, CFG, SEED, FRAMES, SIZE = 4, 5.0, 5.0, 3, 5, 32
PROMPT = "a red ball moving right"
NEGATIVE = "blurry, dark"


def official_unipc_sigmas(steps: int, shift: float) -> np.ndarray:
    sigmas = np.linspace(1 - 1 / 1000, 0, steps + 1)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class OfficialGridUniPC(UniPCMultistepScheduler):
    shift = SHIFT

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        super().set_timesteps(sigmas=official_unipc_sigmas(num_inference_steps, self.shift), device=device)


def diffusers_transformer(path, state_dict=None) -> WanTransformer3DModel:
    """diffusers' transformer on the tiny official DiT at ``path`` (or the official ``state_dict`` given)."""
    state_dict = load_file(path) if state_dict is None else state_dict
    in_dim, out_dim = state_dict["patch_embedding.weight"].shape[1], state_dict["head.head.weight"].shape[0]
    cfg = dataclasses.replace(TINY_DIT, in_dim=in_dim, out_dim=out_dim // math.prod(TINY_DIT.patch_size))
    transformer = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=cfg.eps,
    )  # fmt: skip
    transformer.load_state_dict(convert_wan_transformer_to_diffusers(dict(state_dict)), strict=True)
    return transformer.eval()


def diffusers_pipeline(root, scheduler=None, moe=False, boundary=None, transformer=None, vae=None,
                       expand_timesteps=False) -> WanPipeline:  # fmt: skip
    """diffusers' WanPipeline on a tiny folder; ``transformer`` and ``vae`` replace those read from it."""
    if transformer is not None:
        transformer_2 = None
    elif moe:
        transformer = diffusers_transformer(root / "high_noise_model" / DIT_FILE)
        transformer_2 = diffusers_transformer(root / "low_noise_model" / DIT_FILE)
    else:
        transformer, transformer_2 = diffusers_transformer(root / DIT_FILE), None
    t5 = TINY_T5
    text_encoder = transformers.UMT5EncoderModel(
        transformers.UMT5Config(
            vocab_size=t5.vocab_size,
            d_model=t5.dim,
            d_kv=t5.dim_attn // t5.num_heads,
            d_ff=t5.dim_ffn,
            num_layers=t5.num_layers,
            num_heads=t5.num_heads,
            relative_attention_num_buckets=t5.num_buckets,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            layer_norm_epsilon=t5.eps,
            is_encoder_decoder=False,
            use_cache=False,
        )  # fmt: skip
    )
    t5_weights = {k: v.float() for k, v in read_state_dict([root / T5_FILE]).items()}
    text_encoder.load_state_dict(official_to_hf_umt5(t5_weights), strict=True)
    if vae is None:
        vae = AutoencoderKLWan(
            base_dim=TINY_VAE.dim, z_dim=TINY_VAE.z_dim, dim_mult=list(TINY_VAE.dim_mult),
            num_res_blocks=TINY_VAE.num_res_blocks, attn_scales=list(TINY_VAE.attn_scales),
            temperal_downsample=list(TINY_VAE.temperal_downsample),
        )  # fmt: skip
        vae.load_state_dict(convert_wan_vae_to_diffusers(read_state_dict([root / VAE_FILE])), strict=True)
    scheduler = scheduler or OfficialGridUniPC(
        num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=1.0, predict_x0=True, solver_type="bh2", lower_order_final=True, final_sigmas_type="zero",
    )  # fmt: skip
    return WanPipeline(
        tokenizer=load_tokenizer(root / TOKENIZER_DIR), text_encoder=text_encoder.eval(),
        transformer=transformer, transformer_2=transformer_2, vae=vae.eval(), scheduler=scheduler,
        boundary_ratio=boundary, expand_timesteps=expand_timesteps,
    )  # fmt: skip


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def test_tiny_generation_matches_diffusers(tmp_path, tiny_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ours"
    result = run_cli(
        "generate", "recipe=tiny", f"model.root={tiny_root}", f"prompt={PROMPT}", f"pipeline.negative_prompt={NEGATIVE}",
        f"seed={SEED}", f"pipeline.num_inference_steps={STEPS}", f"pipeline.sigma_shift={SHIFT}",
        f"pipeline.cfg_scale={CFG}", f"pipeline.num_frames={FRAMES}", f"resolution={SIZE}x{SIZE}",
        "pipeline.sample_solver=unipc", "output.save_latents=true", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    ours = load_file(out / "latents.safetensors")["latents"][None]

    noise = torch.randn((1, 16, (FRAMES - 1) // 4 + 1, SIZE // 8, SIZE // 8),
                        generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    pipe = diffusers_pipeline(tiny_root)
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES,
            num_inference_steps=STEPS, guidance_scale=CFG, latents=noise.clone(), output_type="latent",
            max_sequence_length=512,
        ).frames  # fmt: skip
    assert pipe.scheduler.timesteps.tolist() == [999, 937, 833, 624]
    error = relative_error(ours, reference)
    print(f"final latents: max relative error {error:.2e}")
    assert error < 1e-4
    # Guidance matters here: the same run without it lands elsewhere, so the comparison has teeth.
    assert relative_error(noise, reference) > 1e-2

    # Decode the same latents with both VAEs (diffusers de-normalises with its config's mean/std).
    vae = wan_loading.load_vae(
        wan_loading.locate(tiny_root, "vae", VAE_FILE), dtype=torch.float32, device=torch.device("cpu")
    )
    with torch.no_grad():
        ours_video = vae.decode(reference)
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, 16, 1, 1, 1)
        std = torch.tensor(pipe.vae.config.latents_std).view(1, 16, 1, 1, 1)
        reference_video = pipe.vae.decode(reference * std + mean).sample.clamp(-1, 1)
    video_error = relative_error(ours_video, reference_video)
    print(f"decoded video: max relative error {video_error:.2e}")
    assert video_error < 1e-4


def _noise(frames, size, seed):
    shape = (1, 16, (frames - 1) // 4 + 1, size // 8, size // 8)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _ours(tmp_path, *overrides):
    out = tmp_path / "ours"
    result = run_cli("generate", *overrides, "output.save_latents=true", f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.stderr
    return load_file(out / "latents.safetensors")["latents"][None], json.loads(
        (out / "config.json").read_text()
    )


@pytest.fixture(scope="module")
def moe_root(tmp_path_factory):
    from telefuser_cli.families.tiny import write_tiny

    return write_tiny("tiny_wan22_moe", tmp_path_factory.mktemp("moe") / "tiny_wan22_moe", seed=1)


def test_moe_generation_matches_diffusers_two_transformers(tmp_path, moe_root, monkeypatch):
    """Wan2.2 A14B rule: the high-noise expert (cfg 4) while t >= 875, then the low-noise one (cfg 3)."""
    monkeypatch.chdir(tmp_path)
    steps, shift, seed = 6, 12.0, 5
    ours, document = _ours(
        tmp_path, "recipe=tiny_moe", f"model.root={moe_root}", f"prompt={PROMPT}",
        f"pipeline.negative_prompt={NEGATIVE}", f"seed={seed}", f"pipeline.num_inference_steps={steps}",
        f"pipeline.sigma_shift={shift}", f"pipeline.num_frames={FRAMES}", f"resolution={SIZE}x{SIZE}",
    )  # fmt: skip
    counts = document["run"]["expert_steps"]
    assert counts["high_noise"] > 0 and counts["low_noise"] > 0  # the switch happens inside the run
    scheduler = OfficialGridUniPC(
        num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=1.0, predict_x0=True, solver_type="bh2", lower_order_final=True, final_sigmas_type="zero",
    )  # fmt: skip
    scheduler.shift = shift
    pipe = diffusers_pipeline(moe_root, scheduler=scheduler, moe=True, boundary=0.875)
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES,
            num_inference_steps=steps, guidance_scale=4.0, guidance_scale_2=3.0,
            latents=_noise(FRAMES, SIZE, seed), output_type="latent", max_sequence_length=512,
        ).frames  # fmt: skip
    high = sum(t >= 875 for t in pipe.scheduler.timesteps.tolist())
    assert high == counts["high_noise"]
    error = relative_error(ours, reference)
    print(f"MoE final latents: max relative error {error:.2e}")
    assert error < 1e-4


def test_distilled_generation_matches_diffusers_euler_without_guidance(tmp_path, moe_root, monkeypatch):
    """4 Euler steps over the shifted [1000, 750, 500, 250] grid, cfg 1 (no negative prompt at all)."""
    monkeypatch.chdir(tmp_path)
    seed = 9
    ours, document = _ours(
        tmp_path, "recipe=tiny_distill", f"model.root={moe_root}", f"prompt={PROMPT}", f"seed={seed}",
        "pipeline.timesteps=[1000,750,500,250]", f"pipeline.num_frames={FRAMES}", f"resolution={SIZE}x{SIZE}",
    )  # fmt: skip
    sigmas = document["sampling"]["timesteps"]
    assert sigmas == [1000.0, 937.5, 833.3333, 625.0]
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)

    def official_grid(num_inference_steps=None, device=None, **kwargs):
        t = np.array([1000, 750, 500, 250]) / 1000
        FlowMatchEulerDiscreteScheduler.set_timesteps(scheduler, sigmas=5 * t / (1 + 4 * t), device=device)

    scheduler.set_timesteps = official_grid
    pipe = diffusers_pipeline(moe_root, scheduler=scheduler, moe=True, boundary=0.875)
    with torch.no_grad():
        reference = pipe(
            prompt=PROMPT, height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=4,
            guidance_scale=1.0, guidance_scale_2=1.0, latents=_noise(FRAMES, SIZE, seed), output_type="latent",
            max_sequence_length=512,
        ).frames  # fmt: skip
    error = relative_error(ours, reference)
    print(f"distilled final latents: max relative error {error:.2e}")
    assert error < 1e-4


@pytest.fixture(scope="module")
def moe_i2v_root(tmp_path_factory):
    from telefuser_cli.families.tiny import write_tiny

    return write_tiny("tiny_wan22_moe_i2v", tmp_path_factory.mktemp("moe_i2v") / "tiny_wan22_moe_i2v", seed=2)


def test_moe_image_to_video_matches_diffusers(tmp_path, moe_i2v_root, monkeypatch):
    """Wan2.2 A14B I2V: image condition (mask + VAE latents) beside the noise, experts switching at 0.9.

    The image is already at the output size, so diffusers' lanczos resize and the official bicubic one
    both leave it unchanged.
    """
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    width, height, steps, shift, seed = 80, 48, 6, 5.0, 13
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 3, y * 5, (x + y) % 255], -1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "input.png")
    ours, document = _ours(
        tmp_path, "model=tiny_wan22_moe_i2v", f"model.root={moe_i2v_root}", f"prompt={PROMPT}",
        f"pipeline.negative_prompt={NEGATIVE}", f"seed={seed}", f"user.input_image={tmp_path / 'input.png'}",
        f"pipeline.num_inference_steps={steps}", f"pipeline.sigma_shift={shift}", f"pipeline.num_frames={FRAMES}",
        f"resolution={width}x{height}",
    )  # fmt: skip
    assert document["run"]["size_written"] == [width, height]
    base = diffusers_pipeline(moe_i2v_root, moe=True, boundary=0.9)
    scheduler = OfficialGridUniPC.from_config(base.scheduler.config)
    scheduler.shift = shift
    for transformer in (base.transformer, base.transformer_2):  # the i2v experts take 36 channels
        assert transformer.config.in_channels == 36
    pipe = WanImageToVideoPipeline(
        tokenizer=base.tokenizer, text_encoder=base.text_encoder, transformer=base.transformer,
        transformer_2=base.transformer_2, vae=base.vae, scheduler=scheduler, boundary_ratio=0.9,
    )  # fmt: skip
    noise = torch.randn((1, 16, (FRAMES - 1) // 4 + 1, height // 8, width // 8),
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    with torch.no_grad():
        reference = pipe(
            image=Image.open(tmp_path / "input.png"), prompt=PROMPT, negative_prompt=NEGATIVE, height=height,
            width=width, num_frames=FRAMES, num_inference_steps=steps, guidance_scale=3.5, guidance_scale_2=3.5,
            latents=noise, output_type="latent", max_sequence_length=512,
        ).frames  # fmt: skip
    error = relative_error(ours, reference)
    print(f"MoE i2v final latents: max relative error {error:.2e}")
    assert error < 1e-4
