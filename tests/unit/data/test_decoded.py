"""Decode once: the decoded-image store's keying, what it stores, and its disk-full fallbacks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snugtune.config import AugmentConfig
from snugtune.data import (
    ImageDataset,
    build_transforms,
    decode_once,
    scan_folder,
    zoom_size,
)
from snugtune.data import decoded as decoded_mod
from snugtune.errors import DiskFullError
from snugtune.store import CacheHome, DataIndex, RecordStore


@pytest.fixture
def index(cache_dir: Path):  # noqa: ANN201
    with DataIndex.open(CacheHome(cache_dir)) as idx:
        yield idx


def _photos(root: Path) -> Path:
    """Two classes: a large JPEG photo, a small PNG and a tall one in each."""
    for c, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (root / c).mkdir(parents=True)
        rng = np.random.default_rng(ord(c))
        big = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(big).resize((1600, 1200)).save(root / c / "photo.jpg", quality=90)
        Image.new("RGB", (28, 28), colour).save(root / c / "small.png")
        Image.new("RGB", (40, 900), colour).save(root / c / "tall.png")
    return root


def test_large_images_are_stored_capped_and_small_ones_read_from_their_files(
        tmp_path: Path, index: DataIndex) -> None:
    scan = scan_folder(_photos(tmp_path / "d"), index=index)
    store = decode_once(scan.samples, index, 96)
    assert store is not None and store.side == zoom_size(96) == 110 and store.added == 6
    view = store.view(scan.samples)
    sizes = {Path(s.path).name: getattr(view.get(i), "size", None)
             for i, s in enumerate(scan.samples)}
    assert sizes == {"photo.jpg": (110, 110), "small.png": None, "tall.png": (40, 110)}
    assert view.stored == 4 and store.store.end_bytes == 2 * (110 * 110 + 40 * 110) * 3
    again = decode_once(scan.samples, index, 96)  # the small ones are not decoded again
    assert again is not None and again.added == 0


def test_keyed_by_content_and_resolution_shared_across_paths(tmp_path: Path,
                                                             index: DataIndex) -> None:
    first = scan_folder(_photos(tmp_path / "d"), index=index)
    decode_once(first.samples, index, 64)
    copy = scan_folder(_photos(tmp_path / "copy"), index=index)  # the same bytes elsewhere
    again = decode_once(copy.samples, index, 64)
    assert again is not None and again.added == 0 and again.view(copy.samples).stored == 4
    other = decode_once(copy.samples, index, 128)  # another resolution: another store
    assert other is not None and other.added == 6 and other.store.key != again.store.key


def test_datasets_read_the_store_and_workers_can_unpickle_it(tmp_path: Path,
                                                             index: DataIndex) -> None:
    scan = scan_folder(_photos(tmp_path / "d"), index=index)
    store = decode_once(scan.samples, index, 32)
    assert store is not None
    tf = build_transforms(AugmentConfig(), size=32, mean=(0.5,) * 3, std=(0.5,) * 3, train=False)
    stored = ImageDataset(scan.samples, tf, draft_size=32, decoded=store.view(scan.samples))
    files = ImageDataset(scan.samples, tf, draft_size=32)
    for i, s in enumerate(scan.samples):
        x, y = stored[i]
        assert y == s.label and x.shape == (3, 32, 32)
        if s.path.endswith("small.png"):  # read from its file: the same input exactly
            assert torch.equal(x, files[i][0])
    clone = pickle.loads(pickle.dumps(stored))
    assert torch.equal(clone[0][0], stored[0][0])


def test_not_enough_disk_means_decoding_as_before(tmp_path: Path, index: DataIndex,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    scan = scan_folder(_photos(tmp_path / "d"), index=index)
    monkeypatch.setattr(RecordStore, "free_bytes", lambda self: decoded_mod.DISK_RESERVE + 1000)
    assert decode_once(scan.samples, index, 96) is None
    assert "decoding the files every epoch instead" in caplog.text


def test_a_disk_that_fills_up_keeps_what_was_stored(tmp_path: Path, index: DataIndex,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    scan = scan_folder(_photos(tmp_path / "d"), index=index)
    monkeypatch.setattr(decoded_mod, "_BATCH_BYTES", 1)  # one image per append
    real, calls = RecordStore.append, {"n": 0}

    def append(self, records):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > 2:
            raise DiskFullError(self.path, 0, "0 B")
        return real(self, records)

    monkeypatch.setattr(RecordStore, "append", append)
    store = decode_once(scan.samples, index, 64)
    assert store is not None and 0 < store.added < 6 and "the disk is full" in caplog.text
    view = store.view(scan.samples)
    assert 0 < view.stored < 4  # what the two appends before the full disk committed
    tf = build_transforms(AugmentConfig(), size=32, mean=(0.5,) * 3, std=(0.5,) * 3, train=False)
    ds = ImageDataset(scan.samples, tf, draft_size=32, decoded=view)
    assert all(ds[i][0].shape == (3, 32, 32) for i in range(len(ds)))  # the rest from files
