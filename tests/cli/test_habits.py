"""Habits from other tools (the official Wan generate.py, diffusers, Hydra's own command line, argparse)
get one line naming the telefuser override that does it, through the real CLI; what works keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from telefuser_cli.config.overrides import expand, quote, unquote


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def refused(*args: str) -> str:
    """Run `telefuser ARGS`: a clean refusal (exit 2, one line, no traceback, nothing written)."""
    result = run_cli(*args)
    assert result.exit_code == 2, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    assert not Path("outputs").exists() and not Path("multirun").exists()
    return " ".join(result.stderr.split())


def generate_refuses(*args: str) -> str:
    return refused("generate", "recipe=tiny", *args)


# ---------------------------------------------------------------- 1. names of every layer


LAYER_2 = [
    ("steps=3", "pipeline.num_inference_steps=3 (layer 2)"),
    ("sample_steps=30", "pipeline.num_inference_steps=30 (layer 2)"),
    ("cfg=4", "pipeline.cfg_scale=4 (layer 2)"),
    ("guidance_scale=4.5", "pipeline.cfg_scale=4.5 (layer 2)"),
    ("guidance_scale_2=3", "pipeline.cfg_scale_low=3 (layer 2)"),
    ("shift=8", "pipeline.sigma_shift=8 (layer 2)"),
    ("sample_shift=8", "pipeline.sigma_shift=8 (layer 2)"),
    ("frames=17", "pipeline.num_frames=17 (layer 2)"),
    ("frame_num=17", "pipeline.num_frames=17 (layer 2)"),
    ("num_frames=17", "pipeline.num_frames=17 (layer 2)"),
    ("sample_solver=euler", "pipeline.sample_solver=euler (layer 2)"),
    ("fps=24", "pipeline.fps=24 (layer 2)"),
    ("offload_model=True", "pipeline.dit_config.offload_config.offload_type=MODEL_CPU_OFFLOAD (layer 2)"),
    ("t5_cpu=true", "pipeline.text_encoding_config.device_type=cpu (layer 2)"),
    ("attn_impl=SAGE_ATTN", "pipeline.dit_config.attention_config.attn_impl=SAGE_ATTN (layer 2)"),
]
OTHER_LAYERS = [
    ("size=832*480", "resolution=832x480 (user.resolution, layer 3)"),
    ("negative=blurry", "negative_prompt=blurry (user.negative_prompt, layer 3)"),
    ("neg_prompt=blurry", "negative_prompt=blurry (user.negative_prompt, layer 3)"),
    ("base_seed=3", "seed=3 (user.seed, layer 3)"),
    ("ckpt_dir=/data/Wan2.1-T2V-1.3B", "model.root=/data/Wan2.1-T2V-1.3B (layer 1)"),
    ("task=t2v-1.3B", "model=wan21_t2v_1.3b (the task comes with the weights)"),
    ("video_quality=9", "output.video_quality=9"),
    ("nproc_per_node=2", "launcher.nproc_per_node=2"),
]


@pytest.mark.parametrize(("override", "meant"), LAYER_2 + OTHER_LAYERS)
def test_a_name_from_another_tool_names_the_key_and_its_layer(override, meant):
    name = override.split("=")[0]
    message = generate_refuses("prompt=x", override)
    assert message == f"error: unknown key '{name}'; did you mean {meant}?"
    assert refused("dump-config", override) == message


def test_layer_2_has_no_shorthand():
    """The pipeline layer is the recipe's: `steps=3` is refused, even under `-m` and with a `+`."""
    assert "pipeline.num_inference_steps" in generate_refuses("-m", "prompt=x", "steps=3,4")
    assert "pipeline.num_inference_steps (layer 2)" in refused("dump-config", "+steps=3")


def test_a_misplaced_key_points_to_its_layer():
    assert "did you mean pipeline.num_inference_steps=3 (layer 2)?" in refused("dump-config", "user.steps=3")
    assert "did you mean seed=3 (user.seed, layer 3)?" in refused("dump-config", "model.seed=3")
    # a close name beside the typed one still comes first, and a misspelt section keeps the rest
    assert "did you mean user.seed?" in refused("dump-config", "user.sed=3")
    message = refused("dump-config", "pipelines.num_inference_steps=3")
    assert "did you mean pipeline.num_inference_steps?" in message


def test_a_name_like_nothing_lists_the_sections():
    message = refused("dump-config", "foo=3")
    assert (
        message.startswith("error: unknown key 'foo'")
        and "model, pipeline, user, output, launcher" in message
    )
    assert "+foo" not in message  # Hydra's "To append to your config use +foo=3" is gone


# ---------------------------------------------------------------- 1b. image= and end_image=


def write_png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 40, 40)).save(path)
    return path


def test_image_is_the_input_image(tmp_path):
    image = write_png(tmp_path / "cat.png")
    run = tmp_path / "run"
    result = run_cli(
        "generate", "--dry-run", "model=tiny_wan21_i2v", "prompt=x", f"image={image}", f"hydra.run.dir={run}"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "config.json").read_text())["layer3_user_inputs"]["input_image"] == str(image)
    # a text-to-video model takes no image, whichever way it is named
    assert "takes no image" in generate_refuses("prompt=x", f"image={image}")
    # end_image= is user.end_image: the i2v model refuses it under that name
    message = refused("dump-config", "model=tiny_wan21_i2v", f"image={image}", f"end_image={image}")
    assert f"user.end_image={image}" in message and "no last frame" in message
    assert expand(["end_image=a.png", "image=b.png"]) == ["user.end_image=a.png", "user.input_image=b.png"]


# ---------------------------------------------------------------- 2. options of Hydra and of argparse


@pytest.mark.parametrize(
    ("args", "pointer"),
    [
        (["--cfg", "job"], "`telefuser dump-config ...`"),
        (["--cfg", "all"], "`telefuser dump-config ...`"),
        (["--cfg=job"], "`telefuser dump-config ...`"),
        (["-c", "job"], "`telefuser dump-config ...`"),
        (["--resolve"], "`telefuser dump-config ...`"),
        (["--info"], "`telefuser list`"),
        (["--hydra-help"], "`telefuser keys`"),
        (["-p", "user"], "`telefuser keys SECTION`"),
        (["--package", "user"], "`telefuser keys SECTION`"),
        (["-cn", "mine"], "recipe=NAME"),
        (["--config-name", "mine"], "recipe=NAME"),
        (["-cp", "conf"], "--config-dir DIR"),
        (["--config-path", "conf"], "--config-dir DIR"),
    ],
)
def test_hydra_options_point_to_the_telefuser_way(args, pointer):
    message = generate_refuses("prompt=x", *args)
    assert message.startswith(f"error: {args[0].split('=')[0]} is Hydra's own option: ")
    assert pointer in message
    assert "Lexer" not in message


@pytest.mark.parametrize(
    ("args", "write"),
    [
        (["--prompt", "a cat"], 'prompt="a cat" (user.prompt, layer 3)'),
        (["--prompt=a cat"], 'prompt="a cat" (user.prompt, layer 3)'),
        (["--prompt", "a", "red", "ball"], 'prompt="a red ball"'),
        (["--negative_prompt", 'say "no"'], 'negative_prompt="say \\"no\\""'),
        (["--size", "832*480"], "resolution=832x480 (user.resolution, layer 3)"),
        (["--seed", "3"], "seed=3 (user.seed, layer 3)"),
        (["--seed", "-1"], "seed=-1"),
        (["--task", "t2v-1.3B"], "model=wan21_t2v_1.3b"),
        (["--task", "t2v-A14B"], "model=wan22_a14b_t2v"),
        (["--ckpt_dir", "/data/w"], "model.root=/data/w (layer 1)"),
        (["--sample_steps", "30"], "pipeline.num_inference_steps=30 (layer 2)"),
        (["--sample-steps", "30"], "pipeline.num_inference_steps=30 (layer 2)"),
        (["--t5_cpu"], "pipeline.text_encoding_config.device_type=cpu (layer 2)"),
        (["--offload_model", "False"], "offload_type=NO_CPU_OFFLOAD (layer 2)"),
        (["--image", "cat.png"], "image=cat.png (user.input_image, layer 3)"),
        (["--num_inference_step", "4"], "pipeline.num_inference_steps=4 (layer 2)"),
    ],
)
def test_argparse_options_become_overrides(args, write):
    flag = args[0].split("=")[0]
    message = generate_refuses(*args)
    assert message.startswith(f"error: unknown option '{flag}': telefuser takes overrides; write ")
    assert write in message
    assert refused("dump-config", *args) == message


def test_other_options_are_named_without_a_lexer_error():
    assert "did you mean --dry-run?" in generate_refuses("prompt=x", "--dry_run")
    assert "did you mean --from-config?" in generate_refuses("prompt=x", "--from_config", "x.json")
    assert "not an option of this command" in refused("dump-config", "--dry-run")
    message = generate_refuses("prompt=x", "--use_prompt_extend")
    assert message.startswith("error: unknown option '--use_prompt_extend'") and "key=value" in message


# ---------------------------------------------------------------- 3. prompts that lost their quotes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prompt=a", "red", "ball"], 'did you forget quotes around the prompt? prompt="a red ball"'),
        (["prompt=a", "red", "ball", "seed=3"], 'prompt="a red ball"'),
        (["negative_prompt=blurry,", "ugly"], 'negative prompt? negative_prompt="blurry, ugly"'),
        (["user.prompt=一只", "猫"], 'prompt="一只 猫"'),
        (["prompt=it's", "a", "$5", "cat"], 'prompt="it\'s a \\$5 cat"'),
    ],
)
def test_a_prompt_split_by_the_shell_gets_its_quotes_back(args, message):
    text = generate_refuses(*args)
    assert message in text, text
    assert "missing EQUAL" not in text


def test_a_word_without_a_key():
    assert "'red' is not an override: write key=value" in generate_refuses("prompt=x", "seed=3", "red")
    assert 'write prompt="a cat" (user.prompt, layer 3)' in generate_refuses("prompt", "a cat")
    assert "write pipeline.num_inference_steps=30 (layer 2)" in generate_refuses(
        "prompt=x", "seed=3", "steps", "30"
    )


# ---------------------------------------------------------------- 4. what works keeps working


def test_real_options_and_every_override_form_still_work(tmp_path):
    prompt = 'a "red" ball, 一只猫 = 3 (x) [y] it\'s'
    run, sweep = tmp_path / "run", tmp_path / "sweep"
    result = run_cli(
        "generate", "--dry-run", "--config-dir", str(tmp_path), "recipe=tiny", f"prompt={prompt}",
        "negative_prompt=blurry, ugly", "++user.seed=3", "+hydra.job.env_set.FOO=1", "hydra/launcher=basic",
        "output={frame_strip:true}", f"hydra.run.dir={run}", "image=null",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    user = json.loads((run / "config.json").read_text())["layer3_user_inputs"]
    assert (user["prompt"], user["negative_prompt"], user["seed"]) == (prompt, "blurry, ugly", 3)
    result = run_cli(
        "generate", "--dry-run", "--from-config", str(run), "seed=4", f"hydra.run.dir={tmp_path / 'again'}"
    )
    assert result.exit_code == 0, result.stderr
    result = run_cli(
        "generate", "-m", "--dry-run", "recipe=tiny", "prompt=a, b", "seed=1,2", f"hydra.sweep.dir={sweep}"
    )
    assert result.exit_code == 0, result.stderr
    prompts = {json.loads(p.read_text())["layer3_user_inputs"]["prompt"] for p in sweep.rglob("config.json")}
    assert len(list(sweep.rglob("config.json"))) == 2 and prompts == {"a, b"}


@pytest.mark.parametrize("text", ["ends in a backslash\\\n", "\\", "it's \\' ${x} \\${y}", "a\\\\'b", ""])
def test_quote_round_trips(text):
    assert unquote(quote(text)) == text


def test_a_prompt_ending_in_backslash_newline_arrives_byte_identical():
    # `$` in a regex also matches before a final newline: the backslash there was doubled once
    result = run_cli("dump-config", "prompt=a\\\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["layer3_user_inputs"]["prompt"] == "a\\\n"


def test_these_messages_import_no_torch(tmp_path):
    for args in (["steps=3"], ["--cfg", "job"], ["prompt=a", "red"], ["--size", "832*480"]):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "telefuser_cli", "generate", "recipe=tiny", *args],
            capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 2
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
        assert "torch" not in imported, args
