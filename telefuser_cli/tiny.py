"""A tiny Wan2.1 T2V model in the official directory layout, with deterministic random weights.

The files have the real names and key layouts (DiT safetensors + config.json, UMT5 `.pth`, VAE
`.pth`, tokenizer folder), so they go through exactly the loading code real weights do. The weights
are random: the video is noise-like; the point is the whole path running on any CPU in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from telefuser_cli.loading.rife_arch import write_tiny_rife
from telefuser_cli.loading.tokenizer import write_tiny_tokenizer
from telefuser_cli.models.clip_vision import CLIPVisionConfig, WanCLIPVision
from telefuser_cli.models.umt5 import UMT5Config, UMT5Encoder
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
# Same structure as the released VAE (the key layout diffusers' converter expects), 12x thinner.
TINY_VAE = WanVAEConfig(dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2)

log = logging.getLogger(__name__)

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


def randomise(model: torch.nn.Module, generator: torch.Generator, bias_std: float = 0.02) -> None:
    """Every parameter random, nothing zero (the official inits zero some, which would hide bugs):
    matrices scaled by 1/sqrt(fan-in), norm scales near 1, biases small."""
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim >= 2 and not name.endswith("gamma"):
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            elif "norm" in name or name.endswith("gamma"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(bias_std * torch.randn(param.shape, generator=generator))


def _dit_config_json(config: WanDiTConfig) -> dict:
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
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(directory / DIT_FILE))
    (directory / "config.json").write_text(json.dumps(_dit_config_json(config), indent=2) + "\n")


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


def _write_wan21(directory: Path, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory, generator)
    _write_shared(directory, generator)


def _write_wan22_moe(directory: Path, seed: int) -> None:
    """Wan2.2 A14B layout: one DiT per expert, each in its own folder with its config.json."""
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory / "high_noise_model", generator)
    _write_dit(directory / "low_noise_model", generator)
    _write_shared(directory, generator)


def _write_wan21_i2v(directory: Path, seed: int) -> None:
    """Wan2.1 I2V layout: a DiT taking 16 + 20 channels and CLIP tokens, plus the CLIP image encoder."""
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory, generator, TINY_DIT_I2V_CLIP)
    clip = WanCLIPVision(TINY_CLIP)
    randomise(clip, generator)
    # The released file holds both CLIP towers (keys visual.* and textual.*); Wan uses the visual one.
    torch.save(clip.state_dict(), directory / CLIP_FILE)
    _write_shared(directory, generator)


def _write_wan22_moe_i2v(directory: Path, seed: int) -> None:
    """Wan2.2 A14B I2V layout: two experts taking 16 + 20 channels, no CLIP."""
    generator = torch.Generator().manual_seed(seed)
    _write_dit(directory / "high_noise_model", generator, TINY_DIT_I2V)
    _write_dit(directory / "low_noise_model", generator, TINY_DIT_I2V)
    _write_shared(directory, generator)


def _write_hunyuan15(sr: bool) -> Callable[[Path, int], None]:
    def write(directory: Path, seed: int) -> None:
        from telefuser_cli.hunyuan15_tiny import write_layout

        write_layout(directory, seed, sr=sr)

    return write


@dataclasses.dataclass(frozen=True)
class TinyMaker:
    write: Callable[[Path, int], None]
    marker: str  # the file whose presence means the model is complete (written last, or by the last step)


# auto_create name of a model entry -> how to write that tiny model.
MAKERS: dict[str, TinyMaker] = {
    "tiny_wan21": TinyMaker(_write_wan21, VAE_FILE),
    "tiny_wan22_moe": TinyMaker(_write_wan22_moe, VAE_FILE),
    "tiny_wan21_i2v": TinyMaker(_write_wan21_i2v, VAE_FILE),
    "tiny_wan22_moe_i2v": TinyMaker(_write_wan22_moe_i2v, VAE_FILE),
    "tiny_hunyuan15": TinyMaker(_write_hunyuan15(sr=False), "vae/config.json"),
    "tiny_hunyuan15_sr": TinyMaker(_write_hunyuan15(sr=True), "upsampler"),
}


def write_tiny(kind: str, directory: Path, seed: int = 0) -> Path:
    """Write tiny model `kind` into `directory` (created; must not hold another model's files).

    Files are written into a temporary sibling and moved into place, so an interrupted run
    leaves nothing half-written.
    """
    if kind not in MAKERS:
        raise ValueError(f"unknown tiny model {kind!r}; choose one of {', '.join(MAKERS)}")
    directory = Path(directory).expanduser()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; choose a new directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        MAKERS[kind].write(staging, seed)
        _default_modes(staging)
        if directory.exists():
            directory.rmdir()
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _default_modes(folder: Path) -> None:
    """Give every file and folder below `folder` (itself included) the mode a plain write gets under the
    umask, as the other cache files have: mkdtemp makes 0700 and safetensors writes 0600, which would
    lock the rest of a shared cache's users out."""
    probe = folder / ".mode-probe"
    probe.touch()
    file_mode = probe.stat().st_mode & 0o777  # 0o666 less the umask
    probe.unlink()
    probe.mkdir()
    folder_mode = probe.stat().st_mode & 0o777  # 0o777 less the umask
    probe.rmdir()
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(folder_mode if path.is_dir() else file_mode)
    folder.chmod(folder_mode)


def write_tiny_wan21(directory: Path, seed: int = 0) -> Path:
    return write_tiny("tiny_wan21", directory, seed)


def ensure_tiny(kind: str, directory: Path) -> Path:
    """Tiny model `kind` at `directory`, created on first use (safe if two jobs race to create it)."""
    directory = Path(directory).expanduser()
    if kind not in MAKERS:
        raise ValueError(f"unknown tiny model {kind!r}; choose one of {', '.join(MAKERS)}")
    marker = directory / MAKERS[kind].marker
    if marker.exists():
        if kind.startswith("tiny_wan") and not (directory / RIFE_FILE).is_file():
            write_tiny_rife(directory / RIFE_FILE, seed=0)  # made by a version without interpolation weights
        return directory
    log.info("creating the tiny model %s in %s (first use)", kind, directory)
    try:
        return write_tiny(kind, directory)
    except (FileExistsError, OSError):
        if marker.exists():  # another job finished it first
            return directory
        raise
