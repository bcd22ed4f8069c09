"""The runtime transforms of a DiT, applied from outside from the plan its class declares (``runtime_plan``).

One entry point for the driver: :func:`apply_transforms` takes a loaded DiT and what the pipeline asked for
it (:class:`RuntimeRequest`) and returns it :class:`Placed`: the module the sampling loop calls, how it comes
to the device for its steps and leaves after (model offload), and what the run record says about it. In order:

1. sequence parallelism (sp degree > 1): the token split of :mod:`telefuser_cli.runtime.sequence_parallel`;
2. compile: each repeated block (:mod:`telefuser_cli.runtime.compile`);
3. step cache: first-block residual caching (:mod:`telefuser_cli.runtime.step_cache`);
4. offload: block-sequential (hooks on the blocks) or whole-model (:mod:`telefuser_cli.runtime.offload`).

The record also says how the DiT holds its linear weights (fp8-resident layers, bytes: ``weights``).

The step cache and sequence parallelism run the model's stages themselves (:class:`PlannedDiT`); nothing of
the model is replaced. :func:`supported` says which transforms a class allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from telefuser_cli.config.schema import ModelRuntimeConfig, OffloadType
from telefuser_cli.ops.fp8_linear import weights_summary
from telefuser_cli.runtime.compile import compile_blocks
from telefuser_cli.runtime.distributed import ParallelGroups
from telefuser_cli.runtime.offload import ModelOffload, apply_sequential_offload
from telefuser_cli.runtime.sequence_parallel import SequenceSplit, sequence_split
from telefuser_cli.runtime.step_cache import FirstBlockCache

COMPILE = "compile"
STEP_CACHE = "step_cache"
MODEL_OFFLOAD = "model_offload"
SEQUENTIAL_OFFLOAD = "sequential_offload"
SEQUENCE_PARALLEL = "sequence_parallel"


def supported(model_class: type[nn.Module]) -> frozenset[str]:
    """The transforms the class's ``runtime_plan`` allows (empty without a plan)."""
    plan = getattr(model_class, "runtime_plan", None)
    if plan is None:
        return frozenset()
    names = {COMPILE, STEP_CACHE, MODEL_OFFLOAD, SEQUENTIAL_OFFLOAD}
    return frozenset(names | ({SEQUENCE_PARALLEL} if plan.sequence_parallel else set()))


@dataclass
class RuntimeRequest:
    """What the pipeline asked for one DiT.

    device: where it computes. step_cache: the first-block residual cache's threshold (0 never skips);
    None: no cache. groups: the process groups; sequence parallel when their sp degree is > 1.
    """

    device: torch.device
    compile: bool = False
    step_cache: float | None = None
    offload: OffloadType = OffloadType.NO_CPU_OFFLOAD
    groups: ParallelGroups | None = None
    prefetch_blocks: int = 1  # block-sequential offload: blocks copied ahead
    resident_ratio: float = 0.0  # block-sequential offload: the first fraction of blocks kept on the device
    weights: str = "auto"  # how the loader was asked to hold the linear weights (for the record)

    @classmethod
    def of(
        cls, runtime: ModelRuntimeConfig, step_cache_threshold: float, device: torch.device,
        groups: ParallelGroups | None,
    ) -> RuntimeRequest:  # fmt: skip
        """What a pipeline's settings ask for one DiT (a threshold of 0 means no step cache)."""
        threshold = step_cache_threshold if step_cache_threshold > 0 else None
        offload = runtime.offload_config
        return cls(
            device, runtime.compile, threshold, offload.offload_type, groups, offload.prefetch_blocks,
            offload.resident_ratio, runtime.weights.value,
        )  # fmt: skip

    @property
    def load_device(self) -> torch.device:
        """Where to build the weights: the host when an offload brings them to another device, else there."""
        offloaded = self.offload is not OffloadType.NO_CPU_OFFLOAD and torch.device(self.device).type != "cpu"
        return torch.device("cpu") if offloaded else torch.device(self.device)


class PlannedDiT(nn.Module):
    """A DiT run stage by stage (``embed``, ``run_block`` each block, ``project_out``, ``unpatchify``), with its
    tokens split over sequence-parallel ranks and/or its blocks behind a step cache.

    Called like the DiT, with the same result (the step cache aside). Attributes it does not have itself
    (``config``, ``prepare_context``, ...) are the DiT's, as for torch.compile's ``OptimizedModule``.
    """

    def __init__(self, model: nn.Module, cache: FirstBlockCache | None, split: SequenceSplit | None):
        super().__init__()
        self.model = model
        self.plan = type(model).runtime_plan
        self.cache, self.split = cache, split

    def forward(self, *args, **kwargs) -> torch.Tensor:
        model = self.model
        state = model.embed(*args, **kwargs)
        if self.split is not None:
            state, seq_len = self.split.split(state)
        if self.cache is not None:
            state = self.cache.run(model, state)
        else:
            for i in range(len(getattr(model, self.plan.blocks))):
                state = model.run_block(i, state)
        out = model.project_out(state)
        if self.split is not None:
            out = self.split.gather(out, seq_len)
        return model.unpatchify(out, state)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (``model``)
        except AttributeError:
            return getattr(self.model, name)


@dataclass
class Placed:
    """A DiT with its transforms: the module to call, and how it comes to the device and leaves.

    report: what the run record says about it (``offload`` entries); :meth:`record` adds the step cache's
    counters. cache_context: False when the blocks come to the device only for their own forward
    (block-sequential offload), so contexts must not be prepared once per run on the device.
    """

    module: nn.Module
    offload: ModelOffload | None = None
    cache: FirstBlockCache | None = None
    report: dict[str, Any] = field(default_factory=dict)
    cache_context: bool = True

    def load(self) -> None:
        if self.offload is not None:
            self.offload.load()

    def release(self) -> None:
        if self.offload is not None:
            self.offload.release()
        if self.cache is not None:
            self.cache.reset()

    def record(self) -> dict[str, Any]:
        """The run record's entries for this DiT: ``report`` and the step cache's calls and skipped calls."""
        record = dict(self.report)
        if self.cache is not None:
            record["step_cache"] = {"calls": self.cache.calls, "skipped": self.cache.skipped}
        return record


def apply_transforms(model: nn.Module, request: RuntimeRequest) -> Placed:
    """Apply what ``request`` asks to ``model`` (in place: hooks, compiled blocks, moved weights) and place it.

    The model is expected on ``request.device``, or on the host when an offload is requested on another
    device. Raises ValueError for a transform the class's plan does not allow, a step cache with sequence
    parallelism (ranks would decide from their own shards), a negative threshold, or fewer than 2 blocks.
    """
    device = torch.device(request.device)
    plan = type(model).runtime_plan
    groups = request.groups or ParallelGroups()
    split = sequence_split(model, groups)
    if request.compile:
        compile_blocks(model)
    cache = None
    if request.step_cache is not None:
        if split is not None:
            raise ValueError("step caching does not support sequence parallelism (ranks could diverge)")
        if len(getattr(model, plan.blocks)) < 2:
            raise ValueError(
                f"step caching needs at least 2 blocks, the DiT has {len(getattr(model, plan.blocks))}"
            )
        cache = FirstBlockCache(plan, request.step_cache)
    module = model if cache is None and split is None else PlannedDiT(model, cache, split)
    placed = Placed(module, cache=cache)
    placed.report["weights"] = {"mode": request.weights, **weights_summary(model)}
    kind = request.offload
    if kind is OffloadType.SEQUENTIAL_CPU_OFFLOAD:
        report, _ = apply_sequential_offload(model, device, request.prefetch_blocks, request.resident_ratio)
        placed.cache_context = not report.applied
        placed.report["offload"] = {
            "type": kind.name, "applied": report.applied, "reason": report.reason,
            "prefetch_blocks": request.prefetch_blocks, "resident_ratio": request.resident_ratio,
        }  # fmt: skip
    elif kind is OffloadType.MODEL_CPU_OFFLOAD:
        offloaded = device.type != "cpu"
        placed.offload = ModelOffload(module, device) if offloaded else None
        reason = "" if offloaded else "the device is the CPU: MODEL_CPU_OFFLOAD is a no-op"
        placed.report["offload"] = {"type": kind.name, "applied": offloaded, "reason": reason}
    return placed
