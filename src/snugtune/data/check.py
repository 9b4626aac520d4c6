"""Check image files: usable or not, and their fingerprints, through the data index.

Each file is checked by decoding it with the same ``decode_image`` that training uses (JPEGs
at 1/8 scale via draft mode, which still entropy-decodes the whole file and so catches
truncation), in a thread pool (Pillow releases the GIL while decoding). A file is usable when
it decodes, is within the pixel limit and is at least ``MIN_SIDE_PX`` pixels on each side (a
1x1 tracking pixel or icon carries nothing to learn from). A usable file's check also records
the SHA-256 of its bytes and the perceptual hash of its pixels (``imagehash.phash``), from
which ``data.doctor`` finds copies and the caches find their records.

Checks are kept in the data index (``store.DataIndex``), keyed by each file's path and
identity (size, mtime, ctime, mode, inode) and by the settings that decide usability: a file
whose identity is unchanged is not decoded again; a new, edited, replaced or chmod-ed one is
(ctime catches a file rewritten in place with its size and mtime restored: the SHA-256 is
the caches' content key, so it must not go stale). The
index is read in path order beside the sorted file list (one pass, no table in memory), and
rows of files that no longer exist are dropped on the way. Files that cannot be stat-ed
(broken links, loops) are never recorded: that check is cheap.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import imagehash
import numpy as np
import PIL

from snugtune.data.images import decode_image, pixel_limit
from snugtune.errors import ImageLoadError
from snugtune.store import DataIndex, FileRow

__all__ = ["MIN_SIDE_PX", "SCAN_DRAFT_PX", "CheckCounts", "FileCheck", "check_file",
           "check_files", "settings_key"]

log = logging.getLogger(__name__)

MIN_SIDE_PX = 4  # smaller images (1x1 pixels, favicons) are skipped as "too small"
SCAN_DRAFT_PX = 32  # JPEG check decodes at the smallest DCT scale with both sides >= this
_FLUSH_ROWS = 2000  # checks written to the index per transaction
_CHUNK = 1024  # files handed to the threads at a time (a future per file costs memory)

Progress = Callable[[int, int], None]
StatKey = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, mode, inode


@dataclass(frozen=True, slots=True)
class FileCheck:
    """Outcome of checking one file.

    Attributes:
        ok: usable.
        reason: why skipped (``ok`` False), or the conversions applied ("" when none).
        size: (width, height) upright, full size; (0, 0) when not usable.
        sha256: the SHA-256 digest of the file's bytes (32 bytes); b"" when not usable.
        phash: the pixels' perceptual hash (``imagehash.phash``, 64 bits); 0 when not usable.
    """

    ok: bool
    reason: str = ""
    size: tuple[int, int] = (0, 0)
    sha256: bytes = b""
    phash: int = 0


@dataclass(frozen=True)
class CheckCounts:
    """How the checks of one scan were obtained."""

    decoded: int
    from_index: int


def settings_key() -> str:
    """What decides usability besides the file itself: another value misses in the index."""
    settings = (f"pillow {PIL.__version__}; pixel limit {pixel_limit()}; min side {MIN_SIDE_PX};"
                f" draft {SCAN_DRAFT_PX}; sha256, imagehash {imagehash.__version__} phash")
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def default_scan_workers() -> int:
    """Threads for checking: one per core. Timed on 2 cores (files in the page cache) with 1, 2
    and 4 threads: JPEGs of 1024x768 checked fastest with 2 (decoding releases the GIL);
    Animal-MNIST's small PNGs fastest with 1 (the perceptual hash and the per-file Python hold
    it). More threads than cores lost in both. Those timings are not recorded in a committed
    JSON."""
    return min(8, os.cpu_count() or 1)


def check_file(path: str) -> FileCheck:
    """Decide whether one file is usable (without the index); never raises."""
    try:
        st = os.stat(path)
    except OSError as e:
        return FileCheck(ok=False, reason=_stat_reason(path, e))
    if not stat.S_ISREG(st.st_mode):
        return FileCheck(ok=False, reason="not a regular file")
    if st.st_size == 0:
        return FileCheck(ok=False, reason="zero-byte file")
    try:
        loaded = decode_image(path, draft_size=SCAN_DRAFT_PX)
    except ImageLoadError as e:
        return FileCheck(ok=False, reason=e.reason)
    except Exception as e:  # belt and braces: a scan must never crash on a file
        return FileCheck(ok=False, reason=f"unreadable ({type(e).__name__}: {e})")
    w, h = loaded.size
    if min(w, h) < MIN_SIDE_PX:
        return FileCheck(ok=False, reason=f"too small: {w}x{h} pixels (minimum {MIN_SIDE_PX})")
    try:
        with open(path, "rb") as f:  # just decoded: the bytes come from the page cache
            digest = hashlib.file_digest(f, "sha256").digest()
    except OSError as e:
        return FileCheck(ok=False, reason=_stat_reason(path, e))
    bits = imagehash.phash(loaded.image).hash.reshape(-1)  # (64,) bool, most significant first
    return FileCheck(ok=True, reason="; ".join(loaded.conversions), size=(w, h), sha256=digest,
                     phash=int(np.packbits(bits).view(">u8")[0]))


def check_files(files: Sequence[str], index: DataIndex, *, root: str, workers: int | None = None,
                progress: Progress | None = None) -> tuple[list[FileCheck], CheckCounts]:
    """Check every file of ``files`` (all under the folder ``root``), from the index where its
    identity is unchanged, else by decoding it; the index learns the new checks.

    Returns:
        The checks, in the order of ``files``, and how many were decoded.
    """
    settings = settings_key()
    checks: list[FileCheck | None] = [None] * len(files)
    keys: dict[int, StatKey] = {}
    writer = _IndexWriter(index, settings)
    try:
        todo = _from_index(files, index, root, settings, checks, keys)
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError):  # locked or unreadable now, not damaged
            log.warning("could not read the data index %s (%s): checking every file",
                        index.home.index, e)
            writer.failed = True
        else:  # damaged: start it again
            index.rebuild(f"unreadable ({e})")
        checks, keys, todo = [None] * len(files), {}, list(range(len(files)))
        keys.update((i, k) for i in todo if (k := _stat_key(files[i])) is not None)
    done = len(files) - len(todo)
    if progress:
        progress(done, len(files))
    n = workers if workers is not None else default_scan_workers()
    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="snugtune-scan") as ex:
        for start in range(0, len(todo), _CHUNK):  # map() submits all at once: in chunks
            chunk = todo[start : start + _CHUNK]
            for i, check in zip(chunk, ex.map(check_file, [files[i] for i in chunk]), strict=True):
                checks[i] = check
                if i in keys:
                    writer.add(files[i], keys[i], check)
            done += len(chunk)
            if progress:
                progress(done, len(files))
    writer.flush()
    out = [c for c in checks if c is not None]
    assert len(out) == len(files)
    return out, CheckCounts(decoded=len(todo), from_index=len(files) - len(todo))


def _from_index(files: Sequence[str], index: DataIndex, root: str, settings: str,
                checks: list[FileCheck | None], keys: dict[int, StatKey]) -> list[int]:
    """Fill ``checks`` from the index where the stat key matches; the positions left to
    decode. ``keys`` gets the stat key of each of those (taken before any decoding)."""
    order = sorted(range(len(files)), key=files.__getitem__)
    rows = index.files_under(root, settings)
    row, todo, gone = next(rows, None), [], []
    for i in order:
        path = files[i]
        while row is not None and row[0] < path:
            gone.append(row[0])
            row = next(rows, None)
        key = _stat_key(path)
        if row is not None and row[0] == path:
            if key is not None and row[1:6] == key:
                checks[i] = FileCheck(row[6], row[7], (row[8], row[9]), row[10], row[11])
            row = next(rows, None)
        if checks[i] is None:
            todo.append(i)
            if key is not None:
                keys[i] = key
    gone += [r[0] for r in _rest(row, rows)]
    _forget(index, settings, gone)
    return todo


def _rest(row: FileRow | None, rows: Iterator[FileRow]) -> Iterator[FileRow]:
    if row is not None:
        yield row
        yield from rows


def _forget(index: DataIndex, settings: str, paths: list[str]) -> None:
    """Drop the rows of files that no longer exist (others, e.g. a ``test/`` folder beside
    ``train/`` and ``val/``, were only not walked this time)."""
    gone = [p for p in paths if not os.path.lexists(p)]
    try:
        index.drop_files(settings, gone)
    except sqlite3.OperationalError as e:
        log.debug("could not drop %d rows of deleted files: %s", len(gone), e)


class _IndexWriter:
    """Writes checks to the index in transactions of ``_FLUSH_ROWS``; stops writing (with a
    warning) when the index is locked out or read-only, since the scan itself is unharmed."""

    def __init__(self, index: DataIndex, settings: str) -> None:
        self.index, self.settings = index, settings
        self.rows: list[FileRow] = []
        self.failed = False

    def add(self, path: str, key: StatKey, c: FileCheck) -> None:
        self.rows.append((path, *key, c.ok, c.reason, *c.size, c.sha256, c.phash))
        if len(self.rows) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if self.failed or not rows:
            return
        try:
            self.index.put_files(self.settings, rows)
        except sqlite3.DatabaseError as e:
            self.failed = True
            log.warning("could not record checks in the data index %s (%s): the next scan "
                        "decodes these files again", self.index.home.index, e)


def _stat_key(path: str) -> StatKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_ino)


def _stat_reason(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(e, FileNotFoundError):
        return "broken symlink" if os.path.islink(path) else "file vanished during scan"
    if isinstance(e, PermissionError):
        return "unreadable (permission denied)"
    return f"unreadable ({e.strerror or e})"
