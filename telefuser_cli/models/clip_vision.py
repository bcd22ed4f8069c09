"""The Wan2.1 i2v/flf2v image encoder: the visual tower of open-clip XLM-RoBERTa-large ViT-H/14.

``WanCLIPVision().state_dict()`` is the ``visual.*`` part of the official
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (the file also holds ``textual.*`` and
``log_scale``, which the DiT never uses). The DiT takes the output of the penultimate transformer block
(official ``use_31_block=True``): ``[B, 257, 1280]``. The last block, ``post_norm`` and ``head`` are part of
the layout (so the official file loads strictly) but unused by ``forward``.

Precision: LayerNorms in float32 (``x.float() ... .type_as(x)``, as the official ``LayerNorm``), the rest in
the module's dtype. No buffers: nothing to recompute after a ``meta`` build.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPVisionConfig:
    """Architecture of the visual tower (defaults: the released ViT-H/14 of Wan2.1 i2v)."""

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: float = 4.0
    out_dim: int = 1024
    num_heads: int = 16
    num_layers: int = 32
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by patch_size={self.patch_size}"
            )
        if self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.num_layers < 2:
            raise ValueError(
                f"num_layers={self.num_layers}: the features come from the penultimate block (>= 2)"
            )
        if int(self.dim * self.mlp_ratio) != self.dim * self.mlp_ratio:
            raise ValueError(f"dim={self.dim} * mlp_ratio={self.mlp_ratio} must be an integer")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        """Output tokens: the class token and one per patch (257 for 224 / 14)."""
        return self.num_patches + 1

    @property
    def mlp_dim(self) -> int:
        return int(self.dim * self.mlp_ratio)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(
        x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps
    ).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, dim * 3)  # rows: q, then k, then v
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C] -> [B, L, C]."""
        b, s, c = x.shape
        q, k, v = self.to_qkv(x).view(b, s, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, L, D], scale 1/sqrt(D)
        return self.proj(out.transpose(1, 2).reshape(b, s, c))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block with an exact-GELU MLP (``activation='gelu'`` in the ViT-H/14 config)."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg.dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.GELU(), nn.Linear(cfg.mlp_dim, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(_layer_norm(x, self.norm1))
        return x + self.mlp(_layer_norm(x, self.norm2))


class VisionTransformer(nn.Module):
    """Official ``VisionTransformer`` with ``pool_type='token'``, ``pre_norm=True`` (no patch-embedding bias)."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.dim, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.tokens, cfg.dim))
        self.pre_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.transformer = nn.Sequential(*[AttentionBlock(cfg) for _ in range(cfg.num_layers)])
        self.post_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)  # unused by the penultimate-layer features
        self.head = nn.Parameter(torch.zeros(cfg.dim, cfg.out_dim))  # unused likewise


class WanCLIPVision(nn.Module):
    """Image -> penultimate-block CLIP tokens; ``state_dict()`` keys are the official ``visual.*`` keys."""

    def __init__(self, config: CLIPVisionConfig | None = None):
        super().__init__()
        self.config = config or CLIPVisionConfig()
        self.visual = VisionTransformer(self.config)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] in [-1, 1], any size -> [B, 3, 224, 224] float32 normalised pixels.

        As the official ``CLIPModel.visual``: bicubic stretch to the square input size (``align_corners=False``,
        no antialias, no crop), back to [0, 1], then (x - mean) / std with the OpenAI CLIP statistics.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"preprocess expects [B, 3, H, W], got {tuple(images.shape)}")
        size = (self.config.image_size,) * 2
        x = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)
        x = x.mul(0.5).add(0.5)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: [B, 3, 224, 224] from ``preprocess`` -> [B, 257, dim] output of the penultimate block.

        Returned in the module's dtype (the DiT's ``img_emb`` upcasts it).
        """
        cfg, vit = self.config, self.visual
        if pixels.ndim != 4 or pixels.shape[1:] != (3, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"pixels {tuple(pixels.shape)} must be [B, 3, {cfg.image_size}, {cfg.image_size}] (use preprocess)"
            )
        dtype = vit.patch_embedding.weight.dtype
        x = vit.patch_embedding(pixels.to(dtype)).flatten(2).transpose(1, 2)  # [B, 256, C]
        x = torch.cat([vit.cls_embedding.to(dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = _layer_norm(x + vit.pos_embedding.to(dtype), vit.pre_norm)
        for block in vit.transformer[:-1]:
            x = block(x)
        return x
