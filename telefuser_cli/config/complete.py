"""Shell completion of overrides: `model=<TAB>` offers the model entries, `pipeline.num<TAB>` the keys.

Runs on every TAB press, so it reads file names and the schema's dataclasses only: no Hydra, no torch.
"""

from __future__ import annotations

import enum
from pathlib import Path

from telefuser_cli.config.catalog import CHOICE_KEYS, catalog
from telefuser_cli.config.keys import SECTIONS, schema_key_types
from telefuser_cli.config.overrides import SHORTHANDS


def _values(key: str, user_dir: Path | None) -> list[str]:
    """The values worth offering after `key=`: entry names of a group, members of an enum."""
    if key in CHOICE_KEYS:
        return [entry.name for entry in catalog(CHOICE_KEYS[key], user_dir)]
    kind = schema_key_types().get(SHORTHANDS.get(key, key))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return [member.name for member in kind]
    if kind is bool:
        return ["true", "false"]
    return []


def _bash_key(incomplete: str, previous: list[str], bare_key: bool) -> str | None:
    """The key whose value is being typed, where bash split `model=wan` at its "=" (COMP_WORDBREAKS).

    bash then completes only the part after "=": the key arrives as an earlier word, followed by a
    word "=" once the value is begun (a lone "=" being completed is dropped by click).
    """
    if len(previous) >= 2 and previous[-1] == "=":
        return previous[-2]
    after_value = len(previous) >= 2 and previous[-2] == "="  # `model = tiny_wan21`: a finished override
    if bare_key and not incomplete and previous and "=" not in previous[-1] and not after_value:
        return previous[-1]  # a bare word is never an override: it is a key before its "="
    return None


def complete_override(
    incomplete: str, user_dir: Path | None = None, previous: list[str] | None = None, bare_key: bool = True
) -> list[str]:
    """Completions of one override being typed; `previous` are the words before it."""
    key = _bash_key(incomplete, previous or [], bare_key)
    if key is not None:
        return [value for value in _values(key, user_dir) if value.startswith(incomplete)]
    if "=" in incomplete:
        key, prefix = incomplete.split("=", 1)
        return [f"{key}={value}" for value in _values(key, user_dir) if value.startswith(prefix)]
    keys = [f"{key}=" for key in (*CHOICE_KEYS, *SHORTHANDS, *schema_key_types())]
    return [key for key in keys if key.startswith(incomplete)]


def complete_keys_argument(
    incomplete: str, user_dir: Path | None = None, previous: list[str] | None = None
) -> list[str]:
    """`telefuser keys`: a section, or an override (recipe=NAME, model=NAME, ...); a bare word is a section."""
    values = complete_override(incomplete, user_dir, previous, bare_key=False)
    if (previous or [])[-1:] == ["="]:
        return values
    return [name for name in SECTIONS if name.startswith(incomplete)] + values
