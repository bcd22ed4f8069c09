"""Tiny HunyuanVideo 1.5 models in the official directory layout, with deterministic random weights.

``tiny_hunyuan15``: transformer/{480p_t2v, 480p_i2v}, vae, text_encoder/{llm, byt5-small, Glyph-SDXL-v2},
vision_encoder/siglip/{image_encoder, feature_extractor}, scheduler (one directory holds every task, as the
released one does). ``tiny_hunyuan15_sr``: the same plus transformer/{720p,1080p}_sr_distilled and
upsampler/{720p,1080p}_sr_distilled (an SRTo720pUpsampler and an SRTo1080pUpsampler).

Same file names, key layouts and config files as the released weights, so they go through the real loaders.
The text encoder is a tiny Qwen2.5-VL (transformers config, 3 layers) saved with ``save_pretrained``, with a
byte-level BPE tokenizer trained here on the template text and carrying the Qwen chat template; the glyph
encoder is a tiny ByT5 with the official special-token scheme; the image encoder a tiny SigLIP vision tower
(FLUX.1-Redux-dev's folder layout, which the official code reads) with a 32x32 image processor. Nothing is downloaded. The latents have 4
channels (32 released) to stay small; the ByT5 projection keeps its hard-coded hidden width 2048.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from telefuser_cli.families.hunyuan15.text import SYSTEM_MESSAGE_VIDEO
from telefuser_cli.families.tiny import randomise, register, save_weights, write_json, write_tiny
from telefuser_cli.loading.quiet_transformers import quiet_transformers
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT, Hunyuan15DiTConfig
from telefuser_cli.models.hunyuan15_upsampler import (
    SRTo720pConfig,
    SRTo720pUpsampler,
    SRTo1080pConfig,
    SRTo1080pUpsampler,
)
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE, Hunyuan15VAEConfig

T2V_VERSION = "480p_t2v"
I2V_VERSION = "480p_i2v"
SR_VERSION = "720p_sr_distilled"
SR_1080P_VERSION = "1080p_sr_distilled"
LLM_HIDDEN = 32
BYT5_DIM = 24
SIGLIP_SIZE = 32  # pixels: 16 tokens of 8x8 patches (released: 384 px, 729 tokens)
LATENT = 4
TINY_DIT = Hunyuan15DiTConfig(
    patch_size=(1, 1, 1), in_channels=LATENT, out_channels=LATENT, hidden_size=32, heads_num=2,
    mm_double_blocks_depth=2, rope_dim_list=(4, 6, 6), text_states_dim=LLM_HIDDEN, byt5_dim=BYT5_DIM,
    byt5_hidden_dim=2048, vision_states_dim=16,
)  # fmt: skip
# SR DiT input: latents + [cond latents, mask] + [lq latents, mask] = 3C + 2 channels, no concat rule
TINY_SR_DIT = dataclasses.replace(TINY_DIT, in_channels=3 * LATENT + 2, concat_condition=False)
TINY_VAE = Hunyuan15VAEConfig(
    latent_channels=LATENT, block_out_channels=(8, 8, 16, 16, 16), layers_per_block=1
)
TINY_UPSAMPLER = SRTo720pConfig(in_channels=LATENT, out_channels=LATENT, hidden_channels=8, num_blocks=1,
                                global_residual=True)  # fmt: skip
TINY_UPSAMPLER_1080P = SRTo1080pConfig(z_channels=LATENT, out_channels=LATENT, block_out_channels=(8, 8),
                                       num_res_blocks=1)  # fmt: skip
GLYPH_COLORS = {"white": 0, "black": 1, "red": 2}
GLYPH_FONTS = {"en-TinySans": 0, "zh-TinySong": 1}
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = [
    SYSTEM_MESSAGE_VIDEO,
    "system user assistant a photo of a cat",
    "a red ball rolling on a table, a dog running in the park, a sign with the text hello, camera moving left",
]


def _save(module: torch.nn.Module, folder: Path, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(module, folder / "diffusion_pytorch_model.safetensors")
    write_json(folder / "config.json", config)


def _dit_json(cfg: Hunyuan15DiTConfig, resolution: str, task: str, meanflow: bool = False) -> dict:
    return {
        "_class_name": "HunyuanVideo_1_5_DiffusionTransformer", "concat_condition": cfg.concat_condition,
        "glyph_byT5_v2": True, "guidance_embed": False, "heads_num": cfg.heads_num, "hidden_size": cfg.hidden_size,
        "ideal_resolution": resolution, "ideal_task": task, "in_channels": cfg.in_channels,
        "is_reshape_temporal_channels": False, "mlp_act_type": "gelu_tanh", "mlp_width_ratio": cfg.mlp_width_ratio,
        "mm_double_blocks_depth": cfg.mm_double_blocks_depth, "mm_single_blocks_depth": 0,
        "out_channels": cfg.out_channels, "patch_size": list(cfg.patch_size), "qk_norm": True,
        "qk_norm_type": "rms", "qkv_bias": True, "rope_dim_list": list(cfg.rope_dim_list),
        "rope_theta": cfg.rope_theta, "text_pool_type": None, "text_projection": "single_refiner",
        "text_states_dim": cfg.text_states_dim, "use_attention_mask": True,
        "use_cond_type_embedding": cfg.use_cond_type_embedding, "use_meanflow": meanflow,
        "vision_projection": "linear", "vision_states_dim": cfg.vision_states_dim,
    }  # fmt: skip


def write_qwen_tokenizer(folder: Path) -> None:
    """A byte-level BPE Qwen2Tokenizer (Qwen's specials and chat template), trained on a fixed corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    bpe.train_from_iterator(_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))


def _write_llm(folder: Path, generator: torch.Generator) -> None:
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    write_qwen_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    vocab = len(tokenizer)
    specials = {
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
    }
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab, hidden_size=LLM_HIDDEN, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096, rope_theta=1e6,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, **specials,
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=LLM_HIDDEN,
                           fullatt_block_indexes=[0]),
        **specials,
    )  # fmt: skip
    model = Qwen2_5_VLForConditionalGeneration(config)
    randomise(model, generator, bias_std=0.1)
    model.save_pretrained(str(folder))


def _write_byt5(text_encoder: Path, generator: torch.Generator) -> None:
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from telefuser_cli.loading.hunyuan15 import glyph_special_tokens

    base = text_encoder / "byt5-small"
    tokenizer = ByT5Tokenizer()
    tokenizer.save_pretrained(str(base))
    vocab = len(tokenizer) + len(glyph_special_tokens(GLYPH_COLORS, GLYPH_FONTS))
    config = T5Config(vocab_size=len(tokenizer), d_model=BYT5_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=3,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=True, tie_word_embeddings=False)  # fmt: skip
    config.save_pretrained(str(base))
    config.vocab_size = vocab
    encoder = T5EncoderModel(config)
    randomise(encoder, generator, bias_std=0.1)
    # official training checkpoint: the encoder stack under module.text_tower.encoder., wrapped in state_dict
    stack = {f"module.text_tower.encoder.{k}": v.clone() for k, v in encoder.encoder.state_dict().items()}
    glyph = text_encoder / "Glyph-SDXL-v2"
    (glyph / "checkpoints").mkdir(parents=True)
    (glyph / "assets").mkdir()
    torch.save({"state_dict": stack}, glyph / "checkpoints" / "byt5_model.pt")
    (glyph / "assets" / "color_idx.json").write_text(json.dumps(GLYPH_COLORS))
    (glyph / "assets" / "multilingual_10-lang_idx.json").write_text(json.dumps(GLYPH_FONTS))


def _write_base(directory: Path, generator: torch.Generator) -> None:
    dit = Hunyuan15DiT(TINY_DIT)
    randomise(dit, generator, bias_std=0.1)
    _save(dit, directory / "transformer" / T2V_VERSION, _dit_json(TINY_DIT, "480p", "t2v"))
    vae = Hunyuan15VAE(TINY_VAE)
    randomise(vae, generator, bias_std=0.1)
    cfg = TINY_VAE
    _save(vae, directory / "vae", {
        "_class_name": "AutoencoderKLConv3D", "in_channels": 3, "out_channels": 3,
        "latent_channels": cfg.latent_channels, "block_out_channels": list(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block, "ffactor_spatial": cfg.ffactor_spatial,
        "ffactor_temporal": cfg.ffactor_temporal, "scaling_factor": cfg.scaling_factor,
        "downsample_match_channel": True, "upsample_match_channel": True,
    })  # fmt: skip
    _write_llm(directory / "text_encoder" / "llm", generator)
    _write_byt5(directory / "text_encoder", generator)
    (directory / "scheduler").mkdir()
    (directory / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "FlowMatchDiscreteScheduler", "num_train_timesteps": 1000, "reverse": True,
        "shift": 5.0, "solver": "euler",
    }, indent=2) + "\n")  # fmt: skip


def _write_sr(directory: Path, generator: torch.Generator, version: str, resolution: str, upsampler) -> None:
    """One SR stage: ``transformer/<version>`` (the SR DiT) and ``upsampler/<version>``."""
    dit = Hunyuan15DiT(TINY_SR_DIT)
    randomise(dit, generator, bias_std=0.1)
    _save(dit, directory / "transformer" / version, _dit_json(TINY_SR_DIT, resolution, "sr"))
    randomise(upsampler, generator, bias_std=0.1)
    config = {"_class_name": type(upsampler).__name__, **dataclasses.asdict(upsampler.config)}
    _save(upsampler, directory / "upsampler" / version, config)


def _write_siglip(folder: Path, generator: torch.Generator) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from telefuser_cli.loading.hunyuan15 import siglip_processor_class

    config = SiglipVisionConfig(
        hidden_size=TINY_DIT.vision_states_dim, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=SIGLIP_SIZE, patch_size=8,
    )  # fmt: skip
    model = SiglipVisionModel(config)
    randomise(model, generator, bias_std=0.1)
    model.save_pretrained(str(folder / "image_encoder"), safe_serialization=True)
    processor = siglip_processor_class()(
        size={"height": SIGLIP_SIZE, "width": SIGLIP_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor.save_pretrained(str(folder / "feature_extractor"))


def _write_i2v(directory: Path, generator: torch.Generator) -> None:
    dit = Hunyuan15DiT(TINY_DIT)
    randomise(dit, generator, bias_std=0.1)
    _save(dit, directory / "transformer" / I2V_VERSION, _dit_json(TINY_DIT, "480p", "i2v"))
    _write_siglip(directory / "vision_encoder" / "siglip", generator)


def _write_layout(directory: Path, seed: int, sr: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    with quiet_transformers():  # no "Writing model shards" bars in the middle of a run
        _write_base(directory, generator)
        if sr:
            _write_sr(directory, generator, SR_VERSION, "720p", SRTo720pUpsampler(TINY_UPSAMPLER))
        # their own streams: the t2v and 720p SR weights stay what they were before these parts existed
        _write_i2v(directory, torch.Generator().manual_seed(seed + 1))
        if sr:
            up = SRTo1080pUpsampler(TINY_UPSAMPLER_1080P)
            _write_sr(directory, torch.Generator().manual_seed(seed + 2), SR_1080P_VERSION, "1080p", up)


@register("tiny_hunyuan15", marker="vae/config.json")
def _write_hunyuan15(directory: Path, seed: int) -> None:
    _write_layout(directory, seed, sr=False)


@register("tiny_hunyuan15_sr", marker="upsampler")
def _write_hunyuan15_sr(directory: Path, seed: int) -> None:
    _write_layout(directory, seed, sr=True)


def write_tiny_hunyuan15(directory: Path, seed: int = 0, sr: bool = False) -> Path:
    """Write ``tiny_hunyuan15`` (or ``tiny_hunyuan15_sr`` with ``sr``) into an empty or new ``directory``,
    atomically (see ``families.tiny.write_tiny``)."""
    return write_tiny("tiny_hunyuan15_sr" if sr else "tiny_hunyuan15", directory, seed)
