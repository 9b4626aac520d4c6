"""What outlives a run: the data index and the caches, in one folder shared by every command.

::

    CacheHome.at(dir)              -> the cache folder's file names (--cache-dir,
                                      $SNUGTUNE_CACHE_DIR, ~/.cache/snugtune)
    DataIndex.open(home), .at(dir) -> the SQLite index: per-file checks by file identity,
                                      stores and their records; rebuilt when damaged
    RecordStore(index, kind, spec) -> an append-only data file of records found by content
    cache_usage(home), clear_cache  -> what is cached where, how big; delete it all

This package knows bytes and keys, not images or models: what goes into a store, and when,
is decided by ``data`` (decoded images, the scan) and ``recipe`` (features).
"""

from __future__ import annotations

from snugtune.store.home import CACHE_DIR_ENV, CacheHome, cache_dir
from snugtune.store.index import SCHEMA_VERSION, DataIndex, FileRow, StoreRow
from snugtune.store.records import Locations, RecordStore
from snugtune.store.usage import CacheUsage, StoreUsage, cache_usage, clear_cache

__all__ = [
    "CACHE_DIR_ENV",
    "SCHEMA_VERSION",
    "CacheHome",
    "CacheUsage",
    "DataIndex",
    "FileRow",
    "Locations",
    "RecordStore",
    "StoreRow",
    "StoreUsage",
    "cache_dir",
    "cache_usage",
    "clear_cache",
]
