"""`generate --from-config`: a run folder, its config.json or its resolved_config.yaml replays the run;
anything else, and a record whose facts were edited, is refused in one message."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import run_cli


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def one_line(result) -> str:
    return " ".join(result.stderr.split())


def dry_run(*args: str):
    return run_cli("generate", "--dry-run", *args)


@pytest.fixture
def recorded(tmp_path):
    """A dry run's folder, made with a recipe and a few explicit values."""
    first = tmp_path / "first"
    result = dry_run("recipe=tiny", "prompt=it's \"red\", ${x}", "seed=5", "pipeline.num_inference_steps=3",
                     "output.overwrite=true", f"hydra.run.dir={first}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return first


def load(directory):
    return json.loads((directory / "config.json").read_text())


@pytest.mark.parametrize("form", ["folder", "config.json", "resolved_config.yaml"])
def test_replay_accepts_the_folder_its_config_json_and_its_resolved_yaml(tmp_path, recorded, form):
    source = recorded if form == "folder" else recorded / form
    result = dry_run("--from-config", str(source), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 0, result.stderr
    a, b = load(recorded), load(tmp_path / "again")
    for section in ("layer1_model_definition", "layer2_inference_config", "layer3_user_inputs", "derived"):
        assert b[section] == a[section], section
    assert b["choices"] == a["choices"] and b["choices"]["recipe"] == "tiny"
    expected = recorded / ("config.json" if form == "folder" else form)
    assert b["replayed_from"] == str(expected.resolve())
    assert "replayed_from" not in a
    # a permission about the destination, not part of the run: never replayed
    assert a["output"]["overwrite"] is True and b["output"]["overwrite"] is False


def test_values_edited_in_the_resolved_yaml_are_replayed(tmp_path, recorded):
    path = recorded / "resolved_config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["user"]["prompt"] = "a blue square"
    tree["pipeline"]["num_inference_steps"] = 4
    path.write_text(yaml.safe_dump(tree))
    result = dry_run("--from-config", str(path), "seed=6", f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 0, result.stderr
    b = load(tmp_path / "again")
    assert b["layer3_user_inputs"]["prompt"] == "a blue square"
    assert b["layer2_inference_config"]["num_inference_steps"] == 4
    assert b["layer3_user_inputs"]["seed"] == 6  # the command line wins


def test_a_mixture_of_experts_run_replays_identically(tmp_path):
    result = dry_run("model=tiny_wan22_moe", "prompt=x", "seed=2", f"hydra.run.dir={tmp_path / 'moe'}")
    assert result.exit_code == 0, result.stderr
    result = dry_run("--from-config", str(tmp_path / "moe"), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 0, result.stderr
    a, b = load(tmp_path / "moe"), load(tmp_path / "again")
    assert b["layer2_inference_config"] == a["layer2_inference_config"] and b["sampling"] == a["sampling"]


def _edit(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


REFUSALS = {
    "sweep.json": (lambda p: p.write_text('{"jobs": [{"output_dir": "x"}]}'), "sweep summary"),
    "no_layers.json": (
        lambda p: p.write_text('{"choices": {"model": "tiny_wan21"}}'),
        "layer1_model_definition",
    ),
    "a_list.json": (lambda p: p.write_text("[1, 2]"), "not a telefuser config.json"),
    "broken.json": (lambda p: p.write_text('{"choices": '), "not valid JSON"),
    "video.mp4": (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypisom\xff\xfe\x00\x01"), "not a run record"),
    "binary.json": (lambda p: p.write_bytes(b"\xff\xfe\x00\x01garbage"), "not UTF-8"),
    "notes.yaml": (lambda p: p.write_text("- a\n- b\n"), "not a telefuser resolved_config.yaml"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_anything_but_a_run_record_is_refused_in_one_message(tmp_path, name):
    make, expected = REFUSALS[name]
    path = tmp_path / name
    make(path)
    result = dry_run("--from-config", str(path), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 2
    message = one_line(result)
    assert message.startswith(f"error: --from-config {path}") and expected in message
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "again").exists()


def test_a_record_without_its_model_entry_is_refused(tmp_path, recorded):
    _edit(recorded / "config.json", lambda d: d["choices"].pop("model"))
    result = dry_run("--from-config", str(recorded), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 2
    assert "choices.model is missing" in one_line(result)


@pytest.mark.parametrize("where", ["missing", "folder without a record"])
def test_a_path_that_is_no_run_is_refused(tmp_path, where):
    path = tmp_path / "nothing"
    if where != "missing":
        path.mkdir()
    result = dry_run("--from-config", str(path), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 2
    assert f"--from-config {path}" in one_line(result) and "give a run folder" in one_line(result)


@pytest.mark.parametrize(("fact", "value"), [("distill", True), ("family", "wan22"), ("size_divisor", 32)])
def test_hand_edited_facts_are_refused_not_replaced(tmp_path, recorded, fact, value):
    _edit(recorded / "config.json", lambda d: d["layer1_model_definition"]["facts"].__setitem__(fact, value))
    result = dry_run("--from-config", str(recorded / "config.json"), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 2
    message = one_line(result)
    assert f"model.{fact} is bound to the weights of model 'tiny_wan21'" in message
    assert repr(value) in message and "model=NAME" in message
    assert not (tmp_path / "again").exists()


def test_a_fact_edited_in_the_resolved_yaml_is_refused(tmp_path, recorded):
    path = recorded / "resolved_config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["model"]["moe"] = True
    path.write_text(yaml.safe_dump(tree))
    result = dry_run("--from-config", str(path), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 2
    assert "model.moe is bound to the weights" in one_line(result)


def test_a_resolved_yaml_needs_the_record_beside_it(tmp_path, recorded):
    (recorded / "config.json").unlink()
    result = dry_run(
        "--from-config", str(recorded / "resolved_config.yaml"), f"hydra.run.dir={tmp_path / 'a'}"
    )
    assert result.exit_code == 2
    assert "config.json is missing" in one_line(result)


def test_choosing_other_weights_replays_the_rest(tmp_path, recorded):
    result = dry_run(
        "--from-config", str(recorded), "model=tiny_wan21_random", f"hydra.run.dir={tmp_path / 'b'}"
    )
    assert result.exit_code == 0, result.stderr
    b = load(tmp_path / "b")
    assert b["layer1_model_definition"]["name"] == "tiny_wan21_random"
    assert b["layer1_model_definition"]["root"] != load(recorded)["layer1_model_definition"]["root"]
    assert b["layer3_user_inputs"]["prompt"] == load(recorded)["layer3_user_inputs"]["prompt"]


def test_a_record_written_before_the_shared_pipeline_files_replays(tmp_path):
    """Records name a per-model pipeline (`<model>_default`), carry `pipeline_type` and list the RIFE weights
    as a model component (`vfi`) when they were written before the pipeline files were shared by family."""
    first = tmp_path / "first"
    result = dry_run("recipe=tiny", "prompt=x", "seed=3", "pipeline.enable_vfi=true", "user.target_fps=32",
                     f"hydra.run.dir={first}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    new = load(first)
    old = json.loads(json.dumps(new))
    old["choices"]["pipeline"] = "tiny_wan21_default"
    old["pipeline_type"] = old["layer2_inference_config"]["pipeline_type"] = "wan_t2v"
    weights = old["layer2_inference_config"].pop("vfi_weights")
    old["layer1_model_definition"]["models"].append({"name": "vfi", "path": weights, "class": "RIFE"})
    (first / "config.json").write_text(json.dumps(old))
    result = dry_run("--from-config", str(first / "config.json"), f"hydra.run.dir={tmp_path / 'again'}")
    assert result.exit_code == 0, result.stderr
    again = load(tmp_path / "again")
    for section in ("layer1_model_definition", "layer2_inference_config", "layer3_user_inputs", "derived"):
        assert again[section] == new[section], section
