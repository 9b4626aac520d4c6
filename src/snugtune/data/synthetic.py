"""Tiny synthetic class-folder trees for tests and benchmarks.

Class ``i`` of ``K`` is a filled shape (circle, square or triangle, cycling) in its own hue
(``i / K`` around the colour wheel) on a noisy gray background, at a jittered position and
scale. Colour alone separates the classes, so even a small model learns them in a few steps,
while the noise and jitter keep the images from being identical.
"""

from __future__ import annotations

import colorsys
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["make_image_folder"]

log = logging.getLogger(__name__)

_FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "bmp": "BMP",
    "gif": "GIF",
    "tif": "TIFF",
    "tiff": "TIFF",
}
_SHAPES = ("circle", "square", "triangle")


def make_image_folder(
    root: str | Path,
    *,
    classes: int = 3,
    per_class: int = 12,
    size: int = 32,
    seed: int = 0,
    fmt: str = "png",
) -> Path:
    """Write ``root/class_<i>/img_<j>.<fmt>``, deterministic for a given seed.

    Class names are zero-padded when ``classes > 10`` (``class_00``...) so that their sorted
    order, which defines the labels, is ``0, 1, 2, ...``.

    Args:
        root: output folder (created; existing files with the same names are overwritten).
        classes: number of classes (>= 1).
        per_class: images per class.
        size: image side in pixels (square RGB images).
        seed: seeds noise, positions and scales.
        fmt: file format: png, jpg/jpeg, webp, bmp, gif, tif/tiff.

    Returns:
        ``root`` as a Path.
    """
    if fmt.lower() not in _FORMATS:
        raise ValueError(f"make_image_folder: fmt {fmt!r} not one of {', '.join(_FORMATS)}")
    if classes < 1 or per_class < 0 or size < 8:
        raise ValueError("make_image_folder: need classes >= 1, per_class >= 0, size >= 8")
    root = Path(root)
    rng = np.random.default_rng(seed)
    width = len(str(classes - 1))
    for i in range(classes):
        folder = root / f"class_{i:0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = _class_colour(i, classes)
        for j in range(per_class):
            img = _draw(_SHAPES[i % len(_SHAPES)], colour, size, rng)
            img.save(folder / f"img_{j}.{fmt.lower()}", format=_FORMATS[fmt.lower()])
    log.debug("wrote %d x %d synthetic images to %s", classes, per_class, root)
    return root


def _class_colour(i: int, classes: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(i / max(classes, 1), 0.9, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw(
    shape: str, colour: tuple[int, int, int], size: int, rng: np.random.Generator
) -> Image.Image:
    """One image: noisy gray background, one jittered shape in the class colour."""
    background = rng.normal(128, 20, (size, size, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(background)
    r = size * rng.uniform(0.25, 0.4)  # half-extent of the shape, px
    cx, cy = rng.uniform(r, size - r, 2)
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    noise = rng.normal(0, 8, (size, size, 3))  # keeps images distinct, colours learnable
    return Image.fromarray(
        (np.asarray(img, dtype=np.float64) + noise).clip(0, 255).astype(np.uint8)
    )
