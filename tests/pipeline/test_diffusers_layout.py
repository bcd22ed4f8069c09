"""A diffusers `WanPipeline` directory (transformer/, text_encoder/, vae/, tokenizer/) generates the same
latents (to round-off) as the official layout it was converted from."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import run_cli
from safetensors.torch import load_file, save_file

single_file = pytest.importorskip("diffusers.loaders.single_file_utils")

from telefuser_cli.families.wan.tiny import DIT_FILE, T5_FILE, TINY_DIT, TOKENIZER_DIR, VAE_FILE  # noqa: E402
from telefuser_cli.loading.checkpoint import read_state_dict  # noqa: E402
from telefuser_cli.loading.umt5_arch import official_to_hf_umt5  # noqa: E402


def write_diffusers_layout(official, target):
    (target / "transformer").mkdir(parents=True)
    dit = single_file.convert_wan_transformer_to_diffusers(load_file(official / DIT_FILE))
    save_file(dit, target / "transformer" / "diffusion_pytorch_model.safetensors")
    config = {
        "_class_name": "WanTransformer3DModel", "patch_size": list(TINY_DIT.patch_size),
        "num_attention_heads": TINY_DIT.num_heads, "attention_head_dim": TINY_DIT.head_dim,
        "in_channels": TINY_DIT.in_dim, "out_channels": TINY_DIT.out_dim, "text_dim": TINY_DIT.text_dim,
        "freq_dim": TINY_DIT.freq_dim, "ffn_dim": TINY_DIT.ffn_dim, "num_layers": TINY_DIT.num_layers,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": TINY_DIT.eps,
    }  # fmt: skip
    (target / "transformer" / "config.json").write_text(json.dumps(config))
    (target / "text_encoder").mkdir()
    t5 = official_to_hf_umt5(read_state_dict([official / T5_FILE]))
    save_file(
        {k: v.clone().contiguous() for k, v in t5.items()}, target / "text_encoder" / "model.safetensors"
    )
    (target / "vae").mkdir()
    vae = single_file.convert_wan_vae_to_diffusers(read_state_dict([official / VAE_FILE]))
    save_file(
        {k: v.contiguous() for k, v in vae.items()}, target / "vae" / "diffusion_pytorch_model.safetensors"
    )
    shutil.copytree(official / TOKENIZER_DIR, target / "tokenizer")
    (target / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))


def test_diffusers_directory_gives_the_same_latents(tmp_path, tiny_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    converted = tmp_path / "diffusers"
    write_diffusers_layout(tiny_root, converted)
    latents = []
    for name, root in (("official", tiny_root), ("diffusers", converted)):
        out = tmp_path / name
        result = run_cli(
            "generate", "recipe=tiny", f"model.root={root}", "prompt=a red ball", "seed=4",
            "pipeline.num_inference_steps=3", "pipeline.num_frames=5", "resolution=32x32",
            "output.save_latents=true", f"hydra.run.dir={out}",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        latents.append(load_file(out / "latents.safetensors")["latents"])
    # Same weights, same config; CPU kernels may still round differently for differently aligned
    # memory-mapped tensors, so equality is to round-off rather than bitwise.
    error = ((latents[0] - latents[1]).abs().max() / latents[0].abs().max()).item()
    assert error < 1e-5, error
