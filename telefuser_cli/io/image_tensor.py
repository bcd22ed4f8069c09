"""An input image as the models read it: a float32 tensor in [-1, 1] (imports torch; io/image_file.py does not)."""

from __future__ import annotations

from pathlib import Path

import torch

from telefuser_cli.io.image_file import read_rgb


def load_image(path: str | Path, key: str = "user.input_image") -> torch.Tensor:
    """An image file -> float32 [3, H, W] in [-1, 1], as the official
    ``TF.to_tensor(Image.open(p).convert("RGB")).sub_(0.5).div_(0.5)`` for 8-bit RGB files; other modes
    (16-bit, transparency, CMYK, ...) are converted as ``io.image_file.read_rgb`` documents. ``key`` names
    the setting in messages."""
    rgb = read_rgb(path, key)
    img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    return img.sub_(0.5).div_(0.5)
