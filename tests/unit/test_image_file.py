"""Input images: every mode becomes sensible 8-bit RGB, and every bad file one UserError naming the key.

PNGs of exact bit depths are written chunk by chunk here (Pillow cannot write 16-bit RGB), so the tests
control what the header says, including sizes no one should decode.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from telefuser_cli.errors import UserError
from telefuser_cli.io.image_file import ALPHA_BACKGROUND, MAX_PIXELS, read_rgb
from telefuser_cli.io.image_tensor import load_image

KEY = "user.input_image"


def _png(path: Path, pixels: np.ndarray, bit_depth: int, colour_type: int, size=None) -> Path:
    """A PNG of ``pixels`` ([H, W] or [H, W, C], big-endian for 16 bits); ``size`` may claim another size."""
    height, width = size or pixels.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


GREY8 = np.array([[0, 1, 64, 128], [200, 254, 255, 7]], dtype=np.uint8)
GREY16 = GREY8.astype(">u2") * 257  # the same levels at 16 bits: v * 257 maps 0..255 onto 0..65535


def _rgb_of(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = _png(tmp_path / "grey16.png", GREY16, 16, 0)
    assert Image.open(path).mode == "I;16"
    assert np.array_equal(read_rgb(path, KEY), _rgb_of(GREY8))
    # Pillow's own conversion clips at 255: every level above 255/65535 becomes white
    assert np.asarray(Image.open(path).convert("RGB"))[0, 1, 0] == 255


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_sixteen_bit_tiff_modes(tmp_path, mode):
    array = GREY16.astype(">u2" if mode == "I;16B" else np.int32)
    image = Image.frombytes(mode, (4, 2), array.tobytes()) if mode == "I;16B" else Image.fromarray(array)
    image.save(tmp_path / "grey.tiff")
    assert Image.open(tmp_path / "grey.tiff").mode == mode
    assert np.array_equal(read_rgb(tmp_path / "grey.tiff", KEY), _rgb_of(GREY8))


def test_rounding_between_levels(tmp_path):
    path = _png(tmp_path / "mid.png", np.array([[128, 32767, 65406, 65407]], dtype=">u2"), 16, 0)
    assert read_rgb(path, KEY)[0, :, 0].tolist() == [0, 127, 254, 255]  # round(v * 255 / 65535)


def test_thirty_two_bit_values_outside_sixteen_bits_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tiff")
    with pytest.raises(UserError, match="wide.tiff has 32-bit integer pixels outside 0..65535"):
        read_rgb(tmp_path / "wide.tiff", KEY)


def test_forty_eight_bit_rgb_keeps_the_high_byte(tmp_path):
    rgb16 = np.zeros((2, 3, 3), dtype=">u2")
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 255
    path = _png(tmp_path / "rgb48.png", rgb16, 16, 2)
    assert read_rgb(path, KEY)[0, 0].tolist() == [255, 128, 0]


def _over_white(rgb, alpha: int) -> list[int]:
    """Pillow's alpha_composite over an opaque background, in integers."""
    return [round((c * alpha + b * (255 - alpha)) / 255) for c, b in zip(rgb, ALPHA_BACKGROUND, strict=True)]


def test_transparency_is_composited_over_the_background(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, :, 3], rgba[1, :, 3] = 255, 0
    rgba[1, 1, 3] = 100
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_rgb(tmp_path / "rgba.png", KEY)
    assert out[0, 0].tolist() == [200, 0, 0]  # opaque: unchanged
    assert out[1, 0].tolist() == list(ALPHA_BACKGROUND)  # transparent: the background
    assert np.abs(out[1, 1].astype(int) - _over_white([200, 0, 0], 100)).max() <= 1


def test_grey_with_alpha_and_transparent_palette(tmp_path):
    la = np.stack([np.full((2, 2), 40, np.uint8), np.array([[255, 0], [255, 0]], np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert read_rgb(tmp_path / "la.png", KEY)[:, :, 0].tolist() == [[40, 255], [40, 255]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 0, 0, 0] + [0, 0, 0] * 254)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=1)
    assert read_rgb(tmp_path / "p.png", KEY).tolist() == [[[10, 20, 30], list(ALPHA_BACKGROUND)]]


@pytest.mark.parametrize("mode", ["CMYK", "L", "1", "P", "YCbCr"])
def test_other_modes_convert_like_pillow(tmp_path, mode):
    image = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3) * 10, "RGB").convert(mode)
    fmt = "JPEG" if mode in ("CMYK", "YCbCr") else "PNG"
    image.save(tmp_path / f"x.{fmt.lower()}", fmt)
    reopened = Image.open(tmp_path / f"x.{fmt.lower()}")
    assert np.array_equal(read_rgb(tmp_path / f"x.{fmt.lower()}", KEY), np.asarray(reopened.convert("RGB")))


def test_floating_point_images_are_refused(tmp_path):
    Image.fromarray(np.full((2, 2), 0.5, np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(UserError, match="f.tiff has floating-point pixels \\(mode F\\)"):
        read_rgb(tmp_path / "f.tiff", KEY)


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (10000, "is 10000x10000 = 100,000,000 pixels, more than the limit for input images"),
        (30000, "has 900,000,000 pixels, more than the limit for input images"),  # Pillow refuses to open it
    ],
)
def test_huge_headers_are_refused_before_decoding(tmp_path, side, message):
    path = _png(tmp_path / "huge.png", np.zeros((1, 1), np.uint8), 8, 0, size=(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning line besides the message
        with pytest.raises(
            UserError, match=f"{KEY}=.*huge.png {message} \\(8192x8192 = 67,108,864 pixels\\)"
        ):
            read_rgb(path, KEY)
    assert MAX_PIXELS == 8192 * 8192


def test_files_that_are_no_image(tmp_path):
    (tmp_path / "notes.png").write_text("a red ball")
    with pytest.raises(UserError, match=f"{KEY}=.*notes.png is not a readable image"):
        read_rgb(tmp_path / "notes.png", KEY)
    good = _png(tmp_path / "good.png", np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8), 8, 0)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:80])
    with pytest.raises(UserError, match="cut.png cannot be decoded \\(truncated or corrupt\\?\\)"):
        read_rgb(tmp_path / "cut.png", KEY)
    with pytest.raises(UserError, match=f"{KEY}={tmp_path} is a directory, not a file; set {KEY}="):
        read_rgb(tmp_path, KEY)
    with pytest.raises(UserError, match="missing.png does not exist"):
        read_rgb(tmp_path / "missing.png", KEY)


def test_load_image_names_its_key_and_matches_eight_bit(tmp_path):
    eight = tmp_path / "grey8.png"
    Image.fromarray(GREY8, "L").save(eight)
    sixteen = _png(tmp_path / "grey16.png", GREY16, 16, 0)
    torch.testing.assert_close(load_image(sixteen), load_image(eight), rtol=0, atol=0)
    with pytest.raises(UserError, match="user.end_image=.*nothing.png does not exist"):
        load_image(tmp_path / "nothing.png", key="user.end_image")
