"""Command-line overrides: shorthands, literal prompts, and values written back as overrides.

Prompts are free text; Hydra's override grammar is not. Unquoted values reject `=`, quotes, brackets
and non-ASCII text, and a comma silently becomes a sweep under `-m`. Every prompt value is therefore
quoted here, before Hydra sees it, so it arrives byte-identical and never splits a sweep. The one
exception is Hydra's own quoting idiom: a value wholly wrapped in one pair of matching quotes
(`'prompt="a, b"'`) is quoted text, as it is for every other key, and loses that pair.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

# shorthand -> full key: layer 3 only. The pipeline layer is the recipe's and is named in full on purpose
# (`steps=30` is refused with a did-you-mean, config/habits.py).
SHORTHANDS = {
    "prompt": "user.prompt",
    "negative_prompt": "user.negative_prompt",
    "seed": "user.seed",
    "resolution": "user.resolution",
    "aspect_ratio": "user.aspect_ratio",
    "image": "user.input_image",
    "end_image": "user.end_image",
}
LITERAL_KEYS = {"user.prompt", "user.negative_prompt", "pipeline.negative_prompt"}

_KEY = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w.\-/@]*)=(?P<value>.*)$", re.DOTALL)


def quote(text: str) -> str:
    """A Hydra single-quoted string that parses back to exactly `text`.

    Hydra treats backslashes specially only right before a quote or at the end of the string, and
    `${` starts an interpolation even inside quotes; escape exactly those.
    """
    # \Z, not $: `$` also matches before a final newline, where Hydra keeps backslashes as they are.
    text = re.sub(r"(\\+)(?='|\$\{|\Z)", lambda m: m.group(1) * 2, text)
    text = text.replace("'", "\\'").replace("${", "\\${")
    return f"'{text}'"


def unquote(quoted: str) -> str:
    """The text that `quote` was given: `unquote(quote(text)) == text`."""

    def unescape(match: re.Match[str]) -> str:
        return "\\" * (len(match.group(1)) // 2) + match.group(2)

    return re.sub(r"(\\*)('|\$\{|\Z)", unescape, quoted[1:-1])


def unwrap_quotes(value: str) -> str:
    """The text inside one pair of matching quotes that wraps all of `value`, else `value` unchanged.

    As in Hydra's quoted strings, a backslash escapes the quote character, and a run of backslashes is
    halved where it runs up to a quote or to the closing quote. `"Hello" she said` is not wholly wrapped
    (its first quote closes before the end), nor is `"a" and "b"`: both stay as typed.
    """
    if len(value) < 2 or value[0] not in "'\"" or value[-1] != value[0]:
        return value
    quote_char, inner = value[0], value[1:-1]
    pieces, position = [], 0
    for match in re.finditer(rf"(\\*)({quote_char}|\Z)", inner):
        backslashes, at_quote = len(match.group(1)), bool(match.group(2))
        # An even run before a quote leaves it unescaped (it would close the string early); an odd run
        # at the end escapes the closing quote. Either way the value is not one quoted string.
        if backslashes % 2 == (0 if at_quote else 1):
            return value
        pieces.append(inner[position : match.start()] + "\\" * (backslashes // 2) + match.group(2))
        position = match.end()
    return "".join(pieces) + inner[position:]


def expand(argv: list[str]) -> list[str]:
    """Map shorthands to their `user.*` keys and quote literal-text values."""
    overrides = []
    for arg in argv:
        match = _KEY.match(arg)
        if not match:
            overrides.append(arg)
            continue
        prefix, key, value = match["prefix"], match["key"], match["value"]
        key = SHORTHANDS.get(key, key)
        if key in LITERAL_KEYS:
            value = quote(unwrap_quotes(value))
        overrides.append(f"{prefix}{key}={value}")
    return overrides


def format_value(value: Any) -> str:
    """A plain Python value (from a recorded config) as a Hydra override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as an override")


def override_key(override: str) -> str | None:
    match = _KEY.match(override)
    return match["key"] if match else None
