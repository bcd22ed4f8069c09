"""The context side of the HunyuanVideo 1.5 DiT: the text token refiner (``txt_in``), the ByT5 glyph and SigLIP
image projections (``byt5_in``, ``vision_in``), and :class:`Hunyuan15Context`, the context prepared once per run.

Parameter names are the official checkpoint layout (these modules are attributes of
:class:`~telefuser_cli.models.hunyuan15_dit.Hunyuan15DiT`); precision as documented there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from telefuser_cli.ops.attention import AttentionFn
from telefuser_cli.ops.fp32 import f32_layer_norm, f32_linear
from telefuser_cli.ops.time_embedding import sinusoidal_embedding

FREQ_DIM = 256  # width of the sinusoidal timestep embedding (official TimestepEmbedder)
EPS = 1e-6


def attend_valid(attn: AttentionFn, q, k, v, lens: list[int] | None) -> torch.Tensor:
    """Attention over each sample's valid prefix. q/k/v: [B, L, H, D]; lens: valid length per sample (None: all).

    Positions past a sample's length come out as zeros (they are padding and never read as keys later).
    """
    seq = q.shape[1]
    if lens is None or all(n == seq for n in lens):
        return attn(q, k, v)
    out = q.new_zeros(q.shape)
    for b, n in enumerate(lens):
        out[b : b + 1, :n] = attn(q[b : b + 1, :n], k[b : b + 1, :n], v[b : b + 1, :n])
    return out


def pad_stack(rows: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """[n_b, C] per sample -> zero-padded [B, max n_b, C] and the lengths."""
    lens = [r.shape[0] for r in rows]
    longest = max(lens)
    return torch.stack([F.pad(r, (0, 0, 0, longest - r.shape[0])) for r in rows]), lens


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: nn.Module):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    """Official ``TimestepEmbedder``: float64 sinusoid -> Linear -> SiLU -> Linear, run in float32."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: [B] -> [B, dim] float32."""
        h = F.silu(f32_linear(sinusoidal_embedding(t, FREQ_DIM, "exp_log").float(), self.mlp[0]))
        return f32_linear(h, self.mlp[2])


class RefinerBlock(nn.Module):
    """Official ``IndividualTokenRefinerBlock``: gated self-attention + SiLU MLP over the text tokens."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.self_attn_qkv = nn.Linear(dim, 3 * dim)
        self.self_attn_proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio), nn.SiLU())
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def attention(self, x: torch.Tensor, lens: list[int], attn: AttentionFn) -> torch.Tensor:
        """The self-attention branch before its gate (it does not see the conditioning).

        x: [B, L, C] float32 -> [B, L, C] float32.
        """
        qkv = self.self_attn_qkv(f32_layer_norm(x, self.norm1).to(self.self_attn_qkv.weight.dtype))
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).unbind(2)
        return self.self_attn_proj(attend_valid(attn, q, k, v, lens).flatten(2)).float()

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        lens: list[int],
        attn: AttentionFn,
        attended: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, L, C] float32; c: [B, C] float32 conditioning -> [B, L, C] float32.

        attended: :meth:`attention` of this x when the caller already has it, else computed here.
        """
        gate_msa, gate_mlp = f32_linear(F.silu(c), self.adaLN_modulation[1]).chunk(2, dim=-1)
        if attended is None:
            attended = self.attention(x, lens, attn)
        x = x + attended * gate_msa[:, None]
        dtype = self.self_attn_qkv.weight.dtype
        return x + self.mlp(f32_layer_norm(x, self.norm2).to(dtype)).float() * gate_mlp[:, None]


class TextProjection(nn.Module):
    """Official ``TextProjection`` (``c_embedder``): Linear -> SiLU -> Linear, in float32."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return f32_linear(F.silu(f32_linear(x, self.linear_1)), self.linear_2)


class IndividualTokenRefiner(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([RefinerBlock(dim, heads, mlp_ratio) for _ in range(depth)])


class SingleTokenRefiner(nn.Module):
    """Official ``txt_in``: project the text features and refine them, conditioned on time + pooled text."""

    def __init__(self, in_dim: int, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, dim)
        self.t_embedder = TimestepEmbedder(dim)
        self.c_embedder = TextProjection(in_dim, dim)
        self.individual_token_refiner = IndividualTokenRefiner(dim, heads, depth, mlp_ratio)

    # The refiner is conditioned on the timestep: c = t_embedder(t) + c_embedder(pooled text) gates every
    # block, so from the first gate on every value depends on t and reruns each step. What comes before
    # the first gate does not: the input embedding, the pooled-text projection and the first block's
    # attention branch. :meth:`prepare` computes those once per run; :meth:`refine` is the per-step rest.

    def prepare(
        self, x: torch.Tensor, lens: list[int], attn: AttentionFn
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The timestep-independent part. x: [B, L, in_dim] valid tokens first, zero-padded; lens: valid
        count per sample. Returns float32 (input embedding [B, L, dim], pooled projection [B, dim], the first
        block's attention branch [B, L, dim] or None without blocks)."""
        count = torch.tensor(lens, dtype=torch.float32, device=x.device)[:, None]
        pooled = x.float().sum(dim=1) / count  # masked mean: padding rows are zero
        h = self.input_embedder(x.to(self.input_embedder.weight.dtype)).float()
        blocks = self.individual_token_refiner.blocks
        attended = blocks[0].attention(h, lens, attn) if len(blocks) else None
        return h, self.c_embedder(pooled), attended

    def refine(
        self,
        h: torch.Tensor,
        pooled: torch.Tensor,
        attended: torch.Tensor | None,
        lens: list[int],
        t: torch.Tensor,
        attn: AttentionFn,
    ) -> torch.Tensor:
        """The per-step part from :meth:`prepare`'s outputs; t: [B]. Returns [B, L, dim] float32 (rows past
        a sample's length are padding)."""
        c = self.t_embedder(t) + pooled
        for i, block in enumerate(self.individual_token_refiner.blocks):
            h = block(h, c, lens, attn, attended if i == 0 else None)
        return h


class ByT5Mapper(nn.Module):
    """Official ``byt5_in``: LayerNorm -> fc1 -> GELU -> fc2 -> GELU -> fc3 (``use_residual=False``)."""

    def __init__(self, in_dim: int, hidden: int, dim: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.fc1.weight.dtype
        h = F.gelu(self.fc1(f32_layer_norm(x, self.layernorm).to(dtype)))
        return self.fc3(F.gelu(self.fc2(h))).float()


class VisionProjection(nn.Module):
    """Official ``vision_in``: LayerNorm -> Linear -> GELU -> Linear -> LayerNorm."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, in_dim),
            nn.GELU(),
            nn.Linear(in_dim, dim),
            nn.LayerNorm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm_in, fc1, act, fc2, norm_out = self.proj
        h = fc2(act(fc1(f32_layer_norm(x, norm_in).to(fc1.weight.dtype))))
        return f32_layer_norm(h, norm_out)


@dataclass(frozen=True)
class Hunyuan15Context:
    """The context of a prompt (text, glyphs, image) made ready for every step (``Hunyuan15DiT.prepare_context``).

    Pass it to :meth:`Hunyuan15DiT.forward` in place of the raw context; the result is bit for bit the one
    from the raw context (forward prepares the raw context the same way). Computed once per run: the ByT5
    and vision projections with their type embeddings, the gathering of each sample's valid tokens (and
    the host sync of the "all-zero image means no image" rule), the text refiner's input embedding, its
    pooled-text projection and its first block's attention branch. Still run every step: the rest of the
    refiner, which is conditioned on the timestep (``SingleTokenRefiner.refine``).

    text: [B, Lt, C] float32 refiner input, each sample's valid tokens first (rows past ``text_lens`` are
    padding); pooled: [B, C] float32; attended: [B, Lt, C] float32 or None (no refiner blocks);
    prefix: per sample [n_b, C] float32, the image then glyph tokens placed before the text tokens.

    Memory: float32 [Lt, C] twice plus [n_b, C] per sample (released size, C = 2048: 16 MiB per 1,000
    text tokens), on the device the DiT's context modules were on when it was made. It uses no block
    weights, so it can be made under block-sequential offload too.
    """

    text: torch.Tensor
    text_lens: tuple[int, ...]
    pooled: torch.Tensor
    attended: torch.Tensor | None
    prefix: tuple[torch.Tensor, ...]

    @property
    def batch(self) -> int:
        return len(self.text_lens)

    @staticmethod
    def cat(contexts: Sequence[Hunyuan15Context]) -> Hunyuan15Context:
        """One context for the concatenated batch (batched CFG); the text rows are re-padded to the longest."""

        def rows(name: str) -> list[torch.Tensor]:
            return [r[:n] for c in contexts for r, n in zip(getattr(c, name), c.text_lens, strict=True)]

        attended = None if contexts[0].attended is None else pad_stack(rows("attended"))[0]
        return Hunyuan15Context(
            text=pad_stack(rows("text"))[0],
            text_lens=tuple(n for c in contexts for n in c.text_lens),
            pooled=torch.cat([c.pooled for c in contexts]),
            attended=attended,
            prefix=tuple(p for c in contexts for p in c.prefix),
        )
