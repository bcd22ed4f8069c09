"""A whole tiny generation against diffusers' WanPipeline on the same weights, prompts and noise.

Our side runs the real CLI (`generate ... output.save_latents=true`); diffusers' side runs
`WanPipeline.__call__` with its own tokenizer call, UMT5 (transformers), transformer, guidance loop and
UniPC solver. diffusers' default UniPC grid is not the official one, so its scheduler is given the
official grid (linspace(0.999, 0) shifted, computed here from the formula) through `set_timesteps(sigmas=)`;
it then feeds the transformer integer timesteps, as the official code does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)

from telefuser_cli.loading import wan as wan_loading  # noqa: E402
from telefuser_cli.loading.checkpoint import read_state_dict  # noqa: E402
from telefuser_cli.loading.tokenizer import load_tokenizer  # noqa: E402
from telefuser_cli.loading.umt5_arch import official_to_hf_umt5  # noqa: E402
from telefuser_cli.tiny import DIT_FILE, T5_FILE, TINY_DIT, TINY_T5, TINY_VAE, TOKENIZER_DIR, VAE_FILE  # noqa: E402

STEPS, SHIFT, CFG, SEED, FRAMES, SIZE = 4, 5.0, 5.0, 3, 5, 32
PROMPT = "a red ball moving right"
NEGATIVE = "blurry, dark"


def official_unipc_sigmas(steps: int, shift: float) -> np.ndarray:
    sigmas = np.linspace(1 - 1 / 1000, 0, steps + 1)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class OfficialGridUniPC(UniPCMultistepScheduler):
    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        super().set_timesteps(sigmas=official_unipc_sigmas(num_inference_steps, SHIFT), device=device)


def diffusers_pipeline(root) -> WanPipeline:
    cfg = TINY_DIT
    transformer = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=cfg.eps,
    )  # fmt: skip
    transformer.load_state_dict(convert_wan_transformer_to_diffusers(load_file(root / DIT_FILE)), strict=True)
    t5 = TINY_T5
    text_encoder = transformers.UMT5EncoderModel(
        transformers.UMT5Config(
            vocab_size=t5.vocab_size, d_model=t5.dim, d_kv=t5.dim_attn // t5.num_heads, d_ff=t5.dim_ffn,
            num_layers=t5.num_layers, num_heads=t5.num_heads, relative_attention_num_buckets=t5.num_buckets,
            relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
            layer_norm_epsilon=t5.eps, is_encoder_decoder=False, use_cache=False,
        )  # fmt: skip
    )
    t5_weights = {k: v.float() for k, v in read_state_dict([root / T5_FILE]).items()}
    text_encoder.load_state_dict(official_to_hf_umt5(t5_weights), strict=True)
    vae = AutoencoderKLWan(
        base_dim=TINY_VAE.dim, z_dim=TINY_VAE.z_dim, dim_mult=list(TINY_VAE.dim_mult),
        num_res_blocks=TINY_VAE.num_res_blocks, attn_scales=list(TINY_VAE.attn_scales),
        temperal_downsample=list(TINY_VAE.temperal_downsample),
    )  # fmt: skip
    vae.load_state_dict(convert_wan_vae_to_diffusers(read_state_dict([root / VAE_FILE])), strict=True)
    scheduler = OfficialGridUniPC(
        num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True,
        flow_shift=1.0, predict_x0=True, solver_type="bh2", lower_order_final=True, final_sigmas_type="zero",
    )  # fmt: skip
    return WanPipeline(
        tokenizer=load_tokenizer(root / TOKENIZER_DIR), text_encoder=text_encoder.eval(),
        transformer=transformer.eval(), vae=vae.eval(), scheduler=scheduler,
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
