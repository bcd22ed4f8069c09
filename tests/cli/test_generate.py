"""`generate`: single runs, dry runs, sweeps on the basic and joblib launchers, replay."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import job_dirs, run_cli


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_dry_run_writes_the_configuration(tmp_path):
    result = run_cli("generate", "--dry-run", "recipe=wan21_1.3b", "prompt=a cat, surfing", "seed=3",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads((tmp_path / "run" / "config.json").read_text())
    assert document["layer3_user_inputs"]["prompt"] == "a cat, surfing"
    assert (tmp_path / "run" / "resolved_config.yaml").is_file()
    assert not (tmp_path / "run" / "video.mp4").exists()


def test_generate_needs_a_prompt(tmp_path):
    result = run_cli("generate", "--dry-run", "recipe=tiny")
    assert result.exit_code == 2
    assert "user.prompt is empty" in result.stderr


def test_comma_in_a_prompt_never_splits_a_sweep(tmp_path):
    result = run_cli("generate", "-m", "--dry-run", "recipe=tiny", "prompt=red, green, blue", "seed=1,2",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    dirs = job_dirs(tmp_path / "sweep")
    assert len(dirs) == 2
    prompts = {json.loads((d / "config.json").read_text())["layer3_user_inputs"]["prompt"] for d in dirs}
    assert prompts == {"red, green, blue"}


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_dry_run_one_directory_per_job_and_sweep_json(tmp_path, launcher):
    sweep = tmp_path / f"sweep_{launcher}"
    args = ["generate", "-m", "--dry-run", "recipe=tiny", "prompt=a ball", "seed=1,2,3", "resolution=64x64,32x32",
            f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    if launcher == "joblib":
        args.append("hydra.launcher.n_jobs=2")
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    dirs = job_dirs(sweep)
    assert len(dirs) == 6
    seen = set()
    for directory in dirs:
        document = json.loads((directory / "config.json").read_text())
        seen.add((document["layer3_user_inputs"]["seed"], document["layer3_user_inputs"]["resolution"]))
    assert seen == {(s, r) for s in (1, 2, 3) for r in ("64x64", "32x32")}
    summary = json.loads((sweep / "sweep.json").read_text())
    assert len(summary["jobs"]) == 6 and all(job["status"] == "dry-run" for job in summary["jobs"])


def test_every_job_is_validated_before_any_starts(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "--dry-run", "recipe=tiny", "prompt=x", "pipeline.num_frames=17,18",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 2
    assert "pipeline.num_frames=18" in result.stderr and "4k+1" in " ".join(result.stderr.split())
    assert not sweep.exists()


def test_single_run_refuses_a_sweep_value():
    result = run_cli("generate", "--dry-run", "recipe=tiny", "prompt=x", "seed=1,2")
    assert result.exit_code == 2
    assert "-m" in result.stderr or "multirun" in result.stderr.lower()


def test_ti2v_takes_an_optional_image(tmp_path):
    # TI2V-5B: text-to-video without an image, image-to-video (its first frame) with one
    image = tmp_path / "x.png"
    image.write_bytes(b"not read")  # a dry run checks the file is there, and reads nothing
    for extra in ([], [f"user.input_image={image}"]):
        result = run_cli("generate", "--dry-run", "model=wan22_ti2v_5b", "prompt=x", *extra,
                         f"hydra.run.dir={tmp_path / str(len(extra))}")  # fmt: skip
        assert result.exit_code == 0, result.stderr


def test_replay_from_config(tmp_path):
    first = tmp_path / "first"
    result = run_cli("generate", "--dry-run", "recipe=tiny", "prompt=it's \"red\", ${x}", "seed=5",
                     "pipeline.num_inference_steps=3", f"hydra.run.dir={first}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    second = tmp_path / "second"
    result = run_cli("generate", "--dry-run", "--from-config", str(first / "config.json"), "seed=6",
                     f"hydra.run.dir={second}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    a = json.loads((first / "config.json").read_text())
    b = json.loads((second / "config.json").read_text())
    assert b["layer3_user_inputs"]["prompt"] == a["layer3_user_inputs"]["prompt"]
    assert b["layer3_user_inputs"]["seed"] == 6
    assert b["layer2_inference_config"] == a["layer2_inference_config"]
    assert b["layer1_model_definition"] == a["layer1_model_definition"]


def test_help_imports_no_torch():
    # what --help imports, not how long it takes: timings belong in benchmarks/
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "telefuser_cli", "--help"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "generate" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert "torch" not in imported and "hydra" not in imported


def test_inspect_reads_architecture_without_loading(tiny_root):
    from helpers import run_cli as cli

    result = cli("inspect", "--json", str(tiny_root))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["moe"] is False and report["dit"]["layout"] == "official"
    assert report["dit"]["config"]["num_heads"] == 4 and report["dit"]["quant"] == "fp32"
    assert report["vae"]["z_dim"] == 16 and report["text_encoder"]["num_heads"] == 4
    assert cli("inspect", str(tiny_root / "nope")).exit_code == 2
