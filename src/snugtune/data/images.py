"""Decode any image a photo folder may hold into an upright 8-bit RGB ``PIL.Image``.

``load_image`` is the single decoder of snugtune: the scanner calls it (at reduced size) to
decide which files are usable, and the datasets call it to read them, so a file the scan
accepts always decodes in training.

Policy (DESIGN section 7):

* Pixel limit: a file whose header claims more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
  (Pillow's default, 89,478,485 = 1/4 GiB of RGBA) is refused *before* its pixel data is
  decoded, so a decompression bomb costs a header read, not the machine's memory. The limit is
  read at call time: raise ``Image.MAX_IMAGE_PIXELS`` to accept bigger scans; ``None`` disables
  it. Pillow's own ``DecompressionBombWarning`` is silenced because snugtune refuses those
  files itself, with the same threshold, and reports them.
* Colour: palette, grayscale, 1-bit, CMYK (naive conversion, no ICC profile), YCbCr/LAB/HSV
  are converted to RGB; 16-bit and 32-bit integer samples are scaled to 8 bits (not clipped);
  alpha (RGBA, LA, PA, palette or RGB ``tRNS`` transparency) is composited on white.
* EXIF orientation is applied, so photos come out upright.
* Multi-frame files (animated GIF, multi-page TIFF) give their first frame.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from snugtune.errors import ImageLoadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "decode_image",
    "load_image",
    "pixel_limit",
]

log = logging.getLogger(__name__)

#: Extensions (lower case) treated as images. HEIC/HEIF/SVG are listed so that they are
#: reported as unsupported rather than silently ignored.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
        ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".avif", ".heic", ".heif", ".svg",
    }
)  # fmt: skip

# snugtune refuses every image over the limit itself (ImageLoadError "decompression bomb"),
# so Pillow's warning for the band between 1x and 2x the limit is redundant noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Plain 8-bit grayscale is replicated to RGB without loss and is not reported: listing every
# file of a grayscale dataset (Animal-MNIST, X-rays) would bury the conversions that matter.
_SILENT_MODES = ("L",)
_SIMPLE_MODES = {
    "1": "1-bit black-and-white converted to RGB",
    "P": "palette converted to RGB",
    "CMYK": "CMYK converted to RGB",
    "YCbCr": "YCbCr converted to RGB",
    "LAB": "LAB converted to RGB",
    "HSV": "HSV converted to RGB",
}
_ALPHA_MODES = {
    "RGBA": "alpha composited on white",
    "RGBa": "alpha composited on white",
    "LA": "grayscale with alpha composited on white",
    "La": "grayscale with alpha composited on white",
    "PA": "palette with alpha composited on white",
}
_BOMB_RE = re.compile(r"\((\d+) pixels\)")


class LoadedImage:
    """A decoded image with what was done to it.

    Attributes:
        image: upright 8-bit RGB image (possibly reduced by JPEG draft mode).
        size: (width, height) of the full-size upright image, before any draft reduction.
        conversions: human-readable conversions applied (empty for a plain RGB file).
    """

    __slots__ = ("conversions", "image", "size")

    def __init__(self, image: Image.Image, size: tuple[int, int], conversions: list[str]):
        self.image = image
        self.size = size
        self.conversions = conversions


def pixel_limit() -> int | None:
    """The pixel limit in force: ``PIL.Image.MAX_IMAGE_PIXELS`` (``None``: no limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else int(limit)


def load_image(path: str | Path, *, draft_size: int | None = None) -> Image.Image:
    """Read an image file as upright 8-bit RGB.

    Args:
        path: the image file.
        draft_size: for JPEG, decode at the smallest 1/2, 1/4 or 1/8 scale whose width and
            height are both at least this many pixels (libjpeg DCT scaling: much faster for
            large photos that will be resized down anyway). Ignored for other formats.

    Returns:
        A loaded (not lazy) RGB image; the file is closed.

    Raises:
        ImageLoadError: (a ``DataError``) naming the path and the reason.
    """
    return decode_image(path, draft_size=draft_size).image


def decode_image(path: str | Path, *, draft_size: int | None = None) -> LoadedImage:
    """Like ``load_image`` but also returns the full size and the conversions applied.

    Raises:
        ImageLoadError: naming the path and the reason.
    """
    fmt = "image"
    try:
        with Image.open(path) as im:
            fmt = im.format or fmt
            _check_pixels(path, im.size)
            rawmode = _rawmode(im)  # read before load() clears the tile
            conversions = [_multi_frame(im)] if _is_animated(im) else []  # seeks: before load
            full_size = _original_size(im)
            if draft_size and im.format == "JPEG":
                im.draft(None, (draft_size, draft_size))  # None: keep L/CMYK as stored
            im.load()  # decode errors (truncation...) surface here, not hidden in getexif()
            orientation = _orientation(im)
            size = _upright_size(full_size, orientation)
            rgb = _to_rgb(im, rawmode, conversions)
    except ImageLoadError:
        raise
    except Exception as e:  # Pillow plugins raise OSError, SyntaxError, ValueError, EOFError...
        raise ImageLoadError(path, _failure_reason(path, e, fmt)) from e
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
        conversions.append("EXIF-rotated upright")
    return LoadedImage(rgb, size, conversions)


def _check_pixels(path: str | Path, size: tuple[int, int]) -> None:
    limit = pixel_limit()
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise ImageLoadError(path, f"decompression bomb: {pixels} pixels > limit {limit}")


def _original_size(im: Image.Image) -> tuple[int, int]:
    return (int(im.size[0]), int(im.size[1]))


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in _TRANSPOSE else 1
    except Exception as e:  # a corrupt EXIF block must not cost the image
        log.debug("ignoring unreadable EXIF in %s: %s", getattr(im, "filename", "?"), e)
        return 1


def _is_animated(im: Image.Image) -> bool:
    # is_animated only looks for a second frame (n_frames would walk the whole GIF).
    return bool(getattr(im, "is_animated", False))


def _multi_frame(im: Image.Image) -> str:
    return f"multi-frame {im.format or 'image'}: first frame used"


def _rawmode(im: Image.Image) -> str:
    """How the file stores pixels, e.g. "RGB;16B" for a 16-bit RGB PNG that loads as RGB."""
    tile = getattr(im, "tile", None)
    if not tile:
        return im.mode
    args: Any = tile[0][3]
    return str(args[0] if isinstance(args, tuple) and args else args)


def _to_rgb(im: Image.Image, rawmode: str, conversions: list[str]) -> Image.Image:
    """Convert a loaded image of any mode to 8-bit RGB, noting what was done."""
    mode = im.mode
    if "transparency" in im.info and mode in ("RGB", "L", "P"):
        conversions.append(f"{_mode_name(mode)} with transparency composited on white")
        return _on_white(im.convert("RGBA"))
    if mode in _ALPHA_MODES:
        conversions.append(_ALPHA_MODES[mode])
        return _on_white(im.convert("RGBA"))
    if mode == "RGB":
        if ";16" in rawmode:
            conversions.append("16-bit converted to 8-bit RGB")
        return im.copy()
    if mode in _SILENT_MODES:
        return im.convert("RGB")
    if mode in _SIMPLE_MODES:
        conversions.append(_SIMPLE_MODES[mode])
        return im.convert("RGB")
    if mode.startswith("I") or mode == "F":
        conversions.append(f"{_depth_name(mode)} converted to 8-bit RGB")
        return Image.fromarray(_to_uint8(np.asarray(im), mode)).convert("RGB")
    conversions.append(f"{mode} converted to RGB")
    return im.convert("RGB")


def _mode_name(mode: str) -> str:
    return {"RGB": "RGB", "L": "grayscale", "P": "palette"}[mode]


def _depth_name(mode: str) -> str:
    if mode.startswith("I;16"):
        return "16-bit"
    return "32-bit float" if mode == "F" else "32-bit integer"


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale integer/float samples to 0..255: 16-bit by 1/257 (65535 -> 255), not clipping."""
    x = arr.astype(np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "F":
        top = 1.0 if x.size and float(np.nanmax(x)) <= 1.0 else 255.0
    else:
        peak = float(x.max()) if x.size else 0.0
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    return np.clip(np.nan_to_num(x) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _failure_reason(path: str | Path, e: BaseException, fmt: str) -> str:
    """A short, stable reason for the scan report."""
    if isinstance(e, Image.DecompressionBombError):
        m = _BOMB_RE.search(str(e))
        pixels = m.group(1) if m else "too many"
        return f"decompression bomb: {pixels} pixels > limit {pixel_limit()}"
    if isinstance(e, PermissionError):
        return "unreadable (permission denied)"
    if isinstance(e, FileNotFoundError):
        return "broken symlink" if Path(path).is_symlink() else "file not found"
    if isinstance(e, Image.UnidentifiedImageError):
        return sniff_non_image(path)
    msg = str(e)
    if "truncated" in msg.lower():
        return f"truncated {fmt}"
    return f"corrupt {fmt} ({type(e).__name__}: {msg[:80]})"


def sniff_non_image(path: str | Path) -> str:
    """Say what a file Pillow does not recognise probably is, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not head:
        return "zero-byte file"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in low:
        return "not an image (HTML)"
    if low.startswith(b"<svg") or b"<svg" in low:
        return "not an image (SVG vector graphics; convert to PNG)"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return "unsupported format (HEIC/HEIF; convert to JPEG)"
    if low.startswith((b"<?xml", b"{", b"[")) or _is_text(head):
        return "not an image (text)"
    return "not an image (unrecognised format)"


def _is_text(head: bytes) -> bool:
    for cut in range(4):  # the 512-byte window may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(c.isprintable() or c in "\r\n\t\f" for c in text)
    return False
