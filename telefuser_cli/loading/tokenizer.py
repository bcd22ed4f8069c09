"""Prompt cleaning and tokenization for the UMT5 text encoder, as the official Wan wrapper does it
(``HuggingfaceTokenizer(name, seq_len=512, clean='whitespace')`` called with ``add_special_tokens=True``).

Tokenizer folders are read offline only. ``write_tiny_tokenizer`` writes a small, deterministic T5-style
tokenizer folder for tests and tiny checkpoints.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import ftfy
import regex
import torch

from telefuser_cli.io.path_kind import directory_problem

__all__ = [
    "TOKENIZER_FILES", "clean_prompt", "load_tokenizer", "tokenize", "warn_truncated", "write_tiny_tokenizer",
]  # fmt: skip

log = logging.getLogger(__name__)

# What a tokenizer folder holds (google/umt5-xxl ships all of these plus spiece.model; a fast tokenizer needs
# only tokenizer.json, a slow one spiece.model).
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")

# The official code collapses whitespace with the `regex` package (a transformers dependency), whose `\s` is
# the Unicode White_Space property; the standard `re` module's `\s` differs on a few control characters
# (U+001C..U+001F), so use the same package.
_WHITESPACE = regex.compile(r"\s+")

_PAD, _EOS, _UNK = "<pad>", "</s>", "<unk>"


def clean_prompt(text: str) -> str:
    """The official 'whitespace' cleaning: ftfy.fix_text, html.unescape twice, strip, collapse whitespace."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def load_tokenizer(path: Path) -> Any:
    """Load a tokenizer folder with transformers' AutoTokenizer, offline (``local_files_only=True``).

    Raises FileNotFoundError when ``path`` is not a folder or holds none of the tokenizer files, and
    ValueError when the files are there but transformers cannot read them.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    expected = ", ".join(TOKENIZER_FILES)
    problem = directory_problem(path)
    if problem is not None:
        raise FileNotFoundError(f"tokenizer folder {path} {problem} (expected a folder with {expected})")
    if not any((path / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        raise FileNotFoundError(
            f"tokenizer folder {path} holds neither tokenizer.json nor spiece.model (expected {expected})"
        )
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # the tokenizers library raises bare `Exception` on a corrupt tokenizer.json
        raise ValueError(f"cannot read the tokenizer in {path} (expected {expected}): {exc}") from exc


def warn_truncated(prompt: str, length: int, limit: int, encoder: str) -> None:
    """Log a warning when a prompt of ``length`` tokens is cut to the ``limit`` an encoder reads.

    Text encoders truncate without a word; the end of a long prompt then silently has no effect.
    """
    if length <= limit:
        return
    excerpt = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    log.warning(
        "prompt %r is %d tokens long, but the %s reads %d: the last %d tokens are dropped; shorten the prompt",
        excerpt, length, encoder, limit, length - limit,
    )  # fmt: skip


def tokenize(
    tokenizer: Any, prompts: list[str], max_length: int = 512, clean: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompts as the official wrapper: cleaned (``clean_prompt``; pass ``clean=False`` for text
    already cleaned), EOS appended, truncated to and right-padded to ``max_length``. A prompt that is cut
    is logged (``warn_truncated``).

    Returns ``ids`` [B, max_length] long and ``mask`` [B, max_length] long (1 on tokens incl. EOS, 0 on
    padding). The true length of prompt b is ``mask[b].sum()``.
    """
    if isinstance(prompts, str):
        raise TypeError("tokenize: prompts must be a list of strings, not one string")
    if max_length <= 0:
        raise ValueError(f"tokenize: max_length must be positive, got {max_length}")
    texts = [clean_prompt(p) for p in prompts] if clean else list(prompts)
    # verbose=False: transformers would log its own "longer than the maximum" line for each long prompt
    full = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    for text, ids in zip(texts, full, strict=True):
        warn_truncated(text, len(ids), max_length, "UMT5 text encoder")
    out = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return out["input_ids"].long(), out["attention_mask"].long()


def write_tiny_tokenizer(path: Path, words: list[str]) -> None:
    """Write a small T5-style tokenizer folder: ids 0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``, then ``words``.

    Word-level vocabulary, split on whitespace and punctuation, EOS appended to every sequence, unknown
    words -> ``<unk>``. Files: tokenizer.json, tokenizer_config.json, special_tokens_map.json; the bytes
    depend only on ``words``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = [_PAD, _EOS, _UNK]
    if len(set(words)) != len(words):
        raise ValueError("write_tiny_tokenizer: words contain duplicates")
    clash = [w for w in words if w in specials]
    if clash:
        raise ValueError(f"write_tiny_tokenizer: words {clash} clash with the special tokens {specials}")
    bad = [w for w in words if not w or pre_tokenizers.Whitespace().pre_tokenize_str(w) != [(w, (0, len(w)))]]
    if bad:
        raise ValueError(
            f"write_tiny_tokenizer: words {bad[:5]} are not single word-level tokens (letters/digits, "
            "or a run of punctuation)"
        )
    vocab = {tok: i for i, tok in enumerate(specials + list(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {_EOS}", pair=f"$A {_EOS} $B {_EOS}", special_tokens=[(_EOS, 1)]
    )
    tok.add_special_tokens(specials)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    special_map = {"eos_token": _EOS, "pad_token": _PAD, "unk_token": _UNK}
    config = {
        **special_map,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    files = {
        "tokenizer.json": tok.to_str(pretty=True),
        "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True),
        "special_tokens_map.json": json.dumps(special_map, indent=2, sort_keys=True),
    }
    for name, text in files.items():
        # Write to a temporary name, then rename, so a folder is never left half-written.
        tmp = path / f".{name}.tmp"
        tmp.write_bytes((text + "\n").encode("utf-8"))
        tmp.replace(path / name)
