"""One job: the task function Hydra runs for `generate` (once, or once per sweep point).

The job's record (config.json + resolved_config.yaml) is written only once the configuration is known
to be valid, with `status: running`, and rewritten on every way out: `done`, `failed: <message>` or
`interrupted`, so a record never looks like a finished run's when no video came of it.
"""

from __future__ import annotations

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
from telefuser_cli.config.settings_hash import settings_sha256
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
SKIPPED = "skipped (done)"  # a --resume job whose finished run is already there
# Set to 1 to see an internal error's traceback on the terminal (it is always saved to a file).
DEBUG_ENV = "TELEFUSER_DEBUG"


def _choices(cfg: DictConfig) -> dict[str, Any]:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return dict(cfg.hydra.runtime.choices) if "hydra" in cfg else {}


def write_config_files(
    output_dir: Path, cfg: DictConfig, document: dict[str, Any], yaml: bool = True
) -> None:
    """config.json, and (``yaml``) resolved_config.yaml: the settings, which a job's later writes leave as
    they are."""
    if yaml:
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
        # the settings are fixed once the first record is written (seed drawn, processes counted)
        write_config_files(self.output_dir, self.cfg, document, yaml=self.document is None)
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


def _read_record(directory: Path) -> dict[str, Any]:
    try:
        document = json.loads((directory / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def finished_same_settings(directory: Path, settings_hash: str) -> dict[str, Any] | None:
    """The record of a finished run in `directory` (status done, its video there) with this settings hash,
    else None: what --resume skips."""
    document = _read_record(directory)
    run = document.get("run") if isinstance(document.get("run"), dict) else {}
    video = directory / str(run.get("video") or "video.mp4")
    if document.get("status") != "done" or not video.is_file():
        return None
    return document if document.get("settings_sha256") == settings_hash else None


def _other_settings(key: str, directory: Path, job_dir: Path, recorded: Any) -> UserError:
    return UserError(
        f"{key}={directory}: {job_dir.name} holds a finished run of other settings (settings_sha256 "
        f"{str(recorded)[:12] if recorded else 'not recorded'}); --resume continues the same sweep: give the "
        "same overrides, choose another hydra.sweep.dir, or set output.overwrite=true to replace it"
    )


def check_resume_dir(directory: Path, expected: dict[str, str], overwrite: bool) -> None:
    """`generate -m --resume` into `directory`, whose jobs will be the folders `expected` names (folder
    name -> settings hash): a job folder whose record says done must hold this job's settings (the job is
    skipped), and no other folder may hold a finished run (it would be another sweep's). With
    output.overwrite=true, finished runs of other settings are replaced instead."""
    _check_writable("hydra.sweep.dir", directory)
    if overwrite or not directory.is_dir():
        return
    for job_dir in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = finished_run(job_dir)
        if not found:
            continue
        if job_dir.name not in expected:
            raise UserError(
                f"hydra.sweep.dir={directory} holds a finished run that this sweep has no job for ({found}); "
                "--resume continues the same sweep: give the same overrides, or choose another hydra.sweep.dir"
            )
        document = _read_record(job_dir)  # a video beside a failed or interrupted record is run again
        if document.get("status") == "done" and document.get("settings_sha256") != expected[job_dir.name]:
            raise _other_settings("hydra.sweep.dir", directory, job_dir, document.get("settings_sha256"))


def _time_s(document: dict[str, Any]) -> float | None:
    """A finished run's time: the sum of its recorded stage timings."""
    run = document.get("run") if isinstance(document.get("run"), dict) else {}
    timings = run.get("timings_s")
    if not isinstance(timings, dict):
        return None
    return round(sum(v for v in timings.values() if isinstance(v, (int, float))), 3)


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


def _another_job_may_follow(sweep: bool) -> bool:
    """Whether this process may run another job after this one: a sweep on a launcher that runs its jobs in
    one process (Hydra's basic launcher) or in a pool of workers (joblib); not SLURM's (submitit starts a
    process per job), where keeping anything loaded would only cost memory and copies."""
    if not sweep:
        return False
    try:
        launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    except ValueError:
        return True
    return "submitit" not in launcher


def _failed(output_dir: Path, message: str, **extra: Any) -> dict[str, Any]:
    return {"output_dir": str(output_dir), "status": "failed", "error": message, **extra}


def run_job(
    cfg: DictConfig,
    dry_run: bool = False,
    replayed_from: str | None = None,
    resume: bool = False,
    sweep: bool = False,
) -> dict[str, Any]:
    """Validate, record the configuration, and (unless dry_run) generate the video.

    Every way out is recorded, and none raises but Ctrl-C: a mistake the user can fix comes back as
    status "failed" with its message; an unexpected exception (a bug) too, marked internal, with its
    traceback in the job's error.log, so one job's bug never takes a sweep's other results with it.

    With `resume` (generate -m --resume), a folder holding this job's finished run (same settings hash,
    its video there) is left as it is and the job returns status `skipped (done)`; a folder holding a
    failed, interrupted or unfinished record is written over.
    """
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    record = Record(output_dir, cfg)
    try:
        return _run(cfg, output_dir, dry_run, replayed_from, record, resume, sweep)
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
    cfg: DictConfig,
    output_dir: Path,
    dry_run: bool,
    replayed_from: str | None,
    record: Record,
    resume: bool,
    sweep: bool,
) -> dict[str, Any]:
    settings = to_settings(cfg)
    plan = check(settings, validate(settings))
    if resume:  # the CLI refused seed -1 with --resume: this is the hash the job would record
        done = finished_same_settings(output_dir, settings_sha256(settings))
        if done is not None:
            log.info("--resume: %s already holds this job's finished run", output_dir)
            return _result(output_dir, done, SKIPPED)
    if not settings.output.overwrite:  # checked before the job too; here for the job's exact directory
        found = finished_run(output_dir)
        if found and not resume:
            raise _refuse_finished(None, output_dir, found)
        recorded = _read_record(output_dir) if resume else {}
        if recorded.get("status") == "done" and recorded.get("settings_sha256") != settings_sha256(settings):
            raise _other_settings(
                "hydra.sweep.dir", output_dir.parent, output_dir, recorded.get("settings_sha256")
            )
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
        extra["settings_sha256"] = settings_sha256(settings)
        record.write(build_document(settings, plan, choices, components, extra=extra), "dry-run")
        return {
            "output_dir": str(output_dir),
            "status": "dry-run",
            "seed": settings.user.seed,
            "prompt": settings.user.prompt,
            "settings_sha256": extra["settings_sha256"],
        }

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
        extra["settings_sha256"] = settings_sha256(settings)  # after the seed is resolved: it is covered
        document = build_document(settings, plan, choices, components, extra=extra)
        record.write(document, "running")
        with claimed_gpu(settings):
            result = generate(
                settings,
                plan,
                output_dir,
                extra["settings_sha256"],
                groups,
                keep=_another_job_may_follow(sweep),
            )
    finally:
        destroy_distributed()
    if result is None:
        return {"output_dir": str(output_dir), "status": "worker", "seed": settings.user.seed}
    document = build_document(
        settings, plan, choices, components, device=result.device, extra={**extra, "run": result.record()}
    )
    record.write(document, "done")
    return _result(output_dir, document, "done")


def _result(output_dir: Path, document: dict[str, Any], status: str) -> dict[str, Any]:
    """What a finished (or skipped) job returns to the sweep's report, from its record."""
    user = document.get("layer3_user_inputs") if isinstance(document.get("layer3_user_inputs"), dict) else {}
    run = document.get("run") if isinstance(document.get("run"), dict) else {}
    return {
        "output_dir": str(output_dir),
        "status": status,
        "seed": user.get("seed"),
        "prompt": user.get("prompt"),
        "video": str(output_dir / run["video"]) if run.get("video") else None,
        "settings_sha256": document.get("settings_sha256"),
        "time_s": _time_s(document),
    }
