"""The Wan DiT's prepared text (and image) context: each block's cross-attention keys and values, made once per run.

:meth:`telefuser_cli.models.wan_dit.WanDiT.prepare_context` makes it; the sampling loop passes it to every
step in place of the raw context (the same numbers, less work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CrossKV:
    """Keys and values of one block's cross-attention, in the run dtype.

    k, v: [B, text_len, H, D] of the text context; k_img, v_img: [B or 1, N_clip, H, D] of the CLIP image
    context (Wan2.1 i2v/flf2v; batch 1 serves every sample) or None.
    """

    k: torch.Tensor
    v: torch.Tensor
    k_img: torch.Tensor | None = None
    v_img: torch.Tensor | None = None


@dataclass(frozen=True)
class ContextCache:
    """The text (and image) context of one prompt made ready for every block (:meth:`WanDiT.prepare_context`).

    The context is the same at every denoising step, so its embedding and each block's cross-attention keys
    and values are computed once per run instead of once per step. Pass the cache to :meth:`WanDiT.forward`
    in place of the raw context; the result is bit for bit the one from the raw context.

    context: [B, text_len, C] embedded text in the run dtype (what the cache was made from; the step cache
    tells branches apart by it). clip_fea: the CLIP features the image keys and values were made from (the
    same tensor object must go to forward with the cache), or None. kv: one :class:`CrossKV` per block.

    Memory: 2 x layers x B x text_len x dim values in the run dtype for the text keys and values (Wan2.1 1.3B,
    bf16: 90 MiB per prompt; 14B: 400 MiB), plus 2 x layers x N_clip x dim for the image ones; the cache lives
    where the DiT's weights were when it was made (the compute device).
    """

    context: torch.Tensor
    clip_fea: torch.Tensor | None
    kv: tuple[CrossKV, ...]

    @property
    def batch(self) -> int:
        return self.context.shape[0]

    @staticmethod
    def cat(caches: Sequence[ContextCache]) -> ContextCache:
        """One cache for the concatenated batch (batched CFG). The caches must share one ``clip_fea``; image keys
        and values of batch 1 serve the whole batch and are kept once. Copies the text keys and values."""
        first = caches[0]
        if any(c.clip_fea is not first.clip_fea or len(c.kv) != len(first.kv) for c in caches):
            raise ValueError("only context caches of the same DiT and the same clip_fea can be concatenated")

        def image(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
            return parts[0] if parts[0] is None or parts[0].shape[0] == 1 else torch.cat(parts)

        kv = tuple(
            CrossKV(
                torch.cat([b.k for b in block]),
                torch.cat([b.v for b in block]),
                image([b.k_img for b in block]),
                image([b.v_img for b in block]),
            )
            for block in zip(*(c.kv for c in caches), strict=True)
        )
        return ContextCache(torch.cat([c.context for c in caches]), first.clip_fea, kv)
