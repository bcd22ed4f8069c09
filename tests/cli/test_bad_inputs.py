"""Options that used to be ignored or to crash: each is honoured (and recorded) or refused in one line.

Every refusal is checked through the real CLI: exit code 2, one message naming the key, no traceback,
and (for `generate`) no output directory.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from helpers import dump, job_dirs, run_cli
from safetensors.torch import load_file

from telefuser_cli.config.overrides import expand, unwrap_quotes
from telefuser_cli.paths import config_dir


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def one_line(result) -> str:
    return " ".join(result.stderr.split())


def says(message: str, text: str) -> bool:
    """`text` is in `message`, ignoring where the terminal wrapped it (long paths break mid-word)."""
    return "".join(text.split()) in "".join(message.split())


def refused(*args: str) -> str:
    """Run `telefuser ARGS`; assert a clean refusal and return its message on one line."""
    result = run_cli(*args)
    assert result.exit_code == 2, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    return one_line(result)


def refused_everywhere(tmp_path: Path, *overrides: str) -> str:
    """Refused by dump-config, by generate --dry-run and by generate, with nothing written."""
    message = refused("dump-config", *overrides)
    for dry in (["--dry-run"], []):
        run_dir = tmp_path / f"run{len(dry)}"
        assert refused("generate", *dry, "prompt=x", *overrides, f"hydra.run.dir={run_dir}") == message
        assert not run_dir.exists()
    return message


def layer2(*overrides: str) -> dict:
    return dump(*overrides)["layer2_inference_config"]


# ---------------------------------------------------------------- 1. images the model cannot take


def test_an_input_image_on_a_text_to_video_model_is_refused(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"not read")
    for model in ("model=tiny_wan21_random", "recipe=tiny"):
        message = refused_everywhere(tmp_path, model, f"user.input_image={image}")
        assert says(message, f"user.input_image={image}") and "takes no image" in message
        # the models that take one, read from conf/model without Hydra
        assert "tiny_wan21_i2v" in message and "wan22_a14b_i2v" in message
        assert "wan22_ti2v_5b" in message  # TI2V-5B takes an image too (its first frame)
        assert "tiny_wan21_random," not in message and "wan21_t2v_1.3b" not in message


def test_a_last_frame_on_a_model_without_one_is_refused(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"not read")
    for overrides in (["recipe=tiny"], ["model=tiny_wan21_i2v", f"user.input_image={image}"]):
        message = refused_everywhere(tmp_path, *overrides, f"user.end_image={image}")
        assert (
            says(message, f"user.end_image={image}")
            and "takes no last frame" in message
            and "flf2v" in message
        )


# ---------------------------------------------------------------- 2. runtime keys of the DiTs


def _dits(document: dict) -> dict:
    pipeline = document["layer2_inference_config"]
    return {name: pipeline[name] for name in ("dit_config", "dit_high_config", "dit_low_config")}


@pytest.mark.parametrize("model", ["recipe=tiny_moe", "model=tiny_wan22_moe", "model=wan22_a14b_t2v"])
def test_dit_config_applies_to_both_experts(model):
    dits = _dits(dump(model, "pipeline.dit_config.compile=true",
                      "pipeline.dit_config.offload_config.offload_type=MODEL_CPU_OFFLOAD"))  # fmt: skip
    for name in ("dit_high_config", "dit_low_config"):
        assert dits[name]["compile"] is True
        assert dits[name]["offload_config"]["offload_type"] == "MODEL_CPU_OFFLOAD"


def test_an_expert_key_sets_that_expert_whatever_the_order():
    for order in (1, -1):
        overrides = ["pipeline.dit_config.compile=true", "pipeline.dit_high_config.compile=false"][::order]
        document = dump("recipe=tiny_moe", *overrides, "pipeline.dit_low_config.torch_dtype=bfloat16")
        dits = _dits(document)
        assert (dits["dit_high_config"]["compile"], dits["dit_low_config"]["compile"]) == (False, True)
        # the tiny pipeline runs both experts in float32 through dit_config; one expert is changed
        assert dits["dit_high_config"]["torch_dtype"] == "float32"
        assert dits["dit_low_config"]["torch_dtype"] == "bfloat16"
        assert document["torch_dtype"] == "float32"  # the high-noise expert's, which runs first


def test_a_lora_in_dit_config_goes_to_both_experts(tmp_path):
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"checked for existence only")
    dits = _dits(
        dump("recipe=tiny_moe", f"+pipeline.dit_config.lora_configs=[{{path:'{lora}',strength:0.5}}]")
    )
    for name in ("dit_high_config", "dit_low_config"):
        assert dits[name]["lora_configs"] == [{"path": str(lora), "strength": 0.5}]


def test_the_moe_base_follows_every_runtime_field():
    """conf/pipeline/base/wan_moe.yaml lists each leaf of ModelRuntimeConfig: a new field must be added."""
    from telefuser_cli.config.schema import ModelRuntimeConfig

    def leaves(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field.name]):
                yield from leaves(hints[field.name], f"{prefix}{field.name}.")
            else:
                yield f"{prefix}{field.name}"

    def yaml_leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from yaml_leaves(value, f"{prefix}{key}.")
            else:
                assert value == f"${{pipeline.dit_config.{prefix}{key}}}"
                yield f"{prefix}{key}"

    base = yaml.safe_load((config_dir() / "pipeline" / "base" / "wan_moe.yaml").read_text())
    expected = set(leaves(ModelRuntimeConfig))
    assert set(yaml_leaves(base["dit_high_config"])) == expected
    assert set(yaml_leaves(base["dit_low_config"])) == expected


@pytest.mark.parametrize("key", ["pipeline.dit_high_config.compile=true", "pipeline.dit_low_config.torch_dtype=float32",
                                 "pipeline.dit_high_config={compile:true}"])  # fmt: skip
def test_expert_keys_on_a_single_dit_model_are_refused(tmp_path, key):
    message = refused_everywhere(tmp_path, "recipe=tiny", key)
    assert message.startswith(f"error: {key.split('=')[0]}: model tiny_wan21")
    assert "pipeline.dit_config" in message  # the keys that exist


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["recipe=tiny", "pipeline.clip_config.compile=true"], "does not use pipeline.clip_config"),
        (
            ["model=wan22_a14b_i2v", "pipeline.clip_config.torch_dtype=float32"],
            "does not use pipeline.clip_config",
        ),
        (["recipe=tiny", "pipeline.timesteps.0=5"], "set pipeline.timesteps as a whole"),
        (
            ["recipe=tiny_moe", "pipeline.dit_high_config.lora_configs.0.strength=2"],
            "follows pipeline.dit_config",
        ),
        (["recipe=tiny_moe", "pipeline.dit_config=null"], "pipeline.dit_config"),
    ],
)
def test_keys_below_a_node_the_model_does_not_use_are_refused(overrides, words):
    assert says(refused("dump-config", *overrides), words)


def test_a_null_node_may_be_set_to_null_and_a_list_as_a_whole():
    assert (
        layer2("recipe=tiny", "pipeline.dit_high_config=null", "pipeline.clip_config=null")["dit_high_config"]
        is None
    )
    assert layer2("recipe=tiny_distill", "pipeline.timesteps=[1000,500]", "pipeline.timesteps.1=400")[
        "timesteps"
    ] == [
        1000.0,
        400.0,
    ]


@pytest.mark.parametrize("node", ["dit_high_config", "clip_config"])
def test_a_config_file_setting_a_node_the_model_does_not_use_is_refused(tmp_path, node):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny_wan21\n  - override /pipeline: tiny_wan21\n"
        f"pipeline:\n  {node}:\n    compile: true\n"
    )
    message = refused("dump-config", "--config-dir", str(tmp_path), "recipe=mine")
    assert f"pipeline.{node} is set, but model tiny_wan21 has" in message


def test_a_sweep_over_models_applies_dit_config_to_each(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("generate", "-m", "--dry-run", "model=tiny_wan21_random,tiny_wan22_moe", "prompt=x",
                     "pipeline.dit_config.compile=true,false", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    seen = set()
    for directory in job_dirs(sweep):
        document = json.loads((directory / "config.json").read_text())
        dits = {name: value["compile"] for name, value in _dits(document).items() if value is not None}
        if document["layer1_model_definition"]["facts"]["moe"]:
            assert dits["dit_high_config"] == dits["dit_low_config"] == dits["dit_config"]
        seen.add((document["choices"]["model"], dits["dit_config"]))
    assert seen == {(m, c) for m in ("tiny_wan21_random", "tiny_wan22_moe") for c in (True, False)}


def test_a_mixed_sweep_with_an_expert_key_is_refused_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    message = refused("generate", "-m", "--dry-run", "model=tiny_wan21_random,tiny_wan22_moe", "prompt=x",
                      "pipeline.dit_high_config.compile=true", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert "model=tiny_wan21_random" in message and "does not use pipeline.dit_high_config" in message
    assert "model=tiny_wan22_moe" not in message
    assert not sweep.exists()


# ---------------------------------------------------------------- 3. guidance of a mixture of experts


def test_moe_guidance_is_per_expert_and_cfg_scale_sets_both():
    default = layer2("model=wan22_a14b_t2v")
    assert (default["cfg_scale"], default["cfg_scale_high"], default["cfg_scale_low"]) == (None, 4.0, 3.0)
    both = layer2("model=wan22_a14b_t2v", "pipeline.cfg_scale=2")
    assert (both["cfg_scale"], both["cfg_scale_high"], both["cfg_scale_low"]) == (2.0, 2.0, 2.0)
    for order in (1, -1):
        mixed = layer2("recipe=tiny_moe", *["pipeline.cfg_scale=2", "pipeline.cfg_scale_low=7"][::order])
        assert (mixed["cfg_scale_high"], mixed["cfg_scale_low"]) == (2.0, 7.0)
    i2v = layer2("model=wan22_a14b_i2v", "pipeline.cfg_scale=6")
    assert (i2v["cfg_scale_high"], i2v["cfg_scale_low"]) == (6.0, 6.0)
    distill = layer2("recipe=tiny_distill")
    assert (distill["cfg_scale"], distill["cfg_scale_high"], distill["cfg_scale_low"]) == (None, 1.0, 1.0)


@pytest.mark.parametrize("key", ["pipeline.cfg_scale_high=3", "pipeline.cfg_scale_low=3", "pipeline.boundary=0.5",
                                 "pipeline.boundary_step_index=2", "pipeline.cfg_scale=null"])  # fmt: skip
def test_moe_only_settings_on_a_single_dit_model_are_refused(key):
    message = refused("dump-config", "recipe=tiny", key)
    assert key.split("=")[0] in message and "tiny_wan21" in message


@pytest.mark.slow
def test_cfg_scale_on_a_mixture_of_experts_changes_what_runs(tmp_path):
    """3 steps at shift 12: two on the high-noise expert (t >= 875), one on the low-noise one."""

    def latents(name: str, *overrides: str):
        run_dir = tmp_path / name
        result = run_cli("generate", "recipe=tiny_moe", "prompt=a red ball", "seed=3", "resolution=16x16",
                         "pipeline.num_frames=1", "pipeline.num_inference_steps=3", "output.save_latents=true",
                         f"hydra.run.dir={run_dir}", *overrides)  # fmt: skip
        assert result.exit_code == 0, result.stderr
        document = json.loads((run_dir / "config.json").read_text())
        assert document["run"]["expert_steps"] == {"high_noise": 2, "low_noise": 1}
        return load_file(run_dir / "latents.safetensors")["latents"]

    both = latents("both", "pipeline.cfg_scale=2")
    explicit = latents("explicit", "pipeline.cfg_scale_high=2", "pipeline.cfg_scale_low=2")
    high_only = latents("high_only", "pipeline.cfg_scale_high=2")  # the low expert keeps its 3
    assert (both - explicit).abs().max().item() == 0.0  # same kernels on the same data
    assert (both - high_only).abs().max().item() > 0.0


# ---------------------------------------------------------------- 4. numbers that are not finite


@pytest.mark.parametrize(
    "key",
    ["pipeline.cfg_scale=nan", "pipeline.cfg_scale=inf", "pipeline.sigma_shift=-inf", "pipeline.vfi_scale=nan",
     "pipeline.timesteps=[1000,nan]"],
)  # fmt: skip
def test_non_finite_numbers_are_refused(tmp_path, key):
    message = refused_everywhere(tmp_path, "recipe=tiny", key)
    assert "must be a finite number" in message and key.split("=")[0] in message


def test_non_finite_numbers_are_refused_on_moe_and_in_lists(tmp_path):
    assert "pipeline.cfg_scale=nan" in refused("dump-config", "recipe=tiny_moe", "pipeline.cfg_scale=nan")
    assert "pipeline.cfg_scale_low=inf" in refused(
        "dump-config", "recipe=tiny_moe", "pipeline.cfg_scale_low=inf"
    )
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"checked for existence only")
    message = refused(
        "dump-config", "recipe=tiny", f"+pipeline.dit_config.lora_configs=[{{path:'{lora}',strength:nan}}]"
    )
    assert "pipeline.dit_config.lora_configs.0.strength=nan" in message


def test_config_json_is_strict_json():
    from telefuser_cli.config.dump import to_json

    with pytest.raises(ValueError):
        to_json({"cfg_scale": float("nan")})


# ---------------------------------------------------------------- 5. sizes and frame counts


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["resolution=100000x100000"], ["DiT tokens", "more than 302,400", "75,600 tokens", "GiB"]),
        (["resolution=1920x1088", "pipeline.num_frames=241"], ["DiT tokens", "lower user.resolution"]),
        (["resolution=16x20000"], ["more than 7680"]),
        (["pipeline.num_frames=100001"], ["pipeline.num_frames=100001", "more than 481"]),
        (["resolution=0x0"], ["must be positive"]),
        (["resolution=-16x16"], ["user.resolution='-16x16'"]),
        (["resolution=8x8"], ["divisible by 16", "16x16"]),
        (["pipeline.num_frames=0"], ["4k+1"]),
        (["pipeline.num_frames=-3"], ["4k+1"]),
    ],
)
def test_sizes_that_cannot_work_are_refused_with_numbers(tmp_path, overrides, words):
    message = refused_everywhere(tmp_path, "recipe=tiny", *overrides)
    for word in words:
        assert says(message, word), message


def test_official_sizes_fit_the_limits():
    from telefuser_cli.config.schema import Family, ModelConfig, Task
    from telefuser_cli.config.sizes import MAX_FRAMES
    from telefuser_cli.families import spec_of

    def latent_shape(model, width, height, frames):
        return spec_of(model.family).latent_shape(model, width, height, frames)

    wan = ModelConfig(name="w", root="/", family=Family.wan21)
    assert latent_shape(wan, 1280, 720, 81) == (16, 21, 90, 160)
    assert latent_shape(wan, 1920, 1088, 81)  # 1080p on a 720p model: allowed, 2.3x the tokens
    ti2v = ModelConfig(name="t", root="/", family=Family.wan22, task=Task.ti2v, size_divisor=32)
    assert latent_shape(ti2v, 1280, 704, 121) == (48, 31, 44, 80)
    hunyuan = ModelConfig(name="h", root="/", family=Family.hunyuan15)
    assert latent_shape(hunyuan, 1920, 1088, 121) == (32, 31, 68, 120)
    assert latent_shape(wan, 16, 16, MAX_FRAMES)
    assert (
        dump("model=hunyuan15_720p_t2v", "resolution=720p", "pipeline.num_frames=121")["derived"]["width"]
        == 1280
    )


def test_an_interpolation_target_far_above_the_fps_is_refused():
    message = refused("dump-config", "recipe=tiny", "pipeline.enable_vfi=true", "user.target_fps=100000")
    assert "more than 16x" in message


# ---------------------------------------------------------------- 6. steps and timesteps


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_step_counts_beyond_the_timestep_grid_are_refused(tmp_path, solver):
    message = refused_everywhere(tmp_path, "recipe=tiny", f"pipeline.sample_solver={solver}",
                                 "pipeline.num_inference_steps=100000")  # fmt: skip
    assert "pipeline.num_inference_steps=100000: at most 1000" in message and solver in message
    sampling = dump("recipe=tiny", f"pipeline.sample_solver={solver}", "pipeline.num_inference_steps=1000",
                    "pipeline.sigma_shift=12")["sampling"]  # fmt: skip
    assert len(sampling["timesteps"]) == 1000


@pytest.mark.parametrize(
    "timesteps", ["[500,750]", "[1000,1000]", "[2000,500]", "[1000,0]", "[1000,-5]", "[]"]
)  # fmt: skip
def test_explicit_timesteps_must_decrease_within_range(tmp_path, timesteps):
    message = refused_everywhere(tmp_path, "recipe=tiny_distill", f"pipeline.timesteps={timesteps}")
    assert "strictly decreasing" in message and "(0, 1000]" in message


def test_explicit_timesteps_need_euler():
    assert "sample_solver=euler" in refused("dump-config", "recipe=tiny", "pipeline.timesteps=[1000,500]")
    sampling = dump("recipe=tiny_distill", "pipeline.timesteps=[1000,750,500,250]")["sampling"]
    assert len(sampling["timesteps"]) == 4


# ---------------------------------------------------------------- 7. text that is not UTF-8


@pytest.mark.parametrize("arg", ["prompt=\udcff\udcfe", "negative_prompt=ok \udcff", "pipeline.negative_prompt=\udce9",
                                 "hydra.run.dir=out\udcff"])  # fmt: skip
def test_text_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path, arg):
    message = refused_everywhere(tmp_path, "recipe=tiny", arg)
    assert "bytes that are not UTF-8" in message and "0x" in message
    assert not list(tmp_path.rglob("*.yaml")) and not list(tmp_path.rglob("*.json"))


def test_text_that_is_not_utf8_from_a_shell(tmp_path):
    """The real path: argv bytes that Python decodes with surrogate escapes."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "telefuser_cli", "generate", "recipe=tiny", b"prompt=caf\xe9 \xff",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "user.prompt holds bytes that are not UTF-8 (0xe9)" in " ".join(result.stderr.split())
    assert not run_dir.exists()


def test_text_that_is_not_utf8_in_a_composed_value(monkeypatch):
    monkeypatch.setenv("TELEFUSER_MODEL_ROOT", "/models/\udcff")
    assert "model.root holds bytes that are not UTF-8 (0xff)" in refused(
        "dump-config", "model=wan21_t2v_1.3b"
    )


# ---------------------------------------------------------------- 8. Hydra's quoting idiom around prompts


@pytest.mark.parametrize(
    ("arg", "key", "expected"),
    [
        ('prompt="a, b"', "prompt", "a, b"),
        ("prompt='a, b'", "prompt", "a, b"),
        ('user.prompt="a, b"', "prompt", "a, b"),
        ("negative_prompt='a, b'", "negative_prompt", "a, b"),
        ('prompt="Hello" she said', "prompt", '"Hello" she said'),
        ('prompt="a" and "b"', "prompt", '"a" and "b"'),
        ("prompt='it''", "prompt", "'it''"),
        ('prompt="say \\"hi\\""', "prompt", 'say "hi"'),
        ('prompt="${x}, \\n"', "prompt", "${x}, \\n"),
    ],
)
def test_one_pair_of_outer_quotes_is_quoting(arg, key, expected):
    assert dump(arg)["layer3_user_inputs"][key] == expected


def test_outer_quotes_of_the_pipeline_negative_prompt():
    document = dump("recipe=tiny", 'pipeline.negative_prompt="blurry, dark"')
    assert document["layer2_inference_config"]["negative_prompt"] == "blurry, dark"


def test_unwrap_quotes_follows_hydras_escapes():
    assert unwrap_quotes('"a\\\\"') == "a\\"  # an even run before the closing quote is halved
    assert unwrap_quotes('"a\\"') == '"a\\"'  # the backslash escapes the closing quote: not wrapped
    assert unwrap_quotes('"a\\b"') == "a\\b"  # backslashes elsewhere are literal
    assert unwrap_quotes("'a\"b'") == 'a"b'  # the other quote character is plain text
    assert unwrap_quotes('"') == '"' and unwrap_quotes('""') == ""
    assert expand(['prompt="a, b"']) == ["user.prompt='a, b'"]


def test_validation_imports_no_torch():
    code = (
        "import sys\n"
        "from telefuser_cli.config.hydra_app import HydraApp\n"
        "from telefuser_cli.config.validate import to_settings, validate\n"
        "from telefuser_cli.families import check\n"
        "app = HydraApp()\n"
        "settings = to_settings(app.checked_config(['recipe=tiny_moe', 'user.prompt=x']))\n"
        "check(settings, validate(settings))\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dump_config_imports_no_torch():
    """dump-config shows the sampling grid (numpy) and every family check without loading torch."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from telefuser_cli.cli import app\n"
        "for entry in ('recipe=tiny_moe', 'recipe=tiny_hunyuan15', 'model=wan22_ti2v_5b'):\n"
        "    result = CliRunner().invoke(app, ['dump-config', entry])\n"
        "    assert result.exit_code == 0, result.output\n"
        "    assert '\"timesteps\"' in result.output\n"
        "assert 'torch' not in sys.modules, 'dump-config imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
