"""HunyuanVideo 1.5 diffusion transformer, parameter names in the official checkpoint layout.

The official layout (``HunyuanVideo_1_5_DiffusionTransformer`` of Tencent-Hunyuan/HunyuanVideo-1.5, files
``transformer/<variant>/diffusion_pytorch_model.safetensors``) was read from the official model code and from
diffusers' converter ``scripts/convert_hunyuan_video1_5_to_diffusers.py``; ``model.state_dict()`` is that layout.
Every released variant (480p/720p, t2v/i2v, cfg-distilled, step-distilled) has 54 dual-stream
``double_blocks`` and no single-stream blocks, so ``mm_single_blocks_depth`` must be 0 here (the official
code would run single-stream blocks after the dual-stream ones; none are shipped, and diffusers' reference
has none, so there would be nothing to test them against).

Conditioning: the latent input ``x`` is ``cat([latents, cond_latents, cond_mask])`` on channels (65 = 2*32+1,
``concat_condition``); text tokens come from the Qwen2.5-VL features through the token refiner ``txt_in``,
glyph tokens from ByT5 through ``byt5_in``, image tokens from SigLIP features through ``vision_in`` (i2v);
``cond_type_embedding`` tags the three kinds. The step-distilled (meanflow) model adds ``time_r_in``.

Padding: the official model reorders each sample's context so valid tokens come first and masks the rest
as attention keys; padded context tokens therefore never change a video token. Here each sample's valid
context tokens are gathered once (mask -> lengths) and attention runs on ``[video tokens, valid context]``,
one call for the batch when all samples have the same number of valid tokens, else one call per sample,
so every backend of :mod:`telefuser_cli.ops.attention` (no masks) gives the exact result.

Precision (the project policy): the sinusoidal time embedding and RoPE angles in float64; the time MLPs,
modulation, norms, both residual streams and the output head in float32; the other linear layers and
attention in the run dtype, which is the dtype of ``img_in.proj.weight``.

Per run, not per step: :meth:`Hunyuan15DiT.prepare_context` computes what of the context does not depend on
the timestep (see :class:`Hunyuan15Context`), and the RoPE table is built once per grid and device. The
context modules (refiner, glyph and image projections) and the prepared context are in
:mod:`telefuser_cli.models.hunyuan15_context`.

No buffers: the RoPE table is computed from the grid shape on first use and kept in a plain attribute, so a
model built under ``torch.device("meta")`` is complete after ``load_state_dict(sd, strict=True, assign=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from telefuser_cli.models.hunyuan15_context import (
    MLP,
    ByT5Mapper,
    Hunyuan15Context,
    SingleTokenRefiner,
    TimestepEmbedder,
    VisionProjection,
    attend_valid,
    pad_stack,
)
from telefuser_cli.ops.attention import AttentionFn, get_attention_fn
from telefuser_cli.ops.fp32 import RMSNorm, f32_layer_norm, f32_linear
from telefuser_cli.ops.rope import LastRopeTable, apply_rope
from telefuser_cli.ops.runtime_plan import RuntimePlan


@dataclass(frozen=True)
class Hunyuan15DiTConfig:
    """Architecture of a HunyuanVideo 1.5 DiT (field names as in the official transformer ``config.json``)."""

    patch_size: tuple[int, int, int] = (1, 1, 1)
    in_channels: int = 32  # latent channels
    # the patch embedding sees [latents, cond latents, cond mask]: 2 * in_channels + 1 channels
    concat_condition: bool = True
    out_channels: int = 32
    hidden_size: int = 2048
    heads_num: int = 16
    mlp_width_ratio: float = 4.0
    mm_double_blocks_depth: int = 54
    mm_single_blocks_depth: int = 0
    rope_dim_list: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0
    qkv_bias: bool = True
    text_states_dim: int = 3584
    refiner_depth: int = 2  # official SingleTokenRefiner(depth=2)
    # ByT5 glyph path (`byt5_in`, official glyph_byT5_v2): input width 1472, hidden width 2048; None = absent
    byt5_dim: int | None = 1472
    byt5_hidden_dim: int = 2048
    # SigLIP image features (`vision_in`, official vision_projection="linear"); None = absent
    vision_states_dim: int | None = 1152
    use_cond_type_embedding: bool = True
    use_meanflow: bool = False  # `time_r_in` (step-distilled 480p i2v)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        object.__setattr__(self, "rope_dim_list", tuple(self.rope_dim_list))
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size={self.patch_size} must be three positive ints (t, h, w)")
        if self.heads_num < 1 or self.hidden_size % self.heads_num:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by heads_num={self.heads_num}"
            )
        if len(self.rope_dim_list) != 3 or sum(self.rope_dim_list) != self.head_dim:
            raise ValueError(
                f"rope_dim_list={self.rope_dim_list} must be three dims summing to the head dim "
                f"hidden_size/heads_num={self.head_dim}"
            )
        if any(d % 2 for d in self.rope_dim_list):
            raise ValueError(f"rope_dim_list={self.rope_dim_list} must be even (channel pairs are rotated)")
        if self.mm_single_blocks_depth != 0:
            raise ValueError(
                f"mm_single_blocks_depth={self.mm_single_blocks_depth}: single-stream blocks are not "
                "implemented (no released HunyuanVideo 1.5 checkpoint has them)"
            )
        if self.use_cond_type_embedding and (self.byt5_dim is None or self.vision_states_dim is None):
            raise ValueError(
                "use_cond_type_embedding=True needs the ByT5 and vision paths (official assertion), got "
                f"byt5_dim={self.byt5_dim}, vision_states_dim={self.vision_states_dim}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads_num

    @property
    def patch_in_channels(self) -> int:
        """Channels of the ``x`` that forward takes."""
        return 2 * self.in_channels + 1 if self.concat_condition else self.in_channels

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.hidden_size * self.mlp_width_ratio)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 ``LN(x) * (1 + scale) + shift``; x: [B, L, C], shift/scale: [B, C]."""
    return torch.addcmul(shift[:, None], f32_layer_norm(x), 1 + scale[:, None])


class ModulateDiT(nn.Module):
    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.linear = nn.Linear(dim, factor * dim)

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        return f32_linear(F.silu(vec), self.linear)


class PatchEmbed(nn.Module):
    def __init__(self, patch: tuple[int, int, int], in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, patch, stride=patch)


class DoubleStreamBlock(nn.Module):
    """Official ``MMDoubleStreamBlock``: separate weights for video and context tokens, joint attention."""

    def __init__(self, cfg: Hunyuan15DiTConfig):
        super().__init__()
        dim, hd, bias = cfg.hidden_size, cfg.head_dim, cfg.qkv_bias
        self.heads = cfg.heads_num
        for side in ("img", "txt"):
            setattr(self, f"{side}_mod", ModulateDiT(dim, 6))
            for name in ("q", "k", "v"):
                setattr(self, f"{side}_attn_{name}", nn.Linear(dim, dim, bias=bias))
            setattr(self, f"{side}_attn_q_norm", RMSNorm(hd))
            setattr(self, f"{side}_attn_k_norm", RMSNorm(hd))
            setattr(self, f"{side}_attn_proj", nn.Linear(dim, dim, bias=bias))
            setattr(self, f"{side}_mlp", MLP(dim, cfg.mlp_hidden_dim, nn.GELU(approximate="tanh")))

    def _qkv(self, side: str, x: torch.Tensor, shift, scale, dtype):
        h = _modulate(x, shift, scale).to(dtype)
        q = getattr(self, f"{side}_attn_q")(h).unflatten(-1, (self.heads, -1))
        k = getattr(self, f"{side}_attn_k")(h).unflatten(-1, (self.heads, -1))
        v = getattr(self, f"{side}_attn_v")(h).unflatten(-1, (self.heads, -1))
        return getattr(self, f"{side}_attn_q_norm")(q), getattr(self, f"{side}_attn_k_norm")(k), v

    def forward(self, img, txt, vec, rope, lens, attn: AttentionFn):
        """img: [B, L, C], txt: [B, Lc, C] float32 streams; vec: [B, C]; rope: [L, D/2] complex64;
        lens: valid context tokens per sample (None: all). Returns the updated (img, txt), float32."""
        dtype = self.img_attn_q.weight.dtype
        i_mod = self.img_mod(vec).chunk(6, dim=-1)  # shift, scale, gate (attention), shift, scale, gate (MLP)
        t_mod = self.txt_mod(vec).chunk(6, dim=-1)
        iq, ik, iv = self._qkv("img", img, i_mod[0], i_mod[1], dtype)
        tq, tk, tv = self._qkv("txt", txt, t_mod[0], t_mod[1], dtype)
        iq, ik = apply_rope(iq, rope), apply_rope(ik, rope)
        seq = img.shape[1]
        joint = None if lens is None else [seq + n for n in lens]
        out = attend_valid(
            attn, torch.cat([iq, tq], 1), torch.cat([ik, tk], 1), torch.cat([iv, tv], 1), joint
        )
        out = out.flatten(2)
        img = img + self.img_attn_proj(out[:, :seq]).float() * i_mod[2][:, None]
        txt = txt + self.txt_attn_proj(out[:, seq:]).float() * t_mod[2][:, None]
        img = img + self.img_mlp(_modulate(img, i_mod[3], i_mod[4]).to(dtype)).float() * i_mod[5][:, None]
        txt = txt + self.txt_mlp(_modulate(txt, t_mod[3], t_mod[4]).to(dtype)).float() * t_mod[5][:, None]
        return img, txt


class FinalLayer(nn.Module):
    def __init__(self, cfg: Hunyuan15DiTConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.linear = nn.Linear(dim, math.prod(cfg.patch_size) * cfg.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C] float32; vec: [B, C] -> [B, L, prod(patch) * out_channels] float32."""
        shift, scale = f32_linear(F.silu(vec), self.adaLN_modulation[1]).chunk(2, dim=-1)
        return f32_linear(_modulate(x, shift, scale), self.linear)


@dataclass
class Hunyuan15Tokens:
    """The embedded inputs of the double-stream blocks (output of :meth:`Hunyuan15DiT.embed`).

    img: [B, L, C] float32 video stream; txt: [B, Lc, C] float32 context stream (each sample's valid
    [image, glyph, text] tokens first); vec: [B, C] float32 time (and meanflow) embedding; rope: [L, D/2]
    complex64; lens: valid context tokens per sample (None: all); branch: the prepared context's refiner
    input [B, Lt, C], which tells guidance branches apart; grid: (F, H, W) in patches, F*H*W == L;
    attn: the attention kernel of the blocks' joint attention.
    """

    img: torch.Tensor
    txt: torch.Tensor
    vec: torch.Tensor
    rope: torch.Tensor
    lens: list[int] | None
    branch: torch.Tensor
    grid: tuple[int, int, int]
    attn: AttentionFn


class Hunyuan15DiT(nn.Module):
    """The HunyuanVideo 1.5 transformer; ``state_dict()`` is the official checkpoint layout."""

    # Parameter-name substrings a loader keeps in float32 when casting the rest to bf16: small weights consumed
    # in float32 by the precision policy (time MLPs, the refiner's conditioning and gates, the final
    # modulation and head, norm weights), ~50M parameters at full size. The per-block img_mod/txt_mod
    # linears (2.7B of the 8.3B parameters) stay in the run dtype and are upcast per call instead.
    keep_fp32 = (
        "time_in",
        "time_r_in",
        "t_embedder",
        "c_embedder",
        "adaLN_modulation",
        "norm",
        "final_layer.linear",
        "vision_in.proj.0",
        "vision_in.proj.4",
        "byt5_in.layernorm",
        "cond_type_embedding",
    )
    # Sequence parallelism is not declared (no ``split``): the joint attention over video and per-sample
    # context tokens would need its own split; the family refuses sp degrees > 1 before loading.
    runtime_plan = RuntimePlan(
        blocks="double_blocks",
        block_type=DoubleStreamBlock,
        streams=("img",),  # the context stream is not read after the last block: nothing to cache for it
        branch="branch",
        attention="attn",
        heads="heads_num",
        keep_fp32=keep_fp32,
    )

    def __init__(self, config: Hunyuan15DiTConfig, attn_backend: str = "TORCH_SDPA"):
        super().__init__()
        cfg = self.config = config
        self.attn_backend = attn_backend
        self._attn = get_attention_fn(attn_backend)  # raises ValueError naming the pip extra if missing
        dim = cfg.hidden_size
        self.img_in = PatchEmbed(cfg.patch_size, cfg.patch_in_channels, dim)
        self.txt_in = SingleTokenRefiner(cfg.text_states_dim, dim, cfg.heads_num, cfg.refiner_depth)
        self.time_in = TimestepEmbedder(dim)
        if cfg.use_meanflow:
            self.time_r_in = TimestepEmbedder(dim)
        if cfg.byt5_dim is not None:
            self.byt5_in = ByT5Mapper(cfg.byt5_dim, cfg.byt5_hidden_dim, dim)
        if cfg.vision_states_dim is not None:
            self.vision_in = VisionProjection(cfg.vision_states_dim, dim)
        if cfg.use_cond_type_embedding:
            self.cond_type_embedding = nn.Embedding(3, dim)  # 0: text, 1: ByT5 glyphs, 2: image
        self.double_blocks = nn.ModuleList(
            [DoubleStreamBlock(cfg) for _ in range(cfg.mm_double_blocks_depth)]
        )
        self.final_layer = FinalLayer(cfg)
        # RoPE table of the last (grid, device): once per run, not once per step
        self.rope = LastRopeTable(cfg.rope_dim_list, cfg.rope_theta)

    def _check_context(self, text_states, text_mask, byt5_states, byt5_mask, image_embeds) -> None:
        cfg = self.config
        if text_states.ndim != 3 or text_states.shape[2] != cfg.text_states_dim:
            raise ValueError(f"text_states {tuple(text_states.shape)} must be [B, L, {cfg.text_states_dim}]")
        if text_mask is None or text_mask.shape != text_states.shape[:2]:
            raise ValueError(f"text_mask must be given with shape {tuple(text_states.shape[:2])}")
        b = text_states.shape[0]
        if byt5_states is not None:
            if cfg.byt5_dim is None:
                raise ValueError("byt5_states given but the model has no byt5_in")
            if byt5_states.ndim != 3 or byt5_states.shape[0] != b or byt5_states.shape[2] != cfg.byt5_dim:
                raise ValueError(f"byt5_states {tuple(byt5_states.shape)} must be [B, L, {cfg.byt5_dim}]")
            if byt5_mask is None or byt5_mask.shape != byt5_states.shape[:2]:
                raise ValueError(f"byt5_mask must be given with shape {tuple(byt5_states.shape[:2])}")
        if image_embeds is not None:
            if cfg.vision_states_dim is None:
                raise ValueError("image_embeds given but the model has no vision_in")
            if (
                image_embeds.ndim != 3
                or image_embeds.shape[0] != b
                or image_embeds.shape[2] != cfg.vision_states_dim
            ):
                raise ValueError(
                    f"image_embeds {tuple(image_embeds.shape)} must be [B, N, {cfg.vision_states_dim}]"
                )

    def _check_inputs(self, x, timestep, context: Hunyuan15Context, t_r) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.patch_in_channels:
            raise ValueError(
                f"x {tuple(x.shape)} must be [B, {cfg.patch_in_channels}, F, H, W] "
                f"(latents, cond latents and cond mask on channels)"
            )
        if any(s % p for s, p in zip(x.shape[2:], cfg.patch_size, strict=True)):
            raise ValueError(
                f"latent size {tuple(x.shape[2:])} must be divisible by patch_size={cfg.patch_size}"
            )
        b = x.shape[0]
        if timestep.shape != (b,) or (t_r is not None and t_r.shape != (b,)):
            raise ValueError(f"timestep (and timestep_r) must be [B={b}], got {tuple(timestep.shape)}")
        if t_r is not None and not cfg.use_meanflow:
            raise ValueError("timestep_r given but the model has no time_r_in (use_meanflow=False)")
        if context.batch != b:
            raise ValueError(f"the context has batch {context.batch}, x has batch {b}")

    def prepare_context(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor,
        byt5_states: torch.Tensor | None = None,
        byt5_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
    ) -> Hunyuan15Context:
        """Everything of the context that does not depend on the timestep (see :class:`Hunyuan15Context`).

        Arguments as :meth:`forward` takes them. Call it where the weights are (after an offloaded DiT came
        to its device), once per run and prompt; it syncs with the host once (the image rule).
        """
        self._check_context(text_states, text_mask, byt5_states, byt5_mask, image_embeds)
        cfg = self.config
        rows, lens = pad_stack([s[m.bool()] for s, m in zip(text_states, text_mask, strict=True)])
        if min(lens) == 0:
            raise ValueError("text_mask has a sample with no valid token")
        text, pooled, attended = self.txt_in.prepare(rows, lens, self._attn)
        type_emb = self.cond_type_embedding.weight.float() if cfg.use_cond_type_embedding else None
        prefix: list[list[torch.Tensor]] = [[] for _ in lens]  # per sample: [image tokens, glyph tokens]
        # official rule: all-zero image features mean "no image" (t2v) and their tokens are masked out
        if image_embeds is not None and bool(image_embeds.any()):
            image = self.vision_in(image_embeds)
            if type_emb is not None:
                image = image + type_emb[2]
            for parts, tokens in zip(prefix, image, strict=True):
                parts.append(tokens)
        if byt5_states is not None:
            glyph = self.byt5_in(byt5_states)
            if type_emb is not None:
                glyph = glyph + type_emb[1]
            for parts, tokens, mask in zip(prefix, glyph, byt5_mask, strict=True):
                parts.append(tokens[mask.bool()])
        empty = text.new_zeros(0, text.shape[-1])
        joined = tuple(torch.cat(parts) if parts else empty for parts in prefix)
        return Hunyuan15Context(text, tuple(lens), pooled, attended, joined)

    def _context_tokens(self, context: Hunyuan15Context, timestep: torch.Tensor):
        """Valid context tokens per sample, ordered [image, glyphs, text]: ([B, Lc, C] float32, lengths)."""
        lens = list(context.text_lens)
        text = self.txt_in.refine(context.text, context.pooled, context.attended, lens, timestep, self._attn)
        rows = [text[b, :n] for b, n in enumerate(lens)]
        if self.config.use_cond_type_embedding:
            rows = [r + self.cond_type_embedding.weight.float()[0] for r in rows]
        return pad_stack([torch.cat([p, r]) for p, r in zip(context.prefix, rows, strict=True)])

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor | Hunyuan15Context,
        text_mask: torch.Tensor | None = None,
        byt5_states: torch.Tensor | None = None,
        byt5_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        timestep_r: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow (velocity).

        x: [B, 2*in_channels+1, F, H, W] = cat([latents, cond latents, cond mask]) on channels (zeros for
            t2v), or [B, in_channels, F, H, W] without ``concat_condition``.
        timestep: [B] float32 in [0, 1000]. timestep_r: [B] the meanflow reference time (``time_r_in``).
        text_states: [B, L, text_states_dim] Qwen2.5-VL features; text_mask: [B, L] (1/True = valid).
        byt5_states: [B, Lg, byt5_dim] ByT5 glyph features with byt5_mask [B, Lg]; None = no glyph tokens.
        image_embeds: [B, N, vision_states_dim] SigLIP features (i2v); None or all zeros = no image tokens.
        Or, in place of text_states .. image_embeds (left None), the :class:`Hunyuan15Context` of them from
        :meth:`prepare_context`: the same result, less work per step.
        Returns [B, out_channels, F, H, W] float32.
        """
        tokens = self.embed(
            x, timestep, text_states, text_mask, byt5_states, byt5_mask, image_embeds, timestep_r
        )
        for i in range(len(self.double_blocks)):
            tokens = self.run_block(i, tokens)
        return self.unpatchify(self.project_out(tokens), tokens)

    # The stages below are the seam for transformations applied from outside (``runtime_plan``); forward is
    # their chain.

    def embed(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor | Hunyuan15Context,
        text_mask: torch.Tensor | None = None,
        byt5_states: torch.Tensor | None = None,
        byt5_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        timestep_r: torch.Tensor | None = None,
    ) -> Hunyuan15Tokens:
        """Check the inputs (as forward documents them) and embed latents, time and context."""
        if isinstance(text_states, Hunyuan15Context):
            if any(a is not None for a in (text_mask, byt5_states, byt5_mask, image_embeds)):
                raise ValueError("a prepared Hunyuan15Context replaces text_mask, byt5_* and image_embeds")
            context = text_states
        else:
            context = self.prepare_context(text_states, text_mask, byt5_states, byt5_mask, image_embeds)
        self._check_inputs(x, timestep, context, timestep_r)
        cfg = self.config
        dtype = self.img_in.proj.weight.dtype
        grid = tuple(s // p for s, p in zip(x.shape[2:], cfg.patch_size, strict=True))
        img = self.img_in.proj(x.to(dtype)).flatten(2).transpose(1, 2).float()  # [B, L, C]
        rope = self.rope(grid, x.device)

        vec = self.time_in(timestep)
        if timestep_r is not None:
            vec = vec + self.time_r_in(timestep_r)
        txt, lens = self._context_tokens(context, timestep)
        lens = None if min(lens) == txt.shape[1] else lens
        return Hunyuan15Tokens(img, txt, vec, rope, lens, context.text, grid, self._attn)

    def run_block(self, i: int, tokens: Hunyuan15Tokens) -> Hunyuan15Tokens:
        """Double-stream block ``i`` over both streams."""
        tokens.img, tokens.txt = self.double_blocks[i](
            tokens.img, tokens.txt, tokens.vec, tokens.rope, tokens.lens, tokens.attn
        )
        return tokens

    def project_out(self, tokens: Hunyuan15Tokens) -> torch.Tensor:
        """The final layer, per video token: [B, L, prod(patch) * out_channels] float32."""
        return self.final_layer(tokens.img, tokens.vec)

    def unpatchify(self, out: torch.Tensor, tokens: Hunyuan15Tokens) -> torch.Tensor:
        """[B, F*H*W, prod(patch) * out_channels] on the grid ``tokens.grid`` -> [B, out_channels, F', H', W']."""
        cfg = self.config
        b = out.shape[0]
        pt, ph, pw = cfg.patch_size
        f, h, w = tokens.grid
        out = out.view(b, f, h, w, cfg.out_channels, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(b, cfg.out_channels, f * pt, h * ph, w * pw)
