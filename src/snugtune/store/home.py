"""The cache folder shared by every command and run: where it is, what it holds, how big it is.

::

    CACHE/                          --cache-dir, else $SNUGTUNE_CACHE_DIR, else
                                    $XDG_CACHE_HOME/snugtune (~/.cache/snugtune)
      index.sqlite3 (-wal, -shm)    the data index: per-file scan results by file identity,
                                    the stores and their records              (store.index)
      images/<key>.bin              decoded images, resized once, raw uint8 (store.records)
      images/<key>.lock             held while a process fills that store
      features/<key>.bin            pooled backbone features, float16         (store.records)

Everything here can be deleted at any time (``snugtune cache --clear``): it is rebuilt from
the image files, at the cost of decoding them again. A run folder never depends on it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_DIR_ENV", "CacheHome", "cache_dir"]

#: Environment variable naming the cache folder (``--cache-dir`` overrides it).
CACHE_DIR_ENV = "SNUGTUNE_CACHE_DIR"
INDEX_NAME = "index.sqlite3"
KINDS = ("images", "features")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``override`` (the ``--cache-dir`` flag), else ``$SNUGTUNE_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/snugtune``, else ``~/.cache/snugtune`` (where pip, torch and
    Hugging Face keep theirs)."""
    if override:
        return Path(override).expanduser().absolute()
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "snugtune").absolute()


@dataclass(frozen=True)
class CacheHome:
    """The names of the cache folder's files (see the module docstring); creates nothing."""

    path: Path

    @classmethod
    def at(cls, override: str | os.PathLike[str] | None = None) -> CacheHome:
        """The cache folder ``cache_dir(override)`` names."""
        return cls(cache_dir(override))

    @property
    def index(self) -> Path:
        return self.path / INDEX_NAME

    def index_files(self) -> list[Path]:
        """The index database and its write-ahead log and shared-memory files."""
        return [self.index, *(self.index.with_name(INDEX_NAME + s) for s in ("-wal", "-shm"))]

    def folder(self, kind: str) -> Path:
        """Where the data files of stores of ``kind`` (``images`` or ``features``) live."""
        if kind not in KINDS:
            raise ValueError(f"store kind {kind!r} is not one of {KINDS}")
        return self.path / kind

    def data_file(self, kind: str, key: str) -> Path:
        return self.folder(kind) / f"{key}.bin"

    def lock_file(self, kind: str, key: str) -> Path:
        return self.folder(kind) / f"{key}.lock"

    def remove_data(self) -> None:
        """Delete every store's data file (their records in the index are gone)."""
        for kind in KINDS:
            shutil.rmtree(self.folder(kind), ignore_errors=True)

    def bytes_on_disk(self) -> dict[str, int]:
        """Bytes held: ``index`` (with its log) and each kind of store."""
        out = {"index": sum(_size(p) for p in self.index_files())}
        for kind in KINDS:
            folder = self.folder(kind)
            out[kind] = sum(_size(p) for p in folder.glob("*.bin")) if folder.is_dir() else 0
        return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
