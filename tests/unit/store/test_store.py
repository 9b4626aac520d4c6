"""The store package: where the cache is, the index's tables, and the record stores."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from snugtune.errors import DiskFullError
from snugtune.store import (
    CACHE_DIR_ENV,
    CacheHome,
    DataIndex,
    RecordStore,
    cache_dir,
    cache_usage,
    clear_cache,
)
from snugtune.store import records as records_mod


def test_the_cache_folder_flag_then_environment_then_xdg_then_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert cache_dir() == tmp_path / "env"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache_dir() == tmp_path / "xdg" / "snugtune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "snugtune"


def _row(path: str, phash: int = 0, ino: int = 1) -> tuple:
    return (path, 10, 20, 30, 0o100644, ino, True, "", 4, 5, b"s" * 32, phash)


def test_files_under_a_folder_in_path_order_with_64_bit_values(tmp_path: Path) -> None:
    with DataIndex.open(CacheHome(tmp_path)) as index:
        rows = [_row("/d/b/2.png", phash=2**64 - 1, ino=2**63 + 5), _row("/d/a/1.png"),
                _row("/d0/x.png"), _row("/d/é.png"), _row("/c/0.png")]
        index.put_files("s1", rows)
        index.put_files("s2", [_row("/d/a/1.png", phash=7)])
        got = list(index.files_under("/d", "s1"))
        assert [r[0] for r in got] == ["/d/a/1.png", "/d/b/2.png", "/d/é.png"]  # not /d0, /c
        assert got[1][11] == 2**64 - 1 and got[1][5] == 2**63 + 5  # unsigned round trip
        assert [r[11] for r in index.files_under("/d/", "s2")] == [7]
        index.drop_files("s1", ["/d/a/1.png"])
        assert [r[0] for r in index.files_under("/d", "s1")] == ["/d/b/2.png", "/d/é.png"]
        assert index.count_files() == 5


def test_an_index_of_another_schema_is_rebuilt_and_its_stores_deleted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = CacheHome(tmp_path)
    with DataIndex.open(home) as index:
        index.put_files("s", [_row("/d/1.png")])
        store = RecordStore(index, "images", {"k": 1})
        with store.filling():
            store.append([(b"c" * 32, np.zeros((2, 2, 3), np.uint8))])
    with sqlite3.connect(home.index) as db:
        db.execute("UPDATE meta SET value = '0' WHERE name = 'schema'")
    with DataIndex.open(home) as index:
        assert index.count_files() == 0 and index.stores() == []
    assert not store.path.exists() and "another snugtune version" in caplog.text


def test_a_table_without_a_version_is_not_taken_for_ours(tmp_path: Path) -> None:
    home = CacheHome(tmp_path)
    with sqlite3.connect(home.index) as db:
        db.execute("CREATE TABLE files (path TEXT)")
    with DataIndex.open(home) as index:
        index.put_files("s", [_row("/d/1.png")])  # the real table: it was rebuilt
        assert index.count_files() == 1


def test_damage_found_while_reading_rebuilds(tmp_path: Path) -> None:
    with DataIndex.open(CacheHome(tmp_path)) as index:
        index.put_files("s", [_row(f"/d/{i}.png") for i in range(50)])
        index.rebuild("damaged (test)")
        assert index.count_files() == 0 and index.persistent


def test_an_unusable_folder_gives_a_private_index(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with DataIndex.open(CacheHome(blocker / "cache")) as index:
        assert not index.persistent and index.home.path.is_dir()
        index.put_files("s", [_row("/d/1.png")])
        assert index.count_files() == 1
    assert "cannot use the data index" in caplog.text


def _store(index: DataIndex, spec: dict | None = None) -> RecordStore:
    return RecordStore(index, "features", spec or {"x": 1})


def test_records_round_trip_and_a_killed_append_leaves_the_committed_ones(tmp_path: Path) -> None:
    home = CacheHome(tmp_path)
    with DataIndex.open(home) as index:
        s = _store(index)
        f = np.arange(12, dtype=np.float16).reshape(3, 4)
        with s.filling():
            assert s.append([(bytes([k]) * 32, f[k]) for k in range(3)]) == 24
        with open(s.path, "ab") as fh:  # a fill killed after its bytes, before the commit
            fh.write(b"\xff" * 40)
    with DataIndex.open(home) as index:
        s = _store(index)
        loc = s.locate([b"\x02" * 32, b"z" * 32, b"\x00" * 32])
        assert loc.offsets.tolist() == [16, -1, 0] and loc.found.tolist() == [True, False, True]
        with s.filling():
            s.append([(b"\x03" * 32, np.full(4, 7, np.float16))])  # overwrites the stray bytes
        m = np.fromfile(s.path, np.uint8)[: s.end_bytes].view(np.float16).reshape(-1, 4)
        assert m.shape == (4, 4) and np.array_equal(m[:3], f) and (m[3] == 7).all()
        assert _store(index, {"x": 2}).key != s.key


def test_image_records_keep_their_shape(tmp_path: Path) -> None:
    with DataIndex.open(CacheHome(tmp_path)) as index:
        s = RecordStore(index, "images", {"side": 8})
        a, b = np.ones((3, 5, 3), np.uint8), np.full((8, 2, 3), 9, np.uint8)
        with s.filling():
            s.append([(b"a" * 32, a), (b"b" * 32, b)])
        loc = s.locate([b"b" * 32, b"a" * 32])
        assert loc.rows.tolist() == [8, 3] and loc.cols.tolist() == [2, 5]
        data = np.fromfile(s.path, np.uint8)[: s.end_bytes]
        o, n = int(loc.offsets[0]), int(loc.nbytes[0])
        assert np.array_equal(data[o : o + n].reshape(8, 2, 3), b)


def test_a_full_disk_commits_nothing_and_gives_the_bytes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with DataIndex.open(CacheHome(tmp_path)) as index:
        s = _store(index)
        with s.filling():
            s.append([(b"a" * 32, np.zeros(4, np.float16))])
        real_open = open

        class Full:
            def __init__(self, f) -> None:  # noqa: ANN001
                self.f = f

            def __enter__(self):  # noqa: ANN204
                return self

            def __exit__(self, *a: object) -> None:
                self.f.close()

            def __getattr__(self, name: str):  # noqa: ANN204
                return getattr(self.f, name)

            def write(self, data: bytes) -> int:
                self.f.write(data)
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(records_mod, "open", lambda *a, **k: Full(real_open(*a, **k)),
                            raising=False)  # the module's open(): the data file's writes
        with pytest.raises(DiskFullError, match="disk full"), s.filling():
            s.append([(b"b" * 32, np.zeros(4, np.float16))])
        monkeypatch.delattr(records_mod, "open")
        assert s.end_bytes == 8 and s.path.stat().st_size == 8
        assert s.locate([b"b" * 32]).found.tolist() == [False]


def test_a_data_file_deleted_behind_the_index_starts_the_store_afresh(tmp_path: Path) -> None:
    home = CacheHome(tmp_path)
    with DataIndex.open(home) as index:
        s = _store(index)
        with s.filling():
            s.append([(b"a" * 32, np.zeros(4, np.float16))])
        os.unlink(s.path)
        again = _store(index)
        assert again.end_bytes == 0 and again.locate([b"a" * 32]).found.tolist() == [False]


def test_usage_and_clear(tmp_path: Path) -> None:
    home = CacheHome(tmp_path / "cache")
    assert cache_usage(home).files == 0 and not home.path.exists()
    with DataIndex.open(home) as index:
        index.put_files("s", [_row("/d/1.png"), _row("/d/2.png")])
        s = _store(index, {"backbone": "b", "resolution": 96, "compute": "fp32"})
        with s.filling():
            s.append([(b"a" * 32, np.zeros(4, np.float16))])
    usage = cache_usage(home)
    assert usage.files == 2 and [(u.kind, u.records, u.bytes) for u in usage.stores] == [
        ("features", 1, 8)]
    assert usage.bytes["features"] == 8 and usage.total_bytes > 8
    assert clear_cache(home) == usage.total_bytes and not home.path.exists()
