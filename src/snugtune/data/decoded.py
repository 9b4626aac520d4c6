"""Decode once: every image of a run larger than it needs, decoded and resized once into a
store shared by runs, then read memory-mapped by every later epoch, evaluation and prediction
on the split.

A 12-megapixel JPEG is slow to decode even at 1/8 scale (draft mode still entropy-decodes the
whole file; ``store_format.photo_decode_ms`` in ``benchmarks/results/data_scale.json``, from
``benchmarks/data_scale.py``), so a run that decodes every photo every epoch is the loader's,
not the model's. The first pass over a run's images (after the plan, before the first phase's
feature-cache fill or first epoch) decodes each one in threads (Pillow releases the GIL while
decoding) and keeps it in an image store (``store.RecordStore`` of kind ``images``):

* **what**: an image with a side over ``stored_side(resolution)`` (``ZOOM`` above the model's
  input: the largest size a pipeline on the split resizes an image to is the test-time
  ``zoom`` view's; training and evaluation resize to the input size itself) is decoded as
  training decodes it (``load_image``: upright, converted) and resized with Lanczos so that
  no side exceeds it. An image within that size costs little to decode and would take more
  bytes raw than its file (28 x 28 x 3 = 2,352 for an Animal-MNIST PNG; the decode times and
  file sizes behind this are not recorded in a committed JSON), so its record is empty:
  it is read from its file, exactly as without a store, and the next run does not look at it
  again. Every pipeline applies its same transforms to the stored image (its first step
  resizes it to a square of the input size, as it resized the file's).
* **how**: raw ``uint8`` pixels, (rows, cols) per record in the index. FFCV
  (``ffcv.fields.RGBImageField``) stores raw pixels or re-encoded JPEGs; measured on 2 cores
  for 258x258 records of the benchmark's photos (``benchmarks/results/data_scale.json``,
  ``store_format``, from ``benchmarks/data_scale.py``): 0.034 ms to read raw against 0.27 ms
  to decode a quality-90 JPEG, at 14x the disk (195 KiB against 14 KiB). Both are about 100x
  cheaper or more than the photo (26.7 ms at 1/8 scale, ``photo_decode_ms.draft_258``); raw is chosen
  because it is exact (a JPEG would re-compress what training sees) and its disk is ~5% of the
  photos' own (3.7 MB each, ``photos.mean_bytes``).
* **keyed by** the file's content (SHA-256) under a spec of the stored side, the resampling,
  the decoder's settings and Pillow's version: a second run on the same photos at the same
  resolution reads them, whatever its ``--out``.

Before filling, the free disk is checked against the store's worst case (every new image at
the full stored side) plus ``DISK_RESERVE``; when it cannot hold it, or the disk fills up
while writing, the log says so and the run decodes the files every epoch, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL
from PIL import Image

from snugtune.data.check import default_scan_workers, settings_key
from snugtune.data.images import load_image
from snugtune.data.results import Sample
from snugtune.errors import DiskFullError, ImageLoadError
from snugtune.store import DataIndex, Locations, RecordStore
from snugtune.units import GIB, MIB, format_bytes

__all__ = ["DISK_RESERVE", "ZOOM", "DecodedImages", "ImageStore", "decode_once", "stored_side",
           "zoom_size"]

log = logging.getLogger(__name__)

STORE_FORMAT = 1
#: Scale of the test-time ``zoom`` views (``infer.tta``): resize to about ``ZOOM * size``, then
#: centre-crop ``size``; the largest resize of any pipeline, so the stored side.
ZOOM = 1.15
#: Free disk left untouched by an image store (beyond its worst-case size).
DISK_RESERVE = 1 * GIB
_BATCH_BYTES = 64 * MIB  # decoded pixels appended to the store at a time
_RESAMPLE = Image.Resampling.LANCZOS
_FROM_FILE = np.zeros((0, 0, 3), dtype=np.uint8)  # an empty record: read the file

Bar = Callable[[Iterable[Any], int], Iterable[Any]]


def zoom_size(size: int) -> int:
    """The side the ``zoom`` views are resized to before the centre crop: about ``ZOOM * size``,
    larger than ``size`` by an even number of pixels (an exactly centred crop, so mirroring
    the image mirrors the view)."""
    return size + 2 * max(1, round((ZOOM - 1) * size / 2))


def stored_side(resolution: int) -> int:
    """The largest side an image is stored at for a model input of ``resolution`` px."""
    return zoom_size(resolution)


def image_spec(side: int) -> dict[str, Any]:
    """What a stored image depends on besides the file's bytes."""
    return {"format": STORE_FORMAT, "side": side, "resample": _RESAMPLE.name,
            "decoder": f"load_image draft {side}", "checks": settings_key(),
            "pillow": PIL.__version__, "pixels": "uint8 RGB (rows, cols, 3)"}


class DecodedImages:
    """Stored images of N samples, for a dataset (picklable: loader workers re-open the map).

    Args:
        path: the store's data file.
        locations: where each sample's record is (offset -1: not stored, decode the file).
    """

    def __init__(self, path: str, locations: Locations) -> None:
        self.path, self.locations = path, locations
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.locations)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}

    @property
    def stored(self) -> int:
        """How many of the samples have a stored image (the others are read from files)."""
        return int((self.locations.nbytes > 0).sum())

    def get(self, i: int) -> Image.Image | None:
        """Sample ``i``'s stored image, or None when it has none (read its file)."""
        loc = self.locations
        offset, nbytes = int(loc.offsets[i]), int(loc.nbytes[i])
        if offset < 0 or nbytes == 0:
            return None
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        pixels = self._map[offset : offset + nbytes]
        return Image.fromarray(pixels.reshape(int(loc.rows[i]), int(loc.cols[i]), 3))


@dataclass(frozen=True)
class ImageStore:
    """A filled image store: where it is, how big, and what this run added."""

    store: RecordStore
    side: int
    added: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Where the store is, its size, and what this run added (for ``summary.json``)."""
        return {"path": str(self.store.path), "bytes": self.store.end_bytes, "side": self.side,
                "added": self.added, "fill_seconds": round(self.seconds, 3)}

    def view(self, samples: Sequence[Sample]) -> DecodedImages:
        """The stored images of ``samples`` (those without a record decode their file)."""
        return DecodedImages(str(self.store.path), self.store.locate([s.sha256 for s in samples]))


def decode_once(samples: Sequence[Sample], index: DataIndex, resolution: int, *,
                workers: int | None = None, bar: Bar | None = None) -> ImageStore | None:
    """Store every sample's decoded image that the store lacks (see the module docstring).

    Returns:
        The store, or None when the disk cannot hold it (logged).
    """
    t0, side = time.perf_counter(), stored_side(resolution)
    store = RecordStore(index, "images", image_spec(side))
    with store.filling():
        todo = _missing(store, samples)
        need, free = len(todo) * side * side * 3, store.free_bytes()
        if todo and need + DISK_RESERVE > free:
            log.warning("decoded-image store %s: %d new images need up to %s and the disk has "
                        "%s free (keeping %s): decoding the files every epoch instead", store.path,
                        len(todo), format_bytes(need), format_bytes(free),
                        format_bytes(DISK_RESERVE))
            return None
        added = _fill(store, todo, side, workers, bar)
    seconds = time.perf_counter() - t0
    log.info("decoded-image store %s: %s for %d images (larger ones at most %d px a side, smaller "
             "ones read from their files; %d decoded now in %.1f s)", store.path,
             format_bytes(store.end_bytes), len(samples), side, added, seconds)
    return ImageStore(store, side, added, seconds)


def _missing(store: RecordStore, samples: Sequence[Sample]) -> list[Sample]:
    """One sample per content the store lacks (samples without a SHA-256 are not stored)."""
    known = [s for s in samples if len(s.sha256) == 32]
    found = store.locate([s.sha256 for s in known]).found.tolist()
    todo: dict[bytes, Sample] = {}
    for s, have in zip(known, found, strict=True):
        if not have:
            todo.setdefault(s.sha256, s)
    return list(todo.values())


def _fill(store: RecordStore, todo: Sequence[Sample], side: int, workers: int | None,
          bar: Bar | None) -> int:
    """Decode ``todo`` in threads and append it in batches; stops (logged) on a full disk."""
    batch: list[tuple[bytes, np.ndarray]] = []
    size, added = 0, 0
    n = workers if workers else default_scan_workers()
    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="snugtune-decode") as ex:
        decoded = _chunked_map(ex, lambda s: _decode(s, side), todo)
        for sample, pixels in (bar(decoded, len(todo)) if bar else decoded):
            if pixels is None:
                continue
            batch.append((sample.sha256, pixels))
            size += pixels.nbytes
            if size >= _BATCH_BYTES:
                if not _append(store, batch):
                    return added
                added, batch, size = added + len(batch), [], 0
    if batch and _append(store, batch):
        added += len(batch)
    return added


def _chunked_map(ex: ThreadPoolExecutor, fn: Callable[[Sample], np.ndarray | None],
                 items: Sequence[Sample], chunk: int = 256
                 ) -> Iterable[tuple[Sample, np.ndarray | None]]:
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        yield from zip(part, ex.map(fn, part), strict=True)


def _append(store: RecordStore, batch: list[tuple[bytes, np.ndarray]]) -> bool:
    try:
        store.append(batch)
    except DiskFullError as e:
        log.warning("decoded-image store %s: the disk is full (%s free); the images not stored "
                    "yet are decoded from their files every epoch", store.path, e.free_text)
        return False
    return True


def _decode(sample: Sample, side: int) -> np.ndarray | None:
    """(rows, cols, 3) uint8: the image decoded as training decodes it, sides capped at
    ``side``; (0, 0, 3) when it is within ``side`` (read from its file); None when it no
    longer decodes (training then reports it as before)."""
    try:
        image = load_image(sample.path, draft_size=side)
    except ImageLoadError:
        return None
    w, h = image.size
    if w <= side and h <= side:
        return _FROM_FILE
    return np.asarray(image.resize((min(w, side), min(h, side)), _RESAMPLE), dtype=np.uint8)
