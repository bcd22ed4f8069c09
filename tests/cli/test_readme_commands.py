"""Every command in the README runs: generate as a dry run (no weights load), the rest as written.

Real paths under /data become a folder of tiny stand-ins (the tiny Wan2.1 model in the official layout,
a LoRA file, the RIFE weights), and every run writes into a temporary folder. What cannot run here is
still validated, and says why it is not started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import dump, run_cli
from safetensors import safe_open
from safetensors.torch import save_file

from telefuser_cli import cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DATA = "/data"


@dataclass
class Command:
    line: str  # as the README writes it (continuation lines joined)
    words: list[str]
    env: dict[str, str] = field(default_factory=dict)  # the README's `export`s before it


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def block_commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comment and blank lines left out."""
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].strip() + " "
            continue
        commands.append(current + line.strip())
        current = ""
    return commands


def readme_commands() -> list[Command]:
    """The README's telefuser and torchrun commands in order, each with the environment exported before it."""
    env: dict[str, str] = {}
    found = []
    for block in bash_blocks(README):
        for line in block_commands(block):
            words = shlex.split(line, comments=True)
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                env[key] = value
            elif words[0] in ("telefuser", "torchrun"):
                found.append(Command(line, words, dict(env)))
    return found


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    programs = {command.words[1] for command in COMMANDS if command.words[0] == "telefuser"}
    assert {"generate", "dump-config", "list", "keys", "inspect"} <= programs
    assert any(command.words[0] == "torchrun" for command in COMMANDS)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Stand-ins for the README's /data: the tiny Wan2.1 model, a LoRA for it, the RIFE weights."""
    from telefuser_cli.families.wan.tiny import write_tiny_wan21

    data = tmp_path_factory.mktemp("data")
    model = write_tiny_wan21(data / "Wan2.1-T2V-1.3B", seed=0)
    with safe_open(str(model / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        out_dim, in_dim = weights.get_slice("blocks.0.self_attn.q.weight").get_shape()
    rank = 2
    (data / "loras").mkdir()
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(rank, in_dim),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(out_dim, rank),
        },
        str(data / "loras" / "style.safetensors"),
    )
    (data / "rife").mkdir()
    (data / "rife" / "flownet.pkl").symlink_to(ROOT / "telefuser_cli" / "assets" / "flownet.pkl")
    return data


def with_data(word: str, data: Path) -> str:
    return re.sub(rf"(?<![\w.]){DATA}(?=/|$|\W)", str(data), word)


def _my_conf(directory: Path) -> None:
    """The README's `--config-dir ./my_conf recipe=my_recipe`: a recipe of one's own."""
    (directory / "my_conf" / "recipe").mkdir(parents=True, exist_ok=True)
    (directory / "my_conf" / "recipe" / "my_recipe.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny_wan21\nuser:\n  resolution: 32x32\n"
    )


def _as_telefuser(command: Command, monkeypatch) -> list[str]:
    """The telefuser arguments of a command; `torchrun --nproc-per-node N -m telefuser_cli ARGS` is checked
    as one rank of N would check it (WORLD_SIZE=N); starting N processes is the distributed tests' job."""
    words = command.words
    if words[0] == "telefuser":
        return words[1:]
    assert words[1] == "--nproc-per-node" and words[3:5] == ["-m", "telefuser_cli"], command.line
    monkeypatch.setenv("WORLD_SIZE", words[2])
    return words[5:]


def _validate_only(args: list[str]) -> None:
    """Compose and validate every job of a sweep, as `generate` does before it starts any."""
    from telefuser_cli.config.hydra_app import HydraApp
    from telefuser_cli.config.overrides import expand

    overrides = [arg for arg in args if arg not in ("generate", "-m")]
    jobs = HydraApp().validate_all(expand(overrides), True, cli._validate_for_generate)
    assert len(jobs) > 1


@pytest.mark.parametrize("command", COMMANDS, ids=[command.line[:60] for command in COMMANDS])
def test_readme_command_runs(command, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _my_conf(tmp_path)
    for key, value in command.env.items():
        monkeypatch.setenv(key, with_data(value, data))
    args = [with_data(word, data) for word in _as_telefuser(command, monkeypatch)]
    if args[0] != "generate":  # dump-config, list, keys, inspect: cheap, run as written
        result = run_cli(*args)
        assert result.exit_code == 0, result.output + result.stderr
        return
    multirun = "-m" in args
    if any(arg.startswith("hydra/launcher=slurm") for arg in args):
        # submitting needs a SLURM cluster (sbatch): every job is composed and validated instead
        _validate_only(args)
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not any(arg.startswith(f"{key}=") for arg in args):
        args.append(f"{key}={tmp_path / 'out'}")
    # launcher.nproc_per_node=N: a dry run validates for N processes without starting them
    result = run_cli("generate", "--dry-run", *args[1:])
    assert result.exit_code == 0, result.output + result.stderr
    records = sorted(tmp_path.rglob("config.json"))
    assert records and all(json.loads(r.read_text())["status"] == "dry-run" for r in records)


def _help_commands() -> list[str]:
    examples = cli.GENERATE_EXAMPLES.split("[bold]Finding names and keys[/]")[0]
    plain = re.sub(r"\[/?[a-z ]*\]", "", examples)
    return [line for line in block_commands(plain) if line.startswith("telefuser ")]


def test_the_readme_starts_with_the_examples_of_generate_help():
    first = next(block for block in bash_blocks(README) if "telefuser " in block)
    assert block_commands(first) == _help_commands()
    result = run_cli("generate", "--help")
    shown = " ".join(re.sub(r"\\[ \t]*\n", " ", result.stdout).split())
    for command in _help_commands():
        assert command in shown


def _speed_rows() -> list[tuple[str, str]]:
    section = README.split("## Speed and memory")[1].split("\n## ")[0]
    return re.findall(r"^\| `(pipeline\.[^`]+)` \| (\w+) \|", section, re.MULTILINE)


@pytest.mark.parametrize("recipe", ["tiny", "tiny_moe", "tiny_hunyuan15"])
def test_speed_options_work_where_the_table_says(recipe, tmp_path):
    rows = _speed_rows()
    assert len(rows) >= 7
    for index, (option, models) in enumerate(rows):
        assert models in ("Wan", "all"), option
        result = run_cli("generate", "--dry-run", f"recipe={recipe}", "prompt=x", option,
                         f"hydra.run.dir={tmp_path / str(index)}")  # fmt: skip
        works = models == "all" or not recipe.startswith("tiny_hunyuan15")
        assert (result.exit_code == 0) == works, f"{option} on {recipe}: {result.stderr}"
        if not works:  # refused in one line naming the option
            assert result.stderr.count("\n") == 1 and option in result.stderr


def test_the_models_table_says_what_the_recipe_runs():
    row = next(line for line in README.splitlines() if line.startswith("| `wan21_t2v_1.3b` |"))
    assert "recipe `wan21_1.3b`: cfg 6, shift 8" in row and "(cfg 5, shift 5)" in row
    recipe = dump("recipe=wan21_1.3b")["layer2_inference_config"]
    assert (recipe["cfg_scale"], recipe["sigma_shift"], recipe["num_inference_steps"]) == (6.0, 8.0, 50)
    entry = dump("model=wan21_t2v_1.3b")["layer2_inference_config"]
    assert (entry["cfg_scale"], entry["sigma_shift"]) == (5.0, 5.0)


def _make_install(*variables: str) -> str:
    """The commands `make install` would run on a fresh machine (-B: as if nothing were installed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH")}
    result = subprocess.run(["make", "-n", "-B", "install", *variables], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    return result.stdout


def test_make_install_takes_torch_from_the_cpu_index_with_the_default_index_behind_it():
    torch_line = next(line for line in _make_install().splitlines() if "torch==" in line)
    words = torch_line.split()
    # --extra-index-url, not --index-url: pip keeps the default index (it only warns when the CPU one is
    # unreachable), and 2.13.0+cpu from the CPU index sorts above the default index's 2.13.0
    assert words[words.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert "--index-url" not in words and words[-1] == "torch==2.13.0"
    assert "https://download.pytorch.org/whl/cpu" in README and "make install TORCH_INDEX=" in README
    plain = next(line for line in _make_install("TORCH_INDEX=").splitlines() if "torch==" in line)
    assert "index" not in plain and plain.split()[-1] == "torch==2.13.0"
