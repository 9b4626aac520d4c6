"""Layouts, DataError cases, and the data index: reuse, invalidation, damage, concurrency."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import snugtune.data.check as check_mod
from snugtune.data import make_image_folder, scan_folder
from snugtune.errors import DataError
from snugtune.store import CacheHome, DataIndex


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


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the scan decodes from now on."""
    decoded: list[str] = []
    real = check_mod.decode_image

    def counting(path, **kw):  # noqa: ANN001, ANN003, ANN202
        decoded.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(check_mod, "decode_image", counting)
    return decoded


def _rows(cache_dir: Path) -> list[str]:
    with sqlite3.connect(cache_dir / "index.sqlite3") as db:
        return [Path(r[0]).name for r in db.execute("SELECT path FROM files ORDER BY path")]


def test_index_reuses_unchanged_files_and_rechecks_changed_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=4, size=16)
    first = scan_folder(root)
    assert len(_rows(cache_dir)) == 8
    decoded = _decodes(monkeypatch)
    assert scan_folder(root) == first
    assert decoded == []

    edited = root / "class_0" / "img_1.png"
    Image.new("P", (20, 20), 7).save(edited)  # edited in place: size and mtime change
    replaced = root / "class_0" / "img_2.png"
    data = replaced.read_bytes()
    replaced.unlink()
    replaced.write_bytes(data)  # the same bytes in a new file: a new inode
    os.chmod(root / "class_1" / "img_0.png", 0o600)  # its mode changes
    (root / "class_1" / "img_2.png").unlink()
    _img(root / "class_1" / "new.png")
    r = scan_folder(root)
    assert sorted(decoded) == ["img_0.png", "img_1.png", "img_2.png", "new.png"]
    assert [Path(i.path).name for i in r.converted] == ["img_1.png"]
    assert r.class_counts() == {"class_0": 4, "class_1": 4}
    assert "img_2.png" in _rows(cache_dir) and len(_rows(cache_dir)) == 8  # the deleted row is gone


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_checked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=2, size=16)
    target = root / "class_0" / "x.bmp"  # uncompressed: new pixels, the same size
    pixels = np.zeros((16, 16, 3), np.uint8)
    Image.fromarray(pixels).save(target)
    before = {s.path: s.sha256 for s in scan_folder(root).samples}[str(target)]
    st = target.stat()
    pixels[0, 0] = 255
    with open(target, "r+b") as f:  # rewritten in place: the same inode
        f.write(_bmp_bytes(pixels))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_ino == st.st_ino
    decoded = _decodes(monkeypatch)
    after = {s.path: s.sha256 for s in scan_folder(root).samples}[str(target)]
    assert decoded == ["x.bmp"] and after != before  # ctime gave it away


def _bmp_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="BMP")
    return buf.getvalue()


def test_other_settings_miss_without_erasing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            cache_dir: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=2, size=16)
    scan_folder(root)
    decoded = _decodes(monkeypatch)
    limit = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**7)  # a setting that decides usability
    scan_folder(root)
    assert len(decoded) == 4 and len(_rows(cache_dir)) == 8  # both settings' rows are kept
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    decoded.clear()
    scan_folder(root)
    assert decoded == []


def test_a_damaged_or_foreign_index_is_rebuilt_and_the_scan_is_right(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=3, size=16)
    expected = scan_folder(root)
    (cache_dir / "index.sqlite3").write_bytes(b"not a database, only garbage" * 100)
    for p in cache_dir.glob("index.sqlite3-*"):
        p.unlink()
    decoded = _decodes(monkeypatch)
    assert scan_folder(root) == expected and len(decoded) == 6
    assert "rebuilding it" in caplog.text
    with sqlite3.connect(cache_dir / "index.sqlite3") as db:
        db.execute("UPDATE meta SET value = '999' WHERE name = 'schema'")
    decoded.clear()
    assert scan_folder(root) == expected and len(decoded) == 6
    assert "another snugtune version" in caplog.text


def test_a_locked_out_index_falls_back_to_a_private_one(
        tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=3, size=16)
    expected = scan_folder(root)
    holder = sqlite3.connect(cache_dir / "index.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
    try:
        with DataIndex.open(CacheHome(cache_dir), timeout_s=0.05) as index:
            assert not index.persistent and index.home.path != cache_dir
            assert scan_folder(root, index=index) == expected
        assert "cannot use the data index" in caplog.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _scan_in_a_process(root: str, cache: str, out: str) -> None:
    os.environ["SNUGTUNE_CACHE_DIR"] = cache
    result = scan_folder(root, workers=1)
    Path(out).write_text(json.dumps(result.to_dict()))


def test_two_processes_scanning_at_once(tmp_path: Path, cache_dir: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=3, per_class=60, size=16)
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_scan_in_a_process, args=(str(root), str(cache_dir), str(o)))
             for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [json.loads(o.read_text()) for o in outs]
    assert results[0] == results[1] == json.loads(json.dumps(scan_folder(root).to_dict()))
    assert len(_rows(cache_dir)) == 180


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


@pytest.mark.parametrize("error", [sqlite3.DatabaseError("database disk image is malformed"),
                                   sqlite3.OperationalError("database is locked")])
def test_an_index_that_fails_while_read_never_costs_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path,
        caplog: pytest.LogCaptureFixture, error: sqlite3.DatabaseError) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=3, size=16)
    expected = scan_folder(root)

    def failing(self, root, settings):  # noqa: ANN001, ANN202
        yield from ()
        raise error

    monkeypatch.setattr(DataIndex, "files_under", failing)
    decoded = _decodes(monkeypatch)
    assert scan_folder(root) == expected and len(decoded) == 6
    damaged = not isinstance(error, sqlite3.OperationalError)
    assert ("rebuilding it" in caplog.text) == damaged
    assert ("checking every file" in caplog.text) == (not damaged)
    assert len(_rows(cache_dir)) == 6  # damaged: rebuilt and refilled; locked: left as it was
