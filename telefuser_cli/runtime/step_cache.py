"""First-block residual caching (FBCache) for any DiT that declares a ``runtime_plan``.

The DiT runs through :class:`telefuser_cli.runtime.transforms.PlannedDiT`, which calls :meth:`FirstBlockCache.run`
in place of the plain block loop. Each call runs the first block and compares its residual on the plan's first
stream (output - input) with the one of the last call that ran every block, for the same branch (the same
embedded context, the plan's ``branch`` state field: conditional and unconditional passes are cached
separately; a batched-CFG call is one branch). When the relative L1 change ``mean|r - r_ref| / mean|r_ref|``
is below ``threshold``, the remaining blocks are skipped and each stream gets their residual from that last
full call instead. The reference is not refreshed on a skipped call, so a run of small changes still
accumulates until a full call happens.

Costs: a few host syncs per DiT call (finding the branch with ``torch.equal``, and the skip decision, which
needs the number on the host; the cache is off by default and the loop's no-sync guarantee holds only then),
and per branch float32 copies of the first stream's residual and every stream's rest-of-blocks residual, plus
the branch key. They live on the DiT's device: :meth:`FirstBlockCache.reset` frees them (``Placed.release``
calls it when an expert leaves the device). Quality on the tiny model over 8 UniPC steps: see
``benchmarks/step_cache_quality.py`` and ``benchmarks/README.md``. Threshold 0 never skips and is bit for bit
the plain model.

Not for sequence-parallel DiTs: ranks would decide from their own shards and could diverge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from telefuser_cli.ops.runtime_plan import RuntimePlan


@dataclass
class _Branch:
    key: torch.Tensor  # the state's branch field (the embedded context) that identifies the branch
    grid: Any
    reference: torch.Tensor  # first-block residual of the first stream in the last full call
    rest: list[torch.Tensor]  # residual of blocks 1.. per stream in the last full call


@dataclass
class FirstBlockCache:
    """The cache state of one DiT. Counts calls and skipped calls."""

    plan: RuntimePlan
    threshold: float
    calls: int = 0
    skipped: int = 0
    branches: list[_Branch] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"step cache threshold={self.threshold} must be >= 0 (0 never skips)")

    def reset(self) -> None:
        """Forget every branch (call between runs that reuse the DiT) and zero the counters."""
        self.branches.clear()
        self.calls = self.skipped = 0

    def _branch(self, key: torch.Tensor, grid) -> _Branch | None:
        for branch in self.branches:
            same = branch.grid == grid and branch.key.shape == key.shape
            if same and torch.equal(branch.key, key):
                return branch
        return None

    def run(self, model: nn.Module, state):
        """All blocks of ``model`` over ``state`` (the plain loop of ``run_block`` calls), or the first block
        and the cached rest. Returns the state."""
        streams = self.plan.streams
        self.calls += 1
        before = [getattr(state, s).clone() for s in streams]
        state = model.run_block(0, state)
        after_first = [getattr(state, s) for s in streams]
        residual = after_first[0] - before[0]
        key, grid = getattr(state, self.plan.branch), getattr(state, "grid", None)
        branch = self._branch(key, grid)
        if branch is not None and self.threshold > 0:
            change = (residual - branch.reference).abs().mean() / branch.reference.abs().mean()
            if change.item() < self.threshold:  # host sync: the decision is taken on the host
                self.skipped += 1
                for s, x, rest in zip(streams, after_first, branch.rest, strict=True):
                    setattr(state, s, x.add_(rest))
                return state
        # reuse the copies' memory: they hold the streams after the first block, then rest = last - that
        for copy, x in zip(before, after_first, strict=True):
            copy.copy_(x)
        for i in range(1, len(getattr(model, self.plan.blocks))):
            state = model.run_block(i, state)
        rest = [copy.neg_().add_(getattr(state, s)) for copy, s in zip(before, streams, strict=True)]
        if branch is None:
            self.branches.append(_Branch(key.clone(), grid, residual, rest))
        else:
            branch.reference, branch.rest = residual, rest
        return state
