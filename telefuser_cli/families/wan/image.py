"""The image inputs of image-to-video models, prepared before the DiT is loaded.

Official behaviour: the output size comes from the resolution's pixel budget and the image's own
aspect ratio; the image is stretched to it (bicubic) and VAE-encoded as the condition `y`
(mask + latents, 20 channels beside the 16 of the noise); Wan2.1 I2V also feeds CLIP tokens. FLF2V adds a
last frame (``user.end_image``): the size still follows the first frame; a last frame of another size is
cropped or padded as the official code does (``image_cond.fit_last_frame``), then treated like the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from telefuser_cli.config.schema import RootConfig, Task
from telefuser_cli.config.validate import RunPlan
from telefuser_cli.errors import UserError
from telefuser_cli.families.wan.image_cond import clip_features, condition_latents, fit_last_frame, i2v_size
from telefuser_cli.io.image_tensor import load_image
from telefuser_cli.loading import wan as wan_loading
from telefuser_cli.loading.clip_arch import load_clip_vision
from telefuser_cli.runtime.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class ImageCondition:
    y: torch.Tensor  # [1, 20, T, h, w] float32
    clip_fea: torch.Tensor | None  # [1, 257 or 514, dim] (Wan2.1 I2V / FLF2V only)
    width: int
    height: int
    vae_stride: int  # pixels per latent pixel (the VAE's spatial_compression)

    def latent_shape(self, channels: int, frames: int) -> tuple[int, int, int, int]:
        return (channels, frames, self.height // self.vae_stride, self.width // self.vae_stride)


def prepare_image_condition(
    settings: RootConfig,
    plan: RunPlan,
    vae,
    clip_files: wan_loading.ComponentFiles | None,
) -> ImageCondition:
    """The condition of ``user.input_image`` (and ``user.end_image``), encoded by ``vae`` (a loaded Wan VAE)."""
    user, pipeline = settings.user, settings.pipeline
    image = load_image(user.input_image)
    end = None
    if settings.model.task is Task.flf2v:
        if not user.end_image:
            raise UserError(f"model {settings.model.name} needs a last frame too: set user.end_image=PATH")
        end = load_image(user.end_image, key="user.end_image")
        fitted = fit_last_frame(image.shape[2], image.shape[1], end)
        if fitted.shape != end.shape:
            log.info(
                "the last frame (%dx%d) is not the first frame's size (%dx%d): centre-cropped or zero-padded "
                "to %dx%d without resizing, as the official code does", end.shape[2], end.shape[1],
                image.shape[2], image.shape[1], fitted.shape[2], fitted.shape[1],
            )  # fmt: skip
        end = fitted
    stride = vae.config.spatial_compression
    width, height = i2v_size(image.shape[2], image.shape[1], plan.width * plan.height, vae_stride=stride)
    with torch.no_grad():
        y = condition_latents(vae, image, pipeline.num_frames, width, height, end_image=end).float()
    clip_fea = None
    if clip_files is not None:
        runtime = pipeline.clip_config
        if runtime is None:
            raise UserError(f"model {settings.model.name} uses CLIP image features: set pipeline.clip_config")
        clip = load_clip_vision(
            clip_files.files, dtype=resolve_dtype(runtime), device=resolve_device(runtime, "clip_config")
        )
        clip_fea = clip_features(clip, image, end).float()
        del clip
    return ImageCondition(y, clip_fea, width, height, stride)


def clip_files_of(settings: RootConfig, root: Path) -> wan_loading.ComponentFiles | None:
    if not settings.model.clip:
        return None
    return wan_loading.locate(root, "clip", settings.model.clip)
