"""Sequence-parallel math: token shards, their gather, and self-attention over the whole sequence from one
shard (Ulysses, ring attention, and both: USP). Applied to a DiT by :mod:`telefuser_cli.runtime.sequence_parallel`
from the plan its class declares.

Padding: the token count L is padded to a multiple of the sp degree with zero tokens. Padded queries give
rows that are dropped at the gather; padded keys and values are cut off before attention (Ulysses: the full
sequence is sliced to L; ring: each block to its valid length), so the padding changes no result.

Attention math: Ulysses calls the model's own attention kernel on the full sequence for H/U heads. Ring
attention merges per-block outputs with their log-sum-exp (float32), from a kernel that returns it: on CPU
torch's flash kernel, on CUDA FlashAttention when installed (half precision) else torch's memory-efficient
kernel, elsewhere an explicit float32 softmax.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import torch
import torch.distributed as dist

from telefuser_cli.ops.attention import AttentionFn


class SequenceGroups(Protocol):
    """The process groups of one sequence-parallel group (``runtime.distributed.ParallelGroups`` has them)."""

    sp_degree: int
    sp_rank: int
    sp_group: dist.ProcessGroup | None
    ulysses_degree: int
    ulysses_group: dist.ProcessGroup | None
    ring_degree: int
    ring_group: dist.ProcessGroup | None
    ring_ranks: tuple[int, ...]
    ring_rank: int


def _pad_to(x: torch.Tensor, dim: int, length: int, value: float | complex = 0.0) -> torch.Tensor:
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, torch.full(shape, value, dtype=x.dtype, device=x.device)], dim=dim)


def shard(x: torch.Tensor, dim: int, degree: int, rank: int, value: float | complex = 0.0) -> torch.Tensor:
    """Pad ``dim`` to a multiple of ``degree`` with ``value`` and return shard ``rank`` (a fresh tensor)."""
    chunk = -(-x.shape[dim] // degree)
    return _pad_to(x, dim, chunk * degree, value).narrow(dim, rank * chunk, chunk).clone()


def gather_tokens(x: torch.Tensor, groups: SequenceGroups, seq_len: int) -> torch.Tensor:
    """All-gather token shards [B, Lc, ...] over the sp group -> [B, seq_len, ...] (padding dropped)."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(groups.sp_degree)]
    dist.all_gather(parts, x, group=groups.sp_group)
    return torch.cat(parts, dim=1)[:, :seq_len]


def _all_to_all(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Exchange equal slices of dim 0: slice i goes to rank i, slice i received comes from rank i."""
    x = x.contiguous()
    out = torch.empty_like(x)  # after .contiguous(): empty_like keeps a permuted input's strides
    dist.all_to_all_single(out, x, group=group)
    return out


def heads_to_sequence(qkv: torch.Tensor, degree: int, group) -> torch.Tensor:
    """Ulysses forward exchange. qkv: [N, B, Lc, H, D] sequence shards -> [N, B, degree*Lc, H/degree, D]."""
    n, b, lc, h, d = qkv.shape
    x = qkv.reshape(n, b, lc, degree, h // degree, d).permute(3, 0, 1, 2, 4, 5)  # [U, N, B, Lc, H/U, D]
    x = _all_to_all(x, group)  # now indexed by the source rank's sequence chunk
    return x.permute(1, 2, 0, 3, 4, 5).reshape(n, b, degree * lc, h // degree, d)


def sequence_to_heads(x: torch.Tensor, degree: int, group) -> torch.Tensor:
    """Ulysses backward exchange. x: [B, degree*Lc, H/degree, D] -> [B, Lc, H, D]."""
    b, seq, hu, d = x.shape
    x = x.reshape(b, degree, seq // degree, hu, d).permute(1, 0, 2, 3, 4)  # [U, B, Lc, H/U, D]
    x = _all_to_all(x, group)  # now indexed by the source rank's head group
    return x.permute(1, 2, 0, 3, 4).reshape(b, seq // degree, degree * hu, d)


def _flash_attn_module():
    try:
        return importlib.import_module("flash_attn")
    except Exception:  # absent, or a broken CUDA build: the torch kernels below serve
        return None


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp. q: [B, Lq, H, D], k/v: [B, Lk, H, D].

    Returns (out [B, Lq, H, D] float32, lse [B, H, Lq] float32), scale 1/sqrt(D), no mask.
    """
    if q.device.type == "cuda":
        flash_attn = _flash_attn_module()
        if flash_attn is not None and q.dtype in (torch.float16, torch.bfloat16):
            out, lse, _ = flash_attn.flash_attn_func(q, k, v, return_attn_probs=True)
            return out.float(), lse.float()
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(qt, kt, vt, None, True)[:2]
        return out.transpose(1, 2).float(), lse[..., : q.shape[1]].float()
    if q.device.type == "cpu":
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)
        return out.transpose(1, 2).float(), lse.float()
    scores = torch.einsum("blhd,bmhd->bhlm", q.float(), k.float()) / q.shape[-1] ** 0.5
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.einsum("bhlm,bmhd->blhd", torch.exp(scores - lse[..., None]), v.float())
    return out, lse


def _merge(out, lse, block_out, block_lse):
    """Combine two partial softmax attentions over disjoint key sets (float32)."""
    if out is None:
        return block_out, block_lse
    new_lse = torch.logaddexp(lse, block_lse)
    w_old = torch.exp(lse - new_lse).transpose(1, 2)[..., None]  # [B, Lq, H, 1]
    w_new = torch.exp(block_lse - new_lse).transpose(1, 2)[..., None]
    return out * w_old + block_out * w_new, new_lse


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group: dist.ProcessGroup | None,
    ring_ranks: tuple[int, ...],
    ring_rank: int,
    valid: list[int],
) -> torch.Tensor:
    """Attention of the local queries over the keys/values of every rank in the ring.

    q, k, v: [B, Lc, H, D] this rank's block (block i sits at ring position i); ``valid[i]``: the number of
    real (unpadded) keys in block i. The key/value blocks travel around the ring while each step's block is
    attended; the partial results are merged with their log-sum-exp. Returns [B, Lc, H, D] in q's dtype.
    """
    degree = len(ring_ranks)
    send_to, recv_from = ring_ranks[(ring_rank + 1) % degree], ring_ranks[(ring_rank - 1) % degree]
    kv = torch.stack([k, v])
    out = lse = None
    for step in range(degree):
        requests = []
        if step < degree - 1:
            incoming = torch.empty_like(kv)
            requests = dist.batch_isend_irecv(
                [
                    dist.P2POp(dist.isend, kv, send_to, group),
                    dist.P2POp(dist.irecv, incoming, recv_from, group),
                ]
            )
        n = valid[(ring_rank - step) % degree]
        if n > 0:  # a block of padding only has nothing to attend to
            out, lse = _merge(out, lse, *attention_with_lse(q, kv[0, :, :n], kv[1, :, :n]))
        for request in requests:
            request.wait()
        if step < degree - 1:
            kv = incoming
    return out.to(q.dtype)


def sequence_parallel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    groups: SequenceGroups,
    seq_len: int,
    local_attn: AttentionFn,
) -> torch.Tensor:
    """Self-attention over the whole sequence from this rank's token shard (Ulysses, ring, or both).

    q, k, v: [B, Lc, H, D] the shard of sp_rank (Lc = padded length / sp degree); seq_len: the true
    (unpadded) token count. Returns [B, Lc, H, D].
    """
    ulysses, ring = groups.ulysses_degree, groups.ring_degree
    if ulysses > 1:
        q, k, v = heads_to_sequence(torch.stack([q, k, v]), ulysses, groups.ulysses_group).unbind(0)
    block = q.shape[1]  # tokens per ring block after the Ulysses exchange
    valid = [min(max(seq_len - i * block, 0), block) for i in range(ring)]
    if ring > 1:
        out = ring_attention(q, k, v, groups.ring_group, groups.ring_ranks, groups.ring_rank, valid)
    else:
        out = local_attn(q, k[:, : valid[0]], v[:, : valid[0]])
    if ulysses > 1:
        out = sequence_to_heads(out, ulysses, groups.ulysses_group)
    return out
