"""Wan2.1 / Wan2.2 diffusion transformer (DiT), parameter names in the official checkpoint layout.

One module covers every released variant: t2v (Wan2.1 1.3B/14B, Wan2.2 A14B experts), i2v (Wan2.2 A14B:
``in_dim`` 36 with the image latents ``y`` on channels; Wan2.1 14B: also the CLIP path ``img_emb`` and the
``k_img``/``v_img`` cross-attention), flf2v (Wan2.1: CLIP features of first and last frame plus
``img_emb.emb_pos``) and ti2v (Wan2.2 5B, optionally per-token timesteps).

Precision (the official numerics under autocast): the sinusoidal time embedding and RoPE angles in float64,
the time MLP, modulation, norms, the residual stream and the output head in float32; linear layers and
attention in the run dtype, which is the dtype of ``patch_embedding.weight``.

No buffers: the RoPE table is computed from the grid shape on first use and kept in a plain attribute (one
entry, keyed by grid and device: ``ops.rope.LastRopeTable``), so a model built under ``torch.device("meta")`` is
complete after ``load_state_dict(sd, strict=True, assign=True)`` and nothing needs recomputing after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from telefuser_cli.models.wan_context import ContextCache, CrossKV
from telefuser_cli.ops.attention import AttentionFn, get_attention_fn
from telefuser_cli.ops.cpu_kernels import linear_gelu
from telefuser_cli.ops.fp32 import RMSNorm, f32_layer_norm, f32_linear
from telefuser_cli.ops.rope import LastRopeTable, apply_rope, rope_axis_dims
from telefuser_cli.ops.runtime_plan import RuntimePlan
from telefuser_cli.ops.time_embedding import sinusoidal_embedding

MODEL_TYPES = ("t2v", "i2v", "flf2v", "ti2v")
CLIP_TOKENS = 257  # tokens per image from the open-clip ViT-H/14 used by Wan2.1 i2v/flf2v


@dataclass(frozen=True)
class WanDiTConfig:
    """Architecture of a Wan DiT (field names as in the official ``config.json``)."""

    model_type: str = "t2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    # CLIP feature width (1280) when the checkpoint has `img_emb` (Wan2.1 i2v/flf2v), else None
    image_dim: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r} is not one of {MODEL_TYPES}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size={self.patch_size} must be three positive ints (t, h, w)")
        if self.num_heads < 1 or self.dim % self.num_heads != 0:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        rope_axis_dims(self.head_dim)  # raises for an odd or too small head_dim
        if self.freq_dim % 2 != 0:
            raise ValueError(f"freq_dim={self.freq_dim} must be even (cos and sin halves)")
        if self.model_type == "flf2v" and self.image_dim is None:
            raise ValueError("model_type='flf2v' needs image_dim (the CLIP width, 1280), got image_dim=None")
        if self.image_dim is not None and self.model_type not in ("i2v", "flf2v"):
            raise ValueError(
                f"image_dim={self.image_dim} (CLIP path) only exists for i2v/flf2v, "
                f"not model_type={self.model_type!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def clip_tokens(self) -> int:
        """CLIP tokens the model expects in ``clip_fea`` (0 without the CLIP path)."""
        if self.image_dim is None:
            return 0
        return 2 * CLIP_TOKENS if self.model_type == "flf2v" else CLIP_TOKENS


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, rope: torch.Tensor, attn: AttentionFn) -> torch.Tensor:
        """x: [B, L, C] run dtype; rope: [L, C/H/2] complex64 -> [B, L, C]."""
        b, seq, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, seq, self.num_heads, -1)
        k = self.norm_k(self.k(x)).view(b, seq, self.num_heads, -1)
        v = self.v(x).view(b, seq, self.num_heads, -1)
        out = attn(apply_rope(q, rope, heads_first=True), apply_rope(k, rope, heads_first=True), v)
        return self.o(out.reshape(b, seq, -1))


class CrossAttention(nn.Module):
    """Attention from video tokens to text tokens; with ``image_dim`` also to CLIP tokens (Wan2.1 i2v)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, with_image: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        if with_image:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def project(self, context: torch.Tensor, context_img: torch.Tensor | None) -> CrossKV:
        """Keys and values of the contexts. context: [B, text_len, C]; context_img: [B or 1, N_clip, C] or None."""
        n = self.num_heads
        k = self.norm_k(self.k(context)).unflatten(2, (n, -1))
        v = self.v(context).unflatten(2, (n, -1))
        if context_img is None:
            return CrossKV(k, v)
        k_img = self.norm_k_img(self.k_img(context_img)).unflatten(2, (n, -1))
        return CrossKV(k, v, k_img, self.v_img(context_img).unflatten(2, (n, -1)))

    def forward(self, x: torch.Tensor, kv: CrossKV, attn: AttentionFn) -> torch.Tensor:
        """x: [B, L, C]; kv: the keys and values of the contexts (:meth:`project`) -> [B, L, C]."""
        b, seq, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, seq, self.num_heads, -1)
        out = attn(q, kv.k, kv.v)
        if kv.k_img is not None:  # batch 1 serves the whole batch (a view, no copy)
            out = out + attn(q, kv.k_img.expand(b, -1, -1, -1), kv.v_img.expand(b, -1, -1, -1))
        return self.o(out.reshape(b, seq, -1))


class Block(nn.Module):
    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = nn.LayerNorm(dim, cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps, cfg.image_dim is not None)
        self.norm2 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        rope: torch.Tensor,
        context: torch.Tensor | CrossKV,
        context_img: torch.Tensor | None,
        self_attn: AttentionFn,
        cross_attn: AttentionFn,
    ) -> torch.Tensor:
        """x: [B, L, C] float32 residual stream, updated in place; e: [B, Lt, 6, C] float32 (Lt 1 or L).

        context: the embedded text [B, text_len, C] with context_img [B or 1, N_clip, C] or None, projected
        to keys and values here; or this block's prepared :class:`CrossKV` (context_img then unused).
        ``self_attn`` runs the video self-attention and ``cross_attn`` the text/image cross-attention (a
        sequence-parallel run swaps only the former). Returns x: [B, L, C] float32.
        """
        # The residual stream is updated in place: the caller's reference would otherwise keep a second
        # [B, L, C] float32 copy alive through the block (inference only; autograd would refuse it loudly).
        kv = context if isinstance(context, CrossKV) else self.cross_attn.project(context, context_img)
        dtype = kv.k.dtype
        shift, scale, gate, c_shift, c_scale, c_gate = (self.modulation.float() + e).unbind(2)
        h = torch.addcmul(shift, f32_layer_norm(x, self.norm1), 1 + scale).to(dtype)
        x.addcmul_(self.self_attn(h, rope, self_attn), gate)
        h = x if isinstance(self.norm3, nn.Identity) else f32_layer_norm(x, self.norm3)
        x += self.cross_attn(h.to(dtype), kv, cross_attn)
        h = torch.addcmul(c_shift, f32_layer_norm(x, self.norm2), 1 + c_scale).to(dtype)
        return x.addcmul_(self.ffn[2](linear_gelu(h, self.ffn[0])), c_gate)  # = self.ffn(h), fused


class Head(nn.Module):
    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C] float32; e: [B, Lt, C] float32 time embedding -> [B, L, out_dim * prod(patch)] float32."""
        shift, scale = (self.modulation.float() + e.unsqueeze(2)).unbind(2)
        return f32_linear(torch.addcmul(shift, f32_layer_norm(x, self.norm), 1 + scale), self.head)


class MLPProj(nn.Module):
    """CLIP image features -> context tokens (Wan2.1 ``img_emb``); ``emb_pos`` only for flf2v."""

    def __init__(self, image_dim: int, dim: int, flf: bool):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(image_dim),
            nn.Linear(image_dim, image_dim),
            nn.GELU(),
            nn.Linear(image_dim, dim),
            nn.LayerNorm(dim),
        )
        # first-frame / last-frame position embedding of flf2v; None (no state-dict key) otherwise
        self.emb_pos = nn.Parameter(torch.zeros(1, 2 * CLIP_TOKENS, image_dim)) if flf else None

    def forward(self, clip_fea: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """clip_fea: [B, N, image_dim] -> [B, N, dim] in ``dtype`` (norms in float32, linears in ``dtype``)."""
        x = clip_fea.float()
        if self.emb_pos is not None:
            x = x + self.emb_pos.float()
        norm_in, fc1, act, fc2, norm_out = self.proj
        x = fc2(act(fc1(f32_layer_norm(x, norm_in).to(dtype))))
        return f32_layer_norm(x, norm_out).to(dtype)


@dataclass
class Tokens:
    """The embedded inputs of the blocks (output of :meth:`WanDiT.embed`).

    x: [B, L, C] float32 residual stream; e: [B, Lt, C] and e0: [B, Lt, 6, C] float32 time embeddings with
    Lt = 1 or L (per-token timesteps); rope: [L, head_dim/2] complex64; context: [B, text_len, C] and
    context_img: [B or 1, N_clip, C] or None in the run dtype; kv: per-block keys and values prepared from
    them (a :class:`ContextCache` was given; context_img is then None) or None (each block projects the
    context itself); grid: (F, H, W) in patches, F*H*W == L; self_attn: the video self-attention the blocks
    call (the DiT's kernel; a sequence-parallel run swaps it).
    """

    x: torch.Tensor
    e: torch.Tensor
    e0: torch.Tensor
    rope: torch.Tensor
    context: torch.Tensor
    context_img: torch.Tensor | None
    kv: tuple[CrossKV, ...] | None
    grid: tuple[int, int, int]
    self_attn: AttentionFn


class WanDiT(nn.Module):
    """The Wan diffusion transformer; ``state_dict()`` is the official checkpoint layout."""

    # Parameter-name substrings a loader keeps in float32 when casting the rest to bf16: they are consumed in
    # float32 by the precision policy (time MLP and projection, per-block and head modulation, norm weights,
    # the small output head that the official code runs under float32 autocast, the CLIP projection's norms
    # and position embedding). All are small (< 1.5% of the 1.3B model); rounding them to bf16 would only
    # lose precision, as forward upcasts them anyway.
    keep_fp32 = (
        "time_embedding",
        "time_projection",
        "modulation",
        "norm",
        "head.head",
        "img_emb.proj.0",
        "img_emb.proj.4",
        "img_emb.emb_pos",
    )
    runtime_plan = RuntimePlan(
        blocks="blocks",
        block_type=Block,
        streams=("x",),
        branch="context",
        attention="self_attn",
        split=(("x", 1), ("e", 1), ("e0", 1), ("rope", 0)),
        heads="num_heads",
        keep_fp32=keep_fp32,
    )

    def __init__(self, config: WanDiTConfig, attn_backend: str = "TORCH_SDPA"):
        super().__init__()
        self.config = config
        self.attn_backend = attn_backend
        # the local attention kernel (raises ValueError naming the pip extra if missing)
        self.attn_fn: AttentionFn = get_attention_fn(attn_backend)
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.head = Head(config)
        if config.image_dim is not None:
            self.img_emb = MLPProj(config.image_dim, dim, flf=config.model_type == "flf2v")
        # RoPE table [F*H*W, head_dim/2] complex64 of the last (grid, device): once per run, not once per step
        self.rope = LastRopeTable(rope_axis_dims(config.head_dim))

    def _check_context(self, context: torch.Tensor, clip_fea: torch.Tensor | None) -> None:
        cfg = self.config
        if context.ndim != 3 or context.shape[1] > cfg.text_len or context.shape[2] != cfg.text_dim:
            raise ValueError(
                f"context {tuple(context.shape)} must be [B, L <= text_len={cfg.text_len}, "
                f"text_dim={cfg.text_dim}]"
            )
        if (clip_fea is None) != (cfg.image_dim is None):
            raise ValueError(
                f"clip_fea is {'missing' if clip_fea is None else 'given'} but image_dim="
                f"{cfg.image_dim}: pass clip_fea exactly when the model has the CLIP path"
            )
        if clip_fea is not None and clip_fea.shape[1:] != (cfg.clip_tokens, cfg.image_dim):
            raise ValueError(
                f"clip_fea {tuple(clip_fea.shape)} must be [B, {cfg.clip_tokens}, {cfg.image_dim}]"
            )

    def _check_inputs(self, x, timestep, context, y, clip_fea) -> None:
        cfg = self.config
        if cfg.model_type in ("i2v", "flf2v") and y is None:
            raise ValueError(f"model_type={cfg.model_type!r} needs y (image condition latents)")
        channels = x.shape[1] + (0 if y is None else y.shape[1])
        if x.ndim != 5 or channels != cfg.in_dim:
            raise ValueError(
                f"x {tuple(x.shape)} + y {None if y is None else tuple(y.shape)} must give "
                f"[B, in_dim={cfg.in_dim}, F, H, W] on channels"
            )
        if any(s % p for s, p in zip(x.shape[2:], cfg.patch_size, strict=True)):
            raise ValueError(
                f"latent size {tuple(x.shape[2:])} must be divisible by patch_size={cfg.patch_size}"
            )
        if isinstance(context, ContextCache):
            if len(context.kv) != len(self.blocks):
                raise ValueError(
                    f"the context cache holds {len(context.kv)} blocks' keys and values; this DiT has "
                    f"{len(self.blocks)} blocks: prepare the context with the DiT that runs it"
                )
            if context.clip_fea is not clip_fea:
                raise ValueError(
                    "the context cache was prepared from other clip_fea: pass forward the same clip_fea "
                    "tensor that went to prepare_context"
                )
            if context.batch != x.shape[0]:
                raise ValueError(f"the context cache has batch {context.batch}, x has batch {x.shape[0]}")
        else:
            self._check_context(context, clip_fea)
        for name, cond in (("y", y), ("clip_fea", clip_fea)):
            if cond is not None and cond.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"{name} has batch {cond.shape[0]}; it must be 1 or x's batch {x.shape[0]}")
        if timestep.ndim not in (1, 2) or timestep.shape[0] != x.shape[0]:
            raise ValueError(f"timestep {tuple(timestep.shape)} must be [B] or [B, L] with B={x.shape[0]}")

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor | ContextCache,
        y: torch.Tensor | None = None,
        clip_fea: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow (velocity) for latents ``x``.

        x: [B, C, F, H, W] latents (float32; cast to the run dtype inside).
        timestep: [B] float32 in [0, 1000], or [B, L] per video token (Wan2.2 ti2v, L = F*H*W / prod(patch)).
        context: [B, L_text, text_dim] text features, L_text <= text_len; zero-padded to text_len here. Or
            the :class:`ContextCache` of them from :meth:`prepare_context` (the same result, less work).
        y: [B or 1, C_y, F, H, W] condition latents concatenated on channels (i2v/flf2v), C + C_y == in_dim;
            batch 1 serves every sample (batched CFG: one image condition for both halves).
        clip_fea: [B or 1, 257, image_dim] CLIP features (Wan2.1 i2v) or [B, 514, image_dim] first-frame tokens
            followed by last-frame tokens (flf2v).
        Returns [B, out_dim, F, H, W] float32.
        """
        tokens = self.embed(x, timestep, context, y, clip_fea)
        for i in range(len(self.blocks)):
            tokens = self.run_block(i, tokens)
        return self.unpatchify(self.project_out(tokens), tokens)

    def prepare_context(self, context: torch.Tensor, clip_fea: torch.Tensor | None = None) -> ContextCache:
        """Embed the text (and CLIP) context and project it to every block's cross-attention keys and values.

        context, clip_fea: as :meth:`forward` takes them. Call it where the weights are (after an offloaded
        DiT came to its device); the cache tensors are made there. See :class:`ContextCache` for the memory.
        """
        self._check_context(context, clip_fea)
        context, context_img = self._embed_context(context, clip_fea)
        kv = tuple(block.cross_attn.project(context, context_img) for block in self.blocks)
        return ContextCache(context, clip_fea, kv)

    def _embed_context(
        self, context: torch.Tensor, clip_fea: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, L_text, text_dim] -> [B, text_len, C]; clip_fea [B or 1, N, image_dim] -> [B or 1, N, C] or None."""
        dtype = self.patch_embedding.weight.dtype
        # official behaviour: zero-pad to text_len; the padded tokens are attended to (no mask)
        context = F.pad(context.to(dtype), (0, 0, 0, self.config.text_len - context.shape[1]))
        context_img = None if clip_fea is None else self.img_emb(clip_fea, dtype)
        return self.text_embedding(context), context_img

    # The stages below are the seam for transformations applied from outside (``runtime_plan``: sequence
    # parallelism shards `Tokens` after embed and gathers project_out's output); forward is their chain.

    def embed(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor | ContextCache,
        y: torch.Tensor | None = None,
        clip_fea: torch.Tensor | None = None,
    ) -> Tokens:
        """Check the inputs (as forward documents them) and embed latents, time, text and image."""
        self._check_inputs(x, timestep, context, y, clip_fea)
        cfg = self.config
        dtype = self.patch_embedding.weight.dtype
        if y is not None:
            x = torch.cat([x, y.expand(x.shape[0], *y.shape[1:])], dim=1)
        grid = tuple(s // p for s, p in zip(x.shape[2:], cfg.patch_size, strict=True))
        # [B, L, C] float32 residual stream. The convolution runs per sample: oneDNN picks another algorithm
        # for batch 2 than for batch 1 (~1e-6 apart), which would make batched CFG differ from two passes.
        x = torch.cat([self.patch_embedding(xi[None].to(dtype)) for xi in x])
        x = x.flatten(2).transpose(1, 2).float().contiguous()
        rope = self.rope(grid, x.device)

        # time: float64 sinusoid, float32 MLP; e: [B, Lt, C], e0: [B, Lt, 6, C] with Lt = 1 or L
        t = timestep if timestep.ndim == 2 else timestep[:, None]
        # Per sample, like the patch embedding: a [1, freq] row goes through a matrix-vector kernel and [2, freq]
        # through a matrix-matrix one, which round differently; batched CFG must equal two passes.
        e, e0 = [], []
        for row in t:
            sin = sinusoidal_embedding(row, cfg.freq_dim).float()
            e.append(f32_linear(F.silu(f32_linear(sin, self.time_embedding[0])), self.time_embedding[2]))
            e0.append(f32_linear(F.silu(e[-1]), self.time_projection[1]))
        e = torch.stack(e)
        e0 = torch.stack(e0).unflatten(2, (6, cfg.dim))

        if isinstance(context, ContextCache):
            return Tokens(x, e, e0, rope, context.context, None, context.kv, grid, self.attn_fn)
        # clip_fea of batch 1 is projected once and serves the whole batch
        context, context_img = self._embed_context(context, clip_fea)
        return Tokens(x, e, e0, rope, context, context_img, None, grid, self.attn_fn)

    def run_block(self, i: int, tokens: Tokens) -> Tokens:
        """Block ``i`` over the residual stream ``tokens.x`` [B, L, C] float32 (updated in place)."""
        if tokens.kv is None:
            context, context_img = tokens.context, tokens.context_img
        else:
            context, context_img = tokens.kv[i], None
        block = self.blocks[i]
        tokens.x = block(
            tokens.x, tokens.e0, tokens.rope, context, context_img, tokens.self_attn, self.attn_fn
        )
        return tokens

    def project_out(self, tokens: Tokens) -> torch.Tensor:
        """The head, per token: [B, L, C] -> [B, L, out_dim * prod(patch)] float32."""
        return self.head(tokens.x, tokens.e)

    def unpatchify(self, out: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        """Head output [B, F*H*W, out_dim * prod(patch)] on the patch grid ``tokens.grid`` (F, H, W)
        -> [B, out_dim, F', H', W']."""
        cfg = self.config
        pt, ph, pw = cfg.patch_size
        f, h, w = tokens.grid
        x = out.view(out.shape[0], f, h, w, pt, ph, pw, cfg.out_dim).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(out.shape[0], cfg.out_dim, f * pt, h * ph, w * pw)
