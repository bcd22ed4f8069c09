"""Tiny Wan models in the official directory layout, with deterministic random weights.

The files have the real names and key layouts (DiT safetensors + config.json, UMT5 `.pth`, VAE
`.pth`, tokenizer folder, CLIP `.pth`, RIFE `flownet.pkl`), so they go through exactly the loading code
real weights do. The weights are random: the video is noise-like; the point is the whole path running on
any CPU in seconds. (The trained tiny model that ships in telefuser_cli/assets/tiny_wan21 is a plain
folder of the same layout, written by tools/train_tiny.py; it needs nothing from here.)

Makers: ``tiny_wan21`` (T2V), ``tiny_wan21_i2v`` (with CLIP), ``tiny_wan21_flf2v`` (first and last frame),
``tiny_wan22_moe`` (A14B experts; the distilled entry binds the same weights), ``tiny_wan22_moe_i2v`` and
``tiny_wan22_ti2v`` (TI2V-5B: a sharded DiT on 48 channels, the Wan2.2 VAE).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save_file

from telefuser_cli.families.tiny import randomise, register, save_weights, write_json, write_tiny
from telefuser_cli.loading.rife_arch import write_tiny_rife
from telefuser_cli.loading.tokenizer import write_tiny_tokenizer
from telefuser_cli.models.clip_vision import CLIPVisionConfig, WanCLIPVision
from telefuser_cli.models.umt5 import UMT5Config, UMT5Encoder
from telefuser_cli.models.wan22_vae import Wan22VAE, Wan22VAEConfig
from telefuser_cli.models.wan_dit import WanDiT, WanDiTConfig
from telefuser_cli.models.wan_vae import WanVAE, WanVAEConfig

TINY_T5 = UMT5Config(vocab_size=256, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2)
TINY_DIT = WanDiTConfig(
    model_type="t2v", in_dim=16, dim=128, ffn_dim=256, text_dim=64, out_dim=16, num_heads=4, num_layers=2
)
TINY_DIT_I2V = dataclasses.replace(TINY_DIT, model_type="i2v", in_dim=36)
# CLIP must keep 224 px / patch 14 (257 tokens: the DiT's image embedding expects them); 80 = one head.
TINY_CLIP = CLIPVisionConfig(dim=80, num_heads=1, num_layers=2, out_dim=32)
TINY_DIT_I2V_CLIP = dataclasses.replace(TINY_DIT_I2V, image_dim=TINY_CLIP.dim)
TINY_DIT_FLF2V = dataclasses.replace(TINY_DIT_I2V_CLIP, model_type="flf2v")
# Same structure as the released VAE (the key layout diffusers' converter expects), 12x thinner.
TINY_VAE = WanVAEConfig(dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2)

DIT_FILE = "diffusion_pytorch_model.safetensors"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
VAE_FILE = "Wan2.1_VAE.pth"
RIFE_FILE = "flownet.pkl"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
TOKENIZER_DIR = "google/umt5-xxl"

_WORDS = """a an the of and with in on at to from over under into through across around near
red green blue yellow orange purple pink white black gray brown golden silver
ball square triangle circle cube box car cat dog bird fish horse person child woman man tree flower
river sea ocean wave beach mountain sky cloud sun moon star city street road house room forest field
moving move moves left right up down running walking flying swimming jumping dancing rolling falling
slowly quickly fast slow big small tiny large bright dark shiny soft
camera view close shot scene light night day morning evening rain snow fire water
is are video frame background foreground plain simple surfing riding playing
""".split()


def dit_config_json(config: WanDiTConfig) -> dict:
    """The official config.json (it omits text_dim, which loaders take from the shapes)."""
    return {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "dim": config.dim,
        "eps": config.eps,
        "ffn_dim": config.ffn_dim,
        "freq_dim": config.freq_dim,
        "in_dim": config.in_dim,
        "model_type": config.model_type,
        "num_heads": config.num_heads,
        "num_layers": config.num_layers,
        "out_dim": config.out_dim,
        "text_len": config.text_len,
    }


def _write_dit(directory: Path, generator: torch.Generator, config: WanDiTConfig = TINY_DIT) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    dit = WanDiT(config)
    randomise(dit, generator)
    save_weights(dit, directory / DIT_FILE)
    write_json(directory / "config.json", dit_config_json(config))


def _write_shared(directory: Path, generator: torch.Generator) -> None:
    """Text encoder, tokenizer and VAE: shared by Wan2.1 and the Wan2.2 A14B experts."""
    t5 = UMT5Encoder(TINY_T5)
    randomise(t5, generator)
    # The released file is bf16; so is ours, to exercise the same casting.
    torch.save({k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}, directory / T5_FILE)

    vae = WanVAE(TINY_VAE)
    randomise(vae, generator)
    torch.save(vae.state_dict(), directory / VAE_FILE)

    write_tiny_tokenizer(directory / TOKENIZER_DIR, _WORDS[: TINY_T5.vocab_size - 3])
    # RIFE interpolation weights, so the demo can show 16 -> 32 fps.
    write_tiny_rife(directory / RIFE_FILE, seed=int(torch.randint(2**31, (1,), generator=generator)))


def _add_rife(directory: Path) -> None:
    """A folder cached before the makers wrote interpolation weights gets its own."""
    if not (directory / RIFE_FILE).is_file():
        write_tiny_rife(directory / RIFE_FILE, seed=0)


@register("tiny_wan21", marker=VAE_FILE, update=_add_rife)
def _write_wan21(directory: Path, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory, generator)
    _write_shared(directory, generator)


@register("tiny_wan22_moe", marker=VAE_FILE, update=_add_rife)
def _write_wan22_moe(directory: Path, seed: int) -> None:
    """Wan2.2 A14B layout: one DiT per expert, each in its own folder with its config.json."""
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory / "high_noise_model", generator)
    _write_dit(directory / "low_noise_model", generator)
    _write_shared(directory, generator)


def _write_clip(directory: Path, generator: torch.Generator) -> None:
    clip = WanCLIPVision(TINY_CLIP)
    randomise(clip, generator)
    # The released file holds both CLIP towers (keys visual.* and textual.*); Wan uses the visual one.
    torch.save(clip.state_dict(), directory / CLIP_FILE)


@register("tiny_wan21_i2v", marker=VAE_FILE, update=_add_rife)
def _write_wan21_i2v(directory: Path, seed: int) -> None:
    """Wan2.1 I2V layout: a DiT taking 16 + 20 channels and CLIP tokens, plus the CLIP image encoder."""
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory, generator, TINY_DIT_I2V_CLIP)
    _write_clip(directory, generator)
    _write_shared(directory, generator)


@register("tiny_wan21_flf2v", marker=VAE_FILE, update=_add_rife)
def _write_wan21_flf2v(directory: Path, seed: int) -> None:
    """Wan2.1 FLF2V layout: the I2V layout with ``model_type`` flf2v and ``img_emb.emb_pos`` in the DiT."""
    generator = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    dit = WanDiT(TINY_DIT_FLF2V)
    randomise(dit, generator)
    # randomise scales it by 1/sqrt(514 * width), which would hide it next to the CLIP tokens: unit scale
    # makes a run that drops or misplaces the position embedding visibly different.
    with torch.no_grad():
        dit.img_emb.emb_pos.normal_(generator=generator)
    save_weights(dit, directory / DIT_FILE)
    write_json(directory / "config.json", dit_config_json(TINY_DIT_FLF2V))
    _write_clip(directory, generator)
    _write_shared(directory, generator)


@register("tiny_wan22_moe_i2v", marker=VAE_FILE, update=_add_rife)
def _write_wan22_moe_i2v(directory: Path, seed: int) -> None:
    """Wan2.2 A14B I2V layout: two experts taking 16 + 20 channels, no CLIP."""
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory / "high_noise_model", generator, TINY_DIT_I2V)
    _write_dit(directory / "low_noise_model", generator, TINY_DIT_I2V)
    _write_shared(directory, generator)


# The released Wan2.2 VAE's structure (48 latent channels, 2x2 patch, 4 levels) at about 1/20 of its widths.
TINY_VAE22 = Wan22VAEConfig(dim=8, decoder_dim=12)
VAE22_FILE = "Wan2.2_VAE.pth"


def write_wan22_vae(directory: Path, generator: torch.Generator) -> None:
    """A tiny ``Wan2.2_VAE.pth`` in the official key layout (for a TI2V-5B folder)."""
    vae = Wan22VAE(TINY_VAE22)
    randomise(vae, generator)
    torch.save(vae.state_dict(), directory / VAE22_FILE)


TINY_DIT_TI2V = dataclasses.replace(TINY_DIT, model_type="ti2v", in_dim=48, out_dim=48)
DIT_SHARDS = 2  # the released TI2V-5B DiT is sharded; two shards exercise the index the same way


def _write_sharded_dit(directory: Path, generator: torch.Generator, config: WanDiTConfig) -> None:
    """``diffusion_pytorch_model-0000N-of-0000M.safetensors`` + the index naming each key's shard."""
    dit = WanDiT(config)
    randomise(dit, generator)
    state = {k: v.contiguous() for k, v in dit.state_dict().items()}
    keys = sorted(state)
    weight_map = {}
    for index in range(DIT_SHARDS):
        name = f"diffusion_pytorch_model-{index + 1:05d}-of-{DIT_SHARDS:05d}.safetensors"
        part = keys[index::DIT_SHARDS]
        save_file({k: state[k] for k in part}, str(directory / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    write_json(
        directory / f"{DIT_FILE}.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )
    write_json(directory / "config.json", dit_config_json(config))


@register("tiny_wan22_ti2v", marker=VAE22_FILE)
def _write_wan22_ti2v(directory: Path, seed: int) -> None:
    """Wan2.2 TI2V-5B layout: a sharded DiT on 48 latent channels, UMT5, the Wan2.2 VAE (written last: the marker)."""
    generator = torch.Generator().manual_seed(seed)
    _write_sharded_dit(directory, generator, TINY_DIT_TI2V)
    t5 = UMT5Encoder(TINY_T5)
    randomise(t5, generator)
    torch.save({k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}, directory / T5_FILE)
    write_tiny_tokenizer(directory / TOKENIZER_DIR, _WORDS[: TINY_T5.vocab_size - 3])
    # RIFE weights as every tiny Wan folder has (the tiny pipelines name them for frame interpolation).
    write_tiny_rife(directory / RIFE_FILE, seed=int(torch.randint(2**31, (1,), generator=generator)))
    write_wan22_vae(directory, generator)


def write_tiny_wan21(directory: Path, seed: int = 0) -> Path:
    return write_tiny("tiny_wan21", directory, seed)
