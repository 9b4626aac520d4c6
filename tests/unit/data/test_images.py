"""load_image: modes, draft decoding, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snugtune.data import load_image
from snugtune.data.images import decode_image
from snugtune.errors import DataError, ImageLoadError


def test_draft_decodes_large_jpeg_at_reduced_size(tmp_path: Path) -> None:
    Image.new("RGB", (800, 600), (120, 30, 200)).save(tmp_path / "big.jpg")
    assert load_image(tmp_path / "big.jpg").size == (800, 600)
    small = decode_image(tmp_path / "big.jpg", draft_size=100)
    assert small.image.size == (200, 150)  # 1/4 scale: the smallest with both sides >= 100
    assert small.size == (800, 600)  # full size is still reported
    assert load_image(tmp_path / "big.jpg", draft_size=1000).size == (800, 600)


def test_draft_keeps_grayscale_and_cmyk_jpegs_correct(tmp_path: Path) -> None:
    Image.new("L", (256, 256), 90).save(tmp_path / "g.jpg")
    Image.new("CMYK", (256, 256), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    g = load_image(tmp_path / "g.jpg", draft_size=32)
    assert g.mode == "RGB" and g.size == (32, 32) and abs(g.getpixel((5, 5))[0] - 90) <= 2
    c = load_image(tmp_path / "c.jpg", draft_size=32)
    r, gg, b = c.getpixel((5, 5))
    assert c.mode == "RGB" and r > 200 and gg < 60 and b < 60  # C0 M255 Y255 K0 is red


@pytest.mark.parametrize(
    ("mode", "value", "expected", "conversion"),
    [
        ("1", 1, (255, 255, 255), "1-bit black-and-white converted to RGB"),
        ("LA", (50, 0), (255, 255, 255), "grayscale with alpha composited on white"),
        ("I", 70000, (255, 255, 255), "32-bit integer converted to 8-bit RGB"),
        ("F", 0.5, (128, 128, 128), "32-bit float converted to 8-bit RGB"),
        ("YCbCr", (128, 128, 128), (128, 128, 128), "YCbCr converted to RGB"),
    ],
)
def test_odd_modes_convert(tmp_path: Path, mode, value, expected, conversion) -> None:
    path = tmp_path / "x.tif"
    Image.new(mode, (8, 8), value).save(path)
    loaded = decode_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((2, 2)) == expected
    assert loaded.conversions == [conversion]


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.save(tmp_path / "t.png", transparency=1)
    loaded = decode_image(tmp_path / "t.png")
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.conversions == ["palette with transparency composited on white"]


def test_rgb_jpeg_needs_no_conversion(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    loaded = decode_image(tmp_path / "a.png")
    assert loaded.conversions == [] and np.array_equal(np.asarray(loaded.image), arr)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "zero-byte file"),
        (b"<html><body>hi</body></html>", "not an image (HTML)"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "not an image (SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", "unsupported format (HEIC/HEIF"),
        (b'{"not": "an image"}', "not an image (text)"),
        (bytes(range(256)) * 4, "not an image (unrecognised format)"),
    ],
)
def test_failures_raise_dataerror_with_reason(tmp_path: Path, content: bytes, reason) -> None:
    path = tmp_path / "bad file.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert err.value.reason.startswith(reason)
    assert isinstance(err.value, DataError)
    assert str(path) in str(err.value) and "Remove or replace" in str(err.value)


def test_truncated_png_and_missing_file(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated PNG"):
        load_image(tmp_path / "a.png")
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "missing.png")
