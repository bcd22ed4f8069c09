"""Reading an input image file as 8-bit RGB pixels, whatever its mode (torch-free: Pillow and numpy).

Every way a file can fail to be a usable image ends in one UserError naming the config key and the path:
not a file, not an image, truncated or corrupt, too large to decode, pixels without a defined range.

Conversions (the official code calls ``Image.open(p).convert("RGB")``, which is right for 8-bit images only):
- 16-bit grayscale (modes ``I;16``, ``I;16B``, ``I;16L``, and ``I`` as 16-bit PNG/TIFF files open) is scaled to
  8 bits (``round(v * 255 / 65535)``); Pillow's own conversion clips it at 255, turning most of it white.
  48-bit RGB and 64-bit RGBA PNGs already open as 8-bit ``RGB`` / ``RGBA`` (Pillow keeps the high byte).
- Transparency (``RGBA``, ``LA``, ``PA``, palettes with a transparent colour, premultiplied ``RGBa``/``La``) is
  composited over ``ALPHA_BACKGROUND`` (white: a cut-out object stands on a plain light background, as most
  viewers show it), instead of keeping whatever colour the transparent pixels happen to hold.
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``1``, ``L``, ``P`` convert with Pillow; floating-point (``F``) images
  are refused, their range being undefined.
Multi-frame files (GIF, APNG, TIFF) give their first frame.
"""

from __future__ import annotations

import logging
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from telefuser_cli.errors import UserError
from telefuser_cli.io.path_kind import file_problem

log = logging.getLogger(__name__)

# Input images are resized to the video's few megapixels; a larger file costs memory (12 bytes a pixel as
# float32 RGB) and usually means a wrong file. 64 megapixels is an 8192x8192 image or a 10000x6700 photo.
MAX_PIXELS = 8192 * 8192
ALPHA_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def _too_large(key: str, path: Path, pixels: int, dims: str | None) -> UserError:
    size = f"is {dims} = {pixels:,} pixels" if dims else f"has {pixels:,} pixels"
    side = int(MAX_PIXELS**0.5)
    return UserError(
        f"{key}={path} {size}, more than the limit for input images ({side}x{side} = {MAX_PIXELS:,} pixels); "
        "scale it down first (videos are a few megapixels)"
    )


def _sixteen_bit_to_rgb8(image, key: str, path: Path) -> np.ndarray:
    values = np.asarray(image).astype(np.float64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise UserError(
            f"{key}={path} has 32-bit integer pixels outside 0..65535 (mode {image.mode}); save it as an 8- or "
            "16-bit PNG, or a JPEG"
        )
    gray = np.rint(values * (255 / 65535)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _over_background(image) -> np.ndarray:
    from PIL import Image

    rgba = image.convert("RGBA")
    if rgba.getextrema()[3][0] < 255:
        log.info("the input image has transparent pixels: composited over white (%s)", ALPHA_BACKGROUND)
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))


def _to_rgb8(image, key: str, path: Path) -> np.ndarray:
    """An open Pillow image -> [H, W, 3] uint8 (decoding happens here)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        return _sixteen_bit_to_rgb8(image, key, path)
    if mode == "F":
        raise UserError(
            f"{key}={path} has floating-point pixels (mode F), whose range is not defined; save it as an 8- or "
            "16-bit PNG, or a JPEG"
        )
    if mode in _WITH_ALPHA or (mode == "P" and "transparency" in image.info):
        return _over_background(image)
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as error:  # a mode Pillow cannot turn into RGB
        raise UserError(f"{key}={path}: colour mode {mode} cannot be converted to RGB ({error})") from None


def read_rgb(path: str | Path, key: str) -> np.ndarray:
    """The image at ``path`` -> [H, W, 3] uint8 RGB. ``key`` (e.g. ``user.input_image``) names it in messages.

    The size in the header is checked against ``MAX_PIXELS`` before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow comes with imageio; only image runs need it

    path = Path(path).expanduser()
    problem = file_problem(path)
    if problem is not None:
        raise UserError(f"{key}={path} {problem}; set {key}=/path/to/an/image")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (89 megapixels) when opening; ours is lower and checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise _too_large(key, path, width * height, f"{width}x{height}")
                return _to_rgb8(image, key, path)
    except Image.DecompressionBombError as error:  # Pillow refuses twice its limit while opening
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(key, path, int(found.group(1)) if found else MAX_PIXELS * 2, None) from None
    except UnidentifiedImageError:
        raise UserError(
            f"{key}={path} is not a readable image (PNG, JPEG, WebP, BMP, TIFF, ...); "
            f"set {key}=/path/to/an/image"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as error:
        # Pillow reports truncation as OSError, a broken PNG chunk as SyntaxError
        raise UserError(f"{key}={path} cannot be decoded (truncated or corrupt?): {error}") from None
