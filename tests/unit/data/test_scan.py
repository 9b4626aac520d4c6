"""Layouts, DataError cases and the per-file scan cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import snugtune.data.scan as scan_mod
from snugtune.data import make_image_folder, scan_folder
from snugtune.errors import DataError


def _img(path: Path, colour: tuple[int, int, int] = (10, 200, 30), size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 4), colour).save(path)


def test_flat_layout_classes_labels_and_median(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=3, per_class=4, size=16)
    _img(root / "class_1" / "big.png", size=40)
    r = scan_folder(root)
    assert r.classes == ("class_0", "class_1", "class_2")
    assert r.class_counts() == {"class_0": 4, "class_1": 5, "class_2": 4}
    assert r.median_size == (16, 16)
    assert r.root == str(root.resolve())
    assert all(os.path.isabs(s.path) for s in r.samples)
    assert [s.label for s in r.samples] == sorted(s.label for s in r.samples)
    assert r.skipped == () and r.converted == ()


@pytest.mark.parametrize("val_name", ["val", "validation", "valid"])
def test_explicit_train_val_layout(tmp_path: Path, val_name: str) -> None:
    for split, n in (("train", 3), (val_name, 2)):
        for c in ("ants", "bees"):
            for i in range(n):
                _img(tmp_path / split / c / f"{i}.png")
    _img(tmp_path / "test" / "ants" / "t.png")
    r = scan_folder(tmp_path)
    assert r.classes == ("ants", "bees")
    assert r.class_counts() == {"ants": 3, "bees": 3}
    assert r.val_class_counts() == {"ants": 2, "bees": 2}
    assert all(f"{os.sep}train{os.sep}" in s.path for s in r.samples)
    assert r.val_samples is not None
    assert all(f"{os.sep}{val_name}{os.sep}" in s.path for s in r.val_samples)
    assert [(Path(i.path).name, i.reason.split(":")[0]) for i in r.skipped] == [
        ("test", "not scanned")
    ]


def test_val_may_lack_a_class_but_not_add_one(tmp_path: Path) -> None:
    for c in ("a", "b"):
        _img(tmp_path / "train" / c / "1.png")
    _img(tmp_path / "val" / "a" / "1.png")
    r = scan_folder(tmp_path)
    assert r.val_class_counts() == {"a": 1, "b": 0}
    _img(tmp_path / "val" / "zebra" / "1.png")
    with pytest.raises(DataError, match=r"classes \['zebra'\].*train"):
        scan_folder(tmp_path)


def test_missing_root_and_file_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "f.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"is a file"):
        scan_folder(tmp_path / "f.jpg")


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    _img(tmp_path / "only" / "1.png")
    with pytest.raises(DataError, match=r"1 class folder\(s\) \['only'\].*at least 2"):
        scan_folder(tmp_path)


def test_images_directly_in_root_get_a_hint(tmp_path: Path) -> None:
    for i in range(3):
        _img(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match=r"3 images lie directly in it"):
        scan_folder(tmp_path)


def test_class_left_without_usable_image_names_class_and_reasons(tmp_path: Path) -> None:
    _img(tmp_path / "good" / "1.png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"")
    (tmp_path / "bad" / "c.png").write_text("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        scan_folder(tmp_path)
    msg = str(err.value)
    assert "2 class(es) have no usable image" in msg
    assert "'bad'" in msg and "2 zero-byte file" in msg and "1 not an image (text)" in msg
    assert "'empty'" in msg and "0 files" in msg
    assert "remove the folder" in msg


def test_cache_reuses_unchanged_files_and_rechecks_changed_ones(tmp_path, monkeypatch) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=3, size=16)
    cache = tmp_path / "cache" / "scan.json"
    first = scan_folder(root, cache_path=cache)
    assert cache.is_file() and len(json.loads(cache.read_text())["files"]) == 6

    decoded: list[str] = []
    real = scan_mod.decode_image

    def counting(path, **kw):  # noqa: ANN001, ANN003, ANN202
        decoded.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(scan_mod, "decode_image", counting)
    assert scan_folder(root, cache_path=cache) == first
    assert decoded == []

    target = root / "class_0" / "img_1.png"
    Image.new("P", (20, 20), 7).save(target)  # changed size/mtime, now palette
    (root / "class_1" / "img_2.png").unlink()
    _img(root / "class_1" / "new.png")
    r = scan_folder(root, cache_path=cache)
    assert sorted(decoded) == ["img_1.png", "new.png"]
    assert [Path(i.path).name for i in r.converted] == ["img_1.png"]
    assert r.class_counts() == {"class_0": 3, "class_1": 3}
    assert len(json.loads(cache.read_text())["files"]) == 6  # the deleted file is dropped


def test_cache_broken_or_other_settings_means_full_rescan(tmp_path, monkeypatch) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=2, size=16)
    cache = tmp_path / "scan.json"
    cache.write_text("{not json")
    scan_folder(root, cache_path=cache)  # a corrupt cache is ignored and rewritten
    assert json.loads(cache.read_text())["files"]
    decoded: list[str] = []
    real = scan_mod.decode_image
    monkeypatch.setattr(
        scan_mod, "decode_image", lambda p, **kw: decoded.append(p) or real(p, **kw)
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**7)  # a setting that decides usability
    scan_folder(root, cache_path=cache)
    assert len(decoded) == 4


def test_progress_callback_reaches_total(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=3, size=16)
    calls: list[tuple[int, int]] = []
    scan_folder(root, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)


def test_duplicate_folder_via_symlink_is_scanned_once(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=2, size=16)
    _img(root / "class_1" / "sub" / "s.png")
    os.symlink("sub", root / "class_1" / "again")  # a second path within its own class
    _img(tmp_path / "ext" / "e.png")
    os.symlink(tmp_path / "ext", root / "class_0" / "ext1")  # outside: followed once
    os.symlink(tmp_path / "ext", root / "class_0" / "ext2")
    r = scan_folder(root)
    assert r.class_counts() == {"class_0": 3, "class_1": 3}
    assert {os.path.relpath(i.path, root): i.reason for i in r.skipped} == {
        "class_0/ext2": f"duplicate folder: already scanned as {root / 'class_0' / 'ext1'}",
        "class_1/again": f"duplicate folder: already scanned as {root / 'class_1' / 'sub'}",
    }


def test_jpeg_sizes_are_full_size_although_checked_in_draft_mode(tmp_path: Path) -> None:
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (640, 480), (1, 2, 3)).save(tmp_path / c / "x.jpg")
    assert scan_folder(tmp_path).median_size == (640, 480)
