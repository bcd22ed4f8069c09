"""The configuration document: `telefuser dump-config` prints it, every run writes it as config.json."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from telefuser_cli import __version__
from telefuser_cli.config.guard import fact_fields
from telefuser_cli.config.schema import RootConfig
from telefuser_cli.config.validate import RunPlan


def to_plain(value: Any) -> Any:
    """Dataclasses to dicts, enums (dtypes included) by name, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def model_root(settings: RootConfig) -> Path:
    return Path(settings.model.root).expanduser()


def layer1(settings: RootConfig, components: Mapping[str, str]) -> dict[str, Any]:
    """``components``: the model entry's component fields -> the class that loads each (the family says)."""
    model = settings.model
    root = model_root(settings)
    models = [
        {"name": name, "path": str(root / getattr(model, name)), "class": cls}
        for name, cls in components.items()
        if getattr(model, name)
    ]
    return {
        "name": model.name,
        "description": model.description,
        "root": str(root),
        "models": models,
        "facts": {key: to_plain(getattr(model, key)) for key in fact_fields() if key != "name"},
    }


def build_document(
    settings: RootConfig,
    plan: RunPlan | None,
    choices: dict[str, Any],
    components: Mapping[str, str],
    device: str = "auto",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pipeline = settings.pipeline
    # The DiT that runs first: the high-noise expert of a mixture of experts.
    main_runtime = pipeline.dit_high_config if settings.model.moe else pipeline.dit_config
    document: dict[str, Any] = {
        "version": __version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "torch_dtype": to_plain(main_runtime.torch_dtype) if main_runtime else None,
        "choices": {k: v for k, v in choices.items() if k in ("model", "pipeline", "recipe", "user")},
        "layer1_model_definition": layer1(settings, components),
        "layer2_inference_config": to_plain(pipeline),
        "layer3_user_inputs": to_plain(settings.user),
        "output": to_plain(settings.output),
        "launcher": to_plain(settings.launcher),
    }
    if plan is not None:
        document["derived"] = {
            "width": plan.width,
            "height": plan.height,
            "num_frames": plan.num_frames,
            "latent_shape": list(plan.latent_shape),
            "effective_negative_prompt": plan.negative_prompt,
            "world_size": plan.world_size,
            "output_fps": plan.output_fps,
        }
    if extra:
        document.update(extra)
    return document


def to_json(document: dict[str, Any]) -> str:
    """Strict JSON: a nan or inf that slipped past validation fails here instead of writing `NaN`."""
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
