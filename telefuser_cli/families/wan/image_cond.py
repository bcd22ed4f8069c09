"""Image conditioning of Wan i2v / flf2v, as the official ``image2video.py`` / ``first_last_frame2video.py`` do.

One run: ``io.image_tensor.load_image`` -> ``i2v_size`` (pixel budget + the image's aspect ratio) -> ``condition_latents``
(bicubic stretch, VAE-encode [image, zeros...(, end image)], prepend the 4-channel frame mask) -> ``y``
concatenated to the noise on channels by the DiT. flf2v first passes a last frame of another size through
``fit_last_frame`` (the official crop or pad). ``clip_features`` gives the Wan2.1 CLIP tokens.

Precision: images and the mask in float32; the VAE runs in its own dtype and returns float32 latents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from telefuser_cli.errors import UserError


def i2v_size(image_w: int, image_h: int, max_area: int, vae_stride: int, patch: int = 2) -> tuple[int, int]:
    """Video (width, height) for an image of ``image_w x image_h`` under a pixel budget ``max_area`` (= W*H).

    The official formula: ``lat_h = round(sqrt(max_area * h/w) // vae_stride // patch * patch)`` (likewise
    ``lat_w`` with ``w/h``), then ``height = lat_h * vae_stride``: the aspect ratio is kept approximately,
    the latent size floored to a multiple of ``patch``, the area at most ``max_area``.
    """
    if min(image_w, image_h) < 1 or max_area < 1 or vae_stride < 1 or patch < 1:
        raise ValueError(
            f"i2v_size needs positive sizes, got image {image_w}x{image_h}, max_area={max_area}, "
            f"vae_stride={vae_stride}, patch={patch}"
        )
    aspect = image_h / image_w
    lat_h = round(math.sqrt(max_area * aspect) // vae_stride // patch * patch)
    lat_w = round(math.sqrt(max_area / aspect) // vae_stride // patch * patch)
    if lat_h < patch or lat_w < patch:
        raise UserError(
            f"an image of {image_w}x{image_h} under a pixel budget of {max_area} gives a "
            f"{lat_w * vae_stride}x{lat_h * vae_stride} video: the aspect ratio is too extreme for this "
            "resolution; crop the image or choose a larger resolution"
        )
    return lat_w * vae_stride, lat_h * vae_stride


def resize_bicubic(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[3, H, W] or [B, 3, H, W] -> the same with ``height x width``: stretched (never cropped), bicubic,
    ``align_corners=False``, no antialias and no clamping, exactly the official ``F.interpolate`` call."""
    batched = img.ndim == 4
    if img.ndim not in (3, 4) or img.shape[-3] != 3:
        raise ValueError(f"resize_bicubic expects [3, H, W] or [B, 3, H, W], got {tuple(img.shape)}")
    out = F.interpolate(img.float() if batched else img.float()[None], size=(height, width), mode="bicubic")
    return out if batched else out[0]


def fit_last_frame(first_w: int, first_h: int, last: torch.Tensor) -> torch.Tensor:
    """The official flf2v treatment of a last frame whose size differs from the first's -> [3, h', w'].

    Reproduced exactly, quirks included, so that a seed gives the official video: the scale that would make
    the last frame cover the first, ``r = max(first_w / last_w, first_h / last_h)``, is computed but never
    applied; the "size" ``[round(last_w * r), round(last_h * r)]`` (width first) is then handed to a centre
    crop that reads its argument as (height, width). So the last frame is centre-cropped to height
    ``round(last_w * r)`` and width ``round(last_h * r)``, zero-padded (mid-grey in [-1, 1]) where it is
    smaller; ``condition_latents`` and ``clip_features`` stretch the result afterwards like any image.
    For a square first frame and a square last frame this is a plain centre crop (or pad) to the first
    frame's size, without resizing. A last frame of the first frame's size is returned unchanged.
    """
    last_h, last_w = last.shape[-2:]
    if (last_w, last_h) == (first_w, first_h):
        return last
    ratio = max(first_w / last_w, first_h / last_h)
    # Python's round (half to even), as the official code; the swap of width and height is the official one.
    crop_h, crop_w = round(last_w * ratio), round(last_h * ratio)
    return _centre_crop_or_pad(last, crop_h, crop_w)


def _centre_crop_or_pad(img: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    """torchvision's ``center_crop`` on a tensor: zeros added where the crop is larger (the odd pixel after),
    then the crop's top-left corner at ``int(round(excess / 2))`` (half to even)."""
    h, w = img.shape[-2:]
    pad_w, pad_h = max(crop_w - w, 0), max(crop_h - h, 0)
    if pad_w or pad_h:
        img = F.pad(img, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        h, w = img.shape[-2:]
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return img[..., top : top + crop_h, left : left + crop_w]


def frame_mask(num_frames: int, lat_h: int, lat_w: int, per_latent: int, last: bool = False) -> torch.Tensor:
    """The official condition mask -> [r, T, lat_h, lat_w] float32, r = ``per_latent`` (the VAE's temporal
    compression, 4 for Wan2.1), T = (num_frames - 1) // r + 1.

    Pixel frames that are given (the first; the last too for flf2v) are 1, the rest 0; the first pixel frame
    is repeated r times so that each latent frame owns r consecutive pixel frames, one per mask channel.
    So the first latent frame is marked on all r channels, and flf2v's last one on channel r - 1 only (it
    holds pixel frames num_frames - r .. num_frames - 1). The official flf2v code builds this for 81 frames
    only; the same construction serves any 1 + r*k.
    """
    if (num_frames - 1) % per_latent:
        raise ValueError(f"num_frames={num_frames} must be 1 + {per_latent}*k")
    msk = torch.zeros(num_frames, lat_h, lat_w)
    msk[0] = 1
    if last:
        msk[-1] = 1
    msk = torch.cat([msk[:1].expand(per_latent, -1, -1), msk[1:]])
    return msk.view(-1, per_latent, lat_h, lat_w).transpose(0, 1).contiguous()


@torch.no_grad()
def condition_latents(
    vae,
    image: torch.Tensor,
    num_frames: int,
    width: int,
    height: int,
    end_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """The i2v (or flf2v, with ``end_image``) condition ``y`` -> [1, r + z_dim, T, height/s, width/s]
    float32, s and r the VAE's spatial and temporal compression (8 and 4 for Wan2.1).

    image, end_image: [3, H, W] in [-1, 1], any size (each is stretched to ``height x width`` with
    ``resize_bicubic``). vae: a ``WanVAE`` (``encode`` returns normalised latents). The encoded video is
    [image, zeros x (num_frames - 1)] or [image, zeros x (num_frames - 2), end_image]; the mask comes first
    on channels. The DiT takes ``y`` next to the noise: 16 + 20 = 36 input channels for Wan2.1.
    """
    stride, per_latent = vae.config.spatial_compression, vae.config.temporal_compression
    if width % stride or height % stride:
        raise ValueError(f"width={width} and height={height} must be divisible by the VAE stride {stride}")
    if num_frames < (1 + per_latent if end_image is not None else 1) or (num_frames - 1) % per_latent:
        raise ValueError(
            f"num_frames={num_frames} must be 1 + {per_latent}*k"
            + (" with k >= 1 for a first and a last frame" if end_image is not None else "")
        )
    device = vae.conv1.weight.device
    first = resize_bicubic(image.to(device), width, height)[:, None]
    parts = [first]
    if end_image is None:
        parts.append(first.new_zeros(3, num_frames - 1, height, width))
    else:
        parts.append(first.new_zeros(3, num_frames - 2, height, width))
        parts.append(resize_bicubic(end_image.to(device), width, height)[:, None])
    latents = vae.encode(torch.cat(parts, dim=1)[None])  # [1, z, T, h, w]
    mask = frame_mask(num_frames, height // stride, width // stride, per_latent, last=end_image is not None)
    return torch.cat([mask.to(latents.device)[None], latents], dim=1)


@torch.no_grad()
def clip_features(clip, image: torch.Tensor, end_image: torch.Tensor | None = None) -> torch.Tensor:
    """Wan2.1 CLIP tokens for the DiT's ``clip_fea`` -> [1, 257, dim] (i2v) or [1, 514, dim] (flf2v:
    first-image tokens then last-image tokens, as the official ``img_emb`` views them).

    clip: a ``WanCLIPVision``; images [3, H, W] in [-1, 1] at their original size (the official code gives
    CLIP the unresized image; ``clip.preprocess`` stretches it to 224x224).
    """
    device = clip.visual.patch_embedding.weight.device
    images = [image] if end_image is None else [image, end_image]
    pixels = torch.cat([clip.preprocess(img.to(device)[None]) for img in images])  # [N, 3, 224, 224]
    feats = clip(pixels)  # [N, 257, dim]
    return feats.reshape(1, -1, feats.shape[-1])
