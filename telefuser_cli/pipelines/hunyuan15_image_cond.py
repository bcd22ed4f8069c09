"""HunyuanVideo 1.5 image-to-video conditioning, as diffusers' ``HunyuanVideo15ImageToVideoPipeline`` does it.

1. Size: the image picks the bucket. Buckets are the official ``generate_crop_size_list(base, 16)`` sizes of
   about ``base**2`` pixels (aspect ratio up to 4); the chosen one has the h/w ratio closest to the image's
   without being more elongated than it (official ``get_closest_ratio``), so cropping only trims the long
   side. ``base`` is the resolution's official bucket base (480p: 640, 720p: 960, 1080p: 1440) or, for an
   explicit "WxH" resolution, ``sqrt(W*H)`` (the same pixel budget).
2. Crop: the image is scaled with PIL Lanczos to cover the bucket (the other side floored) and centre-cropped
   (diffusers ``resize_mode="crop"``; the official code rounds that side with torchvision instead).
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

from telefuser_cli.models.hunyuan15_vae import Hunyuan15VAE
from telefuser_cli.pipelines.hunyuan15_sr import SIZE_MAP, crop_size_list


def bucket_base(resolution: str, width: int, height: int) -> float:
    """Bucket base size of a run: the official one of a named resolution, else ``sqrt(width*height)``."""
    return float(SIZE_MAP[resolution]) if resolution in SIZE_MAP else math.sqrt(width * height)


def bucket_size(image_w: int, image_h: int, base: float, patch: int = 16) -> tuple[int, int]:
    """(width, height) of the video for an ``image_w x image_h`` image (diffusers
    ``calculate_default_height_width``, list order and tie-breaking included)."""
    if min(image_w, image_h) < 1:
        raise ValueError(f"image size {image_w}x{image_h} must be positive")
    # diffusers and the official code read each entry of this (w, h) list as (h, w); the set of sizes is
    # symmetric, so only the winner among equal ratios could differ: read it their way
    buckets = crop_size_list(base, patch)
    if not buckets:
        raise ValueError(f"bucket base {base} is below one {patch}-pixel patch")
    ratios = np.array([round(float(h) / float(w), 5) for h, w in buckets])
    aspect = float(image_h) / float(image_w)
    diffs = ratios - aspect
    allowed = [(i, d) for i, d in enumerate(diffs) if (d <= 0 if aspect >= 1 else d >= 0)]
    h, w = buckets[min(allowed, key=lambda pair: abs(pair[1]))[0]]
    return w, h


def crop_to(image, width: int, height: int):
    """PIL image -> PIL RGB image of ``width x height``: Lanczos scale to cover, centre crop (diffusers
    ``VaeImageProcessor._resize_and_crop``)."""
    from PIL import Image

    if width / height > image.width / image.height:
        src_w, src_h = width, image.height * width // image.width
    else:
        src_w, src_h = image.width * height // image.height, height
    resized = image.resize((src_w, src_h), resample=Image.Resampling.LANCZOS)
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    return out


def to_pil(image: torch.Tensor):
    """[3, H, W] float in [-1, 1] from 8-bit pixels (``wan_image_cond.load_image``) -> the same PIL RGB image."""
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
