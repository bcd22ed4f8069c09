"""Every tiny model entry runs small by default (no recipe needed) and has a recipe of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import dump, run_cli
from PIL import Image

from telefuser_cli.config.catalog import catalog

TINY = sorted(entry.name for entry in catalog("model") if entry.name.startswith("tiny_"))
RECIPES = [entry.name for entry in catalog("recipe")]


def test_the_tiny_entries_are_all_here():
    assert len(TINY) >= 8 and "tiny_wan21_random" in TINY and "tiny_hunyuan15_i2v" in TINY


@pytest.mark.parametrize("name", TINY)
def test_a_tiny_entry_defaults_to_a_tiny_run(tmp_path, name):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(image)
    task = dump(f"model={name}")["layer1_model_definition"]["facts"]["task"]
    image_args = [f"user.input_image={image}"] if task in ("i2v", "flf2v") else []
    image_args += [f"user.end_image={image}"] if task == "flf2v" else []
    run = tmp_path / "run"
    result = run_cli(
        "generate", "--dry-run", f"model={name}", "prompt=x", *image_args, f"hydra.run.dir={run}"
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads((run / "config.json").read_text())
    derived, pipeline = document["derived"], document["layer2_inference_config"]
    assert derived["width"] * derived["height"] <= 64 * 64, derived
    assert derived["num_frames"] <= 17 and pipeline["num_inference_steps"] <= 8
    assert document["choices"]["pipeline"].startswith("tiny")
    assert document["choices"]["user"].startswith("tiny")


def test_the_person_still_chooses_the_size():
    assert dump("model=tiny_wan21_random", "resolution=480p")["derived"]["width"] > 800
    assert dump("model=tiny_wan22_moe", "user=default")["layer3_user_inputs"]["resolution"] == "480p"
    assert dump("model=tiny_hunyuan15", "resolution=64x48")["derived"]["width"] == 64


def test_every_tiny_entry_has_a_recipe():
    models = {name: dump(f"recipe={name}")["choices"]["model"] for name in RECIPES}
    assert set(TINY) <= set(models.values()), sorted(set(TINY) - set(models.values()))
    for recipe, model in models.items():
        if model in TINY:
            derived = dump(f"recipe={recipe}")["derived"]
            assert derived["width"] * derived["height"] <= 64 * 64, recipe
