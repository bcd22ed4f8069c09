"""One job: the task function Hydra runs for `generate` (once, or once per sweep point).

The job's record (config.json + resolved_config.yaml) is written only once the configuration is known
to be valid, with `status: running`, and rewritten on every way out: `done`, `failed: <message>` or
`interrupted`, so a record never looks like a finished run's when no video came of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from telefuser_cli.config.dump import build_document, to_json
from telefuser_cli.config.validate import to_settings, validate
from telefuser_cli.errors import UserError
from telefuser_cli.families import check, spec_of
from telefuser_cli.io.files import atomic_write_text, unwritable_reason
from telefuser_cli.pipelines.plan import sampling_plan
from telefuser_cli.terminal import FILE_ONLY

log = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
RESOLVED_YAML = "resolved_config.yaml"
ERROR_LOG = "error.log"
SWEEP_JSON = "sweep.json"
# Set to 1 to see an internal error's traceback on the terminal (it is always saved to a file).
DEBUG_ENV = "TELEFUSER_DEBUG"


def _choices(cfg: DictConfig) -> dict[str, Any]:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return dict(cfg.hydra.runtime.choices) if "hydra" in cfg else {}


def write_config_files(output_dir: Path, cfg: DictConfig, document: dict[str, Any]) -> None:
    resolved = OmegaConf.masked_copy(cfg, ["model", "pipeline", "user", "output", "launcher"])
    atomic_write_text(output_dir / RESOLVED_YAML, OmegaConf.to_yaml(resolved, resolve=True))
    atomic_write_text(output_dir / CONFIG_JSON, to_json(document))


class Record:
    """The job's config files; remembers the last document so a failure can rewrite only its status."""

    def __init__(self, output_dir: Path, cfg: DictConfig) -> None:
        self.output_dir = output_dir
        self.cfg = cfg
        self.document: dict[str, Any] | None = None
        self.enabled = True  # False on the ranks of a distributed run that write nothing

    def write(self, document: dict[str, Any], status: str) -> None:
        if not self.enabled:
            return
        document = {"status": status, **{k: v for k, v in document.items() if k != "status"}}
        write_config_files(self.output_dir, self.cfg, document)
        self.document = document

    def finish(self, status: str) -> None:
        """Rewrite the status of a record already written; never hides the error that ended the run."""
        if self.document is None:
            return
        try:
            self.write(self.document, status)
        except UserError as error:
            log.error("could not record status %r: %s", status, error)


# ---------------------------------------------------------------- where a job may write


def recorded_status(directory: Path) -> str | None:
    """The status in `directory`'s config.json (`done` for records older than the status field that
    describe a run), or None when there is no readable record."""
    try:
        document = json.loads((directory / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    return document.get("status", "done" if "run" in document else None)


def finished_run(directory: Path) -> str | None:
    """What shows that `directory` holds a finished run (a video, or a record whose status is done)."""
    videos = sorted(p.name for p in directory.glob("*.mp4") if not p.name.startswith("."))
    if videos:
        return str(directory / videos[0])
    if recorded_status(directory) == "done":
        return f"{directory / CONFIG_JSON} (status done)"
    return None


def _refuse_finished(key: str | None, directory: Path, found: str) -> UserError:
    place = f"{key}={directory}" if key else str(directory)
    return UserError(
        f"{place} already holds a finished run ({found}); choose another {key or 'output directory'}, "
        "or set output.overwrite=true to replace it"
    )


def _check_writable(key: str, directory: Path) -> None:
    reason = unwritable_reason(directory)
    if reason:
        raise UserError(
            f"{key}={directory}: the output cannot be written there: {reason}; choose another {key}"
        )


def check_run_dir(directory: Path, overwrite: bool) -> None:
    """A single run's directory must be writable and, unless overwrite, hold no finished run."""
    _check_writable("hydra.run.dir", directory)
    found = None if overwrite or not directory.is_dir() else finished_run(directory)
    if found:
        raise _refuse_finished("hydra.run.dir", directory, found)


def _summarised_job_dirs(sweep_json: Path) -> list[Path]:
    """The job directories a sweep.json lists (they need not be children of the sweep directory)."""
    try:
        jobs = json.loads(sweep_json.read_text(encoding="utf-8")).get("jobs", [])
        return [Path(job["output_dir"]) for job in jobs if isinstance(job, dict) and job.get("output_dir")]
    except (OSError, ValueError, AttributeError, TypeError):
        return []


def check_sweep_dir(directory: Path, overwrite: bool) -> None:
    """A sweep's directory must be writable and, unless overwrite, none of its jobs' directories (its
    subdirectories, and those its sweep.json lists) may hold a finished run."""
    _check_writable("hydra.sweep.dir", directory)
    if overwrite or not directory.is_dir():
        return
    job_dirs = sorted(p for p in directory.iterdir() if p.is_dir()) + _summarised_job_dirs(
        directory / SWEEP_JSON
    )
    for job_dir in job_dirs:
        found = finished_run(job_dir) if job_dir.is_dir() else None
        if found:
            raise _refuse_finished("hydra.sweep.dir", directory, found)


# ---------------------------------------------------------------- errors that are bugs


def internal_error_message(error: BaseException, traceback_path: Path | None) -> str:
    """One line for an unexpected exception, pointing at its traceback."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    where = f"traceback in {traceback_path}" if traceback_path else f"set {DEBUG_ENV}=1 to see the traceback"
    return f"internal error: {type(error).__name__}: {first_line} ({where})"


def save_traceback(path: Path, error: BaseException) -> Path | None:
    """Write `error`'s traceback to `path`; None when even that fails (the message then says so)."""
    try:
        atomic_write_text(path, "".join(traceback.format_exception(error)))
    except UserError:
        return None
    return path


def _error_log(output_dir: Path) -> Path:
    rank = os.environ.get("RANK", "0")  # each rank of a distributed run keeps its own
    return output_dir / (ERROR_LOG if rank == "0" else f"error.rank{rank}.log")


# ---------------------------------------------------------------- the job


def _resolve_seed(settings, cfg: DictConfig, share: Callable[[int], int]) -> None:
    """user.seed=-1: draw one (shared by every rank through `share`) and record it."""
    if settings.user.seed == -1:
        settings.user.seed = share(secrets.randbelow(2**31))
        cfg.user.seed = settings.user.seed
        log.info("user.seed=-1: drew seed %d", settings.user.seed)


def _failed(output_dir: Path, message: str, **extra: Any) -> dict[str, Any]:
    return {"output_dir": str(output_dir), "status": "failed", "error": message, **extra}


def run_job(cfg: DictConfig, dry_run: bool = False, replayed_from: str | None = None) -> dict[str, Any]:
    """Validate, record the configuration, and (unless dry_run) generate the video.

    Every way out is recorded, and none raises but Ctrl-C: a mistake the user can fix comes back as
    status "failed" with its message; an unexpected exception (a bug) too, marked internal, with its
    traceback in the job's error.log, so one job's bug never takes a sweep's other results with it.
    """
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    record = Record(output_dir, cfg)
    try:
        return _run(cfg, output_dir, dry_run, replayed_from, record)
    except UserError as error:
        record.finish(f"failed: {error}")
        log.error("%s", error, extra=FILE_ONLY)  # the CLI prints the one line
        return _failed(output_dir, str(error))
    except KeyboardInterrupt:
        record.finish("interrupted")
        raise
    except Exception as error:  # a bug: keep its traceback, record the failure, let a sweep go on
        path = save_traceback(_error_log(output_dir), error)
        message = internal_error_message(error, path)
        record.finish(f"failed: {message}")
        log.error("%s", message, exc_info=error, extra=FILE_ONLY)  # the traceback into the job log file too
        return _failed(output_dir, message, internal=True, traceback=str(path) if path else None)


def _run(
    cfg: DictConfig, output_dir: Path, dry_run: bool, replayed_from: str | None, record: Record
) -> dict[str, Any]:
    settings = to_settings(cfg)
    plan = check(settings, validate(settings))
    if not settings.output.overwrite:  # checked before the job too; here for the job's exact directory
        found = finished_run(output_dir)
        if found:
            raise _refuse_finished(None, output_dir, found)
    choices = _choices(cfg)
    extra: dict[str, Any] = {"sampling": sampling_plan(settings)}
    if plan.warnings:  # the CLI showed them before the run; the record and the log file keep them
        extra["warnings"] = list(plan.warnings)
        for warning in plan.warnings:
            log.warning("%s", warning, extra=FILE_ONLY)
    if replayed_from is not None:
        extra["replayed_from"] = replayed_from
    components = spec_of(settings.model.family).components
    if dry_run:
        _resolve_seed(settings, cfg, lambda seed: seed)
        record.write(build_document(settings, plan, choices, components, extra=extra), "dry-run")
        return {"output_dir": str(output_dir), "status": "dry-run", "seed": settings.user.seed}

    # torch is imported only from here on
    from telefuser_cli.pipelines.generate import generate, start_parallel
    from telefuser_cli.runtime.device import claimed_gpu
    from telefuser_cli.runtime.distributed import broadcast_int, destroy_distributed, is_main_process

    groups = start_parallel(settings)
    record.enabled = is_main_process()
    if groups.world_size > 1:  # record the processes per node this run really had (torchrun's own count)
        settings.launcher.nproc_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", groups.world_size))
        cfg.launcher.nproc_per_node = settings.launcher.nproc_per_node
    try:
        _resolve_seed(settings, cfg, broadcast_int)  # every rank draws the same noise
        document = build_document(settings, plan, choices, components, extra=extra)
        config_hash = hashlib.sha256(to_json(document).encode("utf-8")).hexdigest()
        record.write(document, "running")
        with claimed_gpu(settings):
            result = generate(settings, plan, output_dir, config_hash, groups)
    finally:
        destroy_distributed()
    if result is None:
        return {"output_dir": str(output_dir), "status": "worker", "seed": settings.user.seed}
    document = build_document(
        settings, plan, choices, components, device=result.device, extra={**extra, "run": result.record()}
    )
    record.write(document, "done")
    return {
        "output_dir": str(output_dir),
        "status": "done",
        "seed": settings.user.seed,
        "video": str(result.video_path),
    }
