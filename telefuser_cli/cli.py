"""The `telefuser` command line: thin wrappers over config/, job.py and the pipelines.

Heavy imports (Hydra, torch) happen inside the commands, so `telefuser --help` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from telefuser_cli import terminal

app = typer.Typer(
    name="telefuser",
    help="Generate videos with open video diffusion transformers (Wan2.1, Wan2.2, HunyuanVideo 1.5).",
    add_completion=True,  # --install-completion / --show-completion; entries complete after model= etc.
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = terminal.console  # the run's console: messages print above its progress bars

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


def _fail(message: str, code: int = 2) -> None:
    # soft_wrap: a long message stays one line (a path is never broken where the terminal wraps it)
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _warn(warnings: list[str]) -> None:
    """Each validation warning once, however many jobs raised it (the jobs keep them in config.json)."""
    for warning in dict.fromkeys(warnings):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)


def _validate_for_generate(cfg: Any) -> dict[str, Any]:
    """Validate one job; returns what the launcher decision and the output checks need."""
    from telefuser_cli.config.validate import check_supported, to_settings, validate

    settings = to_settings(cfg)
    plan = validate(settings)
    check_supported(settings)
    return {
        "warnings": list(plan.warnings),
        "nproc": settings.launcher.nproc_per_node,
        "run_dir": str(cfg.hydra.run.dir),
        "sweep_dir": str(cfg.hydra.sweep.dir),
        "overwrite": settings.output.overwrite,
    }


def _check_output_dirs(infos: list[dict[str, Any]], multirun: bool) -> None:
    """Before Hydra creates any directory: the run's (or sweep's) directory must be writable and hold
    no finished run that would be replaced (unless output.overwrite=true)."""
    from telefuser_cli.job import check_run_dir, check_sweep_dir

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
) -> None:
    """Generate a video (or, with -m, a sweep of videos) from Hydra overrides.

    Weights: model=NAME, or a tested preset: recipe=NAME (telefuser list). Any key: telefuser keys.

    Each run writes video.mp4 and the config.json that reproduces it into its own folder.
    """
    from telefuser_cli.config.hydra_app import reset_logging
    from telefuser_cli.errors import UserError

    try:
        _generate(list(overrides or []), multirun, dry_run, config_dir, from_config)
    except typer.Exit:
        raise
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception as error:  # a bug outside any job (a job's own bugs come back as its result)
        _internal_error(error)
    finally:
        reset_logging()


def _generate(
    overrides: list[str], multirun: bool, dry_run: bool, config_dir: Path | None, from_config: Path | None
) -> None:
    from telefuser_cli.config.hydra_app import HydraApp, with_kwargs
    from telefuser_cli.config.overrides import expand

    args = expand(overrides)
    hydra_app = HydraApp(config_dir)
    replayed_from = None
    if from_config is not None:
        replayed_from, args = _replay_overrides(from_config, args, hydra_app)
    jobs = hydra_app.validate_all(args, multirun, _validate_for_generate)
    _check_output_dirs([info for _, info in jobs], multirun)
    _warn([warning for _, info in jobs for warning in info["warnings"]])
    nproc = max(info["nproc"] for _, info in jobs)
    if nproc > 1 and not dry_run:
        from telefuser_cli.runtime.launch import relaunch_with_torchrun, should_relaunch

        if multirun:
            _fail(
                "launcher.nproc_per_node > 1 runs one job on several local processes; with -m use a SLURM preset"
            )
        if should_relaunch(nproc):
            argv = _torchrun_argv(overrides, config_dir, from_config, jobs[0][1]["run_dir"])
            raise typer.Exit(relaunch_with_torchrun(nproc, argv))
    from telefuser_cli.job import run_job  # imports torch: only once every job is valid

    task = with_kwargs(run_job, dry_run=dry_run, replayed_from=replayed_from)
    if multirun:
        _report_sweep(hydra_app.multirun(task, args))
    else:
        _report_run(hydra_app.run(task, args))


def _debug() -> bool:
    from telefuser_cli.job import DEBUG_ENV

    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _internal_error(error: BaseException) -> None:
    """A bug: one line naming a file with the traceback (on the terminal too with TELEFUSER_DEBUG=1)."""
    import tempfile
    import traceback

    from telefuser_cli.job import internal_error_message

    if _debug():
        raise error
    try:
        with tempfile.NamedTemporaryFile("w", prefix="telefuser-error-", suffix=".log", delete=False) as file:
            file.write("".join(traceback.format_exception(error)))
        path = Path(file.name)
    except OSError:
        path = None
    _fail(internal_error_message(error, path), code=1)


def _show_traceback(result: dict[str, Any]) -> None:
    """With TELEFUSER_DEBUG=1, a job's internal error shows its saved traceback."""
    if _debug() and result.get("traceback"):
        try:
            err_console.print(
                Path(result["traceback"]).read_text(encoding="utf-8"), markup=False, highlight=False
            )
        except OSError:
            pass


def _job_error(ret: Any) -> BaseException | None:
    """The exception a job raised (run_job returns its failures, but a launcher may still report one)."""
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.COMPLETED:
        return None
    return ret._return_value if isinstance(ret._return_value, BaseException) else RuntimeError("job failed")


def _report_run(ret: Any) -> None:
    from telefuser_cli.errors import UserError

    error = _job_error(ret)
    if isinstance(error, UserError):
        _fail(str(error))
    if error is not None:
        raise error
    result = ret._return_value
    if result.get("status") == "failed":
        _show_traceback(result)
        _fail(result["error"], code=1 if result.get("internal") else 2)
    if result.get("status") == "worker":  # a torchrun rank other than 0: rank 0 reports
        return
    if result.get("status") == "dry-run":
        console.print(f"[green]dry run:[/] {escape(result['output_dir'])}", soft_wrap=True, highlight=False)
        return
    _print_summary(Path(result["output_dir"]))


def _print_summary(output_dir: Path) -> None:
    """The end of a run: its files, size, time and memory, as its config.json records them."""
    from telefuser_cli.job import CONFIG_JSON
    from telefuser_cli.summary import summary_lines, summary_rows

    try:
        document = json.loads((output_dir / CONFIG_JSON).read_text(encoding="utf-8"))
        rows = summary_rows(document, output_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:  # the video is there: say where
        console.print(f"[green]output:[/] {escape(str(output_dir))} (no summary: {escape(str(error))})")
        return
    for label, text in summary_lines(rows, console.width):
        # soft_wrap: a path longer than the terminal stays one line, never broken where it wraps
        console.print(f"[green]{label}[/]{escape(text)}", soft_wrap=True, highlight=False)


def _sweep_row(ret: Any) -> dict[str, Any]:
    """One job's outcome for sweep.json, whatever way it ended."""
    error = _job_error(ret)
    value = ret._return_value if error is None and isinstance(ret._return_value, dict) else {}
    if error is not None:
        error = str(error)
    elif value.get("status") == "failed":
        error = value["error"]
        _show_traceback(value)
    output_dir = value.get("output_dir") or str(ret.hydra_cfg.hydra.runtime.output_dir)
    return {
        "overrides": list(ret.overrides or []),
        "status": "failed" if error is not None else value.get("status"),
        "output_dir": output_dir,
        "video": value.get("video"),
        "seed": value.get("seed"),
        "error": error,
    }


def _report_sweep(returns: list[Any]) -> None:
    from telefuser_cli.io.files import atomic_write_text

    rows = [_sweep_row(ret) for ret in returns]
    table = Table(title="sweep")
    for column in ("#", "overrides", "status", "output"):
        table.add_column(column)
    for index, row in enumerate(rows):
        status = row["status"] if row["error"] is None else f"[red]failed[/]: {escape(row['error'])}"
        table.add_row(str(index), escape(" ".join(row["overrides"])), status, escape(str(row["output_dir"])))
    console.print(table)
    if returns:
        sweep_dir = Path(returns[0].hydra_cfg.hydra.sweep.dir)
        atomic_write_text(sweep_dir / "sweep.json", json.dumps({"jobs": rows}, indent=2, ensure_ascii=False))
        console.print(f"[green]sweep:[/] {escape(str(sweep_dir / 'sweep.json'))}")
    failures = [(index, row) for index, row in enumerate(rows) if row["error"] is not None]
    if failures:
        lines = [f"{len(failures)} of {len(rows)} jobs failed"]
        lines += [f"job {index} ({' '.join(row['overrides'])}): {row['error']}" for index, row in failures]
        _fail("\n".join(lines), code=1)


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
    from telefuser_cli.io.files import atomic_write_text

    if fmt not in ("json", "yaml"):
        _fail(f"--format {fmt}: use json or yaml")
    args = expand(list(overrides or []))
    try:
        check_overrides(args)
        cfg = HydraApp(config_dir).checked_config(args)
        settings = to_settings(cfg)
        plan = validate(settings, require_prompt=False)
        _warn(list(plan.warnings))
        from telefuser_cli.pipelines.plan import sampling_plan  # imports torch: only once the config is valid

        sampling = sampling_plan(settings.pipeline, settings.model.moe)
        document = build_document(
            settings, plan, dict(cfg.hydra.runtime.choices), extra={"sampling": sampling}
        )
    except UserError as error:
        _fail(str(error))
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
        _fail(f"unknown group {group!r}; choose one of {', '.join(GROUPS)} (or their plurals)")
    try:
        compositions = Compositions(HydraApp(config_dir))
    except UserError as error:
        _fail(str(error))
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
        _fail(str(error))
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
    entries = model_entries(Compositions(HydraApp()), [entry.name for entry in catalog("model")])
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


# The makers of telefuser_cli/tiny.py, named here so that --help need not import torch.
TINY_KINDS = (
    "tiny_wan21",
    "tiny_wan22_moe",
    "tiny_wan21_i2v",
    "tiny_wan22_moe_i2v",
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
    from telefuser_cli.tiny import write_tiny

    try:
        write_tiny(kind, directory, seed=seed)
    except (ValueError, FileExistsError) as error:
        _fail(str(error))
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
            _fail(
                f"unknown section {word!r}; choose among {', '.join(SECTIONS)}, or give overrides such as recipe=NAME"
            )
        sections.append(section)
    unknown = unknown_choice_message(overrides, config_dir)
    if unknown:
        _fail(unknown)
    try:
        check_overrides(overrides)
        cfg = HydraApp(config_dir).checked_config(overrides)
        settings = to_settings(cfg)
    except UserError as error:
        _fail(str(error))
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
