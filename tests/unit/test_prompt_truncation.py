"""A prompt longer than its text encoder reads is still cut (as the official code does), but never silently:
one warning per prompt names how many tokens are dropped and the limit."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from telefuser_cli.families.hunyuan15 import text as hy_text
from telefuser_cli.families.hunyuan15.tiny import write_qwen_tokenizer
from telefuser_cli.loading.tokenizer import load_tokenizer, tokenize, write_tiny_tokenizer

WORDS = ["a", "red", "ball", "rolls", "left"]


def _dropped(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "dropped" in r.getMessage()
    ]


@pytest.fixture(scope="module")
def umt5_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("umt5")
    write_tiny_tokenizer(folder, WORDS)
    return load_tokenizer(folder)


def test_umt5_prompt_over_512_tokens_warns_once_with_the_numbers(umt5_tokenizer, caplog):
    long_prompt = " ".join(WORDS * 120)  # 600 words + EOS = 601 tokens
    negative = " ".join(WORDS * 103)  # 515 words + EOS = 516 tokens
    with caplog.at_level(logging.WARNING, logger="telefuser_cli.loading.tokenizer"):
        ids, mask = tokenize(umt5_tokenizer, [long_prompt, "a red ball", negative])
    messages = _dropped(caplog)
    assert len(messages) == 2, messages
    assert (
        "is 601 tokens long, but the UMT5 text encoder reads 512: the last 89 tokens are dropped"
        in messages[0]
    )
    assert "is 516 tokens long" in messages[1] and "the last 4 tokens are dropped" in messages[1]
    assert "'a red ball rolls left" in messages[0]  # the start of the prompt says which one
    # the encoding itself is the official one: cut to 511 tokens + EOS
    assert ids.shape == (3, 512) and mask.sum(dim=1).tolist() == [512, 4, 512]
    assert ids[0, -1].item() == umt5_tokenizer.eos_token_id


def test_umt5_prompt_that_fits_exactly_does_not_warn(umt5_tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        tokenize(umt5_tokenizer, [" ".join(["red"] * 511)])  # 511 + EOS = 512
    assert _dropped(caplog) == []


class _LanguageModel:
    """Stands in for Qwen2.5-VL's language model: hidden states are the token ids, per layer."""

    def __call__(self, input_ids, attention_mask, output_hidden_states):
        states = input_ids[..., None].float()
        return SimpleNamespace(hidden_states=(states, states, states, states))


def test_hunyuan_prompt_over_the_text_limit_warns(tmp_path, caplog):
    write_qwen_tokenizer(tmp_path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True, padding_side="right")
    crop_start = hy_text.find_crop_start(tokenizer)
    long_prompt = "a red ball rolling on a table " * 10
    full = tokenizer.apply_chat_template(
        [hy_text.chat_messages(long_prompt)], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"][0]
    limit = 20
    with caplog.at_level(logging.WARNING, logger="telefuser_cli.loading.tokenizer"):
        features, mask = hy_text.encode_text(
            _LanguageModel(),
            tokenizer,
            [long_prompt, "a cat"],
            torch.device("cpu"),
            crop_start,
            max_length=limit,
        )
    messages = _dropped(caplog)
    assert len(messages) == 1, messages
    length = len(full) - crop_start
    assert (
        f"is {length} tokens long, but the HunyuanVideo 1.5 text encoder reads {limit}: the last "
        f"{length - limit} tokens are dropped" in messages[0]
    )
    assert features.shape[:2] == (2, limit) and mask[0].sum().item() == limit


class _GlyphEncoder:
    config = SimpleNamespace(d_model=3)

    def __call__(self, input_ids, attention_mask):
        return (torch.zeros(1, input_ids.shape[1], 3),)


def test_hunyuan_quoted_text_over_the_glyph_limit_warns(caplog):
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    with caplog.at_level(logging.WARNING, logger="telefuser_cli.loading.tokenizer"):
        hy_text.encode_glyphs(_GlyphEncoder(), tokenizer, ['a sign saying "hello there"', 'a sign "hi"'],
                              torch.device("cpu"), max_length=24)  # fmt: skip
    # 'Text "hello there". ' is 20 bytes + EOS = 21 tokens, within 24: no warning
    assert _dropped(caplog) == []
    with caplog.at_level(logging.WARNING, logger="telefuser_cli.loading.tokenizer"):
        hy_text.encode_glyphs(_GlyphEncoder(), tokenizer, ['a sign saying "hello there, traveller"'],
                              torch.device("cpu"), max_length=24)  # fmt: skip
    messages = _dropped(caplog)
    assert len(messages) == 1 and "ByT5 glyph encoder" in messages[0]
    assert "is 32 tokens long" in messages[0] and "reads 24: the last 8 tokens are dropped" in messages[0]
