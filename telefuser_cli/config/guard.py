"""The layer guard: unknown keys, changes to facts bound to the weights, and text that is not UTF-8.

Hydra accepts `+user.sed=3` even with a typed schema (appending bypasses struct mode): overrides are
checked here, early, with a did-you-mean, and a composed job may hold no section the schema lacks
(`+steps=3`: a top-level `+` may also add a group). An unknown key in a file is refused by struct mode
while Hydra composes; `unknown_key_message` gives that refusal its did-you-mean (config/hydra_app.py). A
user or recipe file could set `model.distill`: every composed job's facts are compared with the model
file's.
Keys below a node that the chosen model leaves null would crash inside OmegaConf;
`check_override_targets` names them. Options and words without a key (habits of other tools) are
explained first, by config/habits.py.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig

from telefuser_cli.config.habits import GROUPS, argv_message, did_you_mean, suggest
from telefuser_cli.config.keys import SECTIONS
from telefuser_cli.config.overrides import override_key
from telefuser_cli.config.schema import ModelConfig, ModelRuntimeConfig, PipelineConfig, RootConfig
from telefuser_cli.errors import UserError

_FREE = object()  # below this node any key is allowed (dict-typed fields)


def _unwrap(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _unwrap(args[0])
    return hint


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints evaluates every annotation anew; the schema's classes never change."""
    return typing.get_type_hints(cls)


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
        hints = _type_hints(node_type)
        if key not in hints:
            raise KeyError(key)
        return _unwrap(hints[key])
    raise KeyError(key)


def _field_names(node_type: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(node_type)] if dataclasses.is_dataclass(node_type) else []


def unknown_key_message(dotted: str, value: str | None = None) -> str | None:
    """None if `dotted` names a schema field, else a message with a did-you-mean.

    A close name beside the typed one comes first (user.sed -> user.seed); else the key of any layer that
    the last name most likely means (steps -> pipeline.num_inference_steps), shown with `value` if given.
    """
    node_type: Any = RootConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        try:
            node_type = _child(node_type, part)
        except KeyError:
            return _unknown_message(dotted, parts, depth, _field_names(node_type), value)
    return None


def _unknown_message(dotted: str, parts: list[str], depth: int, names: list[str], value: str | None) -> str:
    part, last = parts[depth], depth == len(parts) - 1
    parent = ".".join(parts[:depth]) or "the configuration"
    valid = f"Valid keys under {parent}: {', '.join(names)}." if names else ""
    # A top-level name (steps=30) is rarely a misspelt section: look in every layer first.
    close = did_you_mean(part, names) if depth or not last else None
    if close:
        fixed = ".".join([*parts[:depth], close, *parts[depth + 1 :]])  # pipelines.num_inference_steps
        if unknown_key_message(fixed) is not None:
            fixed = ".".join([*parts[:depth], close])
        return f"unknown key '{dotted}'; did you mean {fixed}? {valid}".strip()
    found = suggest(part, value) if last else None
    if found:
        return f"unknown key '{dotted}'; did you mean {found}?"
    if depth == 0 and last:
        return (
            f"unknown key '{dotted}': not a section ({', '.join(SECTIONS)}) nor a group "
            "(model=, pipeline=, recipe=); `telefuser keys` lists every key"
        )
    return f"unknown key '{dotted}'. {valid}".strip()


def fact_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("fact")]


def _fact_message(key: str, model_name: str | None = None) -> str:
    weights = f"of model '{model_name}'" if model_name else "of the chosen model"
    return (
        f"model.{key} is bound to the weights {weights} and cannot be changed per run; "
        f"choose other weights with model=NAME (telefuser list model)"
    )


def not_utf8_message(name: str, text: str) -> str | None:
    """None if `text` encodes as UTF-8, else a message naming `name` and the offending bytes.

    Python decodes argv bytes that are not UTF-8 into lone surrogates (`prompt=$'\\xff'`); they
    would fail only when the first file is written. The message never contains the text itself, which
    the terminal could not print either.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start : error.end].encode("utf-8", "surrogateescape")
        shown = " ".join(f"0x{byte:02x}" for byte in bad)
        return (
            f"{name} holds bytes that are not UTF-8 ({shown}); "
            "pass the text in UTF-8 (check the terminal's locale or the file's encoding)"
        )
    return None


def check_overrides(overrides: list[str]) -> None:
    """Refuse text that is not UTF-8, options and keyless words (other tools' habits), unknown keys and
    fact changes named on the command line."""
    for index, override in enumerate(overrides):
        key = override_key(override)
        name = key if key is not None and key.isascii() else f"override #{index + 1}"
        message = not_utf8_message(name, override)
        if message:
            raise UserError(message)
    message = argv_message(overrides)
    if message:
        raise UserError(message)
    for override in overrides:
        key = override_key(override)
        if key is None or key.startswith("hydra.") or "/" in key or "@" in key:
            continue  # `~key` deletions and Hydra's own settings and group syntax
        if "." not in key and (key in SECTIONS or key in GROUPS or override.startswith(("+", "~"))):
            continue  # group choices (model=, recipe=), whole sections, and groups added with +
        message = unknown_key_message(key, override.split("=", 1)[1])
        if message:
            raise UserError(message)
        parts = key.split(".")
        if parts[0] == "model" and parts[1] in fact_fields():
            raise UserError(_fact_message(parts[1]))


def check_composed(tree: dict, bound_model: dict) -> None:
    """Check one composed job config (as a plain dict without `hydra`): its sections, and its model facts
    against those of the model file alone (`bound_model`)."""
    for key in tree:
        if key not in SECTIONS:
            raise UserError(unknown_key_message(str(key)) or f"unknown key '{key}'")
    model = tree.get("model", {})
    for key in fact_fields():
        if model.get(key) != bound_model.get(key):
            raise UserError(
                _fact_message(key, str(bound_model.get("name")))
                + f" (the file says {bound_model.get(key)!r}, this run sets {model.get(key)!r})"
            )


def _child_node(node: Any, part: str) -> Any:
    """The child `part` of a composed node, or None when there is none to check."""
    if isinstance(node, ListConfig):
        return node._get_node(int(part)) if part.isdigit() and int(part) < len(node) else None
    if isinstance(node, DictConfig) and part in node:
        return node._get_node(part)
    return None


def _runtime_nodes(pipeline: DictConfig) -> list[str]:
    """The runtime configs (dit_config, vae_config, ...) this pipeline sets."""
    hints = _type_hints(PipelineConfig)
    return [
        f"pipeline.{f.name}"
        for f in dataclasses.fields(PipelineConfig)
        if _unwrap(hints[f.name]) is ModelRuntimeConfig and pipeline.get(f.name) is not None
    ]


def _null_node_message(key: str, prefix: str, schema_type: Any, base: DictConfig) -> str:
    choices = base.hydra.runtime.choices
    where = f"model {base.model.name} (pipeline {choices.get('pipeline')})"
    if schema_type is ModelRuntimeConfig:
        return (
            f"{key}: {where} does not use {prefix} (it is null there); "
            f"its runtime settings are {', '.join(_runtime_nodes(base.pipeline))}"
        )
    return f"{key}: {prefix} is null for {where}; set {prefix} as a whole value"


def check_override_targets(overrides: list[str], base: DictConfig) -> None:
    """Refuse a key below a node the job's entries leave null or take from another key.

    `base` is the job composed from its group choices alone (model=, pipeline=, recipe=, ...): a key
    below a null node (pipeline.dit_high_config.compile on a single-DiT model, pipeline.clip_config.*
    on a model without CLIP) makes OmegaConf fail with an assertion, and a key inside an interpolated
    node (an expert's lora_configs that follows pipeline.dit_config.lora_configs) would write through
    to the node it follows. A node assigned as a whole by an earlier override is the user's own.
    """
    assigned: set[str] = set()
    for override in overrides:
        key = override_key(override)
        if key is None or "." not in key or key.startswith("hydra."):
            continue
        parts = key.split(".")
        node, schema_type = base, RootConfig
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[: depth + 1])
            child = _child_node(node, part)
            if prefix in assigned or child is None:
                break
            try:
                schema_type = _child(schema_type, part)
            except KeyError:
                break  # an unknown key: check_overrides names it
            last = depth == len(parts) - 1
            # A null node may be set as a whole, except a typed one (pipeline.clip_config={...}) to a value.
            sets_null = last and override.split("=", 1)[1].strip() == "null"
            below_null = not last or (dataclasses.is_dataclass(schema_type) and not sets_null)
            if child._is_none() and below_null:
                raise UserError(_null_node_message(key, prefix, schema_type, base))
            if child._is_interpolation() and not last:
                followed = str(child._value()).removeprefix("${").removesuffix("}")
                raise UserError(
                    f"{key}: on model {base.model.name}, {prefix} follows {followed}; "
                    f"set {prefix} as a whole to change it alone, or {followed} to change both"
                )
            node = child
        assigned.add(key)
