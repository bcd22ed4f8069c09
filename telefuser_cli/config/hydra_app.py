"""Drives Hydra from our own commands, with its run, multirun and launcher paths intact.

We build Hydra's own `Hydra` object (internal API, pinned by `hydra-core>=1.3.2,<1.4` and guarded by
tests) instead of a `@hydra.main` function, so that Typer owns the command line and every job can be
composed and validated before the first one starts.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from hydra import version
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.errors import HydraException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

import telefuser_cli.config.store  # noqa: F401  (registers the schema and the recipes)
from telefuser_cli.config.catalog import unknown_choice_message
from telefuser_cli.config.guard import (
    check_composed,
    check_override_targets,
    check_overrides,
    unknown_key_message,
)
from telefuser_cli.config.job_names import resolve_job_dir
from telefuser_cli.config.overrides import override_key
from telefuser_cli.errors import UserError
from telefuser_cli.paths import config_dir

CONFIG_NAME = "config"


def first_not_null(*values: Any) -> Any:
    """`${first_not_null:A,B}`: A unless it is null, else B.

    MoE pipelines set `cfg_scale_high: ${first_not_null:${.cfg_scale},4.0}`: the expert's own scale
    unless pipeline.cfg_scale is given, and an explicit pipeline.cfg_scale_high replaces the whole value.
    """
    return next((value for value in values if value is not None), None)


# Registered here, where every config is composed; Hydra's launchers carry resolvers into their workers.
OmegaConf.register_new_resolver("first_not_null", first_not_null, replace=True)
# `${telefuser_job_dir:...}` names a sweep's job folders from its swept values (conf/config.yaml).
OmegaConf.register_new_resolver(
    "telefuser_job_dir", lambda num, task, exclude: resolve_job_dir(num, task, exclude), replace=True
)


def _clean_hydra_message(error: BaseException) -> str:
    # Hydra sometimes wraps the real error in an exception without a message.
    parts = []
    while error is not None:
        text = str(error).strip()
        if text and text not in parts:
            parts.append(text)
        error = error.__cause__
    text = ": ".join(parts) or "invalid configuration"
    return _one_line(text)


def _one_line(text: str) -> str:
    """Hydra's and OmegaConf's messages in one line: the first line, plus the options Hydra lists.

    OmegaConf appends `full_key:` / `reference_type=` / `object_type=` lines, Hydra a link to its grammar,
    the config search path and a list of the group's entries over many lines.
    """
    # A file's bad value: Hydra puts OmegaConf's reason on the line after "In 'user/mine': ... config:"
    text = re.sub(r"^In '([^']+)': \w+ raised while composing config:\s*\n", r"\1.yaml: ", text.strip())
    lines = [line.strip() for line in text.splitlines()]
    first = lines[0] if lines else "invalid configuration"
    # Hydra's numbered choices ("3. To sweep over it, add --multirun") are the fix: keep them, inline
    choices = [line for line in lines[1:] if line[:2].rstrip(".").isdigit() and line[1:2] == "."]
    if choices:
        return f"{first}: " + "; ".join(choices)
    header = next((i for i, line in enumerate(lines) if line.startswith("Available options in")), None)
    if header is None:
        return first
    options = []
    for line in lines[header + 1 :]:
        if not line or line.startswith("Config search path"):
            break
        options.append(line)
    return f"{first}; available: {', '.join(options)}" if options else first


def _unknown_key_in_file(error: BaseException) -> str | None:
    """A key of a config file that no schema field has (struct mode refused it), with a did-you-mean."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ConfigKeyError):
        cause = cause.__cause__ or cause.__context__  # Hydra raises its own error inside `except`
    message = unknown_key_message(cause.full_key) if cause is not None and cause.full_key else None
    if message is None:
        return None
    where = re.match(r"In '([^']+)'", str(error))  # Hydra names the file: In 'recipe/mine'
    return f"{where.group(1)}.yaml: {message}" if where else message


def _override_problem(overrides: list[str], error: BaseException) -> str:
    """Hydra's parse errors do not say which override they are about: find it."""
    if isinstance(error, OverrideParseException):
        parser = OverridesParser.create()
        for override in overrides:
            try:
                parser.parse_overrides([override])
            except OverrideParseException as own:
                return (
                    f"cannot read the override {override!r}: {_clean_hydra_message(own)} (quote values with "
                    "special characters: key='a value', or see telefuser keys)"
                )
    return _clean_hydra_message(error)


class HydraApp:
    """One Hydra instance over the packaged `conf/` (and an optional user config dir that shadows it)."""

    def __init__(self, user_config_dir: Path | None = None) -> None:
        version.setbase("1.3")
        search_path = create_config_search_path(f"file://{config_dir()}")
        if user_config_dir is not None:
            if not Path(user_config_dir).is_dir():
                raise UserError(f"--config-dir {user_config_dir}: no such directory")
            search_path.prepend("user", f"file://{Path(user_config_dir).resolve()}")
        GlobalHydra.instance().clear()
        self.hydra = Hydra.create_main_hydra2(task_name="telefuser", config_search_path=search_path)
        _compose_once(self.hydra.config_loader)
        self.user_config_dir = user_config_dir
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def compose(self, overrides: list[str], *, multirun: bool = False) -> DictConfig:
        """The composed config of one job (with its `hydra` node), or a UserError."""
        try:
            return self.hydra.compose_config(
                config_name=CONFIG_NAME,
                overrides=list(overrides),
                run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
                with_log_configuration=False,
            )
        except (HydraException, OmegaConfBaseException, ValueError, yaml.YAMLError) as error:
            # an entry name that does not exist: one line with the closest name, not Hydra's list of all
            unknown = unknown_choice_message(list(overrides), self.user_config_dir)
            unknown = unknown or _unknown_key_in_file(error)
            raise UserError(unknown or _override_problem(list(overrides), error)) from None

    def job_overrides(self, overrides: list[str], multirun: bool) -> list[list[str]]:
        """The override list of every job the command will run."""
        if not multirun:
            return [list(overrides)]
        try:
            parsed = OverridesParser.create().parse_overrides(overrides)
            batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
        except HydraException as error:
            raise UserError(_override_problem(overrides, error)) from None
        return [job for batch in batches for job in batch]

    def _compose_cached(self, overrides: list[str]) -> DictConfig:
        """compose() for the few override lists every job of a sweep shares (its group choices)."""
        key = tuple(overrides)
        if key not in self._composed:
            self._composed[key] = self.compose(overrides)
        return self._composed[key]

    def checked_config(self, overrides: list[str]) -> DictConfig:
        """Compose one job and apply the layer guard to the result."""
        # Keys below a node the chosen entries leave null (pipeline.dit_high_config.compile on a
        # single-DiT model) would crash inside OmegaConf: check them on the job's entries alone first.
        choices = [o for o in overrides if "." not in (override_key(o) or ".")]
        check_override_targets(overrides, self._compose_cached(choices))
        # a job of choices only (every entry `list` shows) is that composition: a copy, not a second compose
        cfg = self._compose_cached(choices).copy() if choices == list(overrides) else self.compose(overrides)
        choice = cfg.hydra.runtime.choices.get("model")
        bound = self._compose_cached([f"model={choice}"])
        tree = OmegaConf.to_container(cfg, resolve=False)
        tree.pop("hydra", None)
        bound_model = OmegaConf.to_container(bound.model, resolve=False)
        check_composed(tree, bound_model)
        return cfg

    def validate_all(
        self, overrides: list[str], multirun: bool, validate_job: Callable[[DictConfig], Any]
    ) -> list[tuple[list[str], Any]]:
        """Compose, guard and validate every job before any starts; all problems in one message."""
        check_overrides(overrides)
        jobs = self.job_overrides(overrides, multirun)
        results, problems = [], []
        for job in jobs:
            try:
                # Hydra's own overrides first, as its sweeper hands them to each job: the same list, so the
                # job's composition here is the one its run reuses (_compose_once)
                ordered = sorted(job, key=lambda o: not o.startswith("hydra.")) if multirun else job
                cfg = self.checked_config(ordered)
                results.append((job, validate_job(cfg)))
            except UserError as error:
                label = " ".join(o for o in job if not o.startswith("hydra.job.")) if multirun else ""
                problems.append(f"{label}: {error}" if label else str(error))
        if problems:
            unique = list(dict.fromkeys(problems))
            raise UserError("\n".join(unique))
        return results

    def run(self, task: Callable[[DictConfig], Any], overrides: list[str]) -> JobReturn:
        return self.hydra.run(config_name=CONFIG_NAME, task_function=task, overrides=list(overrides))

    def multirun(self, task: Callable[[DictConfig], Any], overrides: list[str]) -> list[JobReturn]:
        """Run the sweep; call :meth:`validate_all` first (the sweeper's own check of each job is skipped)."""
        with _jobs_checked_already():
            batches = self.hydra.multirun(
                config_name=CONFIG_NAME, task_function=task, overrides=list(overrides)
            )
        return [job for batch in batches for job in batch]


def _compose_once(loader: Any) -> None:
    """Compose each override list once per command where it can: a sweep job is composed to validate it
    before any job starts and once more by the launcher to run it (~0.3 s each). The first ask composes and
    keeps a deep copy (callers set keys on what they get, e.g. a drawn seed); the next ask takes that copy
    away; a third (the same job twice in one sweep) composes afresh."""
    compose = loader.load_configuration
    kept: dict[tuple[Any, ...], DictConfig] = {}

    def load_configuration(config_name, overrides, run_mode, from_shell=True, validate_sweep_overrides=True):
        key = (config_name, tuple(overrides), run_mode, from_shell, validate_sweep_overrides)
        if key in kept:
            return kept.pop(key)
        cfg = compose(config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
        kept[key] = copy.deepcopy(cfg)
        return cfg

    loader.load_configuration = load_configuration


@contextlib.contextmanager
def _jobs_checked_already() -> Iterator[None]:
    """Hydra's basic sweeper composes every job of a batch to check it before launching; telefuser has
    composed and validated every job before the sweep (``HydraApp.validate_all``), so that check is skipped.
    Other sweepers keep theirs (their jobs are not the ones validate_all expands). Patched on the base class:
    Hydra's plugin scan imports its own copy of the basic sweeper's module."""
    check = Sweeper.validate_batch_is_legal

    def validate_batch_is_legal(self, batch) -> None:
        if type(self).__name__ != "BasicSweeper":
            check(self, batch)

    Sweeper.validate_batch_is_legal = validate_batch_is_legal
    try:
        yield
    finally:
        Sweeper.validate_batch_is_legal = check


def reset_logging() -> None:
    """Hydra configures the root logger per job; detach its handlers so later runs start clean."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def with_kwargs(task: Callable[..., Any], **kwargs: Any) -> Callable[[DictConfig], Any]:
    """A picklable task function (launchers ship it to other processes)."""
    return functools.partial(task, **kwargs)
