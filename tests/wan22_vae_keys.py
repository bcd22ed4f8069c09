"""Official Wan2.2 VAE key names -> diffusers' ``AutoencoderKLWan(is_residual=True)`` names.

diffusers ships no converter for the Wan2.2 VAE (``convert_wan_vae_to_diffusers`` is Wan2.1's), so the
parity tests and the decode benchmark map the keys here, from both codebases' module names, and build
diffusers' model in its Wan2.2 configuration here (``diffusers_wan22_vae``).
"""

from __future__ import annotations

import re

_RESNET = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2", "residual.6": "conv2",
           "shortcut": "conv_shortcut"}  # fmt: skip
_SIDE = {"conv1": "conv_in", "head.0": "norm_out", "head.2": "conv_out"}
_LEVEL = re.compile(r"(encoder|decoder)\.(?:down|up)samples\.(\d+)\.(?:down|up)samples\.(\d+)\.(.+)")


def _block(rest: str) -> str:
    for src, dst in _RESNET.items():
        if rest.startswith(src + "."):
            return dst + rest[len(src) :]
    raise KeyError(rest)


def wan22_vae_to_diffusers(state_dict: dict, num_res_blocks: int) -> dict:
    """The same tensors under diffusers' names (``num_res_blocks``: the encoder's per level)."""
    out = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(r"conv([12])\.(.+)", key):
            new = f"{'quant_conv' if m[1] == '1' else 'post_quant_conv'}.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.(conv1|head\.[02])\.(.+)", key):
            new = f"{m[1]}.{_SIDE[m[2]]}.{m[3]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.middle\.(\d)\.(.+)", key):
            i = int(m[2])
            new = f"{m[1]}.mid_block." + (
                f"attentions.0.{m[3]}" if i == 1 else f"resnets.{i // 2}.{_block(m[3])}"
            )
        elif m := _LEVEL.fullmatch(key):
            side, level, i, rest = m[1], m[2], int(m[3]), m[4]
            blocks, sampler = (
                ("down_blocks", "downsampler") if side == "encoder" else ("up_blocks", "upsampler")
            )
            # A level's Resample follows its residual blocks (one more of them in the decoder).
            n = num_res_blocks + (side == "decoder")
            new = f"{side}.{blocks}.{level}." + (
                f"{sampler}.{rest}" if i == n else f"resnets.{i}.{_block(rest)}"
            )
        else:
            raise KeyError(key)
        out[new] = value
    return out


def diffusers_wan22_vae(cfg, state_dict: dict | None = None):
    """diffusers' ``AutoencoderKLWan`` in its Wan2.2 configuration for our ``Wan22VAEConfig`` (residual
    levels, 2x2 patch around 12 channels, 16x spatial, the 48-entry mean/std); with ``state_dict`` (official
    key names) its weights are those."""
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(
        base_dim=cfg.dim, decoder_base_dim=cfg.decoder_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult),
        num_res_blocks=cfg.num_res_blocks, temperal_downsample=list(cfg.temperal_downsample),
        latents_mean=list(cfg.latent_mean), latents_std=list(cfg.latent_std), is_residual=True,
        in_channels=12, out_channels=12, patch_size=cfg.patch_size, scale_factor_temporal=4,
        scale_factor_spatial=cfg.spatial_compression,
    )  # fmt: skip
    if state_dict is not None:
        vae.load_state_dict(wan22_vae_to_diffusers(dict(state_dict), cfg.num_res_blocks), strict=True)
    return vae.eval()
