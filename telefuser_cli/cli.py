"""The `telefuser` command line: thin wrappers over config/, job.py and the pipelines.

Heavy imports (Hydra, torch) happen inside the commands, so `telefuser --help` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from telefuser_cli.reports import console, fail, internal_error, report_run, report_sweep, warn

app = typer.Typer(
    name="telefuser",
    help="Generate videos with open video diffusion transformers (Wan2.1, Wan2.2, HunyuanVideo 1.5).",
    add_completion=True,  # --install-completion / --show-completion; entries complete after model= etc.
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

OVERRIDES_HELP = (
    "Hydra overrides: model=NAME pipeline=NAME recipe=NAME, shorthands prompt= negative_prompt= seed= "
    "resolution= aspect_ratio= image= end_image=, any key such as pipeline.num_inference_steps=30."
)
# Shown under `generate --help`; every line fits an 80-column terminal.
GENERATE_EXAMPLES = """[bold]Examples[/]

  [dim]# the tiny model that ships with telefuser, on any CPU in seconds[/]
  telefuser generate recipe=tiny prompt="a red ball moving right" seed=7

  [dim]# real weights: point the model entry at the folder you downloaded[/]
  telefuser generate model=wan21_t2v_1.3b model.root=/data/Wan2.1-T2V-1.3B \\
      prompt="a cat surfing a wave at sunset" seed=7

  [dim]# a sweep: one job per combination, each in its own folder[/]
  telefuser generate -m recipe=tiny prompt="a red ball" seed=1,2,3

  [dim]# what would run, without loading any weights[/]
  telefuser dump-config recipe=wan21_1.3b seed=3 --format yaml

[bold]Finding names and keys[/]

  telefuser list models          entries, their defaults, where the weights go
  telefuser keys pipeline        every pipeline.* key: type, default, meaning
  telefuser keys recipe=NAME     the defaults a recipe runs with
"""


def _complete_override(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of an override: entry names after model=, pipeline=, recipe=; keys otherwise."""
    from telefuser_cli.config.complete import complete_override

    previous = list(ctx.params.get("overrides") or [])  # the words before this one
    return complete_override(incomplete, ctx.params.get("config_dir"), previous)


def _validate_for_generate(cfg: Any) -> dict[str, Any]:
    """Validate one job; returns what the launcher decision and the output checks need."""
    from telefuser_cli.config.settings_hash import settings_sha256
    from telefuser_cli.config.validate import to_settings, validate
    from telefuser_cli.families import check

    settings = to_settings(cfg)
    plan = check(settings, validate(settings))
    return {
        "seed": settings.user.seed,
        "settings_sha256": settings_sha256(settings),  # what --resume compares (seed -1 is refused there)
        "warnings": list(plan.warnings),
        "nproc": settings.launcher.nproc_per_node,
        "run_dir": str(cfg.hydra.run.dir),
        "sweep_dir": str(cfg.hydra.sweep.dir),
        "overwrite": settings.output.overwrite,
    }


def _check_output_dirs(
    jobs: list[tuple[list[str], dict[str, Any]]], multirun: bool, swept: list[str] | None
) -> None:
    """Before Hydra creates any directory: the run's (or sweep's) directory must be writable and hold
    no finished run that would be replaced (unless output.overwrite=true).

    With --resume (`swept` given), finished runs in the sweep's directory are expected: each must be the
    run of the job whose folder it is, with the same settings hash (job.check_resume_dir)."""
    from telefuser_cli.config.job_names import job_dir_name
    from telefuser_cli.job import check_resume_dir, check_run_dir, check_sweep_dir

    infos = [info for _, info in jobs]
    if swept is not None:
        expected = {
            job_dir_name(num, job, swept): info["settings_sha256"] for num, (job, info) in enumerate(jobs)
        }
        check_resume_dir(Path(infos[0]["sweep_dir"]), expected, any(info["overwrite"] for info in infos))
        return
    if not multirun:
        check_run_dir(Path(infos[0]["run_dir"]), infos[0]["overwrite"])
        return
    sweep_dirs = {info["sweep_dir"]: info["overwrite"] for info in infos}  # one, unless per-job overrides
    for directory, overwrite in sweep_dirs.items():
        check_sweep_dir(Path(directory), overwrite)


def _torchrun_argv(
    overrides: list[str], config_dir: Path | None, from_config: Path | None, run_dir: str
) -> list[str]:
    """This command again, for each torchrun rank: one shared output directory, no nested launch."""
    from telefuser_cli.runtime.launch import strip_launcher_override

    argv = ["generate"]
    if config_dir is not None:
        argv += ["--config-dir", str(config_dir)]
    if from_config is not None:
        argv += ["--from-config", str(from_config)]
    argv += strip_launcher_override(overrides)
    if not any(arg.startswith("hydra.run.dir=") for arg in overrides):
        argv.append(f"hydra.run.dir={Path(run_dir).resolve()}")
    return argv


def _replay_overrides(path: Path, overrides: list[str], hydra_app: Any) -> tuple[str, list[str]]:
    """The file replayed (for the new record's `replayed_from`) and the overrides that replay it."""
    from telefuser_cli.config.replay import read_recorded, replay_overrides

    recorded = read_recorded(path)
    return str(recorded.path.resolve()), replay_overrides(recorded, overrides, hydra_app.compose)


@app.command(context_settings={"ignore_unknown_options": True}, epilog=GENERATE_EXAMPLES)
def generate(
    overrides: list[str] | None = typer.Argument(
        None, help=OVERRIDES_HELP, show_default=False, autocompletion=_complete_override
    ),
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Sweep: one job per combination."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compose, validate and write config.json only."),
    config_dir: Path | None = typer.Option(None, "--config-dir", help="Your config folder; shadows ours."),
    from_config: Path | None = typer.Option(
        None, "--from-config", help="Replay a recorded run: its folder, config.json or resolved_config.yaml."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With -m and hydra.sweep.dir=DIR of an earlier sweep: skip the jobs finished there with the "
        "same settings, run the rest.",
    ),
) -> None:
    """Generate a video (or, with -m, a sweep of videos) from Hydra overrides.

    Weights: model=NAME, or a tested preset: recipe=NAME (telefuser list). Any key: telefuser keys.

    Each run writes video.mp4 and the config.json that reproduces it into its own folder.
    """
    from telefuser_cli.config.hydra_app import reset_logging
    from telefuser_cli.errors import UserError

    try:
        _generate(list(overrides or []), multirun, dry_run, config_dir, from_config, resume)
    except typer.Exit:
        raise
    except UserError as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as error:  # a bug outside any job (a job's own bugs come back as its result)
        internal_error(error)
    finally:
        reset_logging()


def _check_resume(args: list[str], multirun: bool) -> None:
    """--resume continues one named sweep: it needs -m and the sweep's folder."""
    from telefuser_cli.config.overrides import override_key
    from telefuser_cli.errors import UserError

    if not multirun:
        raise UserError("--resume continues a sweep: use it with -m")
    if "hydra.sweep.dir" not in {override_key(arg) for arg in args}:
        raise UserError("--resume needs the sweep's folder: give hydra.sweep.dir=DIR (the one it ran in)")


def _check_resume_seeds(jobs: list[tuple[list[str], dict[str, Any]]]) -> None:
    """A drawn seed (-1) differs on every run, so no finished job could ever be the one asked for."""
    from telefuser_cli.errors import UserError

    if any(info["seed"] == -1 for _, info in jobs):
        raise UserError(
            "--resume with user.seed=-1: a drawn seed differs on every run; give seeds, e.g. seed=1,2,3"
        )


def _generate(
    overrides: list[str],
    multirun: bool,
    dry_run: bool,
    config_dir: Path | None,
    from_config: Path | None,
    resume: bool = False,
) -> None:
    from telefuser_cli.config.guard import check_overrides
    from telefuser_cli.config.hydra_app import HydraApp, with_kwargs
    from telefuser_cli.config.job_names import exclude_keys_override, swept_keys
    from telefuser_cli.config.overrides import expand
    from telefuser_cli.config.prompt_file import prompt_file_overrides

    args = expand(overrides)
    hydra_app = HydraApp(config_dir)
    replayed_from = None
    if from_config is not None:
        replayed_from, args = _replay_overrides(from_config, args, hydra_app)
    if resume:
        _check_resume(args, multirun)
    args = prompt_file_overrides(args, multirun)
    check_overrides(args)  # each override readable (one line if not), before its keys are looked at
    hydra_app.job_overrides(args, multirun)
    swept = swept_keys(args) if multirun else []
    if multirun:  # the overrides that are not swept stay out of the job folders' names (config/job_names.py)
        args = [*args, exclude_keys_override(args)]
    jobs = hydra_app.validate_all(args, multirun, _validate_for_generate)
    if resume:
        _check_resume_seeds(jobs)
    _check_output_dirs(jobs, multirun, swept if resume else None)
    warn([warning for _, info in jobs for warning in info["warnings"]])
    nproc = max(info["nproc"] for _, info in jobs)
    if nproc > 1 and not dry_run:
        from telefuser_cli.runtime.launch import relaunch_with_torchrun, should_relaunch

        if multirun:
            fail(
                "launcher.nproc_per_node > 1 runs one job on several local processes; with -m use a SLURM preset"
            )
        if should_relaunch(nproc):
            argv = _torchrun_argv(overrides, config_dir, from_config, jobs[0][1]["run_dir"])
            raise typer.Exit(relaunch_with_torchrun(nproc, argv))
    from telefuser_cli.job import run_job  # imports torch: only once every job is valid

    task = with_kwargs(run_job, dry_run=dry_run, replayed_from=replayed_from, resume=resume, sweep=multirun)
    if multirun:
        report_sweep(hydra_app.multirun(task, args), swept)
    else:
        report_run(hydra_app.run(task, args))


@app.command("dump-config", context_settings={"ignore_unknown_options": True})
def dump_config(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    fmt: str = typer.Option("json", "--format", help="json or yaml."),
    config_dir: Path | None = typer.Option(None, "--config-dir", help="Your config folder; shadows ours."),
) -> None:
    """Print the resolved configuration without loading any weights."""
    import yaml

    from telefuser_cli.config.dump import build_document, to_json
    from telefuser_cli.config.guard import check_overrides
    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.config.overrides import expand
    from telefuser_cli.config.validate import to_settings, validate
    from telefuser_cli.errors import UserError
    from telefuser_cli.families import check, spec_of
    from telefuser_cli.io.files import atomic_write_text

    if fmt not in ("json", "yaml"):
        fail(f"--format {fmt}: use json or yaml")
    args = expand(list(overrides or []))
    try:
        from telefuser_cli.config.prompt_file import prompt_file_overrides

        args = prompt_file_overrides(args, multirun=False)
        check_overrides(args)
        cfg = HydraApp(config_dir).checked_config(args)
        settings = to_settings(cfg)
        plan = check(settings, validate(settings, require_prompt=False), runnable_only=False)
        warn(list(plan.warnings))
        from telefuser_cli.pipelines.plan import sampling_plan

        sampling = sampling_plan(settings)
        components = spec_of(settings.model.family).components
        document = build_document(
            settings, plan, dict(cfg.hydra.runtime.choices), components, extra={"sampling": sampling}
        )
    except UserError as error:
        fail(str(error))
    if fmt == "json":
        text = to_json(document)
    else:
        text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
        console.print(f"wrote {escape(str(output))}")


@app.command("list")
def list_configs(
    group: str | None = typer.Argument(None, help="models, pipelines, recipes or launchers (default: all)."),
    config_dir: Path | None = typer.Option(None, "--config-dir", help="Your config folder; shadows ours."),
) -> None:
    """List models, pipelines, recipes and launchers: what each runs with, and where its weights are."""
    from telefuser_cli.config.catalog import GROUPS, Compositions, catalog, group_facts, group_name
    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.errors import UserError
    from telefuser_cli.views import group_rows, group_table

    chosen = group_name(group) if group else None
    if group and chosen is None:
        fail(f"unknown group {group!r}; choose one of {', '.join(GROUPS)} (or their plurals)")
    try:
        from telefuser_cli.families import available

        compositions = Compositions(HydraApp(config_dir), available)
    except UserError as error:
        fail(str(error))
    models = {entry.name for entry in catalog("model", config_dir)}
    for name in [chosen] if chosen else GROUPS:
        entries = catalog(name, config_dir)
        facts = group_facts(name, [entry.name for entry in entries], compositions, models)
        console.print(group_table(name, group_rows(name, entries, facts), console.width))
        console.print()


@app.command()
def inspect(
    directory: Path = typer.Argument(
        ...,
        help="A weights folder: Wan (official or diffusers layout) or HunyuanVideo 1.5 (official layout).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON instead."),
) -> None:
    """Show what a weights folder holds (family, task, architecture, precision, size on disk) and which
    model entry loads it, from file headers and config files only (no weights are loaded)."""
    from rich.padding import Padding

    from telefuser_cli.config.catalog import Compositions, catalog, model_entries
    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.errors import UserError
    from telefuser_cli.loading.inspect import entry_fits, inspect_directory, summary

    try:
        report = inspect_directory(directory)
    except UserError as error:
        fail(str(error))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    headline, rows = summary(report)
    console.print(f"[bold]{escape(headline)}[/] in {escape(report['root'])}")
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column("component", style="cyan", no_wrap=True)
    table.add_column("facts", overflow="fold")
    for component, facts in rows:
        table.add_row(escape(component), escape(facts))
    console.print(table)
    from telefuser_cli.families import available

    entries = model_entries(Compositions(HydraApp(), available), [entry.name for entry in catalog("model")])
    fits = [name for name, entry in entries.items() if entry_fits(report, entry)]
    root = escape(report["root"])
    if not fits:
        console.print("[yellow]no packaged model entry fits[/]: write one with model.root pointing here")
        return
    console.print("[green]model entries that load it:[/]")
    names = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    names.add_column("entry", style="cyan", no_wrap=True)
    names.add_column("description", overflow="fold")
    for name in fits:
        names.add_row(escape(name), escape(entries[name]["description"]))
    console.print(Padding(names, (0, 0, 0, 2)))
    choice = fits[0] if len(fits) == 1 else "NAME"
    console.print(f"[green]use:[/] telefuser generate model={choice} model.root={root} prompt=...")


# The tiny makers the families register (families/tiny.py), named here so that --help need not import torch.
TINY_KINDS = (
    "tiny_wan21",
    "tiny_wan22_moe",
    "tiny_wan21_i2v",
    "tiny_wan21_flf2v",
    "tiny_wan22_moe_i2v",
    "tiny_wan22_ti2v",
    "tiny_hunyuan15",
    "tiny_hunyuan15_sr",
)


@app.command("make-tiny-checkpoint")
def make_tiny_checkpoint(
    directory: Path = typer.Argument(..., help="Where to write the tiny model (a new or empty directory)."),
    seed: int = typer.Option(0, help="Seed of the deterministic random weights."),
    kind: str = typer.Option("tiny_wan21", help=f"Which tiny model: {', '.join(TINY_KINDS)}."),
) -> None:
    """Write a complete tiny model folder (Wan or HunyuanVideo 1.5) in the official layout, for tests and demos."""
    from telefuser_cli.families.tiny import write_tiny

    try:
        write_tiny(kind, directory, seed=seed)
    except (ValueError, FileExistsError) as error:
        fail(str(error))
    console.print(f"wrote the {escape(kind)} model to {escape(str(directory))}")


def _complete_keys_argument(ctx: typer.Context, incomplete: str) -> list[str]:
    from telefuser_cli.config.complete import complete_keys_argument

    previous = list(ctx.params.get("args") or [])  # the words before this one
    return complete_keys_argument(incomplete, ctx.params.get("config_dir"), previous)


@app.command("keys", context_settings={"ignore_unknown_options": True})
def keys_command(
    args: list[str] | None = typer.Argument(
        None,
        help="Sections (model, pipeline, user, output, launcher; default: all) and overrides choosing the "
        "defaults shown, such as recipe=NAME or model=NAME.",
        show_default=False,
        metavar="SECTION|OVERRIDE",
        autocompletion=_complete_keys_argument,
    ),
    config_dir: Path | None = typer.Option(None, "--config-dir", help="Your config folder; shadows ours."),
) -> None:
    """List every configuration key: its type, its default for the chosen model or recipe, and what it means."""
    from telefuser_cli.config.catalog import unknown_choice_message
    from telefuser_cli.config.guard import check_overrides
    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.config.keys import SECTIONS, keys
    from telefuser_cli.config.overrides import expand
    from telefuser_cli.config.validate import to_settings
    from telefuser_cli.errors import UserError
    from telefuser_cli.views import key_lines

    words = list(args or [])
    overrides = expand([word for word in words if "=" in word])
    sections = []
    for word in (word for word in words if "=" not in word):
        section = word.lower() if word.lower() in SECTIONS else word.lower().removesuffix("s")
        if section not in SECTIONS:
            fail(
                f"unknown section {word!r}; choose among {', '.join(SECTIONS)}, or give overrides such as recipe=NAME"
            )
        sections.append(section)
    unknown = unknown_choice_message(overrides, config_dir)
    if unknown:
        fail(unknown)
    try:
        check_overrides(overrides)
        cfg = HydraApp(config_dir).checked_config(overrides)
        settings = to_settings(cfg)
    except UserError as error:
        fail(str(error))
    choices = cfg.hydra.runtime.choices
    chosen = " ".join(
        f"{group}={choices.get(group)}" for group in ("model", "pipeline", "recipe") if choices.get(group)
    )
    console.print(f"[bold]defaults for {escape(chosen)}[/]", highlight=False)
    console.print(key_lines(keys(settings, sections or None)), highlight=False)


def package_version() -> str:
    """The installed distribution's version, else the one in pyproject.toml beside a source checkout."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("telefuser")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "unknown"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"telefuser {package_version()}\n")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
