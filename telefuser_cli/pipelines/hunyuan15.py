"""HunyuanVideo 1.5 sampling over loaded modules: prompts, latents, the loop, decoding.

Plain arguments only (no configuration objects). The steps follow the official
``HunyuanVideo_1_5_Pipeline`` (Tencent-Hunyuan/HunyuanVideo-1.5) and diffusers' ``HunyuanVideo15Pipeline``:

1. Text: the prompt goes into the official chat template (system message + user turn, generation prompt
   appended), Qwen2.5-VL's language model runs over ``max_length + crop_start`` tokens (right padded), the
   hidden state 2 layers before the last (``hidden_states[-3]``, no final norm) is kept, and the template
   tokens before the user text are cropped (``crop_start``: found, as the official encoder does, after the
   ``<|im_start|>user\\n`` marker; 108 for the released tokenizer).
2. Glyphs: quoted text in the prompt (``"..."`` or ``“...”``) becomes ``Text "a". Text "b". `` and is encoded by
   the Glyph-SDXL-v2 ByT5 encoder (256 tokens); without quoted text the glyph features are zeros with an
   all-zero mask (the DiT then sees no glyph token). The unconditional branch always gets the glyphs of the
   empty string, i.e. those zeros, whatever the negative prompt quotes (official ``_prepare_byt5_embeddings``;
   diffusers encodes the negative prompt's quoted text instead): :func:`encode_negative_prompts`.
3. Latents: noise [B, 32, (F-1)/4 + 1, H/16, W/16] drawn in bfloat16 from a CPU generator, as the official
   pipeline draws it, then kept in float32 (:func:`initial_noise`); t2v conditioning is zeros (cond latents)
   and a zero mask, concatenated on channels (i2v: :mod:`.hunyuan15_image_cond`).
4. Loop: flow-matching Euler with shift (:func:`telefuser_cli.schedulers.make_scheduler` "euler": the
   official grid ``shift(linspace(1, 0, N + 1))``, timesteps ``sigma * 1000`` as float32, the same grid as
   diffusers' scheduler given ``sigmas=linspace(1, 0, N + 1)[:-1]``); CFG ``uncond + s * (cond - uncond)``,
   skipped when s == 1 (distilled); meanflow models also get ``timestep_r`` = the next timestep (0 last).
5. Decode: the VAE, optionally tiled in time (official blending) and in space (:mod:`telefuser_cli.ops.tiling`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from telefuser_cli.loading.tokenizer import warn_truncated
from telefuser_cli.models.hunyuan15_dit import Hunyuan15DiT
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE
from telefuser_cli.ops.crop_blend_tiling import crop_blend_decode
from telefuser_cli.schedulers import FlowScheduler

# The official video template's system message, verbatim: the official source continues the string with
# backslashes, so each numbered line keeps its 8 leading spaces (diffusers copies it the same way).
SYSTEM_MESSAGE_VIDEO = (
    "You are a helpful assistant. Describe the video by detailing the following aspects: "
    "        1. The main content and theme of the video. "
    "        2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects. "
    "        3. Actions, events, behaviors temporal relationships, physical movement changes of the objects. "
    "        4. background environment, light, style and atmosphere. "
    "        5. camera angles, movements, and transitions used in the video."
)
USER_MARKER = "<|im_start|>user\n"
TEXT_MAX_LENGTH = 1000  # official TextEncoder(max_length=1000)
GLYPH_MAX_LENGTH = 256  # official byt5_max_length
HIDDEN_STATE_SKIP_LAYER = 2  # official hidden_state_skip_layer
# The dtype the initial noise is drawn in (then float32): the official target_dtype (see draw_noise).
NOISE_DTYPE = "bfloat16"
_GLYPH_PATTERN = re.compile(r"\"(.*?)\"|“(.*?)”")


@dataclass
class TextConditioning:
    """What the DiT reads for one prompt set: text [B, L, D_llm] + mask [B, L]; glyphs [B, Lg, D_byt5] + mask."""

    text: torch.Tensor
    text_mask: torch.Tensor
    glyph: torch.Tensor | None
    glyph_mask: torch.Tensor | None


def chat_messages(prompt: str, system_message: str = SYSTEM_MESSAGE_VIDEO) -> list[dict[str, str]]:
    """The official chat conversation; an empty prompt becomes one space (official ``prevent_empty_text``)."""
    return [{"role": "system", "content": system_message}, {"role": "user", "content": prompt or " "}]


def find_crop_start(tokenizer, system_message: str = SYSTEM_MESSAGE_VIDEO) -> int:
    """Template tokens before the user's text: the position after the ``<|im_start|>user\\n`` marker.

    The official ``TextEncoder.text2tokens`` finds the same marker in the first text it tokenizes and caches
    the index in its template dict (its constructor tokenizes "a photo of a cat" first, so that is the text);
    the index depends only on the template tokens before the user's text, so any prompt gives the same one,
    and we compute it here once per tokenizer on that prompt. The marker must be present (a tokenizer without
    the Qwen chat markers is not the model's tokenizer: ValueError; the official code falls back to 0).
    """
    ids = tokenizer.apply_chat_template(
        [chat_messages("a photo of a cat", system_message)], add_generation_prompt=True, tokenize=True,
        return_dict=True,
    )["input_ids"][0]  # fmt: skip
    ids = list(ids)
    marker = tokenizer(USER_MARKER, add_special_tokens=False)["input_ids"]
    for i in range(len(ids) - len(marker) + 1):
        if ids[i : i + len(marker)] == marker:
            return i + len(marker)
    raise ValueError(
        f"the tokenizer's chat template has no {USER_MARKER!r} marker: not a Qwen2.5-VL tokenizer"
    )


@torch.no_grad()
def encode_text(
    llm,
    tokenizer,
    prompts: list[str],
    device: torch.device,
    crop_start: int,
    max_length: int = TEXT_MAX_LENGTH,
    skip_layers: int = HIDDEN_STATE_SKIP_LAYER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (features [B, max_length, D] float32, mask [B, max_length] int64).

    ``llm``: transformers' Qwen2.5-VL language model (``Qwen2_5_VLTextModel``); ``crop_start`` from
    :func:`find_crop_start`. Token sequences are right padded (or truncated, with a logged warning) to
    ``max_length + crop_start``.
    """
    conversations = [chat_messages(p) for p in prompts]
    full = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    for prompt, ids in zip(prompts, full, strict=True):
        # counted after the template's system part, as max_length is
        warn_truncated(prompt, len(ids) - crop_start, max_length, "HunyuanVideo 1.5 text encoder")
    batch = tokenizer.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        padding="max_length",
        max_length=max_length + crop_start,
        truncation=True,
        return_tensors="pt",
    )
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = llm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    features = hidden[-(skip_layers + 1)]
    return features[:, crop_start:].float(), mask[:, crop_start:].long()


def extract_glyph_texts(prompt: str) -> list[str]:
    """Quoted spans of ``prompt`` (``"..."`` or ``“...”``), in order, deduplicated (official regex)."""
    found = [a or b for a, b in _GLYPH_PATTERN.findall(prompt)]
    return list(dict.fromkeys(found)) if len(found) > 1 else found


def format_glyph_prompt(texts: list[str]) -> str | None:
    """``Text "a". Text "b". `` (the official MultilingualPromptFormat with no colour or font); None if empty."""
    return "".join(f'Text "{t}". ' for t in texts) if texts else None


@torch.no_grad()
def encode_glyphs(
    byt5, tokenizer, prompts: list[str], device: torch.device, max_length: int = GLYPH_MAX_LENGTH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> ByT5 glyph features (float32 [B, max_length, d_model]) and mask (int64 [B, max_length]).

    ``byt5``: transformers' ``T5EncoderModel``. A prompt without quoted text gives zeros and a zero mask.
    """
    width = byt5.config.d_model
    feats = torch.zeros(len(prompts), max_length, width, device=device)
    masks = torch.zeros(len(prompts), max_length, dtype=torch.long, device=device)
    for b, prompt in enumerate(prompts):
        text = format_glyph_prompt(extract_glyph_texts(prompt))
        if text is None:
            continue
        length = len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
        warn_truncated(text, length, max_length, "ByT5 glyph encoder (quoted text)")
        tok = tokenizer(text, padding="max_length", max_length=max_length, truncation=True,
                        add_special_tokens=True, return_tensors="pt")  # fmt: skip
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        feats[b] = byt5(input_ids=ids, attention_mask=mask.float())[0][0].float()
        masks[b] = mask[0]
    return feats, masks


def encode_prompts(
    llm, tokenizer, byt5, byt5_tokenizer, prompts: list[str], device: torch.device, crop_start: int,
    max_length: int = TEXT_MAX_LENGTH,
) -> TextConditioning:  # fmt: skip
    """Both encoders for a list of prompts, the conditional branch (``byt5=None``: a DiT without the glyph
    path). For the unconditional branch use :func:`encode_negative_prompts`."""
    return _encode(llm, tokenizer, byt5, byt5_tokenizer, prompts, prompts, device, crop_start, max_length)


def encode_negative_prompts(
    llm, tokenizer, byt5, byt5_tokenizer, prompts: list[str], device: torch.device, crop_start: int,
    max_length: int = TEXT_MAX_LENGTH,
) -> TextConditioning:  # fmt: skip
    """The unconditional branch: the negative prompts' text features, and for each the glyph features of the
    empty string (zeros, all-zero mask), whatever text the negative prompt quotes.

    The official pipeline encodes ``""`` for the negative glyphs (``_prepare_byt5_embeddings``); diffusers
    encodes the negative prompt's quoted text, which changes the video completely when it quotes something.
    """
    empty = [""] * len(prompts)
    return _encode(llm, tokenizer, byt5, byt5_tokenizer, prompts, empty, device, crop_start, max_length)


def _encode(
    llm, tokenizer, byt5, byt5_tokenizer, prompts: list[str], glyph_prompts: list[str], device: torch.device,
    crop_start: int, max_length: int,
) -> TextConditioning:  # fmt: skip
    text, mask = encode_text(llm, tokenizer, prompts, device, crop_start, max_length)
    if byt5 is None:
        return TextConditioning(text, mask, None, None)
    glyph, glyph_mask = encode_glyphs(byt5, byt5_tokenizer, glyph_prompts, device)
    return TextConditioning(text, mask, glyph, glyph_mask)


def latent_shape(
    batch: int, frames: int, height: int, width: int, channels: int = 32, temporal: int = 4, spatial: int = 16
) -> tuple[int, int, int, int, int]:
    """[B, C, (F-1)/4 + 1, H/16, W/16]; raises ValueError for sizes the VAE cannot map exactly."""
    if frames < 1 or (frames - 1) % temporal:
        raise ValueError(f"frames={frames} must be 1 + {temporal}*k (e.g. 121)")
    if height % spatial or width % spatial or height <= 0 or width <= 0:
        raise ValueError(f"height={height} and width={width} must be positive multiples of {spatial}")
    return batch, channels, (frames - 1) // temporal + 1, height // spatial, width // spatial


def draw_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise as the official pipelines draw their initial latents: on ``generator`` (a CPU
    one: official ``noise_init_device``) in :data:`NOISE_DTYPE`, then moved to ``device`` as float32.

    The official ``prepare_latents`` draws in the DiT's ``target_dtype`` (bfloat16, whatever the run dtype);
    with the same seed, float32 noise differs from it by bfloat16 rounding, which moves the tiny model's final
    latents by 1e-3 to 2e-3 (relative): another video for the same seed.
    From here on the latents stay float32 (precision policy; the official scheduler step also returns float32).
    """
    noise = torch.randn(
        shape, generator=generator, device=generator.device, dtype=getattr(torch, NOISE_DTYPE)
    )
    return noise.to(device=device, dtype=torch.float32)


def initial_noise(
    shape: tuple[int, ...], seed: int, device: torch.device, rand_device: str = "cpu"
) -> torch.Tensor:
    """The base stage's initial latents for ``seed``: :func:`draw_noise` on a generator seeded with it on
    ``rand_device`` (``pipeline.rand_device``; cpu, the official choice, gives the same video on any machine)."""
    return draw_noise(shape, torch.Generator(device=rand_device).manual_seed(seed), device)


def t2v_condition(latents: torch.Tensor) -> torch.Tensor:
    """t2v conditioning channels: zero cond latents and a zero mask. [B, C, T, h, w] -> [B, C + 1, T, h, w]."""
    b, c, t, h, w = latents.shape
    return latents.new_zeros(b, c + 1, t, h, w)


def _velocity(dit: Hunyuan15DiT, x, t, t_r, cond: TextConditioning, image) -> torch.Tensor:
    return dit(x, t, cond.text, cond.text_mask, cond.glyph, cond.glyph_mask, image, t_r)


@torch.no_grad()
def denoise(
    dit: Hunyuan15DiT,
    latents: torch.Tensor,
    scheduler: FlowScheduler,
    condition: torch.Tensor | Callable[[float], torch.Tensor],
    positive: TextConditioning,
    negative: TextConditioning | None,
    cfg_scale: float,
    on_step: Callable[[], None] = lambda: None,
    image_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the whole trajectory. latents: [B, C, T, h, w] float32 noise -> denoised latents (float32).

    ``condition``: channels concatenated after the latents ([B, C_cond, T, h, w]), or a function of the
    step's timestep returning them (the SR stage drops its low-resolution condition late in the trajectory).
    ``cfg_scale`` 1 runs the conditional pass only (``negative`` may then be None). ``image_embeds``
    ([B, N, D] SigLIP tokens, i2v) go to both guidance branches alike, as in both reference pipelines.
    """
    if cfg_scale != 1.0 and negative is None:
        raise ValueError(f"cfg_scale={cfg_scale} needs the negative prompt's conditioning")
    meanflow = dit.config.use_meanflow
    timesteps = scheduler.timesteps.to(device=latents.device, dtype=torch.float32)
    batch = latents.shape[0]
    for i in range(scheduler.num_steps):
        t_value = float(scheduler.timesteps[i])
        cond = condition(t_value) if callable(condition) else condition
        x = torch.cat([latents, cond.to(latents.dtype)], dim=1)
        t = timesteps[i].expand(batch)
        t_r = None
        if meanflow:  # official: the reference time is the next timestep, 0 after the last step
            t_r = (timesteps[i + 1] if i + 1 < len(timesteps) else timesteps.new_zeros(())).expand(batch)
        velocity = _velocity(dit, x, t, t_r, positive, image_embeds)
        if cfg_scale != 1.0:
            uncond = _velocity(dit, x, t, t_r, negative, image_embeds)
            velocity = uncond + cfg_scale * (velocity - uncond)
        latents = scheduler.step(velocity, i, latents)
        on_step()
    return latents


def _blend_frames(prev: torch.Tensor, cur: torch.Tensor, extent: int) -> torch.Tensor:
    """Official ``blend_t``: the first ``extent`` frames of ``cur`` fade in over the last ones of ``prev``."""
    extent = min(prev.shape[2], cur.shape[2], extent)
    if extent == 0:
        return cur
    w = torch.arange(extent, dtype=torch.float32, device=cur.device).view(1, 1, -1, 1, 1) / extent
    cur = cur.clone()
    cur[:, :, :extent] = prev[:, :, -extent:] * (1 - w) + cur[:, :, :extent] * w
    return cur


@torch.no_grad()
def decode(
    vae: Hunyuan15VAE,
    latents: torch.Tensor,
    tile: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    tile_frames: int | None = None,
    frame_overlap: float = 0.25,
) -> torch.Tensor:
    """Normalised latents [B, C, T, h, w] -> video [B, 3, 1 + 4(T-1), 16h, 16w] float32 in [-1, 1].

    ``tile``/``stride``: spatial tiles (height, width) in latent pixels, decoded and blended as the official
    VAE does it (:func:`crop_blend_decode`; its 256-pixel tiles are tile (16, 16), stride (12, 12)); the
    reference pipelines always decode this way, so with those settings our video is theirs. ``tile_frames``:
    also tile in time, that many latent frames a tile, every ``tile_frames * (1 - frame_overlap)``, blended
    as HunyuanVideo's ``temporal_tiled_decode`` (approximate: the causal VAE restarts at each tile; for
    memory only). None: no tiling on that axis. Clamping comes after all blending, as in the reference.
    """
    cfg = vae.config
    scale, ratio = cfg.ffactor_spatial, cfg.ffactor_temporal
    dtype = vae.decoder.conv_in.conv.weight.dtype

    def raw(z: torch.Tensor) -> torch.Tensor:
        return vae.decoder(z.to(dtype)).float()

    def spatial(z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        if tile is None or (h <= tile[0] and w <= tile[1]):
            return raw(z)
        return crop_blend_decode(raw, z, tile, stride or tile, scale)

    z = vae.denormalize(latents)
    frames = z.shape[2]
    if tile_frames is None or frames <= tile_frames:
        return spatial(z).clamp_(-1.0, 1.0)
    step = int(tile_frames * (1 - frame_overlap))
    if not 0 < step < tile_frames:
        raise ValueError(f"tile_frames={tile_frames} with frame_overlap={frame_overlap} gives stride {step}")
    extent = int(ratio * tile_frames * frame_overlap)  # official blend_extent over tile_sample_min_tsize
    keep = ratio * step  # official t_limit: decoded frames each tile contributes
    out, prev = [], None
    for start in range(0, frames, step):
        current = spatial(z[:, :, start : start + tile_frames])
        if prev is not None:
            current = _blend_frames(prev, current, extent)
        out.append(current[:, :, :keep])
        prev = current
    return torch.cat(out, dim=2).clamp_(-1.0, 1.0)
