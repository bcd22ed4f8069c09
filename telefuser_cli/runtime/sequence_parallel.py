"""Sequence parallelism of any DiT whose ``runtime_plan`` declares where its sequence is split.

After ``embed``, every state field the plan lists in ``split`` is sharded over the sp group on its token dim
(padded to a multiple of the degree: zeros, or unit phasors for a complex RoPE table; padded rows are
dropped at the gather and padded keys cut off before attention, so padding changes no result), and the
blocks' self-attention (the plan's ``attention`` field) becomes :func:`~telefuser_cli.ops.sequence_parallel.
sequence_parallel_attention` around the model's own kernel. ``project_out`` runs on each shard (it is per
token) and its output is gathered before ``unpatchify``. What the plan does not split (the text context)
stays whole: each rank has its query shard and all of the context.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn as nn

from telefuser_cli.ops.runtime_plan import RuntimePlan
from telefuser_cli.ops.sequence_parallel import gather_tokens, sequence_parallel_attention, shard
from telefuser_cli.runtime.distributed import ParallelGroups


class SequenceSplit:
    """Splits a DiT's stage state over the sp ranks of ``groups`` and gathers the per-token output."""

    def __init__(self, plan: RuntimePlan, groups: ParallelGroups):
        self.plan, self.groups = plan, groups

    def split(self, state):
        """This rank's shard of ``state``; returns (sharded state, the full token count)."""
        degree, rank = self.groups.sp_degree, self.groups.sp_rank
        seq_len = getattr(state, self.plan.streams[0]).shape[1]
        changes = {}
        for name, dim in self.plan.split:
            value = getattr(state, name)
            if value.shape[dim] == seq_len:  # else one value serves every token (e.g. one timestep)
                pad = 1.0 if value.is_complex() else 0.0
                changes[name] = shard(value, dim, degree, rank, value=pad)
        changes[self.plan.attention] = functools.partial(
            sequence_parallel_attention,
            groups=self.groups,
            seq_len=seq_len,
            local_attn=getattr(state, self.plan.attention),
        )
        return dataclasses.replace(state, **changes), seq_len

    def gather(self, out: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Per-token output shards [B, Lc, ...] -> [B, seq_len, ...] on every rank."""
        return gather_tokens(out, self.groups, seq_len)


def sequence_split(model: nn.Module, groups: ParallelGroups) -> SequenceSplit | None:
    """The split of ``model`` over ``groups``; None for sp degree 1. Raises ValueError when the class declares
    no split or the Ulysses degree does not divide the heads."""
    if groups.sp_degree == 1:
        return None
    plan = type(model).runtime_plan
    if not plan.sequence_parallel:
        raise ValueError(f"{type(model).__name__} does not support sequence parallelism (sp degree > 1)")
    heads = getattr(model.config, plan.heads)
    if heads % groups.ulysses_degree:
        raise ValueError(f"sp_ulysses_degree={groups.ulysses_degree} must divide the DiT's {heads} heads")
    return SequenceSplit(plan, groups)
