"""HunyuanVideo 1.5 image-to-video conditioning, as the official ``HunyuanVideo_1_5_Pipeline`` does it.

diffusers' ``HunyuanVideo15ImageToVideoPipeline`` differs in steps 1 and 2 (noted there).

1. Size: the image picks the bucket. Buckets are the official ``generate_crop_size_list(base, 16)`` sizes of
   about ``base**2`` pixels (aspect ratio up to 4); the chosen one has the h/w ratio closest to the image's
   (official ``get_closest_ratio``: the first of the closest; diffusers only considers buckets no more
   elongated than the image, e.g. 720x1264 instead of 720x1280 for a 9:16 image at 720p). ``base`` is the
   resolution's official bucket base (480p: 640, 720p: 960, 1080p: 1440) or, for an explicit "WxH"
   resolution, ``sqrt(W*H)`` (the same pixel budget).
2. Crop: the image is scaled with PIL Lanczos to cover the bucket, the scaled sides rounded to the nearest
   integer, and centre-cropped at offsets rounded half to even (official ``get_image_condition_latents``
   with torchvision ``Resize`` + ``CenterCrop``, and ``resize_and_center_crop`` for SigLIP: the same
   pixels). diffusers floors the scaled side and pastes at ``width // 2 - src_w // 2`` instead: other pixels.
3. Cond latents: the cropped image, in [-1, 1], VAE-encoded (posterior mode, normalised) as latent frame 0,
   zeros for the other frames; then one mask channel, 1 on frame 0 and 0 elsewhere. The DiT reads
   ``[latents, cond latents, mask]`` on channels.
4. Image tokens: SigLIP's ``last_hidden_state`` for the cropped image, after its own processor (released:
   384x384 bicubic, mean and std 0.5: 729 tokens of width 1152). Both guidance branches see the same tokens
   (diffusers passes them outside the guider; the official code repeats them for the two halves).

Nothing here is stochastic; the scheduler, noise and loop are the text-to-video ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from telefuser_cli.families.hunyuan15.buckets import SIZE_MAP, crop_size_list
from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE


def bucket_base(resolution: str, width: int, height: int) -> float:
    """Bucket base size of a run: the official one of a named resolution, else ``sqrt(width*height)``."""
    return float(SIZE_MAP[resolution]) if resolution in SIZE_MAP else math.sqrt(width * height)


def bucket_size(image_w: int, image_h: int, base: float, patch: int = 16) -> tuple[int, int]:
    """(width, height) of the video for an ``image_w x image_h`` image (official
    ``get_closest_resolution_given_original_size``, list order and tie-breaking included)."""
    if min(image_w, image_h) < 1:
        raise ValueError(f"image size {image_w}x{image_h} must be positive")
    # the official code reads each entry of this (w, h) list as (h, w); the set of sizes is symmetric, so
    # only the winner among equal ratios could differ: read it its way
    buckets = crop_size_list(base, patch)
    if not buckets:
        raise ValueError(f"bucket base {base} is below one {patch}-pixel patch")
    ratios = np.array([round(float(h) / float(w), 5) for h, w in buckets])
    h, w = buckets[int(np.abs(ratios - float(image_h) / float(image_w)).argmin())]
    return w, h


def cover_crop(image_w: int, image_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, left, top): the image scaled to cover ``width x height``, then the
    centre crop's offsets, as the official code computes them.

    Scaled sides: ``int(round(side * max(width / image_w, height / image_h)))`` (official, in that order of
    float operations). Offsets: torchvision ``center_crop``'s ``int(round((scaled - size) / 2.0))``, Python's
    round, i.e. half to even (the SigLIP path's PIL ``crop`` of the float box rounds the same way).
    """
    scale = max(width / image_w, height / image_h)
    scaled_w, scaled_h = int(round(image_w * scale)), int(round(image_h * scale))
    return scaled_w, scaled_h, int(round((scaled_w - width) / 2.0)), int(round((scaled_h - height) / 2.0))


def crop_to(image, width: int, height: int):
    """PIL image -> PIL RGB image of ``width x height``: Lanczos scale to cover, centre crop (official
    ``get_image_condition_latents`` / ``resize_and_center_crop``; offsets from :func:`cover_crop`)."""
    from PIL import Image

    scaled_w, scaled_h, left, top = cover_crop(image.width, image.height, width, height)
    resized = image.convert("RGB").resize((scaled_w, scaled_h), resample=Image.Resampling.LANCZOS)
    return resized.crop((left, top, left + width, top + height))


def to_pil(image: torch.Tensor):
    """[3, H, W] float in [-1, 1] from 8-bit pixels (``io.image_tensor.load_image``) -> the same PIL RGB image."""
    from PIL import Image

    pixels = ((image.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def pixel_tensor(image) -> torch.Tensor:
    """PIL RGB image -> [1, 3, 1, H, W] float32 in [-1, 1] (diffusers ``preprocess``: ``2 * x/255 - 1``)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return (torch.from_numpy(array).permute(2, 0, 1) * 2.0 - 1.0)[None, :, None]


@torch.no_grad()
def image_condition(vae: Hunyuan15VAE, image, latent_frames: int) -> torch.Tensor:
    """Cropped PIL image -> [1, C + 1, latent_frames, H/16, W/16] float32: cond latents (frame 0) and mask."""
    x = pixel_tensor(image).to(vae.encoder.conv_in.conv.weight.device)
    first = vae.encode(x)  # [1, C, 1, h, w] normalised
    b, c, _, h, w = first.shape
    cond = first.new_zeros(b, c + 1, latent_frames, h, w)
    cond[:, :c, :1] = first
    cond[:, c, 0] = 1.0
    return cond


@torch.no_grad()
def image_embeds(encoder, processor, image, device: torch.device) -> torch.Tensor:
    """Cropped PIL image -> SigLIP ``last_hidden_state`` [1, N, D] float32 (``encoder``: SiglipVisionModel)."""
    inputs = processor.preprocess(images=image, do_resize=True, return_tensors="pt", do_convert_rgb=True)
    dtype = next(encoder.parameters()).dtype
    pixels = inputs["pixel_values"].to(device=device, dtype=dtype)
    return encoder(pixel_values=pixels).last_hidden_state.float()
