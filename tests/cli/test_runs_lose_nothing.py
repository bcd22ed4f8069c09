"""Runs and sweeps lose nothing: finished runs are never replaced silently, every way out of a run is
recorded, a full disk or an unwritable directory ends in one message, a job's bug never takes a sweep's
other results with it, and running out of memory anywhere reads as such."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import run_cli

FAST = [
    "recipe=tiny",
    "pipeline.num_inference_steps=3",
    "pipeline.num_frames=5",
    "prompt=a red ball moving right",
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEFUSER_DEBUG", raising=False)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(name, options) -> a freshly mounted tmpfs; skips where mounting is not permitted."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def flat(text: str) -> str:
    """Without any whitespace: rich wraps long messages (and may break a long path) at the terminal width."""
    return "".join(text.split())


def error_message(result) -> str:
    """The CLI's error message (after any progress bars on stderr), flattened."""
    lines = result.stderr.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("error:"))
    return flat("\n".join(lines[start:]))


def says(result, text: str) -> bool:
    return flat(text) in flat(result.stderr)


def no_traceback(result) -> bool:
    return "Traceback" not in result.stdout + result.stderr


def record(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def make_finished_run(
    directory: Path, *, status: str | None = "done", video: bool = True
) -> dict[str, bytes]:
    """A directory as a finished run leaves it (a record and/or a video); returns its files."""
    directory.mkdir(parents=True)
    if status is not None:
        (directory / "config.json").write_text(json.dumps({"status": status, "run": {"video": "video.mp4"}}))
    if video:
        (directory / "video.mp4").write_bytes(b"\x00\x00\x00\x08ftyp-an old video")
    return snapshot(directory)


# ---------------------------------------------------------------- finished runs are never replaced silently


@pytest.mark.parametrize(
    ("status", "video"), [("done", True), ("done", False), (None, True), ("running", True)]
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_finished_run_directory_is_refused_and_left_untouched(tmp_path, status, video, dry_run):
    run_dir = tmp_path / "run"
    before = make_finished_run(run_dir, status=status, video=video)
    args = ["generate", *(["--dry-run"] if dry_run else []), *FAST, f"hydra.run.dir={run_dir}"]
    result = run_cli(*args)
    assert result.exit_code == 2 and no_traceback(result)
    assert says(result, f"hydra.run.dir={run_dir} already holds a finished run")
    assert says(result, "output.overwrite=true")
    assert snapshot(run_dir) == before  # not even Hydra's .hydra/ folder or log was written


@pytest.mark.parametrize("status", ["failed: model root x is empty", "interrupted", "dry-run"])
def test_a_directory_without_a_finished_run_may_be_reused(tmp_path, status):
    run_dir = tmp_path / "run"
    make_finished_run(run_dir, status=status, video=False)
    result = run_cli("generate", "--dry-run", *FAST, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.stderr
    assert record(run_dir)["status"] == "dry-run"


def test_output_overwrite_replaces_a_finished_run(tmp_path):
    run_dir = tmp_path / "run"
    make_finished_run(run_dir)
    result = run_cli("generate", "--dry-run", *FAST, "output.overwrite=true", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.stderr
    assert record(run_dir)["status"] == "dry-run" and record(run_dir)["output"]["overwrite"] is True


def test_a_sweep_never_replaces_a_finished_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["generate", "-m", "--dry-run", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args).exit_code == 0
    assert run_cli(*args).exit_code == 0  # a dry-run sweep finished nothing: its directory may be reused
    (sweep / "001_seed=2" / "video.mp4").write_bytes(b"a finished job's video")
    before = snapshot(sweep)
    result = run_cli(*args)
    assert result.exit_code == 2 and no_traceback(result)
    assert says(
        result, f"hydra.sweep.dir={sweep} already holds a finished run ({sweep / '001_seed=2' / 'video.mp4'})"
    )
    assert snapshot(sweep) == before


# ---------------------------------------------------------------- every way out of a run is recorded


def test_an_invalid_run_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, "pipeline.num_frames=18", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 2 and no_traceback(result)
    assert not run_dir.exists()


def test_a_run_that_fails_records_failed(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, f"model.root={empty}", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 2 and no_traceback(result)
    status = record(run_dir)["status"]
    assert status.startswith("failed: ") and str(empty) in status
    assert not (run_dir / "video.mp4").exists()


def test_a_real_run_records_done_and_a_second_run_cannot_replace_it(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.stderr
    assert record(run_dir)["status"] == "done"
    before = snapshot(run_dir)
    result = run_cli("generate", *FAST, "seed=8", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 2 and says(result, "already holds a finished run")
    assert snapshot(run_dir) == before


def _raise_in_generation(monkeypatch, error: BaseException) -> None:
    def pipeline_class(*args, **kwargs):
        raise error

    monkeypatch.setattr("telefuser_cli.pipelines.generate.pipeline_class", pipeline_class)


def test_an_internal_error_is_one_line_with_its_traceback_in_a_file(tmp_path, monkeypatch):
    _raise_in_generation(monkeypatch, ValueError("boom\nsecond line"))
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 1 and no_traceback(result)
    log = run_dir / "error.log"
    assert error_message(result) == flat(f"error: internal error: ValueError: boom (traceback in {log})")
    assert "Traceback" in log.read_text() and "second line" in log.read_text()
    assert record(run_dir)["status"] == f"failed: internal error: ValueError: boom (traceback in {log})"
    assert "Traceback" in (run_dir / "telefuser.log").read_text()  # the job's own log keeps it too


def test_telefuser_debug_shows_the_traceback(tmp_path, monkeypatch):
    _raise_in_generation(monkeypatch, ValueError("boom"))
    monkeypatch.setenv("TELEFUSER_DEBUG", "1")
    result = run_cli("generate", *FAST, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ValueError: boom" in result.stderr


def test_an_internal_error_outside_a_job_is_one_line_too(tmp_path, monkeypatch):
    from telefuser_cli.config.hydra_app import HydraApp

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(HydraApp, "validate_all", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = run_cli("generate", *FAST, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.exit_code == 1 and no_traceback(result)
    message = error_message(result)
    assert message.startswith(flat("error: internal error: KeyError: 'surprise' (traceback in "))
    saved = Path(message.split("tracebackin")[1].rstrip(")"))
    assert saved.parent == tmp_path and "KeyError" in saved.read_text()


def test_ctrl_c_records_interrupted(tmp_path, monkeypatch):
    _raise_in_generation(monkeypatch, KeyboardInterrupt())
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 130 and no_traceback(result)
    assert record(run_dir)["status"] == "interrupted"


def test_a_sweep_job_with_a_bug_keeps_the_other_results(tmp_path, monkeypatch):
    import telefuser_cli.job as job

    real = job.build_document

    def build_document(settings, *args, **kwargs):
        if settings.user.seed == 2:
            raise ZeroDivisionError("a bug in job 1")
        return real(settings, *args, **kwargs)

    monkeypatch.setattr(job, "build_document", build_document)
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "--dry-run", *FAST, "seed=1,2,3", f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 1 and no_traceback(result)
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["dry-run", "failed", "dry-run"]
    log = sweep / "001_seed=2" / "error.log"
    assert jobs[1]["error"] == f"internal error: ZeroDivisionError: a bug in job 1 (traceback in {log})"
    assert "Traceback" in log.read_text()
    assert says(result, "1 of 3 jobs failed") and says(
        result, f"job 1 ({' '.join(jobs[1]['overrides'])}): {jobs[1]['error']}"
    )
    assert record(sweep / "000_seed=1")["status"] == record(sweep / "002_seed=3")["status"] == "dry-run"


# ---------------------------------------------------------------- unwritable directories, full disks


def test_an_output_directory_inside_a_file_is_refused_before_anything(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for key, extra in (("hydra.run.dir", []), ("hydra.sweep.dir", ["-m", "seed=1,2"])):
        result = run_cli("generate", "--dry-run", *FAST, *extra, f"{key}={blocker / 'x' / 'y'}")
        assert result.exit_code == 2 and no_traceback(result)
        assert error_message(result) == flat(
            f"error: {key}={blocker / 'x' / 'y'}: the output cannot be written there: "
            f"{blocker} is a file, not a directory; choose another {key}"
        )
    assert blocker.read_text() == "not a folder"


def test_a_read_only_output_directory_is_refused(tmp_path, mount_tmpfs):
    read_only = mount_tmpfs("ro", "ro,size=64k")
    result = run_cli("generate", "--dry-run", *FAST, f"hydra.run.dir={read_only / 'run'}")
    assert result.exit_code == 2 and no_traceback(result)
    assert says(result, f"{read_only} is on a read-only file system")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-555 directory anyway")
def test_a_directory_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = run_cli("generate", "--dry-run", *FAST, f"hydra.run.dir={locked / 'run'}")
    assert result.exit_code == 2 and says(result, "not writable (permission denied)")


def test_a_full_disk_while_writing_the_video_publishes_nothing(tmp_path, monkeypatch):
    """Simulated: ffmpeg leaves part of the file, then fails with ENOSPC."""

    def run_ffmpeg(command, frames):
        Path(command[-1]).write_bytes(b"\x00" * 3000)
        raise OSError(errno.ENOSPC, "ffmpeg failed: Error writing trailer: No space left on device")

    monkeypatch.setattr("telefuser_cli.io.video.run_ffmpeg", run_ffmpeg)
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 2 and no_traceback(result)
    assert error_message(result).startswith(
        flat(f"error: could not write {run_dir / 'video.mp4'}: no space left")
    )
    assert says(result, "2.9 KiB written before the disk filled") and says(result, f"free in {run_dir})")
    assert not (run_dir / "video.mp4").exists() and not list(run_dir.glob(".*partial*"))
    assert flat("error: " + record(run_dir)["status"].removeprefix("failed: ")) == error_message(result)


# ---------------------------------------------------------------- out of memory anywhere in the run


def _cpu_out_of_memory(*args, **kwargs):
    raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 85899345920 bytes")


def _gpu_out_of_memory(*args, **kwargs):
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


@pytest.mark.parametrize(
    ("target", "raiser", "expected"),
    [
        (
            "telefuser_cli.loading.wan.load_text_encoder",
            _cpu_out_of_memory,
            "out of memory during load text encoder;",
        ),
        ("telefuser_cli.families.wan.pipeline.initial_noise", _gpu_out_of_memory, "out of memory;"),
    ],
)
def test_out_of_memory_outside_denoise_and_decode_reads_as_such(
    tmp_path, monkeypatch, target, raiser, expected
):
    monkeypatch.setattr(target, raiser)
    run_dir = tmp_path / "run"
    result = run_cli("generate", *FAST, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 2 and no_traceback(result)
    assert error_message(result).startswith(flat(f"error: {expected}"))
    assert record(run_dir)["status"].startswith(f"failed: {expected}")


def test_out_of_memory_names_the_stage_it_happened_in():
    from telefuser_cli.errors import UserError
    from telefuser_cli.pipelines.outputs import oom_as_user_error
    from telefuser_cli.progress import Reporter

    with pytest.raises(UserError, match=r"^out of memory during write video\.mp4; "):
        with oom_as_user_error(), Reporter(enabled=False) as reporter, reporter.stage("write video.mp4"):
            raise MemoryError()
    with pytest.raises(ValueError, match="not memory"):  # other errors pass through unchanged
        with oom_as_user_error(), Reporter(enabled=False) as reporter, reporter.stage("decode"):
            raise ValueError("not memory")
