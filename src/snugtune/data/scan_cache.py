"""Per-file scan results cached as JSON, keyed by each file's (size, mtime_ns, mode, inode).

A file whose key is unchanged since the last scan is not decoded again; a new, edited,
replaced or chmod-ed file is. The cache also records the settings that decide usability
(pixel limit, minimum side, Pillow version); when they differ the whole cache is ignored.
Files that could not be stat-ed (broken links, loops) are never cached: that check is cheap.
The file is written atomically (temp file + rename), so a killed scan leaves the old cache.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snugtune.errors import DiskFullError
from snugtune.rundir import write_json

__all__ = ["FileCheck", "ScanCache"]

log = logging.getLogger(__name__)

_FORMAT = 1
StatKey = tuple[int, int, int, int]


@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one file.

    Attributes:
        ok: usable.
        reason: why skipped (``ok`` False), or the conversions applied ("" when none).
        size: (width, height) upright, full size; (0, 0) when not usable.
        sha256: the file's bytes' SHA-256 (hex); "" when not usable.
        phash: the pixels' perceptual hash (``imagehash.phash``, 64 bits as hex); "" when not
            usable. Exact and near duplicates are found from these two (``data.doctor``).
    """

    ok: bool
    reason: str = ""
    size: tuple[int, int] = (0, 0)
    sha256: str = ""
    phash: str = ""


@dataclass
class ScanCache:
    """In-memory view of the cache file; ``get``/``put`` are called from one thread."""

    settings: dict[str, Any]
    entries: dict[str, list[Any]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    _keys: dict[str, StatKey] = field(default_factory=dict)
    _fresh: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None, settings: dict[str, Any]) -> ScanCache:
        """Read the cache at ``path`` (None, missing, corrupt or stale: start empty)."""
        cache = cls(settings=settings)
        if path is None or not Path(path).is_file():
            return cache
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable scan cache %s (%s); rescanning", path, e)
            return cache
        if not isinstance(data, dict) or data.get("settings") != settings:
            log.info("scan cache %s was made with other settings; rescanning", path)
            return cache
        files = data.get("files")
        cache.entries = files if isinstance(files, dict) else {}
        return cache

    def get(self, path: str) -> FileCheck | None:
        """The cached check of ``path`` if its stat key is unchanged, else None."""
        key = _stat_key(path)
        if key is None:
            self.misses += 1
            return None
        self._keys[path] = key
        entry = self.entries.get(path)
        if entry is not None and len(entry) == 7 and tuple(entry[0]) == key:
            self.hits += 1
            self._fresh[path] = entry
            return FileCheck(
                ok=bool(entry[1]), reason=str(entry[2]), size=(int(entry[3]), int(entry[4])),
                sha256=str(entry[5]), phash=str(entry[6]),
            )
        self.misses += 1
        return None

    def put(self, path: str, check: FileCheck) -> None:
        """Record a fresh check, under the stat key seen by ``get`` before checking."""
        key = self._keys.get(path)
        if key is not None:
            self._fresh[path] = [list(key), check.ok, check.reason, *check.size, check.sha256,
                                 check.phash]

    def save(self, path: Path | None) -> None:
        """Write the entries of this scan's files (others are dropped) atomically."""
        if path is None:
            return
        payload = {"format": _FORMAT, "settings": self.settings, "files": self._fresh}
        try:
            write_json(path, payload, indent=None)
        except (OSError, DiskFullError) as e:
            log.warning("could not write scan cache %s (%s); the next scan decodes again", path, e)


def _stat_key(path: str) -> StatKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino)
