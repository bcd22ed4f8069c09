"""Prompt sweeps (`user.prompt_file=FILE -m`) and the names of a sweep's job folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from telefuser_cli.config.job_names import job_dir_name, swept_keys

FAST = ["recipe=tiny", "pipeline.num_inference_steps=2", "pipeline.num_frames=5"]
PROMPTS = ['a red ball, moving "right"', "它's a = b, 红色的球 'quoted' ${x} \\"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEFUSER_DEBUG", raising=False)


def prompt_file(tmp_path: Path, lines: list[str], name: str = "prompts.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def record(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text(encoding="utf-8"))


def test_a_prompt_file_sweep_runs_one_job_per_prompt_and_seed(tmp_path):
    path = prompt_file(
        tmp_path, ["# comments and blank lines are skipped", PROMPTS[0], "", "   ", PROMPTS[1]]
    )
    sweep = tmp_path / "sweep"
    result = run_cli(
        "generate", "-m", *FAST, f"user.prompt_file={path.name}", "seed=1,2", f"hydra.sweep.dir={sweep}"
    )
    assert result.exit_code == 0, result.stderr
    names = [
        "000_prompt_line=2,seed=1",
        "001_prompt_line=2,seed=2",
        "002_prompt_line=5,seed=1",
        "003_prompt_line=5,seed=2",
    ]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == names
    for name, (line, prompt, seed) in zip(names, [(2, 0, 1), (2, 0, 2), (5, 1, 1), (5, 1, 2)], strict=True):
        user = record(sweep / name)["layer3_user_inputs"]
        assert user["prompt"].encode() == PROMPTS[prompt].encode()  # byte-identical, never split
        assert (user["prompt_line"], user["seed"], user["prompt_file"]) == (line, seed, str(path))
        assert record(sweep / name)["status"] == "done" and (sweep / name / "video.mp4").is_file()
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert [job["swept"] for job in jobs] == [
        {"prompt_line": "2", "seed": "1"},
        {"prompt_line": "2", "seed": "2"},
        {"prompt_line": "5", "seed": "1"},
        {"prompt_line": "5", "seed": "2"},
    ]

    # a job replays from its record alone: the recorded prompt, even once the file has changed
    path.write_text("something else entirely\n", encoding="utf-8")
    replay = tmp_path / "replay"
    result = run_cli(
        "generate", "--dry-run", "--from-config", str(sweep / names[3]), f"hydra.run.dir={replay}"
    )
    assert result.exit_code == 0, result.stderr
    replayed = record(replay)
    assert replayed["layer3_user_inputs"]["prompt"] == PROMPTS[1]
    assert replayed["layer3_user_inputs"]["prompt_file"] is None
    assert replayed["settings_sha256"] == record(sweep / names[3])["settings_sha256"]


def test_a_file_with_one_prompt_runs_without_m(tmp_path):
    path = prompt_file(tmp_path, ["# one", PROMPTS[1]])
    result = run_cli("generate", "--dry-run", *FAST, f"user.prompt_file={path}", "hydra.run.dir=run")
    assert result.exit_code == 0, result.stderr
    assert record(tmp_path / "run")["layer3_user_inputs"]["prompt"] == PROMPTS[1]
    assert record(tmp_path / "run")["layer3_user_inputs"]["prompt_line"] == 2


def test_prompt_line_chooses_one_prompt_without_m(tmp_path):
    path = prompt_file(tmp_path, PROMPTS)
    result = run_cli(
        "generate", "--dry-run", *FAST, f"user.prompt_file={path}", "user.prompt_line=2", "hydra.run.dir=run"
    )
    assert result.exit_code == 0, result.stderr
    assert record(tmp_path / "run")["layer3_user_inputs"]["prompt"] == PROMPTS[1]


def _refused(*args: str) -> str:
    result = run_cli(*args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert text.count("error:") == 1
    return text


def test_prompt_file_refusals(tmp_path):
    several = prompt_file(tmp_path, PROMPTS)
    empty = prompt_file(tmp_path, ["# only a comment", ""], "empty.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"fine\ncaf\xe9\n")
    dry = ["generate", "--dry-run", *FAST]
    assert "holds 2 prompts: run them all with -m" in _refused(*dry, f"user.prompt_file={several}")
    assert "no such file" in _refused(*dry, "-m", "user.prompt_file=missing.txt", "seed=1,2")
    assert "holds no prompt" in _refused(*dry, "-m", f"user.prompt_file={empty}")
    assert "line 2 is not UTF-8 text" in _refused(*dry, "-m", f"user.prompt_file={latin1}")
    assert "user.prompt and user.prompt_file both given" in _refused(
        *dry, "prompt=x", f"user.prompt_file={several}"
    )
    assert "user.prompt_line=3: no prompt on that line" in _refused(
        *dry, f"user.prompt_file={several}", "user.prompt_line=3"
    )
    assert "give user.prompt_file=FILE too" in _refused(*dry, "prompt=x", "user.prompt_line=3")


def test_every_prompt_job_is_validated_before_any_starts(tmp_path):
    path = prompt_file(tmp_path, PROMPTS)
    sweep = tmp_path / "sweep"
    text = _refused("generate", "-m", "--dry-run", *FAST, f"user.prompt_file={path}", "pipeline.num_frames=5,18",
                    f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert "pipeline.num_frames=18" in text
    assert not sweep.exists()


# ---------------------------------------------------------------- folder names


def test_swept_keys_are_the_sweeps_only():
    overrides = ["recipe=tiny", "user.seed=1,2", "user.prompt='a, b'", "pipeline.num_inference_steps=range(2,4)",
                 "user.resolution=choice(32x32,64x64)", "pipeline.num_frames=5"]  # fmt: skip
    assert swept_keys(overrides) == ["user.seed", "pipeline.num_inference_steps", "user.resolution"]


def test_job_dir_names_are_sorted_safe_and_capped():
    assert job_dir_name(
        7, ["user.seed=3", "user.resolution=480p", "recipe=tiny"], ["user.seed", "user.resolution"]
    ) == ("007_seed=3,resolution=480p")
    assert job_dir_name(0, ["recipe=tiny"], []) == "000"
    odd = job_dir_name(12, ["pipeline.x='a/b c:d*'"], ["pipeline.x"])
    assert odd == "012_pipeline.x=a-b-c-d"
    long = job_dir_name(1, ["pipeline.x=" + "y" * 500], ["pipeline.x"])
    assert len(long) <= 4 + 80 and "/" not in long


def test_sweep_table_shows_one_column_per_swept_key(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "--dry-run", *FAST, "prompt=x", "seed=1,2", "resolution=32x32,64x64",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "status" in line)
    assert [word for word in header.replace("┃", " ").split()] == [
        "#",
        "seed",
        "resolution",
        "status",
        "time",
        "video",
    ]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir())[0] == "000_seed=1,resolution=32x32"
    summary = json.loads((sweep / "sweep.json").read_text())
    assert summary["swept_keys"] == ["user.seed", "user.resolution"]
    assert set(summary["jobs"][0]) >= {"overrides", "swept", "status", "error", "output_dir", "video", "seed",
                                       "settings_sha256", "time_s"}  # fmt: skip
