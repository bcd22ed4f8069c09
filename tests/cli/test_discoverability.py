"""A CLI that teaches itself: list, keys, inspect, --version, completion, generate's examples, tiny-model cache."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from helpers import run_cli
from typer.testing import CliRunner

from telefuser_cli.cli import app
from telefuser_cli.paths import config_dir

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (config_dir() / "recipe").glob("*.yaml"))
IMAGE_TASKS = ("i2v", "flf2v")  # the tasks that need an image (ti2v takes one, and runs without)


def run_at(columns: int, *args: str):
    """`telefuser ARGS` in a terminal `columns` wide."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False)


def row_blocks(output: str) -> dict[str, str]:
    """`telefuser list`: "group=NAME" of each entry (its name starts a line) -> its row and the lines under it.

    Models and recipes share some names, so the key carries the group, read from each table's title
    ("models (model=NAME)").
    """
    blocks: dict[str, str] = {}
    group, key = None, None
    for line in output.splitlines():
        title = re.match(r"^(\w+)s \(", line)
        if title:
            group, key = title.group(1), None
        elif line and not line[0].isspace() and not line.startswith(("name ", "─")):
            key = f"{group}={line.split()[0]}"
            blocks[key] = line
        elif key is not None and line.strip():
            blocks[key] += "\n" + line
    return blocks


# ---------------------------------------------------------------- list


@pytest.fixture(scope="module")
def listing() -> dict[int, str]:
    """`telefuser list` at 80 and 120 columns (composing every entry takes seconds: once per module)."""
    outputs = {}
    for columns in (80, 120):
        result = run_at(columns, "list")
        assert result.exit_code == 0, result.stderr
        outputs[columns] = result.stdout
    return outputs


@pytest.mark.parametrize("columns", [80, 120])
def test_list_never_cuts_a_name(columns, listing):
    output = listing[columns]
    assert "…" not in output
    assert max(len(line) for line in output.splitlines()) <= columns
    starts = [line.split()[0] for line in output.splitlines() if line and not line[0].isspace()]
    for name in MODELS + RECIPES:
        assert name in starts, f"{name} does not start a row whole at {columns} columns"


@pytest.mark.parametrize("columns", [80, 120])
def test_list_shows_every_description_whole(columns, listing):
    from telefuser_cli.config.catalog import GROUPS, catalog

    blocks = row_blocks(listing[columns])
    for group in GROUPS:
        for entry in catalog(group):
            shown = set(blocks[f"{group}={entry.name}"].split())
            missing = [word for word in entry.description.split() if word not in shown]
            assert not missing, f"{group} {entry.name} at {columns} columns lacks {missing}"


def test_list_accepts_plurals_and_refuses_unknown_groups():
    from telefuser_cli.config.catalog import group_name

    assert [group_name(g) for g in ("models", "pipelines", "recipes", "launchers", "Model")] == [
        "model", "pipeline", "recipe", "launcher", "model"
    ]  # fmt: skip
    assert run_at(80, "list", "launchers").exit_code == 0
    result = run_at(80, "list", "modles")
    assert result.exit_code == 2
    assert "unknown group 'modles'" in result.stderr and "Traceback" not in result.output


def test_list_shows_where_weights_go_and_what_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TELEFUSER_MODEL_ROOT", str(tmp_path))
    (tmp_path / "Wan2.1-T2V-1.3B").mkdir()
    (tmp_path / "Wan2.1-T2V-1.3B" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    blocks = row_blocks(run_at(200, "list", "models").stdout)
    found = blocks["model=wan21_t2v_1.3b"]
    assert found.split()[1:8] == ["t2v", "832x480", "50", "5", "5", "found", f"{tmp_path}/Wan2.1-T2V-1.3B"]
    assert blocks["model=wan21_t2v_14b"].split()[6] == "missing"
    assert blocks["model=wan22_a14b_t2v"].split()[4] == "4/3"  # MoE: high/low guidance


def test_weights_state_is_read_from_the_folder(tmp_path):
    from types import SimpleNamespace

    from telefuser_cli.config.catalog import weights_state
    from telefuser_cli.paths import cache_dir

    single = SimpleNamespace(root=str(tmp_path / "w"), moe=False, dit="diffusion_pytorch_model*.safetensors",
                             dit_high=None, dit_low=None)  # fmt: skip
    assert weights_state(single) == "missing"
    fixture = SimpleNamespace(**{**vars(single), "root": str(cache_dir() / "tiny_wan21")})
    assert weights_state(fixture) == "first use"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "diffusion_pytorch_model-00001-of-00002.safetensors").write_bytes(b"")
    assert weights_state(single) == "found"
    moe = SimpleNamespace(**{**vars(single), "moe": True, "dit": None, "dit_high": "high/*.safetensors",
                             "dit_low": "low/*.safetensors"})  # fmt: skip
    assert weights_state(moe) == "missing"  # both experts are needed
    (tmp_path / "w" / "high").mkdir()
    (tmp_path / "w" / "high" / "a.safetensors").write_bytes(b"")
    assert weights_state(moe) == "missing"
    (tmp_path / "w" / "low").mkdir()
    (tmp_path / "w" / "low" / "a.safetensors").write_bytes(b"")
    assert weights_state(moe) == "found"
    assert "packaged" not in run_at(120, "list", "models").stdout  # no source column when all agree


def test_list_shows_a_user_entry_that_shadows_or_adds(tmp_path):
    (tmp_path / "model").mkdir()
    source = (config_dir() / "model" / "tiny_wan21_random.yaml").read_text()
    (tmp_path / "model" / "tiny_wan21_random.yaml").write_text(source)
    (tmp_path / "model" / "mine.yaml").write_text(source.replace("name: tiny_wan21_random", "name: mine"))
    blocks = row_blocks(run_at(80, "list", "models", "--config-dir", str(tmp_path)).stdout)
    assert "--config-dir, shadows packaged" in blocks["model=tiny_wan21_random"]
    assert "--config-dir" in blocks["model=mine"] and "shadows" not in blocks["model=mine"]
    # a copied entry names its pipeline itself, so it composes as the original does
    assert "does not compose" not in blocks["model=mine"]
    assert "--config-dir" not in blocks["model=wan21_t2v_1.3b"]


@pytest.fixture(scope="module")
def facts():
    from telefuser_cli.config.catalog import Compositions, group_facts
    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.families import available

    compositions = Compositions(HydraApp(), available)
    found = {}
    for group, names in (("model", MODELS), ("recipe", RECIPES)):
        by_name = group_facts(group, names, compositions, set(MODELS))
        found.update({f"{group}={name}": fact for name, fact in by_name.items()})
    return found


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "frame.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path)
    return path


@pytest.mark.parametrize("entry", [f"model={m}" for m in MODELS] + [f"recipe={r}" for r in RECIPES])
def test_list_availability_is_what_generate_accepts(entry, facts, image, tmp_path):
    fact = facts[entry]
    args = ["generate", "--dry-run", entry, "prompt=a red ball", f"hydra.run.dir={tmp_path / 'run'}"]
    if fact.task in IMAGE_TASKS:
        args.append(f"user.input_image={image}")
    if fact.task == "flf2v":
        args.append(f"user.end_image={image}")
    result = run_cli(*args)
    assert (result.exit_code == 0) == fact.available, (fact, result.stderr)


@pytest.mark.parametrize("columns", [80, 120])
def test_list_marks_exactly_the_entries_generate_refuses(columns, facts, listing):
    blocks = row_blocks(listing[columns])
    for key, fact in facts.items():
        marked = "not available in this version (task" in " ".join(blocks[key].split())
        assert marked == (not fact.supported), key


@pytest.mark.parametrize("columns", [80, 120])
def test_no_row_calls_an_available_entry_unavailable(columns, facts, listing):
    """Nothing on an entry's row (its description included) says it cannot run when generate runs it."""
    blocks = row_blocks(listing[columns])
    said = {key: " ".join(block.split()) for key, block in blocks.items()}
    wrong = [key for key, fact in facts.items() if fact.available and "not available" in said[key]]
    assert not wrong, f"these run, but their rows say they do not: {wrong}"


# ---------------------------------------------------------------- keys, version, help, completion


def test_keys_lists_every_pipeline_key_with_its_description():
    result = run_at(80, "keys", "pipeline")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert re.search(r"^pipeline\.num_inference_steps = 50 +\(int\)\n +Denoising steps", text, re.MULTILINE)
    assert "pipeline.dit_config.offload_config.offload_type = NO_CPU_OFFLOAD" in text
    assert "one of NO_CPU_OFFLOAD, MODEL_CPU_OFFLOAD, SEQUENTIAL_CPU_OFFLOAD" in text
    assert "user.prompt" not in text


def test_every_commented_pipeline_field_gets_its_comment():
    from telefuser_cli.config.keys import descriptions

    lines = (ROOT / "telefuser_cli" / "config" / "schema.py").read_text().splitlines()
    start = lines.index("class PipelineConfig:")
    known = descriptions()
    checked = 0
    for before, line in zip(lines[start:], lines[start + 1 :], strict=False):
        if line.startswith("class "):
            break
        field = re.match(r"^    (\w+): ", line)
        comment = re.match(r"^\s*# (.+)$", before)
        if field and comment:
            assert known[("PipelineConfig", field.group(1))].endswith(comment.group(1)), field.group(1)
            checked += 1
    assert checked >= 5


def test_keys_shows_the_defaults_of_the_chosen_recipe():
    result = run_at(120, "keys", "user", "recipe=tiny")
    assert result.exit_code == 0, result.stderr
    assert "recipe=tiny" in result.stdout and "user.resolution = 32x32" in result.stdout
    moe = run_at(120, "keys", "pipelines", "model=wan22_a14b_t2v").stdout
    assert "pipeline.dit_high_config.compile = false" in moe and "pipeline.cfg_scale_high = 4.0" in moe
    assert "pipeline.dit_high_config = null" in run_at(120, "keys", "pipeline").stdout
    facts = run_at(120, "keys", "model").stdout
    assert "model.task = t2v  (enum)" in facts and "Bound to the weights" in facts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "pipelin"], "unknown section 'pipelin'"),
        (["keys", "model=wan21_t2v_13b"], "did you mean model=wan21_t2v_1.3b?"),
        (["keys", "pipeline.num_step=3"], "did you mean pipeline.num_inference_steps?"),
    ],
)
def test_keys_refusals_are_one_line(args, message):
    result = run_at(1000, *args)  # wide enough that the terminal does not wrap the line
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"telefuser {version('telefuser')}\n"


def test_version_falls_back_to_pyproject(monkeypatch):
    import importlib.metadata

    from telefuser_cli.cli import package_version

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert package_version() == expected


def test_generate_help_has_examples_that_fit_80_columns():
    result = run_at(80, "generate", "--help")
    assert result.exit_code == 0
    text = result.stdout
    assert "Examples" in text and "…" not in text
    for example in (
        "generate recipe=tiny",
        "model.root=",
        "generate -m ",
        "telefuser dump-config",
        "keys pipeline",
    ):
        assert example in text, example
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "--install-completion" in run_at(80, "--help").stdout


def test_completion_offers_entries_and_keys():
    from telefuser_cli.config.complete import complete_keys_argument, complete_override

    assert complete_override("model=wan22_a14b_t") == ["model=wan22_a14b_t2v"]
    assert "recipe=tiny_moe" in complete_override("recipe=tiny")
    assert "hydra/launcher=joblib" in complete_override("hydra/launcher=")
    assert complete_override("pipeline.num_inf") == ["pipeline.num_inference_steps="]
    assert complete_override("pipeline.dit_config.offload_config.offload_type=SEQ") == [
        "pipeline.dit_config.offload_config.offload_type=SEQUENTIAL_CPU_OFFLOAD"
    ]
    # bash splits `model=wan22_a14b_t` at "=": the key and "=" come as earlier words
    assert complete_override("wan22_a14b_t", previous=["prompt=x", "model", "="]) == ["wan22_a14b_t2v"]
    assert "tiny" in complete_override("", previous=["recipe"])
    assert "seed=" in complete_override("", previous=["model", "=", "tiny_wan21"])  # after a finished one
    assert complete_keys_argument("pipe")[:2] == ["pipeline", "pipeline="]


def test_completion_through_the_shell_protocol():
    env = {
        **os.environ,
        "_TELEFUSER_COMPLETE": "complete_zsh",
        "_TYPER_COMPLETE_ARGS": "telefuser generate model=tiny_wan21_r",
    }
    script = Path(sys.executable).parent / "telefuser"  # the installed command: its name keys the protocol
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert "model=tiny_wan21_random" in out.stdout, out.stderr


def test_completion_keys_and_list_import_no_torch():
    script = """
import sys
from typer.testing import CliRunner
from telefuser_cli.config.complete import complete_override
assert complete_override("model=tiny")
assert "torch" not in sys.modules and "hydra" not in sys.modules, "completion imported torch or hydra"
from telefuser_cli.cli import app
for args in (["keys", "pipeline"], ["list", "launchers"], ["keys", "model=nope"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2), result.output
assert "torch" not in sys.modules, "keys or list imported torch"
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- inspect


@pytest.fixture(scope="module")
def hunyuan_root(tmp_path_factory) -> Path:
    from telefuser_cli.families.hunyuan15.tiny import write_tiny_hunyuan15

    return write_tiny_hunyuan15(tmp_path_factory.mktemp("models") / "tiny_hunyuan15", sr=True)


def test_inspect_summarises_a_hunyuan15_folder(hunyuan_root):
    result = run_at(120, "inspect", str(hunyuan_root))
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.startswith("HunyuanVideo 1.5: ")
    for part in ("transformer/480p_t2v", "transformer/480p_i2v", "transformer/720p_sr_distilled", "vae",
                 "upsampler/720p_sr_distilled", "SRTo720pUpsampler", "text_encoder/llm", "vision_encoder/siglip"):  # fmt: skip
        assert part in text, part
    assert "text-to-video; 480p; 2 double blocks, hidden 32, 2 heads" in text and "fp32" in text
    fits = text[text.index("model entries that load it") :]
    assert "hunyuan15_480p_t2v " in fits and "hunyuan15_480p_i2v " in fits
    assert "wan21_t2v_1.3b" not in fits and "hunyuan15_720p_t2v " not in fits  # no transformer/720p_t2v here
    assert f"model=NAME model.root={hunyuan_root}" in text
    report = json.loads(run_at(120, "inspect", "--json", str(hunyuan_root)).stdout)
    assert report["family"] == "hunyuan15" and report["tasks"] == ["i2v", "sr", "t2v"]
    assert report["transformers"]["transformer/480p_i2v"]["task"] == "i2v"


def test_inspect_summarises_a_wan_folder(tiny_root):
    result = run_at(120, "inspect", str(tiny_root))
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.startswith("Wan2.1: text-to-video")
    assert "2 layers, dim 128, 4 heads, 16 -> 16 channels" in text and "UMT5, 2 layers" in text
    fits = text[text.index("model entries that load it") :]
    assert "wan21_t2v_1.3b" in fits and "wan21_t2v_14b" in fits
    assert "wan21_i2v_14b_480p" not in fits and "wan22_a14b_t2v" not in fits
    report = json.loads(run_at(120, "inspect", "--json", str(tiny_root)).stdout)
    assert report["family"] == "wan21" and report["moe"] is False and report["dit"]["quant"] == "fp32"


def test_inspect_matches_a_mixture_of_experts(tmp_path):
    from telefuser_cli.families.tiny import write_tiny
    from telefuser_cli.loading.inspect import entry_fits, inspect_directory

    report = inspect_directory(write_tiny("tiny_wan22_moe", tmp_path / "moe"))
    assert report["family"] == "wan22" and report["moe"] is True
    moe = {"family": "wan22", "task": "t2v", "moe": True, "quant": "bf16", "dit": None,
           "dit_high": "high_noise_model/diffusion_pytorch_model*.safetensors",
           "dit_low": "low_noise_model/diffusion_pytorch_model*.safetensors"}  # fmt: skip
    assert entry_fits(report, moe)
    assert not entry_fits(report, {**moe, "quant": "fp8"})  # fp8 entries need fp8 weights
    assert not entry_fits(report, {**moe, "task": "i2v"})
    assert not entry_fits(
        report, {**moe, "family": "wan21", "moe": False, "dit": "diffusion_pytorch_model*.safetensors"}
    )


def test_inspect_refuses_what_it_does_not_know_in_one_line(tmp_path):
    result = run_at(1000, "inspect", str(tmp_path))
    assert result.exit_code == 2
    assert "holds no weights telefuser recognises" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- tiny models


def test_make_tiny_checkpoint_says_what_it_wrote(tmp_path):
    from telefuser_cli.cli import TINY_KINDS
    from telefuser_cli.families.tiny import makers

    result = run_cli("make-tiny-checkpoint", str(tmp_path / "tiny"))
    assert result.exit_code == 0, result.stderr
    assert "tiny tiny" not in result.stdout
    assert "wrote the tiny_wan21 model to" in result.stdout
    assert set(TINY_KINDS) == set(makers())  # what --help offers is what can be made


def _modes(folder: Path) -> tuple[set[int], set[int]]:
    files = {p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}
    folders = {p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")] if p.is_dir()}
    return files, folders


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_tiny_model_files_have_one_mode_under_the_umask(tmp_path, caplog, umask):
    from telefuser_cli.families.tiny import ensure_tiny

    previous = os.umask(umask)
    try:
        with caplog.at_level(logging.INFO, logger="telefuser_cli.families.tiny"):
            ensure_tiny("tiny_wan21", tmp_path / "cache" / "tiny_wan21")
            ensure_tiny("tiny_wan21", tmp_path / "cache" / "tiny_wan21")
    finally:
        os.umask(previous)
    files, folders = _modes(tmp_path / "cache" / "tiny_wan21")
    assert files == {0o666 & ~umask} and folders == {0o777 & ~umask}
    created = [r.getMessage() for r in caplog.records if "first use" in r.getMessage()]
    assert created == [
        f"creating the tiny model tiny_wan21 in {tmp_path / 'cache' / 'tiny_wan21'} (first use)"
    ]
