"""The three layers: composition of every file, shorthands, literal prompts, refusals, the dump format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import dump, run_cli

from telefuser_cli.config.catalog import catalog, default_pipelines
from telefuser_cli.paths import config_dir

MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
PIPELINES = sorted(p.stem for p in (config_dir() / "pipeline").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (config_dir() / "recipe").glob("*.yaml"))

NASTY_PROMPTS = [
    "a cat, a dog, and a bird",
    'it\'s a "quoted" word',
    "x=1 (y) [z] {w} #tag",
    "${oc.env:HOME} and ${now:%Y}",
    "一只猫在冲浪，阳光明媚",
    "emoji 🎥✨ party",
    "line one\nline two",
    "back\\slash and end\\",
    "semi;colon & pipe | tilde ~ percent %",
]


def test_every_recipe_and_model_composes():
    for recipe in RECIPES:
        document = dump(f"recipe={recipe}")
        assert document["choices"]["recipe"] == recipe
    for model in MODELS:
        document = dump(f"model={model}")
        assert document["layer1_model_definition"]["name"] == model
        assert document["choices"]["pipeline"] == default_pipelines()[model]


def test_every_model_chooses_a_pipeline_and_every_pipeline_has_a_user():
    chosen = default_pipelines()
    assert set(chosen) == set(MODELS) and set(chosen.values()) <= set(PIPELINES)
    recipes = " ".join((config_dir() / "recipe" / f"{name}.yaml").read_text() for name in RECIPES)
    unused = [
        name for name in PIPELINES if name not in chosen.values() and f"/pipeline: {name}\n" not in recipes
    ]
    assert not unused, f"pipelines no model entry or recipe chooses: {unused}"


def _model_for(pipeline: str) -> str:
    owners = [model for model, chosen in default_pipelines().items() if chosen == pipeline]
    return owners[0] if owners else {"wan21_1.3b_shift8": "wan21_t2v_1.3b"}[pipeline]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_pipeline_composes_onto_the_schema(pipeline):
    document = dump(f"model={_model_for(pipeline)}", f"pipeline={pipeline}")
    assert document["layer2_inference_config"]["description"]


def test_required_recipes_exist():
    for name in ("wan21_1.3b", "wan21_14b", "wan21_i2v_14b", "wan22_a14b_t2v", "wan22_a14b_i2v",
                 "wan22_a14b_distill", "tiny"):  # fmt: skip
        assert name in RECIPES


def test_official_defaults_per_model():
    wan21 = dump("model=wan21_t2v_1.3b")["layer2_inference_config"]
    assert (wan21["num_inference_steps"], wan21["sigma_shift"], wan21["cfg_scale"]) == (50, 5.0, 5.0)
    assert (wan21["num_frames"], wan21["fps"], wan21["sample_solver"]) == (81, 16, "unipc")
    t2v = dump("model=wan22_a14b_t2v")["layer2_inference_config"]
    assert (t2v["num_inference_steps"], t2v["sigma_shift"], t2v["boundary"]) == (40, 12.0, 0.875)
    assert (t2v["cfg_scale_high"], t2v["cfg_scale_low"]) == (4.0, 3.0)
    i2v = dump("model=wan22_a14b_i2v")["layer2_inference_config"]
    assert (i2v["sigma_shift"], i2v["boundary"], i2v["cfg_scale_high"], i2v["cfg_scale_low"]) == (
        5.0,
        0.9,
        3.5,
        3.5,
    )
    distill = dump("model=wan22_a14b_distill")["layer2_inference_config"]
    assert (distill["num_inference_steps"], distill["cfg_scale_high"], distill["cfg_scale_low"]) == (
        4,
        1.0,
        1.0,
    )


def test_dump_format_keys_and_types():
    document = dump("recipe=wan21_1.3b", "prompt=a cat")
    for key in ("version", "timestamp", "device", "torch_dtype", "layer1_model_definition",
                "layer2_inference_config", "layer3_user_inputs"):  # fmt: skip
        assert key in document
    assert "pipeline_type" not in document and "pipeline_type" not in document["layer2_inference_config"]
    layer1 = document["layer1_model_definition"]
    assert {m["name"] for m in layer1["models"]} >= {"dit", "text_encoder", "vae", "tokenizer"}
    assert all(set(m) == {"name", "path", "class"} for m in layer1["models"])
    assert layer1["facts"]["task"] == "t2v" and layer1["facts"]["distill"] is False
    layer2 = document["layer2_inference_config"]
    assert layer2["dit_config"]["torch_dtype"] == "bfloat16"
    assert layer2["dit_config"]["offload_config"]["offload_type"] == "NO_CPU_OFFLOAD"
    assert layer2["dit_config"]["attention_config"]["attn_impl"] == "TORCH_SDPA"
    assert document["torch_dtype"] == "bfloat16"
    assert document["layer3_user_inputs"]["prompt"] == "a cat"
    assert document["derived"]["width"] == 832 and document["derived"]["height"] == 480


def test_yaml_format(tmp_path):
    target = tmp_path / "c.yaml"
    result = run_cli("dump-config", "recipe=tiny", "--format", "yaml", "-o", str(target))
    assert result.exit_code == 0
    import yaml

    assert yaml.safe_load(target.read_text())["layer1_model_definition"]["name"] == "tiny_wan21"


@pytest.mark.parametrize("prompt", NASTY_PROMPTS)
def test_prompts_arrive_byte_identical(prompt):
    document = dump(f"prompt={prompt}", f"negative_prompt={prompt}")
    assert document["layer3_user_inputs"]["prompt"] == prompt
    assert document["layer3_user_inputs"]["negative_prompt"] == prompt


def test_shorthands_map_to_user_layer():
    document = dump("seed=11", "resolution=720p", "aspect_ratio=9:16", "model=wan21_t2v_14b")
    user = document["layer3_user_inputs"]
    assert (user["seed"], user["resolution"], user["aspect_ratio"]) == (11, "720p", "9:16")
    assert (document["derived"]["width"], document["derived"]["height"]) == (720, 1280)


def test_effective_negative_prompt_puts_users_first():
    document = dump("negative_prompt=blurry, ", "pipeline.negative_prompt=ugly")
    assert document["derived"]["effective_negative_prompt"] == "blurry, ugly"
    assert dump("pipeline.negative_prompt=ugly")["derived"]["effective_negative_prompt"] == "ugly"


REFUSALS = [
    (["model.distill=true"], "bound to the weights"),
    (["model.task=i2v"], "bound to the weights"),
    (["+user.sed=3"], "did you mean user.seed"),
    (["user.sed=3"], "did you mean user.seed"),
    (["pipeline.num_step=3"], "did you mean pipeline.num_inference_steps"),
    (["pipeline.num_frames=80"], "4k+1"),
    (["resolution=100x64"], "divisible by 16"),
    (["resolution=999p"], "not one of"),
    (["aspect_ratio=7:5"], "Invalid value '7:5', expected one of [16:9, 9:16, 4:3, 3:4, 1:1, 3:2, 2:3]"),
    (["pipeline.sample_solver=foo"], "Invalid value 'foo', expected one of [unipc, dpm++, euler]"),
    (["pipeline.rand_device=gpu"], "Invalid value 'gpu', expected one of [cpu, cuda]"),
    (["pipeline.sr_resolution=540p"], "Invalid value '540p', expected one of [720p, 1080p]"),
    (
        ["recipe=tiny", "pipeline.enable_vfi=true", "user.target_fps=32", "pipeline.vfi_scale=0.3"],
        "pipeline.vfi_scale=0.3 must be one of (0.25, 0.5, 1.0, 2.0, 4.0)",
    ),
    (["seed=abc"], "could not be converted"),
    (["pipeline.dit_config.torch_dtype=int8"], "expected one of"),
    (["pipeline.dit_config.attention_config.attn_impl=FLASH_ATTN_2"], "telefuser[gpu]"),
    (["pipeline.dit_config.attention_config.attn_impl=SAGE_ATTN"], "sageattention"),
    (["pipeline.dit_config.parallel_config.cfg_degree=2"], "world size is 1"),
    (["model=nope"], "no model entry is called 'nope'"),
    (["user=nope"], "Could not find 'user/nope'; available: 720p, default, tiny"),
    (["seed=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["~user.prompt"], "does not support deletion"),
    (["pipeline.cfg_scale_high=null", "model=wan22_a14b_t2v"], "cfg_scale_high"),
    (["pipeline.tile_stride=[40,40]"], "stride <= size"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSALS)
def test_refusals_have_one_clear_message(overrides, message):
    result = run_cli("dump-config", *overrides)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert message in text, text
    assert "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # OmegaConf's extra lines are dropped


def test_sizes_by_area_and_presets():
    from telefuser_cli.config.schema import ModelConfig
    from telefuser_cli.config.sizes import resolve_size
    from telefuser_cli.errors import UserError

    wan = ModelConfig(name="m", root="/", preset_sizes={"480p@16:9": "832x480"})
    assert resolve_size("480p", "16:9", wan) == (832, 480)  # preset wins
    assert resolve_size("480p", "1:1", wan) == (656, 656)  # sqrt(854*480)=640.3, rounded up to 16
    assert resolve_size("720p", "4:3", wan) == (1120, 832)
    assert resolve_size("64x48", "16:9", wan) == (64, 48)
    ti2v = ModelConfig(name="t", root="/", size_divisor=32)
    with pytest.raises(UserError, match="nearest valid sizes: 32x64, 64x64"):
        resolve_size("48x64", "1:1", ti2v)


def test_unquoted_aspect_ratio_in_a_file_is_caught(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.yaml").write_text("prompt: hi\naspect_ratio: 16:9\n")
    result = run_cli("dump-config", "--config-dir", str(tmp_path), "user=mine")
    assert result.exit_code == 2
    assert "user/mine.yaml: Invalid value '969', expected one of [16:9," in " ".join(result.stderr.split())


def test_enum_values_keep_their_spelling():
    document = dump("pipeline.sample_solver=dpm++", "aspect_ratio=1:1", "pipeline.rand_device=cuda")
    layer2 = document["layer2_inference_config"]
    assert (layer2["sample_solver"], layer2["rand_device"]) == ("dpm++", "cuda")
    assert document["layer3_user_inputs"]["aspect_ratio"] == "1:1"
    hunyuan = dump("model=hunyuan15_720p_t2v", "pipeline.sr_resolution=1080p")
    assert hunyuan["layer2_inference_config"]["sr_resolution"] == "1080p"


def test_an_unknown_key_in_a_file_gets_a_did_you_mean(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny_wan21\nuser:\n  sed: 3\n"
    )
    result = run_cli("dump-config", "--config-dir", str(tmp_path), "recipe=typo")
    assert result.exit_code == 2
    assert "recipe/typo.yaml: unknown key 'user.sed'; did you mean user.seed?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_interpolation_weights_belong_to_the_pipeline():
    document = dump("recipe=tiny")
    assert "vfi" not in {m["name"] for m in document["layer1_model_definition"]["models"]}
    root = document["layer1_model_definition"]["root"]
    assert document["layer2_inference_config"]["vfi_weights"] == f"{root}/flownet.pkl"
    assert dump("recipe=wan21_14b")["layer2_inference_config"]["vfi_weights"] is None


def test_the_step_distilled_model_takes_the_official_twelve_steps():
    layer2 = dump("model=hunyuan15_480p_i2v_step_distilled")["layer2_inference_config"]
    assert (layer2["num_inference_steps"], layer2["sigma_shift"], layer2["cfg_scale"]) == (12, 7.0, 1.0)
    faster = dump("model=hunyuan15_480p_i2v_step_distilled", "pipeline.num_inference_steps=8")
    assert faster["layer2_inference_config"]["num_inference_steps"] == 8


def test_a_recipe_pipeline_and_a_command_line_pipeline_beat_the_models_own():
    assert dump("recipe=wan21_1.3b")["choices"]["pipeline"] == "wan21_1.3b_shift8"
    assert dump("recipe=wan21_1.3b", "pipeline=wan21_t2v")["choices"]["pipeline"] == "wan21_t2v"
    assert (
        dump("model=wan21_t2v_14b", "pipeline=wan21_1.3b_shift8")["choices"]["pipeline"]
        == "wan21_1.3b_shift8"
    )


def test_a_file_may_not_change_facts(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "sneaky.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: wan21_t2v_1.3b\nmodel:\n  distill: true\n"
    )
    result = run_cli("dump-config", "--config-dir", str(tmp_path), "recipe=sneaky")
    assert result.exit_code == 2
    assert "model.distill is bound to the weights" in " ".join(result.stderr.split())


def test_user_config_dir_shadows_packaged_entries(tmp_path):
    (tmp_path / "model").mkdir()
    source = (config_dir() / "model" / "tiny_wan21_random.yaml").read_text()
    (tmp_path / "model" / "tiny_wan21_random.yaml").write_text(source.replace("made locally", "MINE"))
    entries = {e.name: e for e in catalog("model", tmp_path)}
    assert "shadows packaged" in entries["tiny_wan21_random"].source
    assert dump_with_dir(tmp_path)["layer1_model_definition"]["description"].endswith("MINE on first use")
    result = run_cli("list", "model", "--config-dir", str(tmp_path))
    assert result.exit_code == 0 and "shadows" in result.stdout


def dump_with_dir(directory: Path) -> dict:
    result = run_cli("dump-config", "--config-dir", str(directory), "model=tiny_wan21_random")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_list_shows_every_group():
    result = run_cli("list")
    assert result.exit_code == 0
    for name in ("wan22_a14b_distill", "wan21_1.3b_shift8", "tiny", "basic", "slurm_gpu"):
        assert name in result.stdout
    assert run_cli("list", "nope").exit_code == 2


@pytest.mark.parametrize(("preset", "gpus"), [("slurm_gpu", 1), ("slurm_8gpu", 8)])
def test_slurm_launcher_presets_compose(preset, gpus):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from telefuser_cli.config.hydra_app import HydraApp

    cfg = HydraApp().compose([f"hydra/launcher={preset}", "recipe=tiny"], multirun=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == gpus and launcher.timeout_min > 0
