"""Latent statistics of the released Wan VAEs, one value per latent channel.

The checkpoints carry no config: the loader identifies the VAE by its latent width and takes its table
from here into ``WanVAEConfig.latent_mean`` / ``latent_std``.
"""

from __future__ import annotations

# Official ``Wan2_1_VAE`` (16 latent channels).
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

# Latent channels -> (VAE name, mean, std).
LATENT_STATS: dict[int, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    16: ("Wan2.1", WAN21_LATENT_MEAN, WAN21_LATENT_STD),
}


def latent_stats(z_dim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the released Wan VAE with ``z_dim`` latent channels."""
    if z_dim not in LATENT_STATS:
        known = ", ".join(f"{c} ({name})" for c, (name, _, _) in sorted(LATENT_STATS.items()))
        raise ValueError(f"no released Wan VAE has z_dim={z_dim} latent channels (known: {known})")
    _, mean, std = LATENT_STATS[z_dim]
    return mean, std
