"""What the cache folder holds, and clearing it (``snugtune cache``)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Any

from snugtune.store.home import CacheHome
from snugtune.store.index import DataIndex

__all__ = ["CacheUsage", "StoreUsage", "cache_usage", "clear_cache"]


@dataclass(frozen=True)
class StoreUsage:
    """One store: its kind, key, records, bytes on disk, when it was last used and what it
    holds (its spec)."""

    kind: str
    key: str
    records: int
    bytes: int
    used: float
    spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "records": self.records, "bytes": self.bytes,
                "last_used": self.used, "spec": self.spec}


@dataclass(frozen=True)
class CacheUsage:
    """The cache folder: where, the files the index knows, and the bytes of each part."""

    path: str
    files: int
    bytes: dict[str, int]
    stores: tuple[StoreUsage, ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "files": self.files, "bytes": self.bytes,
                "total_bytes": self.total_bytes, "stores": [s.to_dict() for s in self.stores]}


def cache_usage(home: CacheHome) -> CacheUsage:
    """What ``home`` holds (nothing is created when it does not exist)."""
    if not home.index.exists():
        return CacheUsage(str(home.path), 0, home.bytes_on_disk(), ())
    with DataIndex.open(home) as index:
        stores = tuple(
            StoreUsage(r.kind, r.key, r.records, r.end_bytes, r.used, json.loads(r.spec))
            for r in index.stores())
        files = index.count_files()
    return CacheUsage(str(home.path), files, home.bytes_on_disk(), stores)


def clear_cache(home: CacheHome) -> int:
    """Delete the index and every store in ``home``; returns the bytes freed."""
    freed = sum(home.bytes_on_disk().values())
    for p in home.index_files():
        p.unlink(missing_ok=True)
    home.remove_data()
    if home.path.is_dir() and not any(home.path.iterdir()):
        shutil.rmtree(home.path, ignore_errors=True)
    return freed
