"""Every option of the schema, for every model family: honoured, or refused in one line naming it and the family.

The completeness test fails when someone adds a pipeline option or a runtime leaf without deciding, for each
family, whether it is read. The refusal test sets each refused option away from its default on a real
entry of the family and checks the one-line error. What "honoured" means for the options HunyuanVideo
gained through the shared loop is checked by running them (tests/pipeline/test_family_honours.py).
"""

from __future__ import annotations

import copy
import enum

import pytest
from hydra.core.global_hydra import GlobalHydra

from telefuser_cli.config.schema import LoraConfig, ModelRuntimeConfig, PipelineConfig
from telefuser_cli.config.validate import to_settings
from telefuser_cli.families import SPECS, problems
from telefuser_cli.families.base import PLACEMENT, pipeline_options, runtime_components, runtime_leaves

# A tiny entry of each family (nothing is loaded: only their composed settings are used).
ENTRIES = {"wan": "tiny_wan21_random", "hunyuan15": "tiny_hunyuan15"}
# Runtime leaves no family implements in this version (refused everywhere).
NOBODY = {
    "parallel_config.dp_degree", "parallel_config.pp_degree", "parallel_config.tp_degree",
    "parallel_config.enable_fsdp",
}  # fmt: skip


@pytest.fixture(scope="module")
def settings_of():
    from telefuser_cli.config.hydra_app import HydraApp

    app = HydraApp()
    composed = {name: to_settings(app.compose([f"model={entry}"])) for name, entry in ENTRIES.items()}
    GlobalHydra.instance().clear()
    return composed


def test_every_pipeline_option_is_decided_by_every_family():
    options = set(pipeline_options())
    for spec in SPECS:
        assert not spec.honoured & spec.refused, f"{spec.name}: both honoured and refused"
        undecided = options - spec.honoured - spec.refused
        assert not undecided, f"{spec.name} neither honours nor refuses pipeline.{sorted(undecided)}"
        unknown = (spec.honoured | spec.refused) - options
        assert not unknown, f"{spec.name} names options the schema does not have: {sorted(unknown)}"


def test_every_runtime_leaf_is_decided():
    """A leaf is placement (every family), read by some family's DiT, or refused by all (NOBODY)."""
    declared = set(PLACEMENT) | NOBODY
    for spec in SPECS:
        for leaves in spec.runtime.values():
            declared |= leaves
    assert set(runtime_leaves()) == declared, "decide, per family, whether a new runtime leaf is read"
    assert not set().union(*(s.runtime.get("dit_config", set()) for s in SPECS)) & NOBODY


def _changed(default):
    """A value other than ``default`` of the same type."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, enum.Enum):
        return next(member for member in type(default) if member is not default)
    if isinstance(default, int):
        return default + 2
    if isinstance(default, float):
        return default + 0.5
    if isinstance(default, str):
        return default + "x"
    if isinstance(default, list):
        return [*default, default[-1]]
    raise TypeError(f"no changed value for {default!r}")


def _refused_pipeline_options():
    for spec in SPECS:
        for option in sorted(spec.refused):
            yield pytest.param(spec.name, option, id=f"{spec.name}-{option}")


def _value_for(option: str):
    default = getattr(PipelineConfig(), option)
    if default is None:  # optional settings (timesteps, boundary, ...): any set value
        return {"timesteps": [1000.0, 500.0], "boundary_step_index": 1}.get(option, 0.5)
    return _changed(default)


@pytest.mark.parametrize(("family", "option"), list(_refused_pipeline_options()))
def test_a_refused_pipeline_option_is_named_with_the_family(settings_of, family, option):
    settings = copy.deepcopy(settings_of[family])
    setattr(settings.pipeline, option, _value_for(option))
    found = problems(settings)
    line = next((p for p in found if p.startswith(f"pipeline.{option}")), None)
    assert line is not None, f"{family} accepted pipeline.{option}: {found}"
    assert "\n" not in line and family in line


def _refused_dit_leaves():
    for spec in SPECS:
        for leaf in runtime_leaves():
            if not spec.honours_leaf("dit_config", leaf):
                yield pytest.param(spec.name, leaf, id=f"{spec.name}-dit_config.{leaf}")


def _set_leaf(runtime: ModelRuntimeConfig, leaf: str) -> None:
    *parents, name = leaf.split(".")
    node = runtime
    for parent in parents:
        node = getattr(node, parent)
    if name == "lora_configs":
        setattr(node, name, [LoraConfig(path="style.safetensors")])
    elif name == "attn_impl":
        setattr(node, name, type(getattr(node, name)).FLASH_ATTN_2)
    else:
        setattr(node, name, _changed(getattr(node, name)))


@pytest.mark.parametrize(("family", "leaf"), list(_refused_dit_leaves()))
def test_a_refused_dit_setting_is_named_with_the_family(settings_of, family, leaf):
    settings = copy.deepcopy(settings_of[family])
    _set_leaf(settings.pipeline.dit_config, leaf)
    found = problems(settings)
    assert any(p.startswith(f"pipeline.dit_config.{leaf}=") and family in p for p in found), found


@pytest.mark.parametrize("component", [c for c in runtime_components() if not c.startswith("dit")])
@pytest.mark.parametrize("leaf", ["compile", "offload_config.offload_type", "lora_configs"])
def test_only_the_dit_takes_dit_settings(settings_of, component, leaf):
    settings = copy.deepcopy(settings_of["wan"])
    if getattr(settings.pipeline, component) is None:
        setattr(settings.pipeline, component, ModelRuntimeConfig())
    _set_leaf(getattr(settings.pipeline, component), leaf)
    found = problems(settings)
    assert f"pipeline.{component}.{leaf}=" in "".join(found) and "only the DiT takes it" in "".join(found)


@pytest.mark.parametrize("family", sorted(ENTRIES))
def test_the_packaged_settings_need_no_refusal(settings_of, family):
    assert problems(settings_of[family]) == []


def test_messages_say_which_family_supports_it(settings_of):
    settings = copy.deepcopy(settings_of["hunyuan15"])
    settings.pipeline.boundary = 0.9
    assert any("not supported by hunyuan15 (supported by wan)" in p for p in problems(settings))
    settings = copy.deepcopy(settings_of["wan"])
    settings.pipeline.tile_frames = 4
    assert any(
        "pipeline.tile_frames=4: not supported by wan (supported by hunyuan15)" == p
        for p in problems(settings)
    )
