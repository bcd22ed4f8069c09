"""A sweep pays once: components and text encodings kept between the jobs of one process
(``runtime/resident.py``, ``pipeline.keep_loaded``), with the same videos as separate runs."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import torch
from helpers import run_cli
from safetensors.torch import load_file

from telefuser_cli.runtime.resident import Resident, identity

COMMON = ("prompt=a red ball", "pipeline.num_inference_steps=2", "output.save_latents=true")


def _jobs(sweep_dir: Path) -> list[dict]:
    """Each job's config.json, in job order (their folders start with the job's index)."""
    return [
        json.loads((d / "config.json").read_text())
        for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    ]


def _latents(directory: Path) -> torch.Tensor:
    return load_file(directory / "latents.safetensors")["latents"]


def test_a_seed_sweep_loads_and_encodes_once_and_equals_separate_runs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "recipe=tiny", *COMMON, "seed=1,2,3", f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.stderr
    jobs = _jobs(sweep)
    assert [job["run"]["reused"] for job in jobs] == [[], *[["text encoding", "dit", "vae"]] * 2]
    for job in jobs[1:]:  # nothing loaded or encoded: no text stages at all, the loads take no time
        timings = job["run"]["timings_s"]
        assert "load text encoder" not in timings and "encode text" not in timings
    # a separate run (keep_loaded=false: nothing kept from the sweep above) gives the same latents, bit for bit
    single = tmp_path / "single"
    result = run_cli("generate", "recipe=tiny", *COMMON, "seed=3", "pipeline.keep_loaded=false",
                     f"hydra.run.dir={single}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    run = json.loads((single / "config.json").read_text())["run"]
    assert run["reused"] == [] and run["kept_for_next_job"] is False  # a single run keeps nothing
    assert jobs[0]["run"]["kept_for_next_job"] is True
    last = sorted(p for p in sweep.iterdir() if p.is_dir())[-1]
    assert torch.equal(_latents(single), _latents(last))


def test_keep_loaded_false_loads_everything_in_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "recipe=tiny", *COMMON, "seed=1,2", "pipeline.keep_loaded=false",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    for job in _jobs(sweep):
        assert job["run"]["reused"] == [] and "load text encoder" in job["run"]["timings_s"]
        assert job["layer2_inference_config"]["keep_loaded"] is False


def test_a_sweep_alternating_two_models_releases_one_dit_before_loading_the_other(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "model=tiny_wan21,tiny_wan21_random,tiny_wan21", *COMMON, "seed=1",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    # job 3 loads tiny_wan21's DiT again: it was released when tiny_wan21_random's was loaded for job 2
    assert [job["run"]["reused"] for job in _jobs(sweep)] == [[], [], ["text encoding"]]


def test_a_kept_component_of_a_kind_is_gone_before_another_of_that_kind_loads(tmp_path):
    files = []
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(name.encode())
        files.append(tmp_path / name)
    first, second = (identity("dit", [path], dtype="bf16") for path in files)
    resident = Resident()
    resident.start_job(True)
    model = resident.component(first, lambda: torch.nn.Linear(4, 4), "dit")
    alive = weakref.ref(model)
    del model
    seen = {}

    def load_second():
        gc.collect()
        seen["first alive while loading the second"] = alive() is not None
        return torch.nn.Linear(4, 4)

    resident.start_job(True)
    resident.component(second, load_second, "dit")
    assert seen == {"first alive while loading the second": False}
    # same files and settings: reused; a file that changed on disk is another component
    resident.start_job(True)
    kept = resident.component(second, lambda: None, "dit")
    assert isinstance(kept, torch.nn.Linear) and resident.reused == ["dit"]
    (tmp_path / "b.bin").write_bytes(b"changed weights")
    assert identity("dit", [files[1]], dtype="bf16") != second
    assert identity("dit", [files[1]], dtype="fp32") != identity("dit", [files[1]], dtype="bf16")


def test_an_image_to_video_seed_sweep_encodes_its_image_once(tmp_path):
    from PIL import Image

    image = tmp_path / "first.png"
    Image.new("RGB", (40, 24), (200, 40, 40)).save(image)
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "recipe=tiny_i2v", *COMMON, f"user.input_image={image}", "seed=1,2",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    second = _jobs(sweep)[1]["run"]
    assert "image encoding" in second["reused"] and "encode image" not in second["timings_s"]
    single = tmp_path / "single"
    result = run_cli("generate", "recipe=tiny_i2v", *COMMON, f"user.input_image={image}", "seed=2",
                     "pipeline.keep_loaded=false", f"hydra.run.dir={single}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert torch.equal(_latents(single), _latents(sorted(p for p in sweep.iterdir() if p.is_dir())[-1]))


def test_a_hunyuan_image_to_video_seed_sweep_keeps_its_encoders_and_equals_a_separate_run(tmp_path):
    from PIL import Image

    image = tmp_path / "first.png"
    Image.new("RGB", (48, 32), (30, 120, 200)).save(image)
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "recipe=tiny_hunyuan15_i2v", *COMMON, f"user.input_image={image}",
                     "seed=1,2", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    second = _jobs(sweep)[1]["run"]
    assert {"image encoding", "text encoding", "dit"} <= set(second["reused"])
    assert "encode image" not in second["timings_s"] and "encode text" not in second["timings_s"]
    single = tmp_path / "single"
    result = run_cli("generate", "recipe=tiny_hunyuan15_i2v", *COMMON, f"user.input_image={image}", "seed=2",
                     "pipeline.keep_loaded=false", f"hydra.run.dir={single}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert torch.equal(_latents(single), _latents(sorted(p for p in sweep.iterdir() if p.is_dir())[-1]))


def test_kept_components_of_other_kinds_go_when_the_next_load_would_not_fit(tmp_path, monkeypatch):
    from telefuser_cli.runtime import device

    for name in ("t5.bin", "dit.bin"):
        (tmp_path / name).write_bytes(b"x" * 1000)
    text, dit = identity("text encoder", [tmp_path / "t5.bin"]), identity("dit", [tmp_path / "dit.bin"])
    resident = Resident()
    resident.start_job(True)
    resident.component(text, lambda: torch.nn.Linear(2, 2), "text encoder")
    monkeypatch.setattr(device, "host_available_bytes", lambda: 10**9)  # plenty: the encoder stays
    resident.component(dit, lambda: torch.nn.Linear(2, 2), "dit")
    assert set(resident.held) == {text, dit}
    resident.start_job(True)
    resident.held.pop(dit)
    monkeypatch.setattr(device, "host_available_bytes", lambda: 1500)  # < 2 x the DiT's 1000 bytes
    resident.component(dit, lambda: torch.nn.Linear(2, 2), "dit")
    assert set(resident.held) == {dit}  # the encoder was released before the DiT loaded
    resident.end_job()
    assert set(resident.held) == {dit}  # used by this job: kept
    resident.start_job(True)
    resident.end_job()
    assert not resident.held  # the next job did not use it
