"""Registers the typed schema with Hydra's ConfigStore, and the resolvers the packaged entries use."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from telefuser_cli.config.schema import RootConfig

SCHEMA_NAME = "telefuser_schema"


def asset_path(name: str) -> str:
    """`${asset:NAME}`: a folder shipped inside the package (the tiny trained model)."""
    return str(Path(__file__).resolve().parents[1] / "assets" / name)


def model_dir(name: str) -> str:
    """`${model_dir:NAME}`: the folder NAME under $TELEFUSER_MODEL_ROOT (default ~/models)."""
    return f"{os.environ.get('TELEFUSER_MODEL_ROOT', '~/models')}/{name}"


def register_configs() -> None:
    OmegaConf.register_new_resolver("asset", asset_path, replace=True)
    OmegaConf.register_new_resolver("model_dir", model_dir, replace=True)
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RootConfig)


register_configs()
