"""`generate --from-config RUN`: the overrides that reproduce a recorded run.

RUN is a run folder, its `config.json`, or its `resolved_config.yaml` (whose values are replayed; the
`config.json` beside it names the model, pipeline and recipe entries, which the YAML does not record).
We select the same entries and set every recorded value explicitly, so later edits to the packaged
defaults cannot change a replay. Facts bound to the weights are not replayed: they come from the model
entry, and a record whose facts differ from the entry's (edited by hand) is refused, as `model.distill=`
on the command line is. `output.overwrite` is not replayed either: it is a permission about the
destination, not part of the run. New overrides from the command line win over recorded values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from telefuser_cli.config.guard import fact_fields
from telefuser_cli.config.overrides import format_value, override_key
from telefuser_cli.config.schema import ModelConfig
from telefuser_cli.errors import UserError

CONFIG_JSON = "config.json"
RESOLVED_YAML = "resolved_config.yaml"
_USAGE = f"give a run folder, its {CONFIG_JSON} or its {RESOLVED_YAML}"
_SECTIONS = ("pipeline", "user", "output", "launcher")
# user.prompt_file / user.prompt_line say where a sweep's prompt came from; the record's user.prompt is
# the text itself, and a replay runs that text (the file may have changed since).
_NOT_REPLAYED = {"output.overwrite", "user.prompt_file", "user.prompt_line"}


@dataclasses.dataclass
class Recorded:
    """What a run's record says, whichever file it was read from."""

    path: Path
    choices: dict[str, Any]
    root: str
    components: dict[str, str]  # model field -> path (relative to root where it was under root)
    facts: dict[str, Any]
    sections: dict[str, Any]  # pipeline, user, output, launcher


def _refuse(path: Path, problem: str) -> UserError:
    return UserError(f"--from-config {path}: {problem}")


def _record_file(path: Path) -> Path:
    """The record file a --from-config argument names (a run folder stands for its config.json)."""
    if path.is_dir():
        if not (path / CONFIG_JSON).is_file():
            raise _refuse(path, f"not a run folder (no {CONFIG_JSON} in it); {_USAGE}")
        return path / CONFIG_JSON
    if not path.exists():
        raise _refuse(path, f"no such file or folder; {_USAGE}")
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise _refuse(path, f"not a run record (a {path.suffix or 'suffix-less'} file); {_USAGE}")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _refuse(path, f"not a run record (not UTF-8 text); {_USAGE}") from None
    except OSError as error:
        raise _refuse(path, f"cannot be read ({error.strerror or error})") from None


def _section(tree: dict[str, Any], key: str, path: Path, what: str, kind: type = dict) -> Any:
    value = tree.get(key)
    if not isinstance(value, kind):
        raise _refuse(path, f"not a telefuser {what} (its '{key}' section is missing or malformed); {_USAGE}")
    return value


def _choices(document: dict[str, Any], path: Path) -> dict[str, Any]:
    choices = document.get("choices")
    if not isinstance(choices, dict) or not isinstance(choices.get("model"), str) or not choices["model"]:
        raise _refuse(
            path, "the record names no model entry (choices.model is missing); it cannot be replayed"
        )
    return choices


def _relative(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def _from_document(document: Any, path: Path) -> Recorded:
    """A config.json as every run writes it."""
    if isinstance(document, dict) and "jobs" in document and "layer1_model_definition" not in document:
        raise _refuse(
            path, "a sweep summary, not one run; replay one of its jobs: --from-config <job folder>"
        )
    if not isinstance(document, dict):
        raise _refuse(path, f"not a telefuser {CONFIG_JSON}; {_USAGE}")
    model = _section(document, "layer1_model_definition", path, CONFIG_JSON)
    pipeline = _section(document, "layer2_inference_config", path, CONFIG_JSON)
    user = _section(document, "layer3_user_inputs", path, CONFIG_JSON)
    root = _section(model, "root", path, CONFIG_JSON, str)
    components = {}
    for component in _section(model, "models", path, CONFIG_JSON, list):
        if not (isinstance(component, dict) and isinstance(component.get("name"), str)):
            raise _refuse(path, f"malformed layer1_model_definition.models entry {component!r}")
        components[component["name"]] = _relative(str(component.get("path")), root)
    facts = dict(model["facts"]) if isinstance(model.get("facts"), dict) else {}
    if "name" in model:
        facts["name"] = model["name"]
    sections = {"pipeline": pipeline, "user": user}
    sections.update(
        {key: document[key] for key in ("output", "launcher") if isinstance(document.get(key), dict)}
    )
    return _upgraded(Recorded(path, _choices(document, path), root, components, facts, sections))


def _upgraded(recorded: Recorded) -> Recorded:
    """A record written before the pipeline files were shared by family: the same run in today's keys.

    Its per-model pipeline entry (``<model>_default``) no longer exists and needs no replacing, because every
    pipeline value is replayed one by one; ``pipeline_type`` is gone (the family and task say it); the RIFE
    weights moved from the model entry (``model.vfi``) to ``pipeline.vfi_weights``.
    """
    choices = dict(recorded.choices)
    if str(choices.get("pipeline") or "").endswith("_default"):
        choices["pipeline"] = None
    pipeline = dict(recorded.sections.get("pipeline", {}))
    pipeline.pop("pipeline_type", None)
    components = dict(recorded.components)
    vfi = components.pop("vfi", None)
    if vfi is not None and "vfi_weights" not in pipeline:
        pipeline["vfi_weights"] = str(Path(recorded.root) / vfi)
    components.pop("auto_create", None)
    sections = {**recorded.sections, "pipeline": pipeline}
    return dataclasses.replace(recorded, choices=choices, components=components, sections=sections)


def _from_resolved_yaml(tree: Any, path: Path) -> Recorded:
    """A resolved_config.yaml: its values, with the entry choices from the config.json beside it."""
    if not isinstance(tree, dict):
        raise _refuse(path, f"not a telefuser {RESOLVED_YAML}; {_USAGE}")
    model = _section(tree, "model", path, RESOLVED_YAML)
    sections = {key: _section(tree, key, path, RESOLVED_YAML) for key in ("pipeline", "user")}
    sections.update({key: tree[key] for key in ("output", "launcher") if isinstance(tree.get(key), dict)})
    beside = path.with_name(CONFIG_JSON)
    if not beside.is_file():
        raise _refuse(
            path,
            f"{beside} is missing: it names the model, pipeline and recipe entries this YAML does not record",
        )
    try:
        choices = _choices(json.loads(_read_text(beside)), beside)
    except json.JSONDecodeError as error:
        raise _refuse(beside, f"not valid JSON ({error})") from None
    facts = {key: model[key] for key in fact_fields() if key in model}
    not_components = set(fact_fields()) | {"description", "root"}
    components = {key: model[key] for key in ("vfi", "auto_create") if key in model}  # older records
    components |= {
        f.name: model[f.name]
        for f in dataclasses.fields(ModelConfig)
        if f.name not in not_components and f.name in model
    }
    root = _section(model, "root", path, RESOLVED_YAML, str)
    return _upgraded(Recorded(path, choices, root, components, facts, sections))


def read_recorded(path: Path) -> Recorded:
    """Read a run's record, or refuse in one line what is not one."""
    path = _record_file(Path(path).expanduser())
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        try:
            return _from_document(json.loads(text), path)
        except json.JSONDecodeError as error:
            raise _refuse(path, f"not valid JSON ({error}); {_USAGE}") from None
    try:
        return _from_resolved_yaml(yaml.safe_load(text), path)
    except yaml.YAMLError as error:
        message = " ".join(str(error).split())
        raise _refuse(path, f"not valid YAML ({message}); {_USAGE}") from None


def check_facts(recorded: Recorded, entry_model: dict[str, Any]) -> None:
    """The recorded facts must be the model entry's (enum values by name); facts the record lacks are
    taken from the entry. The wording follows config/guard.py's refusal of `model.distill=` overrides."""
    name = entry_model.get("name")
    for key in fact_fields():
        if key in recorded.facts and recorded.facts[key] != entry_model.get(key):
            raise _refuse(
                recorded.path,
                f"model.{key} is bound to the weights of model '{name}' and cannot be changed per run "
                f"(the model entry says {entry_model.get(key)!r}, this record says {recorded.facts[key]!r}); "
                "choose other weights with model=NAME (telefuser list model)",
            )


def _leaves(tree: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(tree, dict) and tree:
        pairs = []
        for key, value in tree.items():
            pairs.extend(_leaves(value, f"{prefix}.{key}"))
        return pairs
    return [(prefix, tree)]


def _recorded_overrides(recorded: Recorded, with_model: bool) -> list[str]:
    choices = recorded.choices
    overrides = []
    if with_model:
        overrides.append(f"model={choices['model']}")
        overrides.append(f"model.root={format_value(recorded.root)}")
        overrides += [f"model.{name}={format_value(value)}" for name, value in recorded.components.items()]
    for group in ("pipeline", "recipe"):
        if choices.get(group):
            overrides.append(f"{group}={choices[group]}")
    for section in _SECTIONS:
        for key, value in _leaves(recorded.sections.get(section, {}), section):
            if key not in _NOT_REPLAYED:
                overrides.append(f"{key}={format_value(value)}")
    return overrides


def replay_overrides(
    recorded: Recorded, overrides: list[str], compose: Callable[[list[str]], Any]
) -> list[str]:
    """The recorded run as overrides, then `overrides` (which win). `compose(overrides)` composes a config
    (Hydra), used to read the model entry's facts.

    With `model=NAME` on the command line the recorded weights (root, component files) are not replayed:
    they belong to the recorded model, not to the one chosen.
    """
    from omegaconf import OmegaConf

    given = {override_key(o) for o in overrides}
    if "user.prompt_file" in given:  # a prompt file on the command line replaces the recorded prompt
        given.add("user.prompt")
    with_model = "model" not in given
    if with_model:
        entry_overrides = [f"model={recorded.choices['model']}"]
        if recorded.choices.get("pipeline"):
            entry_overrides.append(f"pipeline={recorded.choices['pipeline']}")
        try:
            entry = compose(entry_overrides).model
        except UserError as error:
            raise _refuse(recorded.path, str(error)) from None
        check_facts(recorded, OmegaConf.to_container(entry, resolve=False, enum_to_str=True))
    kept = [o for o in _recorded_overrides(recorded, with_model) if override_key(o) not in given]
    return kept + overrides
