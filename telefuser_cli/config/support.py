"""Options the chosen model family or component does not read are refused, never silently dropped.

Every key of the schema is either honoured by the code that runs or named here with the reason it
cannot be, so `pipeline.sample_solver=unipc` on HunyuanVideo 1.5 (which samples with Euler) ends in
one line before anything loads instead of a record of timesteps that never ran. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterator

from telefuser_cli.config.schema import (
    AttnImpl,
    Family,
    ModelRuntimeConfig,
    OffloadType,
    ParallelConfig,
    RootConfig,
)
from telefuser_cli.errors import UserError

# Components that are not a DiT: loaded with their dtype and device only.
_PLAIN_COMPONENTS = ("text_encoding_config", "vae_config", "clip_config", "vfi_config")
_DIT_COMPONENTS = ("dit_config", "dit_high_config", "dit_low_config")


def _parallel_degrees(parallel: ParallelConfig) -> dict[str, int]:
    names = ("dp_degree", "cfg_degree", "sp_ulysses_degree", "sp_ring_degree", "pp_degree", "tp_degree")
    return {name: getattr(parallel, name) for name in names if getattr(parallel, name) != 1}


def _runtime_problems(name: str, runtime: ModelRuntimeConfig, plain: bool) -> Iterator[str]:
    key = f"pipeline.{name}"
    if not plain:
        return
    if runtime.compile:
        yield f"{key}.compile=true: only the DiT is compiled (pipeline.dit_config.compile)"
    if runtime.offload_config.offload_type is not OffloadType.NO_CPU_OFFLOAD:
        yield (
            f"{key}.offload_config.offload_type={runtime.offload_config.offload_type.name}: only the DiT "
            f"is offloaded; put this component on the CPU instead ({key}.device_type=cpu)"
        )
    if runtime.attention_config.attn_impl not in (AttnImpl.AUTO, AttnImpl.TORCH_SDPA):
        yield (
            f"{key}.attention_config.attn_impl={runtime.attention_config.attn_impl.name}: only the DiT "
            "chooses its attention backend"
        )
    degrees = _parallel_degrees(runtime.parallel_config)
    if degrees:
        yield f"{key}.parallel_config {degrees}: only the DiT runs in parallel"


def _hunyuan15_problems(settings: RootConfig) -> Iterator[str]:
    """What the HunyuanVideo 1.5 pipeline does not implement (the Wan pipeline does)."""
    pipeline = settings.pipeline
    family = "not supported by hunyuan15 (supported by wan)"
    if pipeline.sample_solver != "euler":
        yield f"pipeline.sample_solver={pipeline.sample_solver}: {family}; HunyuanVideo 1.5 samples with euler"
    if pipeline.rand_device != "cpu":
        yield f"pipeline.rand_device={pipeline.rand_device}: {family}; the noise is drawn on the CPU"
    if pipeline.cfg_batch:
        yield f"pipeline.cfg_batch=true: {family}"
    if pipeline.step_cache_threshold > 0:
        yield f"pipeline.step_cache_threshold={pipeline.step_cache_threshold}: {family}"
    dit = pipeline.dit_config
    if dit is None:
        return
    if dit.compile:
        yield f"pipeline.dit_config.compile=true: {family}"
    if dit.lora_configs:
        yield f"pipeline.dit_config.lora_configs: {family}"
    if dit.offload_config.offload_type is not OffloadType.NO_CPU_OFFLOAD:
        yield f"pipeline.dit_config.offload_config.offload_type={dit.offload_config.offload_type.name}: {family}"
    degrees = _parallel_degrees(dit.parallel_config)
    if degrees:
        yield f"pipeline.dit_config.parallel_config {degrees}: {family}"


def unsupported(settings: RootConfig) -> list[str]:
    """Every set option that nothing in this run would read, each as one line naming the key."""
    pipeline = settings.pipeline
    problems = []
    for name in _DIT_COMPONENTS + _PLAIN_COMPONENTS:
        runtime = getattr(pipeline, name, None)
        if runtime is None or (name == "vfi_config" and not pipeline.enable_vfi):
            continue
        problems.extend(_runtime_problems(name, runtime, plain=name in _PLAIN_COMPONENTS))
    if settings.model.family is Family.hunyuan15:
        problems.extend(_hunyuan15_problems(settings))
    return problems


def check_supported_options(settings: RootConfig) -> None:
    """Refuse the first option the run would not honour (all of them listed when several are set)."""
    problems = unsupported(settings)
    if problems:
        raise UserError("; ".join(problems))
