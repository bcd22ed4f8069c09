"""The model families: one folder each (spec.py torch-free, pipeline.py run time), found by the model entry's
``family`` fact. Importing this package imports no torch."""

from __future__ import annotations

import dataclasses
import importlib

from telefuser_cli.config.schema import Family, ModelConfig, RootConfig
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.errors import UserError
from telefuser_cli.families.base import FamilySpec, unsupported_options
from telefuser_cli.families.hunyuan15.spec import SPEC as HUNYUAN15
from telefuser_cli.families.wan.spec import SPEC as WAN

SPECS: tuple[FamilySpec, ...] = (WAN, HUNYUAN15)


def spec_of(family: Family) -> FamilySpec:
    for spec in SPECS:
        if family in spec.families:
            return spec
    raise KeyError(f"no family spec serves {family.value}")


def available(model: ModelConfig) -> bool:
    """Whether this version can run the entry (its family implements its task)."""
    return model.task in spec_of(model.family).tasks


def problems(settings: RootConfig, runnable_only: bool = True) -> list[str]:
    """Every reason the chosen family cannot run this job as configured, one line each.

    ``runnable_only=False`` (dump-config) checks an entry whose task this version does not run yet as if it did.
    """
    model = settings.model
    spec = spec_of(model.family)
    if runnable_only and not available(model):
        runnable = ", ".join(sorted(task.value for task in spec.tasks))
        return [
            f"model {model.name} ({model.task.value}) is not available in this version: the {spec.name} family "
            f"runs {runnable} (dump-config still shows the entry)"
        ]
    return spec.problems(settings) + unsupported_options(spec, settings, list(SPECS))


def check(settings: RootConfig, plan: RunPlan, runnable_only: bool = True) -> RunPlan:
    """The family's checks of a validated job (one line, every problem), and its latent shape in the plan."""
    found = problems(settings, runnable_only)
    if found:
        raise UserError("; ".join(found))
    model = settings.model
    shape = spec_of(model.family).latent_shape(model, plan.width, plan.height, plan.num_frames)
    return dataclasses.replace(plan, latent_shape=shape)


def pipeline_class(model: ModelConfig):
    """The family's FamilyPipeline class (imports torch and the models)."""
    module, _, name = spec_of(model.family).pipeline.partition(":")
    return getattr(importlib.import_module(module), name)
