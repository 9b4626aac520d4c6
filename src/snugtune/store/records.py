"""Append-only record stores: one data file per store, its allocation table in the data index.

A store holds one record per content (an image file's SHA-256) under a key that covers
everything else the records depend on (``spec``: the resolution, the backbone's weights...),
so a changed file, or a changed spec, misses. The stores know bytes and keys, not images or
models: the fills live in ``data`` (decoded images) and ``recipe`` (features).

Writing follows FFCV's writer (``ffcv/writer.py``: data first, the allocation table last):

1. a process fills a store only while it holds the store's lock file (``flock``), so two runs
   on the same data never append at once, and the second finds what the first committed;
2. an append writes its records' bytes at the store's committed end and ``fsync``s them;
3. then one index transaction adds their rows (offset, nbytes, rows, cols) and moves the
   committed end: the commit point. A fill killed before it leaves bytes past the end, which
   the next append overwrites; after it, the records are there for every later run.

Readers memory-map the data file read-only and never lock: bytes below the committed end
never change. Records are packed back to back (FFCV aligns them to pages for direct I/O,
which memory-mapped reads do not need).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snugtune.errors import DiskFullError
from snugtune.store.index import DataIndex, RecordRow
from snugtune.units import format_bytes

__all__ = ["Locations", "RecordStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Locations:
    """Where the records of N contents are: four (N,) int64 arrays, offset -1 where missing.
    Small and picklable: loader workers get these, not the index."""

    offsets: np.ndarray
    nbytes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def of(cls, found: Sequence[RecordRow | None]) -> Locations:
        table = np.array([r if r is not None else (-1, 0, 0, 0) for r in found],
                         dtype=np.int64).reshape(-1, 4)
        return cls(*(np.ascontiguousarray(table[:, i]) for i in range(4)))

    @property
    def found(self) -> np.ndarray:
        """(N,) bool: which contents have a record."""
        return self.offsets >= 0

    def __len__(self) -> int:
        return len(self.offsets)


class RecordStore:
    """One store of ``kind`` (``images`` or ``features``) under the key of ``spec``.

    Args:
        index: the data index (its ``home`` holds the data file).
        kind: the folder of the cache it lives in.
        spec: JSON-able description of everything the records depend on besides the content.
    """

    def __init__(self, index: DataIndex, kind: str, spec: Mapping[str, Any]) -> None:
        self.index, self.kind = index, kind
        self.spec = json.dumps(dict(spec), sort_keys=True, default=str)
        self.key = hashlib.sha256(self.spec.encode()).hexdigest()[:24]
        self.path = index.home.data_file(kind, self.key)
        row = index.register_store(self.key, kind, self.spec)
        if row.end_bytes > _size(self.path):  # the data file was deleted or cut short
            log.warning("cache store %s is shorter than its index says: starting it afresh",
                        self.path)
            index.drop_store(self.key)
            index.register_store(self.key, kind, self.spec)

    @property
    def end_bytes(self) -> int:
        """The committed end of the data file (records below it are final)."""
        row = self.index.store(self.key)
        return row.end_bytes if row else 0

    def locate(self, contents: Sequence[bytes]) -> Locations:
        """The records of ``contents`` (SHA-256 digests), missing ones at offset -1."""
        return Locations.of(self.index.find_records(self.key, contents))

    @contextlib.contextmanager
    def filling(self) -> Iterator[RecordStore]:
        """Hold the store's fill lock (blocking until another filler is done)."""
        lock = self.index.home.lock_file(self.kind, self.key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+b") as f:
            _flock(f.fileno(), exclusive=True)
            try:
                yield self
            finally:
                _flock(f.fileno(), exclusive=False)

    def append(self, records: Sequence[tuple[bytes, np.ndarray]]) -> int:
        """Write ``records`` (content, array; rows and cols are the array's first two sides,
        1 where it has fewer) and commit them; returns the bytes written. Call inside
        ``filling``.

        Raises:
            DiskFullError: the disk filled up; nothing of this append was committed.
        """
        if not records:
            return 0
        end = self.end_bytes
        rows: list[tuple[bytes, RecordRow]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "r+b" if self.path.exists() else "w+b") as f:
                f.seek(end)
                at = end
                for content, array in records:
                    data = np.ascontiguousarray(array)
                    f.write(data.tobytes())
                    shape = (*data.shape[:2], 1, 1)
                    rows.append((content, (at, data.nbytes, int(shape[0]), int(shape[1]))))
                    at += data.nbytes
                f.truncate(at)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            _truncate(self.path, end)  # give back what the failed append took
            free = shutil.disk_usage(self.path.parent).free
            raise DiskFullError(self.path, free, format_bytes(free)) from e
        self.index.add_records(self.key, rows, at)
        return at - end

    def free_bytes(self) -> int:
        """Free space on the disk that holds the store."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(folder).free


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _truncate(path: Path, size: int) -> None:
    with contextlib.suppress(OSError):
        os.truncate(path, size)


def _flock(fd: int, *, exclusive: bool) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; one run per cache folder there
        return
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN)
