"""The `telefuser` command line: thin wrappers over config/, job.py and the pipelines.

Heavy imports (Hydra, torch) happen inside the commands, so `telefuser --help` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="telefuser",
    help="Generate videos with open video diffusion transformers (Wan2.1, Wan2.2).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

OVERRIDES_HELP = (
    "Hydra overrides: model=NAME pipeline=NAME recipe=NAME, shorthands prompt= negative_prompt= seed= "
    "resolution= aspect_ratio=, any key such as pipeline.num_inference_steps=30."
)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _validate_for_generate(cfg: Any) -> dict[str, Any]:
    """Validate one job; returns what the launcher decision needs."""
    from telefuser_cli.config.validate import check_supported, to_settings, validate

    settings = to_settings(cfg)
    validate(settings)
    check_supported(settings)
    return {"nproc": settings.launcher.nproc_per_node, "run_dir": str(cfg.hydra.run.dir)}


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


def _replay_overrides(path: Path, overrides: list[str]) -> list[str]:
    from telefuser_cli.config.replay import overrides_from_document

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        _fail(f"--from-config {path}: cannot read a config.json ({error})")
    return overrides_from_document(document, overrides)


@app.command(context_settings={"ignore_unknown_options": True})
def generate(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Sweep: one job per combination."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compose, validate and write config.json only."),
    config_dir: Path | None = typer.Option(None, "--config-dir", help="Your config folder; shadows ours."),
    from_config: Path | None = typer.Option(None, "--from-config", help="Replay a recorded config.json."),
) -> None:
    """Generate a video (or, with -m, a sweep of videos)."""
    from telefuser_cli.config.hydra_app import HydraApp, reset_logging, with_kwargs
    from telefuser_cli.config.overrides import expand
    from telefuser_cli.errors import UserError
    from telefuser_cli.job import run_job

    args = expand(list(overrides or []))
    if from_config is not None:
        args = _replay_overrides(from_config, args)
    try:
        hydra_app = HydraApp(config_dir)
        jobs = hydra_app.validate_all(args, multirun, _validate_for_generate)
        nproc = max(info["nproc"] for _, info in jobs)
        if nproc > 1 and not dry_run:
            from telefuser_cli.runtime.launch import relaunch_with_torchrun, should_relaunch

            if multirun:
                _fail(
                    "launcher.nproc_per_node > 1 runs one job on several local processes; with -m use a SLURM preset"
                )
            if should_relaunch(nproc):
                argv = _torchrun_argv(list(overrides or []), config_dir, from_config, jobs[0][1]["run_dir"])
                raise typer.Exit(relaunch_with_torchrun(nproc, argv))
        task = with_kwargs(run_job, dry_run=dry_run)
        if multirun:
            returns = hydra_app.multirun(task, args)
            _report_sweep(returns)
        else:
            ret = hydra_app.run(task, args)
            _report_run(ret)
    except UserError as error:
        _fail(str(error))
    finally:
        reset_logging()


def _job_error(ret: Any) -> BaseException | None:
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
        _fail(result["error"])
    if result.get("status") == "worker":  # a torchrun rank other than 0: rank 0 reports
        return
    if result.get("video"):
        console.print(f"[green]video:[/] {escape(result['video'])}")
    console.print(f"[green]output:[/] {escape(result['output_dir'])}")


def _report_sweep(returns: list[Any]) -> None:
    from telefuser_cli.io.files import atomic_write_text

    rows = []
    for ret in returns:
        error = _job_error(ret)
        value = ret._return_value if error is None else {}
        if value.get("status") == "failed":
            error = value["error"]
        rows.append(
            {
                "overrides": list(ret.overrides or []),
                "status": value.get("status", "failed") if error is None else "failed",
                "output_dir": value.get("output_dir", ret.working_dir),
                "video": value.get("video"),
                "seed": value.get("seed"),
                "error": None if error is None else str(error),
            }
        )
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
    failed = sum(row["error"] is not None for row in rows)
    if failed:
        _fail(f"{failed} of {len(rows)} jobs failed", code=1)


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
    from telefuser_cli.pipelines.plan import sampling_plan

    if fmt not in ("json", "yaml"):
        _fail(f"--format {fmt}: use json or yaml")
    args = expand(list(overrides or []))
    try:
        check_overrides(args)
        cfg = HydraApp(config_dir).checked_config(args)
        settings = to_settings(cfg)
        plan = validate(settings, require_prompt=False)
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
    group: str | None = typer.Argument(None, help="model, pipeline, recipe or launcher."),
    config_dir: Path | None = typer.Option(None, "--config-dir", help="Your config folder; shadows ours."),
) -> None:
    """List models, pipelines, recipes and launchers with one-line descriptions."""
    from telefuser_cli.config.catalog import GROUPS, catalog

    groups = [group] if group else list(GROUPS)
    for name in groups:
        if name not in GROUPS:
            _fail(f"unknown group {name!r}; choose one of {', '.join(GROUPS)}")
        table = Table(title=name, title_justify="left")
        table.add_column("name")
        table.add_column("description")
        table.add_column("source")
        for entry in catalog(name, config_dir):
            table.add_row(escape(entry.name), escape(entry.description), escape(entry.source))
        console.print(table)


@app.command()
def inspect(
    directory: Path = typer.Argument(..., help="A Wan weights directory (official or diffusers layout)."),
) -> None:
    """Show what a weights directory holds (architecture, precision, layout) without loading the weights."""
    from telefuser_cli.errors import UserError
    from telefuser_cli.loading.inspect import inspect_directory

    try:
        report = inspect_directory(directory)
    except UserError as error:
        _fail(str(error))
    sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")


@app.command("make-tiny-checkpoint")
def make_tiny_checkpoint(
    directory: Path = typer.Argument(..., help="Where to write the tiny model (a new or empty directory)."),
    seed: int = typer.Option(0, help="Seed of the deterministic random weights."),
    kind: str = typer.Option("tiny_wan21", help="tiny_wan21 (Wan2.1 T2V) or tiny_wan22_moe (two experts)."),
) -> None:
    """Write a complete tiny Wan model directory in the official layout (for tests and demos)."""
    from telefuser_cli.tiny import write_tiny

    try:
        write_tiny(kind, directory, seed=seed)
    except (ValueError, FileExistsError) as error:
        _fail(str(error))
    console.print(f"wrote tiny {escape(kind)} checkpoint to {escape(str(directory))}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
