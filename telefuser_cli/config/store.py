"""Registers the typed schema and the recipes with Hydra's ConfigStore.

Recipes live in the top-level `recipes/` folder but form the Hydra group `recipe`; a config search
path can only name groups after folders, so each recipe file is registered here instead, with its
`defaults` (the `override /model: ...` lines) intact. Registration is idempotent.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from telefuser_cli.config.schema import RootConfig
from telefuser_cli.paths import recipes_dir

SCHEMA_NAME = "telefuser_schema"


def recipe_files(directory: Path | None = None) -> dict[str, Path]:
    directory = directory or recipes_dir()
    return {path.stem: path for path in sorted(directory.glob("*.yaml"))}


def asset_path(name: str) -> str:
    """`${asset:NAME}`: a folder shipped inside the package (the tiny trained model)."""
    return str(Path(__file__).resolve().parents[1] / "assets" / name)


def register_configs() -> None:
    OmegaConf.register_new_resolver("asset", asset_path, replace=True)
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=RootConfig)
    for name, path in recipe_files().items():
        node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        store.store(group="recipe", name=name, node=node, package="_global_")


register_configs()
