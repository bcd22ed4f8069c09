"""Command-line overrides: shorthands, literal prompts, and values written back as overrides.

Prompts are free text; Hydra's override grammar is not. Unquoted values reject `=`, quotes, brackets
and non-ASCII text, and a comma silently becomes a sweep under `-m`. Every prompt value is therefore
quoted here, before Hydra sees it, so it arrives byte-identical and never splits a sweep.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

# shorthand -> full key
SHORTHANDS = {
    "prompt": "user.prompt",
    "negative_prompt": "user.negative_prompt",
    "seed": "user.seed",
    "resolution": "user.resolution",
    "aspect_ratio": "user.aspect_ratio",
}
LITERAL_KEYS = {"user.prompt", "user.negative_prompt", "pipeline.negative_prompt"}

_KEY = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w.\-/@]*)=(?P<value>.*)$", re.DOTALL)


def quote(text: str) -> str:
    """A Hydra single-quoted string that parses back to exactly `text`.

    Hydra treats backslashes specially only right before a quote or at the end of the string, and
    `${` starts an interpolation even inside quotes; escape exactly those.
    """
    text = re.sub(r"(\\+)(?='|\$\{|$)", lambda m: m.group(1) * 2, text)
    text = text.replace("'", "\\'").replace("${", "\\${")
    return f"'{text}'"


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
            value = quote(value)
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
