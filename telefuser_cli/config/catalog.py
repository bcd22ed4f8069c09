"""What `telefuser list` shows: config entries per group, where each comes from, and what each runs with.

Names and descriptions come from the YAML files alone (instant: shell completion uses them). The facts
(weights location, task, size, steps, guidance, shift, availability) come from composing each entry
through the same Hydra app and checks `generate` uses, never from comments or descriptions.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from telefuser_cli.paths import cache_dir, config_dir

GROUPS = ("model", "pipeline", "recipe", "launcher")
# `telefuser list models` reads naturally; the Hydra group names are singular.
_PLURALS = {f"{group}s": group for group in GROUPS}
# Launchers that come from installed Hydra plugins rather than from files of ours.
PLUGIN_LAUNCHERS = {
    "basic": ("hydra-core", "jobs one after another in this process (default)"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "jobs in parallel on this machine"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "jobs via submitit on this machine"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "jobs on a SLURM cluster"),
}
PACKAGED = "packaged"
PLUGIN = "plugin"


def group_name(text: str) -> str | None:
    """The group a user typed (`model`, `models`, `Models`), or None."""
    text = text.strip().lower()
    return text if text in GROUPS else _PLURALS.get(text)


# The override that chooses an entry of each group.
CHOICE_KEYS = {"model": "model", "pipeline": "pipeline", "recipe": "recipe", "hydra/launcher": "launcher"}


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    source: str


def _description(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and data.get("description"):
        return str(data["description"])
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def _folder(group: str, root: Path) -> Path:
    if group == "launcher":
        return root / "hydra" / "launcher"
    return root / group


def _plugin_installed(module: str) -> bool:
    import importlib.util

    return module == "hydra-core" or importlib.util.find_spec(module) is not None


def catalog(group: str, user_dir: Path | None = None) -> list[Entry]:
    packaged = _folder(group, config_dir())
    entries: dict[str, Entry] = {}
    if group == "launcher":
        for name, (module, text) in PLUGIN_LAUNCHERS.items():
            if _plugin_installed(module):
                entries[name] = Entry(name, text, PLUGIN)
    for path in sorted(packaged.glob("*.yaml")):
        entries[path.stem] = Entry(path.stem, _description(path), PACKAGED)
    if user_dir is not None:
        for path in sorted(_folder(group, Path(user_dir)).glob("*.yaml")):
            source = f"{user_dir} (shadows packaged)" if path.stem in entries else str(user_dir)
            entries[path.stem] = Entry(path.stem, _description(path), source)
    return sorted(entries.values(), key=lambda entry: entry.name)


def unknown_choice_message(overrides: list[str], user_dir: Path | None = None) -> str | None:
    """One line for `model=NAME` (or pipeline=, recipe=, hydra/launcher=) naming no entry, else None.

    Hydra's own message lists every entry over thirty lines; this one names the closest.
    """
    from telefuser_cli.config.guard import did_you_mean

    for override in overrides:
        key, _, value = override.partition("=")
        group = CHOICE_KEYS.get(key.lstrip("+~"))
        if group is None or not value or "," in value or value == "null":  # a sweep is checked per job
            continue
        names = [entry.name for entry in catalog(group, user_dir)]
        if value not in names:
            close = did_you_mean(value, names)
            hint = f"; did you mean {key}={close}?" if close else ""
            return f"{override}: no {group} entry is called {value!r}{hint} (telefuser list {group}s)"
    return None


# ---------------------------------------------------------------- facts from the composed config


@dataclass(frozen=True)
class Facts:
    """What one entry runs with by default, read from its composed and validated configuration."""

    model: str = ""
    pipeline: str = ""
    model_pipeline: str = ""  # the pipeline the model entry chooses itself
    task: str = ""
    root: str = ""  # model.root as the config resolves it (TELEFUSER_MODEL_ROOT applied)
    weights: str = ""  # "found", "missing" or "first use" (a tiny model made on first use)
    size: str = ""  # WxH of the default resolution and aspect ratio
    steps: str = ""
    cfg: str = ""  # one scale, or high/low for a mixture of experts
    shift: str = ""
    frames: str = ""
    fps: str = ""
    super_resolution: str = ""  # the resolution a super-resolution stage lifts the video to ("" without one)
    supported: bool = True  # this version runs the entry (its family implements its task)
    refused: str = ""  # why `generate` refuses the entry as it is, besides that ("" when it runs)
    broken: str = ""  # why the entry does not even compose ("" normally)

    @property
    def available(self) -> bool:
        return self.supported and not (self.refused or self.broken)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _guidance(pipeline: Any) -> str:
    if pipeline.cfg_scale_high is not None or pipeline.cfg_scale_low is not None:
        return f"{_number(pipeline.cfg_scale_high)}/{_number(pipeline.cfg_scale_low)}"
    return _number(pipeline.cfg_scale)


def _dit_patterns(model: Any) -> list[str]:
    if model.moe or model.dit is None:
        return [p for p in (model.dit_high, model.dit_low) if p]
    return [model.dit]


def weights_state(model: Any) -> str:
    """Whether model.root holds the entry's DiT: `stat` and `glob` only, no file is opened."""
    root = Path(model.root).expanduser()
    patterns = _dit_patterns(model)
    # A diffusers WanPipeline folder keeps its DiT in transformer/ beside model_index.json.
    diffusers = (root / "model_index.json").is_file() and (root / "transformer").is_dir()
    if root.is_dir() and patterns and (diffusers or all(glob.glob(str(root / p)) for p in patterns)):
        return "found"
    # a folder directly in telefuser's cache is a tiny fixture, written on first use (families/tiny.py)
    return "first use" if root.resolve().parent == cache_dir().resolve() else "missing"


def _facts(cfg: Any, model_pipeline: str, available: Callable[[Any], bool]) -> Facts:
    from telefuser_cli.config.validate import to_settings, validate
    from telefuser_cli.errors import UserError

    settings = to_settings(cfg)
    model, pipeline = settings.model, settings.pipeline
    supported = available(model)
    refused, size = "", ""
    try:
        plan = validate(settings, require_prompt=False)  # what `generate` checks, the prompt and image aside
        size = f"{plan.width}x{plan.height}"
    except UserError as error:
        refused = str(error)
    choices = cfg.hydra.runtime.choices
    return Facts(
        model=str(choices.get("model")),
        pipeline=str(choices.get("pipeline")),
        model_pipeline=model_pipeline,
        task=model.task.value,
        root=model.root,
        weights=weights_state(model),
        size=size,
        steps=str(len(pipeline.timesteps) if pipeline.timesteps else pipeline.num_inference_steps),
        cfg=_guidance(pipeline),
        shift=_number(pipeline.sigma_shift),
        frames=str(pipeline.num_frames),
        fps=str(pipeline.fps),
        super_resolution=pipeline.sr_resolution if pipeline.enable_sr else "",
        supported=supported,
        refused=refused,
    )


class Compositions:
    """Composed configs by override list, so that an entry and the entries naming it compose once.

    The same steps as `HydraApp.checked_config` (compose, then the layer guard against the model file
    alone), which composes every job anew: here a recipe's model and a model's default pipeline are
    compositions the list has already made (each costs ~0.15 s).
    """

    def __init__(self, hydra_app: Any, available: Callable[[Any], bool]) -> None:
        """``available(model)``: whether this version runs the entry (the model families know)."""
        self.hydra_app = hydra_app
        self.available = available
        self._done: dict[tuple[str, ...], Any] = {}
        self._facts: dict[tuple[str, ...], Facts] = {}

    def _compose(self, overrides: list[str]) -> Any:
        key = tuple(overrides)
        if key not in self._done:
            self._done[key] = self.hydra_app.compose(overrides)
        return self._done[key]

    def checked(self, overrides: list[str]) -> Any:
        from omegaconf import OmegaConf

        from telefuser_cli.config.guard import check_composed

        cfg = self._compose(overrides)
        bound = self._compose([f"model={cfg.hydra.runtime.choices.get('model')}"])
        tree = OmegaConf.to_container(cfg, resolve=False)
        tree.pop("hydra", None)
        check_composed(tree, OmegaConf.to_container(bound.model, resolve=False))
        return cfg

    def facts(self, overrides: list[str]) -> Facts:
        from telefuser_cli.errors import UserError

        key = tuple(overrides)
        if key not in self._facts:
            try:
                cfg = self.checked(overrides)
                own = self._compose([f"model={cfg.hydra.runtime.choices.get('model')}"])
                pipeline = str(own.hydra.runtime.choices.get("pipeline"))
                self._facts[key] = _facts(cfg, pipeline, self.available)
            except UserError as error:
                self._facts[key] = Facts(broken=str(error))
        return self._facts[key]


_PIPELINE_CHOICE = re.compile(r"^\s*-\s*override\s+/pipeline(?:@\S+)?\s*:\s*(\S+)", re.MULTILINE)


def default_pipelines(user_dir: Path | None = None) -> dict[str, str]:
    """Model entry -> the pipeline its defaults list chooses, read from the YAML files (no Hydra)."""
    chosen = {}
    for root in (config_dir(), *([Path(user_dir)] if user_dir is not None else [])):
        for path in sorted((root / "model").glob("*.yaml")):
            found = _PIPELINE_CHOICE.search(path.read_text(encoding="utf-8"))
            if found:
                chosen[path.stem] = found.group(1)
    return chosen


def _overrides(group: str, name: str, defaults: dict[str, str]) -> list[str]:
    # A pipeline is judged with a model that chooses it, the same composition as that model's, so a
    # mixture-of-experts pipeline never meets a single-DiT model.
    owner = next((model for model, pipeline in defaults.items() if pipeline == name), None)
    if group == "pipeline" and owner is not None:
        return [f"model={owner}"]
    return [f"{group}={name}"]


def group_facts(
    group: str, names: list[str], compositions: Compositions, models: set[str]
) -> dict[str, Facts]:
    """Facts of every entry of a group (launchers have none); `models` are the model entries' names."""
    if group == "launcher":
        return {}
    chosen = default_pipelines(compositions.hydra_app.user_config_dir)
    defaults = {model: pipeline for model, pipeline in chosen.items() if model in models}
    return {name: compositions.facts(_overrides(group, name, defaults)) for name in names}


def model_entries(compositions: Compositions, names: list[str]) -> dict[str, dict[str, Any]]:
    """The composed `model` settings of each entry, as plain values (enums by value); broken entries left out."""
    import dataclasses
    import enum

    from telefuser_cli.config.validate import to_settings
    from telefuser_cli.errors import UserError

    entries = {}
    for name in names:
        try:
            model = to_settings(compositions.checked([f"model={name}"])).model
        except UserError:
            continue
        values = dataclasses.asdict(model)
        entries[name] = {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()}
    return entries


def display_path(path: str) -> str:
    """A path as a person reads it: the home directory as `~`."""
    home = os.path.expanduser("~")
    expanded = os.path.expanduser(path)
    if home not in ("", "/") and (expanded == home or expanded.startswith(home + os.sep)):
        return "~" + expanded[len(home) :]
    return expanded
