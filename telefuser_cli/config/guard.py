"""The layer guard: unknown keys and changes to facts bound to the weights are refused.

Hydra accepts `+user.sed=3` even with a typed schema (appending bypasses struct mode), and a user
or recipe file could set `model.distill`. Both checks run on the overrides (early, with a
did-you-mean) and again on every composed job config (catching what files did).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from telefuser_cli.config.overrides import override_key
from telefuser_cli.config.schema import ModelConfig, RootConfig
from telefuser_cli.errors import UserError

_FREE = object()  # below this node any key is allowed (dict-typed fields)


def _unwrap(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _unwrap(args[0])
    return hint


def _child(node_type: Any, key: str) -> Any:
    """The schema type of `node_type.key`, _FREE, or raise KeyError."""
    if node_type is _FREE:
        return _FREE
    origin = typing.get_origin(node_type)
    if origin is dict:
        return _FREE
    if origin is list:
        if not key.isdigit():
            raise KeyError(key)
        return _unwrap(typing.get_args(node_type)[0])
    if dataclasses.is_dataclass(node_type):
        hints = typing.get_type_hints(node_type)
        if key not in hints:
            raise KeyError(key)
        return _unwrap(hints[key])
    raise KeyError(key)


def _field_names(node_type: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(node_type)] if dataclasses.is_dataclass(node_type) else []


def _similarity(typed: str, name: str) -> float:
    """Whole-string similarity, or the share of typed words found in the name (num_step ~ num_inference_steps)."""
    whole = difflib.SequenceMatcher(None, typed, name).ratio()
    words = [w for w in typed.split("_") if w]
    name_words = name.split("_")
    found = sum(any(difflib.SequenceMatcher(None, w, n).ratio() >= 0.8 for n in name_words) for w in words)
    return max(whole, found / len(words) if words else 0.0)


def did_you_mean(typed: str, names: list[str]) -> str | None:
    scored = sorted(((_similarity(typed, name), name) for name in names), reverse=True)
    return scored[0][1] if scored and scored[0][0] >= 0.6 else None


def unknown_key_message(dotted: str) -> str | None:
    """None if `dotted` names a schema field, else a message with a did-you-mean."""
    node_type: Any = RootConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        try:
            node_type = _child(node_type, part)
        except KeyError:
            parent = ".".join(parts[:depth]) or "the configuration"
            names = _field_names(node_type)
            close = did_you_mean(part, names)
            hint = f"; did you mean {'.'.join([*parts[:depth], close])}?" if close else ""
            valid = f" Valid keys under {parent}: {', '.join(names)}." if names else ""
            return f"unknown key '{dotted}'{hint}{valid}"
    return None


def fact_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("fact")]


def _fact_message(key: str, model_name: str | None = None) -> str:
    weights = f"of model '{model_name}'" if model_name else "of the chosen model"
    return (
        f"model.{key} is bound to the weights {weights} and cannot be changed per run; "
        f"choose other weights with model=NAME (telefuser list model)"
    )


def check_overrides(overrides: list[str]) -> None:
    """Refuse unknown keys and fact changes named on the command line."""
    for override in overrides:
        key = override_key(override)
        if key is None or key.startswith("hydra.") or key.startswith("hydra/") or "." not in key:
            continue  # group choices (model=, recipe=) and Hydra's own settings
        message = unknown_key_message(key)
        if message:
            raise UserError(message)
        parts = key.split(".")
        if parts[0] == "model" and parts[1] in fact_fields():
            raise UserError(_fact_message(parts[1]))


def _unknown_in_tree(tree: Any, prefix: str, node_type: Any) -> str | None:
    if node_type is _FREE or not isinstance(tree, dict):
        return None
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        try:
            child = _child(node_type, str(key))
        except KeyError:
            return unknown_key_message(dotted)
        if isinstance(value, list) and dataclasses.is_dataclass(_unwrap(typing.get_args(child)[0])):
            for index, item in enumerate(value):
                found = _unknown_in_tree(item, f"{dotted}.{index}", _unwrap(typing.get_args(child)[0]))
                if found:
                    return found
        else:
            found = _unknown_in_tree(value, dotted, child)
            if found:
                return found
    return None


def check_composed(tree: dict, bound_model: dict) -> None:
    """Check one composed job config (as a plain dict without `hydra`) against the schema, and its
    model facts against those of the model file alone (`bound_model`)."""
    message = _unknown_in_tree(tree, "", RootConfig)
    if message:
        raise UserError(message)
    model = tree.get("model", {})
    for key in fact_fields():
        if model.get(key) != bound_model.get(key):
            raise UserError(
                _fact_message(key, str(bound_model.get("name")))
                + f" (the file says {bound_model.get(key)!r}, this run sets {model.get(key)!r})"
            )
