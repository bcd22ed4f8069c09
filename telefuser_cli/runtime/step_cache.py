"""First-block residual caching (FBCache) for the Wan DiT, applied from outside by wrapping ``run_blocks``.

Each call runs the first block, and compares its residual (output - input) with the one of the last call
that ran every block, for the same branch (the same embedded text context: conditional and unconditional
passes are cached separately; a batched-CFG call is one branch). When the relative L1 change
``mean|r - r_ref| / mean|r_ref|`` is below ``threshold``, the remaining blocks are skipped and their
residual from that last full call is added instead. The reference is not refreshed on a skipped call, so a
run of small changes still accumulates until a full call happens.

Costs: a few host syncs per DiT call (finding the branch with ``torch.equal``, and the skip decision,
which needs the number on the host; the cache is off by default and the loop's no-sync guarantee holds only
then), and per branch two float32 copies of the residual stream ``[B, L, C]`` (the reference residual and
the cached rest-of-blocks residual) plus the embedded context. They live on the DiT's device: call
:meth:`FirstBlockCache.reset` when an expert is moved off the device (MoE offload) to free them.
Quality on the tiny model over 8 UniPC steps: see ``benchmarks/step_cache_quality.py`` and
``benchmarks/README.md``. Threshold 0 never skips and is bit for bit the plain model.

Not for sequence-parallel DiTs: ranks would decide from their own shards and could diverge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from telefuser_cli.models.wan_dit import Tokens, WanDiT
from telefuser_cli.ops.attention import AttentionFn


@dataclass
class _Branch:
    context: torch.Tensor  # the embedded text context that identifies the branch
    grid: tuple[int, int, int]
    reference: torch.Tensor  # first-block residual of the last full call
    rest: torch.Tensor  # residual of blocks 1.. in the last full call


@dataclass
class FirstBlockCache:
    """The cache state of one DiT; installed by :func:`apply_step_cache`. Counts calls and skips."""

    dit: WanDiT
    threshold: float
    calls: int = 0
    skipped: int = 0
    branches: list[_Branch] = field(default_factory=list)

    def reset(self) -> None:
        """Forget every branch (call between runs that reuse the DiT) and zero the counters."""
        self.branches.clear()
        self.calls = self.skipped = 0

    def _branch(self, tokens: Tokens) -> _Branch | None:
        for branch in self.branches:
            same = branch.grid == tokens.grid and branch.context.shape == tokens.context.shape
            if same and torch.equal(branch.context, tokens.context):
                return branch
        return None

    def run_blocks(self, tokens: Tokens, self_attn: AttentionFn) -> torch.Tensor:
        """Drop-in for ``WanDiT.run_blocks``: returns the residual stream [B, L, C] float32."""
        dit, x = self.dit, tokens.x
        self.calls += 1
        before = x.clone()
        x = dit.run_block(0, x, tokens, self_attn)  # in place
        residual = x - before
        branch = self._branch(tokens)
        if branch is not None and self.threshold > 0:
            change = (residual - branch.reference).abs().mean() / branch.reference.abs().mean()
            if change.item() < self.threshold:  # host sync: the decision is taken on the host
                self.skipped += 1
                return x.add_(branch.rest)
        before.copy_(x)
        for i in range(1, len(dit.blocks)):
            x = dit.run_block(i, x, tokens, self_attn)
        rest = before.neg_().add_(x)  # reuse the copy's memory: rest = x - x_after_first_block
        if branch is None:
            self.branches.append(_Branch(tokens.context.clone(), tokens.grid, residual, rest))
        else:
            branch.reference, branch.rest = residual, rest
        return x

    def remove(self) -> None:
        """Restore the plain ``run_blocks`` of the DiT."""
        if vars(self.dit).get("run_blocks") == self.run_blocks:
            del self.dit.run_blocks
        self.reset()


def apply_step_cache(dit: WanDiT, threshold: float) -> FirstBlockCache:
    """Install first-block residual caching on ``dit`` (in place) and return its state.

    ``threshold`` >= 0 is the relative L1 change of the first block's residual under which the other blocks
    are skipped; 0 never skips (exact). Typical useful values on real models are 0.05-0.2 (ParaAttention's
    FBCache); on the tiny model see benchmarks/README.md. Raises ValueError for a negative threshold, a DiT
    with fewer than 2 blocks, a DiT that already has a step cache, or a sequence-parallel DiT.
    """
    if threshold < 0:
        raise ValueError(f"step cache threshold={threshold} must be >= 0 (0 never skips)")
    if len(dit.blocks) < 2:
        raise ValueError(f"step caching needs at least 2 blocks, the DiT has {len(dit.blocks)}")
    if "run_blocks" in vars(dit):
        raise ValueError("this DiT already has a step cache (apply_step_cache was called on it before)")
    if "forward" in vars(dit):
        raise ValueError("step caching does not support a sequence-parallel DiT (ranks could diverge)")
    cache = FirstBlockCache(dit, threshold)
    dit.run_blocks = cache.run_blocks  # an instance attribute shadows the method; forward calls it
    return cache
