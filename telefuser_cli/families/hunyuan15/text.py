"""HunyuanVideo 1.5 text: the prompt template, its crop start, and the text and glyph encoders.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from telefuser_cli.loading.tokenizer import warn_truncated

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
