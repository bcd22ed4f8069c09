"""What Wan sampling starts from: the prompts' UMT5 features and the initial noise."""

from __future__ import annotations

import torch

from telefuser_cli.loading.tokenizer import tokenize
from telefuser_cli.models.umt5 import UMT5Encoder


@torch.no_grad()
def encode_text(
    encoder: UMT5Encoder, tokenizer, prompts: list[str], device: torch.device, text_len: int = 512
) -> list[torch.Tensor]:
    """Each prompt -> [L_i, dim] features trimmed to its true length (as the official wrapper does).

    The tokenizer applies the official prompt cleaning; the DiT pads back to text_len with zeros.
    """
    ids, mask = tokenize(tokenizer, prompts, max_length=text_len)
    features = encoder(ids.to(device), mask.to(device))
    lengths = mask.sum(dim=1).tolist()
    return [feature[:length] for feature, length in zip(features, lengths, strict=True)]


def initial_noise(shape: tuple[int, ...], seed: int, rand_device: str, device: torch.device) -> torch.Tensor:
    """float32 noise from a generator seeded on `rand_device` (cpu: the same video on any machine)."""
    generator = torch.Generator(device=rand_device).manual_seed(seed)
    noise = torch.randn(shape, dtype=torch.float32, generator=generator, device=rand_device)
    return noise.to(device)
