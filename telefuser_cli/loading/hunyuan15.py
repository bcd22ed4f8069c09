"""Loading the HunyuanVideo 1.5 components from the official directory layout (Tencent-Hunyuan/HunyuanVideo-1.5):

    transformer/<version>/{config.json, diffusion_pytorch_model.safetensors}   e.g. 480p_t2v, 720p_sr_distilled
    vae/{config.json, diffusion_pytorch_model.safetensors}
    upsampler/<version>/{config.json, diffusion_pytorch_model.safetensors}      e.g. 720p_sr_distilled
    text_encoder/llm/                   Qwen2.5-VL-7B-Instruct (transformers folder, tokenizer included)
    text_encoder/byt5-small/            google/byt5-small (config + tokenizer files)
    text_encoder/Glyph-SDXL-v2/{checkpoints/byt5_model.pt, assets/color_idx.json,
                                assets/multilingual_10-lang_idx.json}
    vision_encoder/siglip/{image_encoder/, feature_extractor/}   i2v: SigLIP (FLUX.1-Redux-dev's folders)
    scheduler/scheduler_config.json

DiT, VAE and upsampler go through :func:`build_module` (meta device, strict keys, shapes checked); their
architecture comes from the shapes plus the config.json beside them. The two text encoders are transformers
models read offline (``local_files_only=True``), as is the SigLIP image encoder (safetensors only). Every mistake a user can cause raises UserError naming the path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from telefuser_cli.errors import UserError
from telefuser_cli.loading.checkpoint import build_module, read_shapes, read_state_dict, resolve_files
from telefuser_cli.loading.fp8 import detect_quant, read_dtypes
from telefuser_cli.loading.hunyuan15_arch import infer_dit_config, infer_vae_config
from telefuser_cli.loading.quiet_transformers import load_pretrained
from telefuser_cli.loading.shapes import shape_of
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.models.hunyuan15_upsampler import (
    SRTo720pConfig,
    SRTo720pUpsampler,
    SRTo1080pConfig,
    SRTo1080pUpsampler,
    Upsampler,
)
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE

WEIGHTS = "diffusion_pytorch_model*.safetensors"
LLM_DIR = "text_encoder/llm"
BYT5_DIR = "text_encoder/byt5-small"
GLYPH_DIR = "text_encoder/Glyph-SDXL-v2"
GLYPH_CKPT = "checkpoints/byt5_model.pt"
GLYPH_COLORS = "assets/color_idx.json"
GLYPH_FONTS = "assets/multilingual_10-lang_idx.json"
SIGLIP_DIR = "vision_encoder/siglip"
SIGLIP_MODEL = "image_encoder"
SIGLIP_PROCESSOR = "feature_extractor"
_GLYPH_PREFIX = "module.text_tower.encoder."  # official: keys of a training checkpoint's state_dict


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what}: {path} is missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{what}: {path} is not readable JSON ({error})") from None


def _optional_json(path: Path, what: str) -> dict | None:
    return _read_json(path, what) if path.is_file() else None


@dataclass(frozen=True)
class DiTFacts:
    """What the weights (and their config.json) say about one transformer variant."""

    meanflow: bool  # `time_r_in` present (step-distilled): the DiT also takes timestep_r
    super_resolution: bool  # input = latents + [cond, mask] + [lq latents, mask]: 3*C + 2 channels
    vision: bool  # `vision_in` present: the DiT can read SigLIP image tokens (i2v)
    resolution: str | None  # config.json ideal_resolution ("480p", "720p"), when present
    task: str | None  # config.json ideal_task ("t2v", "i2v"), when present
    quant: str = "bf16"  # storage precision of the weights: "fp8", "bf16", "fp16" or "fp32"


def dit_facts(root: Path, version: str) -> DiTFacts:
    """Facts of ``transformer/<version>`` read from shapes and config.json, without loading tensors."""
    folder = Path(root) / "transformer" / version
    files = resolve_files(Path(root), f"transformer/{version}/{WEIGHTS}", f"transformer {version}")
    shapes = read_shapes(files)
    config_json = _optional_json(folder / "config.json", f"transformer {version}")
    try:
        cfg = infer_dit_config(shapes, config_json)
    except ValueError as error:
        raise UserError(f"{folder}: {error}") from None
    json_ = config_json or {}
    return DiTFacts(
        meanflow=cfg.use_meanflow,
        super_resolution=cfg.patch_in_channels == 3 * cfg.out_channels + 2,
        vision=cfg.vision_states_dim is not None,
        resolution=json_.get("ideal_resolution"),
        task=json_.get("ideal_task"),
        quant=detect_quant(read_dtypes(files)),
    )


def load_dit(
    root: Path, version: str, dtype: torch.dtype, device: torch.device, attn_backend: str = "TORCH_SDPA"
) -> Hunyuan15DiT:
    """``transformer/<version>`` -> Hunyuan15DiT in ``dtype`` (small weights kept float32, see ``keep_fp32``)."""
    files = resolve_files(Path(root), f"transformer/{version}/{WEIGHTS}", f"transformer {version}")
    config_json = _optional_json(files[0].parent / "config.json", f"transformer {version}")
    state = read_state_dict(files)
    try:
        cfg = infer_dit_config(state, config_json)
    except ValueError as error:
        raise UserError(f"{files[0].parent}: {error}") from None
    return build_module(
        lambda: Hunyuan15DiT(cfg, attn_backend=attn_backend), state, dtype=dtype, device=device,
        source=str(files[0].parent), keep_fp32=Hunyuan15DiT.keep_fp32,
    )  # fmt: skip


def load_vae(root: Path, dtype: torch.dtype, device: torch.device, folder: str = "vae") -> Hunyuan15VAE:
    files = resolve_files(Path(root), f"{folder}/{WEIGHTS}", "vae")
    config_json = _optional_json(files[0].parent / "config.json", "vae")
    state = read_state_dict(files)
    try:
        cfg = infer_vae_config(state, config_json)
    except ValueError as error:
        raise UserError(f"{files[0].parent}: {error}") from None
    return build_module(
        lambda: Hunyuan15VAE(cfg), state, dtype=dtype, device=device, source=str(files[0].parent)
    )


def infer_upsampler_config(
    shapes: dict[str, Any], config_json: dict | None
) -> SRTo720pConfig | SRTo1080pConfig:
    """The upsampler class and its widths from the key layout; ``global_residual`` from config.json."""
    config_json = config_json or {}

    def shape(key: str) -> tuple[int, ...]:
        return shape_of(shapes, key, 5, "a HunyuanVideo 1.5 upsampler checkpoint")  # CausalConv3d weights

    if "in_conv.conv.weight" in shapes:
        hidden, c_in = shape("in_conv.conv.weight")[:2]
        blocks = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
        return SRTo720pConfig(
            in_channels=c_in, out_channels=shape("out_conv.conv.weight")[0], hidden_channels=hidden,
            num_blocks=blocks, global_residual=bool(config_json.get("global_residual", False)),
        )  # fmt: skip
    if "conv_in.conv.weight" in shapes:
        levels = sorted({int(k.split(".")[1]) for k in shapes if k.startswith("up.")})
        widths = tuple(shape(f"up.{i}.block.0.conv1.conv.weight")[0] for i in levels)
        per_level = len({k.split(".")[3] for k in shapes if k.startswith("up.0.block.")})
        return SRTo1080pConfig(
            z_channels=shape("conv_in.conv.weight")[1], out_channels=shape("conv_out.conv.weight")[0],
            block_out_channels=widths, num_res_blocks=per_level - 1,
            is_residual=bool(config_json.get("is_residual", False)),
        )  # fmt: skip
    raise ValueError(
        "neither in_conv.conv.weight (SRTo720pUpsampler) nor conv_in.conv.weight (SRTo1080pUpsampler)"
    )


def load_upsampler(
    root: Path, version: str, device: torch.device, dtype: torch.dtype = torch.float32
) -> Upsampler:
    """``upsampler/<version>`` -> the SR latent upsampler (float32 by default, as the official pipeline runs it)."""
    files = resolve_files(Path(root), f"upsampler/{version}/{WEIGHTS}", f"upsampler {version}")
    state = read_state_dict(files)
    try:
        cfg = infer_upsampler_config(state, _optional_json(files[0].parent / "config.json", "upsampler"))
    except ValueError as error:
        raise UserError(f"{files[0].parent}: not an upsampler checkpoint ({error})") from None
    cls = SRTo720pUpsampler if isinstance(cfg, SRTo720pConfig) else SRTo1080pUpsampler
    return build_module(lambda: cls(cfg), state, dtype=dtype, device=device, source=str(files[0].parent))


def _folder(root: Path, sub: str, what: str) -> Path:
    path = Path(root) / sub
    if not (path / "config.json").is_file():
        raise UserError(f"{what}: {path}/config.json is missing (expected the official {sub}/ folder)")
    return path


def load_text_encoder(root: Path, dtype: torch.dtype, device: torch.device, folder: str = LLM_DIR):
    """``folder`` (official ``text_encoder/llm``) -> (Qwen2.5-VL language model, tokenizer), offline.

    The template's crop start belongs with the template: the family finds it from the tokenizer.

    The official encoder loads the whole Qwen2.5-VL model and keeps its ``language_model``; so do we (the vision
    tower is dropped right after loading).
    """
    from transformers import AutoModel, AutoTokenizer

    path = _folder(root, folder, "text encoder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, padding_side="right")
        # the official encoder keeps the language model: Qwen2.5-VL's lm_head is never used
        model = load_pretrained(AutoModel, path, "text encoder", expected_unused=("lm_head.",), dtype=dtype)
    except (OSError, ValueError) as error:
        raise UserError(f"text encoder: cannot load {path} offline: {error}") from None
    llm = getattr(model, "language_model", None)
    if llm is None:
        raise UserError(f"text encoder: {path} is a {type(model).__name__}, not a Qwen2.5-VL model")
    return llm.to(device).eval().requires_grad_(False), tokenizer


def glyph_special_tokens(colors: dict[str, int], fonts: dict[str, int]) -> list[str]:
    """Official Glyph-SDXL-v2 tokens added to the ByT5 tokenizer: ``<color-i>`` then ``<xx-font-i>``."""
    return [f"<color-{i}>" for i in range(len(colors))] + [
        f"<{code[:2]}-font-{fonts[code]}>" for code in fonts
    ]


def load_byt5(root: Path, dtype: torch.dtype, device: torch.device, glyph_folder: str = GLYPH_DIR):
    """``text_encoder/byt5-small`` + ``glyph_folder`` (official ``text_encoder/Glyph-SDXL-v2``) ->
    (T5EncoderModel, tokenizer with the glyph tokens)."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    base = _folder(root, BYT5_DIR, "glyph encoder")
    glyph = Path(root) / glyph_folder
    colors = _read_json(glyph / GLYPH_COLORS, "glyph encoder")
    fonts = _read_json(glyph / GLYPH_FONTS, "glyph encoder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        config = T5Config.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"glyph encoder: cannot load {base} offline: {error}") from None
    tokenizer.add_tokens(glyph_special_tokens(colors, fonts), special_tokens=True)
    ckpt = glyph / GLYPH_CKPT
    state = read_state_dict(resolve_files(Path(root), f"{glyph_folder}/{GLYPH_CKPT}", "glyph encoder"))
    if any(k.startswith(_GLYPH_PREFIX) for k in state):
        state = {k[len(_GLYPH_PREFIX) :]: v for k, v in state.items() if k.startswith(_GLYPH_PREFIX)}
    if "embed_tokens.weight" not in state:
        raise UserError(f"{ckpt}: not a ByT5 encoder checkpoint (no embed_tokens.weight)")
    vocab = state["embed_tokens.weight"].shape[0]
    if vocab != len(tokenizer):
        raise UserError(
            f"{ckpt}: {vocab} token embeddings, but the byt5-small tokenizer plus the {glyph_folder} assets' "
            f"tokens make {len(tokenizer)}"
        )
    config.vocab_size = vocab
    # the checkpoint holds the encoder stack (T5ForConditionalGeneration.get_encoder()); shared = embed_tokens
    full = {f"encoder.{k}": v for k, v in state.items()}
    full["shared.weight"] = state["embed_tokens.weight"]
    model = build_module(lambda: T5EncoderModel(config), full, dtype=dtype, device=device, source=str(ckpt))
    return model, tokenizer


def siglip_processor_class():
    """The PIL SigLIP image processor: the class transformers 4 called ``SiglipImageProcessor`` and the official
    code uses; transformers 5 renamed it ``SiglipImageProcessorPil`` (its ``SiglipImageProcessor`` resizes with
    torchvision when installed, which gives other pixels)."""
    import transformers

    return getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor


def check_vision_encoder(root: Path, folder: str = SIGLIP_DIR) -> Path:
    """``folder`` (official ``vision_encoder/siglip``) with both sub-folders, checked before anything loads."""
    path = Path(root) / folder
    for sub, config in ((SIGLIP_MODEL, "config.json"), (SIGLIP_PROCESSOR, "preprocessor_config.json")):
        if not (path / sub / config).is_file():
            raise UserError(
                f"image encoder: {path / sub / config} is missing; image-to-video needs the SigLIP encoder in "
                f"{folder}/ ({SIGLIP_MODEL}/ and {SIGLIP_PROCESSOR}/, as in black-forest-labs/FLUX.1-Redux-dev)"
            )
    return path


def load_vision_encoder(root: Path, dtype: torch.dtype, device: torch.device, folder: str = SIGLIP_DIR):
    """``folder`` (official ``vision_encoder/siglip``) -> (SiglipVisionModel, its PIL image processor), offline.

    Weights are read from safetensors only (``use_safetensors=True``: a folder holding only a pickled
    ``pytorch_model.bin`` is refused rather than unpickled).
    """
    from transformers import SiglipVisionModel

    path = check_vision_encoder(root, folder)
    try:
        processor = siglip_processor_class().from_pretrained(
            str(path / SIGLIP_PROCESSOR), local_files_only=True
        )
        model = load_pretrained(
            SiglipVisionModel, path / SIGLIP_MODEL, "image encoder", use_safetensors=True, dtype=dtype
        )
    except (OSError, ValueError) as error:
        raise UserError(f"image encoder: cannot load {path} offline: {error}") from None
    return model.to(device).eval().requires_grad_(False), processor
