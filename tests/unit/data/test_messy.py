"""A class-folder tree salted with what real photo folders contain (issue 6, item 1).

The scan must skip or convert every odd file, list each with its reason, and keep only
files that ``load_image`` decodes.
"""

from __future__ import annotations

import builtins
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from snugtune.data import load_image, scan_folder
from snugtune.data.images import decode_image

# snugtune silences this warning at import; pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RNG = np.random.default_rng(0)


def _rgb(w: int = 24, h: int = 20) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_header(path: Path, w: int, h: int, depth: int = 8, colour: int = 0) -> None:
    """A PNG whose header claims w x h pixels but holds almost no data (a bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b""))


def write_rgb16_png(path: Path, w: int = 8, h: int = 6, value: int = 0xABCD) -> None:
    """A real 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    row = b"\0" + np.full((w, 3), value, dtype=">u2").tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(row * h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b""))


def _exif_rotated(path: Path) -> None:
    """40x20 stored image, left half red, right half blue, EXIF orientation 6 (90 deg CW)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, quality=95, exif=exif)


def _frames(path: Path, fmt: str) -> None:
    a, b = Image.new("RGB", (16, 16), (200, 10, 10)), Image.new("RGB", (16, 16), (10, 10, 200))
    a.save(path, format=fmt, save_all=True, append_images=[b])


def build_messy_tree(root: Path) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """Write the tree; return (skipped rel->reason, converted rel->reason, usable rels)."""
    cats, dogs, birds = root / "cats", root / "dogs", root / "wild birds ü"
    for d in (cats, dogs, birds / "nested" / "deeper", root / "__MACOSX", root / ".git"):
        d.mkdir(parents=True)
    skipped: dict[str, str] = {}
    converted: dict[str, str] = {}
    usable: set[str] = set()

    (root / "README.md").write_text("my photos")  # root-level non-image: ignored silently
    (root / ".git" / "HEAD").write_text("ref")  # hidden root folder: ignored silently
    _rgb().save(root / "stray.jpg")
    skipped["stray.jpg"] = "not inside a class folder"
    skipped["__MACOSX"] = "macOS zip metadata folder, not a class"

    _rgb().save(cats / "good.jpg")
    usable.add("cats/good.jpg")
    (cats / "zero.jpg").write_bytes(b"")
    skipped["cats/zero.jpg"] = "zero-byte file"
    full = cats / "good.jpg"
    _rgb(64, 48).save(cats / "truncated.jpg", quality=95)
    data = (cats / "truncated.jpg").read_bytes()
    (cats / "truncated.jpg").write_bytes(data[: len(data) // 2])
    skipped["cats/truncated.jpg"] = "truncated JPEG"
    (cats / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    skipped["cats/page.jpg"] = "not an image (HTML)"
    (cats / "notes.png").write_text("just some notes\nabout cats\n")
    skipped["cats/notes.png"] = "not an image (text)"
    (cats / "random.jpg").write_bytes(RNG.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    skipped["cats/random.jpg"] = "not an image (unrecognised format)"
    (cats / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    skipped["cats/.DS_Store"] = "hidden file"
    (cats / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    skipped["cats/Thumbs.db"] = "not an image file (.db)"
    (cats / "desktop.ini").write_text("[.ShellClassInfo]")
    skipped["cats/desktop.ini"] = "not an image file (.ini)"

    _rgb().convert("CMYK").save(cats / "cmyk.jpg")
    converted["cats/cmyk.jpg"] = "CMYK converted to RGB"
    Image.fromarray(np.full((8, 8), 0xFFFF, np.uint16)).save(cats / "deep16.png")
    converted["cats/deep16.png"] = "16-bit converted to 8-bit RGB"
    write_rgb16_png(cats / "rgb16.png")
    converted["cats/rgb16.png"] = "16-bit converted to 8-bit RGB"
    _rgb().convert("P").save(cats / "palette.gif")
    converted["cats/palette.gif"] = "palette converted to RGB"
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (0, 128, 0, 255)  # left half opaque green, right half transparent
    Image.fromarray(rgba).save(cats / "rgba.png")
    converted["cats/rgba.png"] = "alpha composited on white"
    _frames(cats / "multi.tif", "TIFF")
    converted["cats/multi.tif"] = "multi-frame TIFF: first frame used"
    _frames(cats / "anim.gif", "GIF")
    converted["cats/anim.gif"] = "multi-frame GIF: first frame used; palette converted to RGB"
    _rgb().save(cats / "photo.webp")
    usable.add("cats/photo.webp")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(cats / "tiny.png")
    skipped["cats/tiny.png"] = "too small: 1x1 pixels (minimum 4)"
    _exif_rotated(cats / "rotated.jpg")
    converted["cats/rotated.jpg"] = "EXIF-rotated upright"
    Image.new("L", (12, 12), 100).save(cats / "grey.png")
    usable.add("cats/grey.png")  # plain grayscale: replicated to RGB, not reported
    write_png_header(cats / "bomb.png", 50_000, 50_000)
    skipped["cats/bomb.png"] = "decompression bomb: 2500000000 pixels > limit 89478485"
    write_png_header(cats / "big.png", 10_000, 10_000)
    skipped["cats/big.png"] = "decompression bomb: 100000000 pixels > limit 89478485"
    os.symlink(cats / "missing.jpg", cats / "dangling.jpg")
    skipped["cats/dangling.jpg"] = "broken symlink"
    os.symlink("loop_b.jpg", cats / "loop_a.jpg")
    os.symlink("loop_a.jpg", cats / "loop_b.jpg")
    skipped["cats/loop_a.jpg"] = skipped["cats/loop_b.jpg"] = "symlink loop"
    os.mkfifo(cats / "pipe.jpg")  # never opened: reading a FIFO would block the scan
    skipped["cats/pipe.jpg"] = "not a regular file"
    _rgb().save(root.parent / "outside.jpg")
    os.symlink(root.parent / "outside.jpg", cats / "alias.jpg")  # a link out: an ordinary sample
    usable.add("cats/alias.jpg")
    os.symlink("good.jpg", cats / "again.jpg")  # a second path to a file of its class
    skipped["cats/again.jpg"] = f"duplicate path: same file as {full}"
    _rgb().save(cats / "café au lait ü.png")
    usable.add("cats/café au lait ü.png")
    if not IS_ROOT:  # root reads through chmod 000; covered by a patched test below
        _rgb().save(cats / "locked.jpg")
        os.chmod(cats / "locked.jpg", 0)
        skipped["cats/locked.jpg"] = "unreadable (permission denied)"

    _rgb().save(dogs / "d1.png")
    _rgb().save(dogs / "d 2.JPG")
    usable.update({"dogs/d1.png", "dogs/d 2.JPG"})
    (dogs / ".thumbnails").mkdir()
    _rgb().save(dogs / ".thumbnails" / "t.png")
    skipped["dogs/.thumbnails"] = "hidden folder"

    _rgb().save(birds / "nested" / "deeper" / "n1.png")
    _rgb().save(birds / "b0.bmp")
    usable.update({"wild birds ü/nested/deeper/n1.png", "wild birds ü/b0.bmp"})
    os.symlink("..", birds / "nested" / "up")  # directory loop
    skipped["wild birds ü/nested/up"] = "symlink loop: links back to a parent folder"
    usable.update(k for k in converted)
    return skipped, converted, usable


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str], set[str]]:
    root = tmp_path / "messy photos"
    root.mkdir()
    skipped, converted, usable = build_messy_tree(root)
    yield root, skipped, converted, usable
    for p in root.rglob("*"):  # let pytest clean up the chmod-000 file
        if not p.is_symlink():
            os.chmod(p, 0o755)


def _rel(root: Path, issues: tuple) -> dict[str, str]:
    return {os.path.relpath(i.path, root): i.reason for i in issues}


def test_messy_tree_skipped_and_converted_lists_are_exact(messy) -> None:
    root, skipped, converted, usable = messy
    result = scan_folder(root, workers=3)
    assert result.classes == ("cats", "dogs", "wild birds ü")
    assert _rel(root, result.skipped) == skipped
    assert _rel(root, result.converted) == converted
    assert {os.path.relpath(s.path, root) for s in result.samples} == usable
    assert result.val_samples is None
    labels = {os.path.relpath(s.path, root): s.label for s in result.samples}
    assert labels["wild birds ü/nested/deeper/n1.png"] == 2  # nested -> top-level class
    assert result.class_counts() == {"cats": 13, "dogs": 2, "wild birds ü": 2}


def test_every_sample_decodes_to_rgb(messy) -> None:
    root, *_ = messy
    for s in scan_folder(root).samples:
        img = load_image(s.path)
        assert img.mode == "RGB" and min(img.size) >= 4, s.path


def test_conversions_produce_the_right_pixels(messy) -> None:
    root, *_ = messy
    cats = root / "cats"
    rotated = load_image(cats / "rotated.jpg")
    assert rotated.size == (20, 40)  # stored 40x20, shown portrait
    top, bottom = rotated.getpixel((10, 5)), rotated.getpixel((10, 35))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top after 90 deg CW
    assert load_image(cats / "rgba.png").getpixel((8, 5)) == (255, 255, 255)  # on white
    assert load_image(cats / "rgba.png").getpixel((1, 5)) == (0, 128, 0)
    assert load_image(cats / "deep16.png").getpixel((0, 0)) == (255, 255, 255)  # scaled
    assert load_image(cats / "rgb16.png").getpixel((0, 0)) == (0xAB, 0xAB, 0xAB)
    first = load_image(cats / "multi.tif").getpixel((3, 3))
    assert first[0] > 150 and first[2] < 50  # first (red) frame


def test_bomb_is_refused_from_its_header_without_decoding(messy, monkeypatch) -> None:
    root, *_ = messy
    loaded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):  # noqa: ANN001, ANN202
        loaded.append(str(getattr(self, "filename", "")))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    result = scan_folder(root, workers=1)
    assert not [f for f in loaded if f.endswith(("bomb.png", "big.png"))]
    assert any(f.endswith("good.jpg") for f in loaded)
    assert {os.path.basename(i.path) for i in result.skipped} >= {"bomb.png", "big.png"}


def test_pixel_limit_follows_pillow_setting(tmp_path: Path, monkeypatch) -> None:
    write_png_header(tmp_path / "wide.png", 300, 300)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(Exception, match=r"decompression bomb: 90000 pixels > limit 10000"):
        decode_image(tmp_path / "wide.png")


@pytest.mark.skipif(not IS_ROOT, reason="covered by the real chmod 000 file in the messy tree")
def test_unreadable_file_as_root_via_patched_open(messy, monkeypatch) -> None:
    root, *_ = messy
    locked = root / "dogs" / "locked.png"
    _rgb().save(locked)
    real_open = builtins.open

    def guarded(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    result = scan_folder(root, workers=1)
    assert _rel(root, result.skipped)["dogs/locked.png"] == "unreadable (permission denied)"


def test_report_is_json_safe_and_round_trips(messy) -> None:
    import json

    from snugtune.data import ScanResult

    root, *_ = messy
    result = scan_folder(root)
    text = json.dumps(result.to_dict(), ensure_ascii=False)
    assert ScanResult.from_dict(json.loads(text)) == result
    counts = result.reason_counts()
    assert counts["skipped"]["symlink loop"] == 2
    assert counts["converted"]["16-bit converted to 8-bit RGB"] == 2
