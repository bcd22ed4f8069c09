"""Wan2.2 TI2V-5B image-to-video: the image becomes the first latent frame, held fixed, as the official
``wan/textimage2video.py`` (``WanTI2V.i2v``) does.

One run: ``ti2v_size`` (the image's aspect ratio within the resolution's pixel budget, in multiples of the
DiT's patch x the VAE's stride, 32) -> ``cover_crop`` (Lanczos resize that covers the size, centre crop) ->
the VAE's normalised latent of that single frame -> ``FirstFrame``: frame 0 of the starting latents is
that latent, its tokens get timestep 0 while the others get the step's timestep, and after every scheduler
step frame 0 is set back to it (the scheduler steps on the scalar timestep, over all frames).

Differs from the Wan2.1 / A14B image-to-video (``image_cond.py``): no condition channels beside the noise
(the DiT takes 48 channels, not 48 + mask), no CLIP, and its own sizing rule (cover and crop, never stretch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from telefuser_cli.errors import UserError
from telefuser_cli.io.image_file import read_rgb


def ti2v_size(image_w: int, image_h: int, max_area: int, step_w: int, step_h: int) -> tuple[int, int]:
    """The official ``best_output_size``: (width, height) in multiples of ``step_w`` / ``step_h``, area at most
    ``max_area``, closest to the image's aspect ratio.

    Two candidates: round the ideal width down to its step and fit the height to the budget, or the height
    first then the width; the one whose aspect ratio is closer (as a ratio, either way round) wins; on a
    tie the height-first one. Floating-point arithmetic in the official order, so the rounding is the same.
    """
    ratio = image_w / image_h
    ideal_w = (max_area * ratio) ** 0.5
    ideal_h = max_area / ideal_w
    w1 = int(ideal_w // step_w * step_w)
    h2 = int(ideal_h // step_h * step_h)
    if w1 < step_w or h2 < step_h:
        raise UserError(
            f"an image of {image_w}x{image_h} under a pixel budget of {max_area} leaves no "
            f"{step_w}x{step_h}-aligned size: the aspect ratio is too extreme for this resolution; crop the "
            "image or choose a larger resolution"
        )
    h1 = int(max_area / w1 // step_h * step_h)
    w2 = int(max_area / h2 // step_w * step_w)
    if min(h1, w2) < 1:
        raise UserError(
            f"an image of {image_w}x{image_h} is too wide or too tall for a pixel budget of {max_area}; "
            "crop the image or choose a larger resolution"
        )
    off1 = max(ratio / (w1 / h1), (w1 / h1) / ratio)
    off2 = max(ratio / (w2 / h2), (w2 / h2) / ratio)
    return (w1, h1) if off1 < off2 else (w2, h2)


def cover_crop(rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
    """[H, W, 3] uint8 -> float32 [3, height, width] in [-1, 1]: scaled (Lanczos, Pillow) by the factor that
    makes it cover ``width x height`` (sides rounded half to even, as Python's ``round``), then the centre
    ``width x height`` cut out (the odd pixel goes to the right and bottom), exactly as the official code."""
    from PIL import Image

    image = Image.fromarray(rgb)
    scale = max(width / image.width, height / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    image = image.crop((left, top, left + width, top + height))
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).to(torch.float32).div(255)
    return pixels.sub_(0.5).div_(0.5)


@dataclass
class FirstFrame:
    """The image's latent pinned as frame 0 of the video latents.

    latent: [1, z_dim, 1, h, w] float32 (normalised, the posterior mean: never sampled).
    patch: the DiT's (t, h, w) patch, to count frame 0's tokens.
    """

    latent: torch.Tensor
    width: int
    height: int
    vae_stride: int
    patch: tuple[int, int, int]

    def latent_shape(self, channels: int, frames: int) -> tuple[int, int, int, int]:
        return (channels, frames, self.height // self.vae_stride, self.width // self.vae_stride)

    def pin(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents`` [B, C, T, h, w] with frame 0 replaced by the image latent (a new tensor: the
        scheduler may keep the old one)."""
        first = self.latent.to(latents.device, latents.dtype).expand(latents.shape[0], -1, -1, -1, -1)
        return torch.cat([first, latents[:, :, 1:]], dim=2)

    def after_step(self, latents: torch.Tensor, step) -> torch.Tensor:
        """The sampling loop's hook: the scheduler moved frame 0 too; set it back."""
        return self.pin(latents)

    def token_timesteps(self, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """[B] timesteps -> [B, L] per video token: 0 on frame 0's tokens (they are clean), ``t`` elsewhere.

        Tokens are ordered frame by frame (the DiT's patch grid flattened F, H, W), so frame 0's are first.
        """
        _, ph, pw = self.patch
        frames, per_frame = latents.shape[2], (latents.shape[3] // ph) * (latents.shape[4] // pw)
        timesteps = t[:, None].expand(-1, frames * per_frame).clone()
        timesteps[:, :per_frame] = 0  # first_frame() checked the patch is one frame deep
        return timesteps


@torch.no_grad()
def first_frame(path: str | Path, max_area: int, vae, patch: tuple[int, int, int]) -> FirstFrame:
    """Read, size and encode the image at ``path`` (``user.input_image``) with ``vae`` (a Wan2.2 VAE)."""
    if patch[0] != 1:
        raise UserError(f"image-to-video needs a DiT patch of 1 frame in time; this one has {patch[0]}")
    rgb = read_rgb(path, "user.input_image")
    stride = vae.config.spatial_compression
    width, height = ti2v_size(rgb.shape[1], rgb.shape[0], max_area, patch[2] * stride, patch[1] * stride)
    pixels = cover_crop(rgb, width, height)
    device = vae.conv1.weight.device
    latent = vae.encode(pixels.to(device)[None, :, None]).float()  # [1, z_dim, 1, h, w]
    return FirstFrame(latent, width, height, stride, patch)
