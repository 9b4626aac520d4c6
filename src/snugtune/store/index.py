"""The data index: one SQLite database (stdlib ``sqlite3``, WAL) that every command and run
shares, in the cache folder (``store.home``).

Tables::

    files    (settings, path) -> the file's identity when it was checked (size, mtime_ns,
             ctime_ns, mode, inode) and what the check found (usable, reason, width, height, SHA-256,
             perceptual hash). ``settings`` is a digest of what decides usability besides the
             file (Pillow's version, the pixel limit...), so a change of settings misses
             without erasing what other settings found.
    stores   key -> kind (images, features), spec (JSON: what the records depend on),
             committed end of its data file, record count, created and last-used times.
    records  (store, content) -> offset, nbytes, rows, cols of one record in the store's
             data file (``store.records``); content is the file's SHA-256.
    meta     schema version.

Readers never wait for writers (WAL); writers take turns (``timeout_s``). Everything is a
cache of what the image files say, so the index never has the last word: a file whose
identity changed is checked again, and a database that cannot be trusted is rebuilt:

* damaged (not a database, malformed pages) or made by another schema version: the files
  are deleted and a new, empty index is created, with a warning; the stores' data files go
  with it (their records were in the index);
* locked out (another process holds it past the timeout) or not writable (permissions, a
  read-only disk): this process uses a private index and stores in a new temporary folder,
  with a warning.

Either way a scan decodes the files again: no wrong label, no good file skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from snugtune.store.home import CacheHome

__all__ = ["SCHEMA_VERSION", "DataIndex", "FileRow", "RecordRow", "StoreRow"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    settings TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL, ino INTEGER NOT NULL,
    ok INTEGER NOT NULL, reason TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    sha256 BLOB NOT NULL, phash INTEGER NOT NULL,
    PRIMARY KEY (settings, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stores (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL,
    end_bytes INTEGER NOT NULL, records INTEGER NOT NULL, created REAL NOT NULL,
    used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    store TEXT NOT NULL, content BLOB NOT NULL, offset INTEGER NOT NULL,
    nbytes INTEGER NOT NULL, rows INTEGER NOT NULL, cols INTEGER NOT NULL,
    PRIMARY KEY (store, content)) WITHOUT ROWID;
"""
_LOOKUP_CHUNK = 500  # keys per IN (...) query: under SQLite's default limit of 999 variables
_TOP_BIT = 1 << 63

#: (path, size, mtime_ns, ctime_ns, mode, inode, ok, reason, width, height, sha256, phash)
FileRow = tuple[str, int, int, int, int, int, bool, str, int, int, bytes, int]
#: (offset, nbytes, rows, cols) of a record
RecordRow = tuple[int, int, int, int]


@dataclass(frozen=True)
class StoreRow:
    """One store as the index knows it."""

    key: str
    kind: str
    spec: str
    end_bytes: int
    records: int
    created: float
    used: float


class DataIndex:
    """A connection to the data index (see the module docstring). Open it with ``open``.

    Attributes:
        home: the cache folder whose stores' data files this index commits.
        persistent: False for the private fallback in a temporary folder.
    """

    def __init__(self, home: CacheHome, conn: sqlite3.Connection, persistent: bool) -> None:
        self.home, self.conn, self.persistent = home, conn, persistent

    @classmethod
    def open(cls, home: CacheHome, *, timeout_s: float = 60.0) -> DataIndex:
        """The index in ``home``, created if missing, rebuilt if damaged or of another
        version; a private in-memory index if it cannot be used (see the module docstring)."""
        try:
            home.path.mkdir(parents=True, exist_ok=True)
            conn = _connect(home.index, timeout_s)
        except (OSError, sqlite3.OperationalError) as e:
            return cls._private(home, e)
        except sqlite3.DatabaseError as e:  # not a database at all
            conn = _rebuilt(home, f"damaged ({e})", timeout_s)
        else:
            try:
                version = _version(conn)
            except sqlite3.OperationalError as e:
                conn.close()
                return cls._private(home, e)
            except sqlite3.DatabaseError as e:
                conn.close()
                conn = _rebuilt(home, f"damaged ({e})", timeout_s)
            else:
                if version != SCHEMA_VERSION:
                    conn.close()
                    conn = _rebuilt(home, f"made by another snugtune version (schema {version}, "
                                          f"this one reads {SCHEMA_VERSION})", timeout_s)
        return cls(home, conn, persistent=True)

    @classmethod
    def at(cls, cache_dir: str | os.PathLike[str] | None = None) -> DataIndex:
        """The index of the cache folder ``cache_dir`` names (``store.cache_dir``)."""
        return cls.open(CacheHome.at(cache_dir))

    @classmethod
    def _private(cls, home: CacheHome, e: BaseException) -> DataIndex:
        scratch = CacheHome(Path(tempfile.mkdtemp(prefix="snugtune-cache-")))
        atexit.register(shutil.rmtree, scratch.path, True)
        log.warning("cannot use the data index %s (%s): this process keeps its own in %s, and "
                    "decodes the files it has not seen itself", home.index, e, scratch.path)
        return cls(scratch, _connect(scratch.index, 0.0), persistent=False)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> DataIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rebuild(self, why: str) -> None:
        """Start again with an empty index (and no stores), saying why."""
        self.conn.close()
        self.conn = _rebuilt(self.home, why, 60.0)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: take the write lock up front)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ files

    def files_under(self, root: str, settings: str) -> Iterator[FileRow]:
        """Every file row whose path lies under the folder ``root``, in path order (the byte
        order of UTF-8, which is the code-point order Python sorts ``str`` by)."""
        prefix = root.rstrip("/") + "/"
        cur = self.conn.execute(
            "SELECT path, size, mtime_ns, ctime_ns, mode, ino, ok, reason, width, height, sha256, "
            "phash "
            "FROM files WHERE settings = ? AND path >= ? AND path < ? ORDER BY path",
            (settings, prefix, prefix[:-1] + "0"))  # "0" follows "/"
        while rows := cur.fetchmany(4096):
            for r in rows:
                yield (r[0], r[1], r[2], r[3], r[4], _unsigned(r[5]), bool(r[6]), r[7], r[8],
                       r[9], bytes(r[10]), _unsigned(r[11]))

    def put_files(self, settings: str, rows: Sequence[FileRow]) -> None:
        """Record (or replace) the checks of ``rows``."""
        if not rows:
            return
        with self._write() as c:
            c.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(settings, r[0], r[1], r[2], r[3], r[4], _signed(r[5]), int(r[6]), r[7], r[8],
                  r[9], r[10], _signed(r[11])) for r in rows])

    def drop_files(self, settings: str, paths: Iterable[str]) -> None:
        """Forget the rows of ``paths`` (files that are gone)."""
        items = [(settings, p) for p in paths]
        if items:
            with self._write() as c:
                c.executemany("DELETE FROM files WHERE settings = ? AND path = ?", items)

    def count_files(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    # ------------------------------------------------------------------ stores and records

    def store(self, key: str) -> StoreRow | None:
        row = self.conn.execute("SELECT * FROM stores WHERE key = ?", (key,)).fetchone()
        return None if row is None else StoreRow(*row)

    def stores(self) -> list[StoreRow]:
        return [StoreRow(*r) for r in self.conn.execute("SELECT * FROM stores ORDER BY used DESC")]

    def register_store(self, key: str, kind: str, spec: str) -> StoreRow:
        """The store ``key``, created empty if the index does not know it; marks it used."""
        now = time.time()
        with self._write() as c:
            c.execute("INSERT OR IGNORE INTO stores VALUES (?, ?, ?, 0, 0, ?, ?)",
                      (key, kind, spec, now, now))
            c.execute("UPDATE stores SET used = ? WHERE key = ?", (now, key))
        found = self.store(key)
        assert found is not None
        return found

    def find_records(self, key: str, contents: Sequence[bytes]) -> list[RecordRow | None]:
        """Each content's record in store ``key``, or None."""
        found: dict[bytes, RecordRow] = {}
        unique = list(dict.fromkeys(contents))
        for i in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[i : i + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for content, *rec in self.conn.execute(
                    f"SELECT content, offset, nbytes, rows, cols FROM records "
                    f"WHERE store = ? AND content IN ({marks})", (key, *chunk)):
                found[bytes(content)] = (rec[0], rec[1], rec[2], rec[3])
        return [found.get(c) for c in contents]

    def add_records(self, key: str, records: Sequence[tuple[bytes, RecordRow]], end: int) -> None:
        """Commit ``records`` (their bytes are on disk already) and the data file's new end:
        the commit point of an append (``store.records``)."""
        with self._write() as c:
            c.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                          [(key, content, *rec) for content, rec in records])
            c.execute("UPDATE stores SET end_bytes = ?, records = records + ? WHERE key = ?",
                      (end, len(records), key))

    def drop_store(self, key: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM records WHERE store = ?", (key,))
            c.execute("DELETE FROM stores WHERE key = ?", (key,))


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """Open (creating) the database in WAL mode; a new, empty one gets the tables."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last commits
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute("BEGIN IMMEDIATE")  # two processes creating it at once: one does
            if not cur.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            cur.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _version(conn: sqlite3.Connection) -> int | None:
    """The schema version the database says it has (None: it does not say)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        return None
    row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
    try:
        return int(row[0]) if row else None
    except ValueError:
        return None


def _rebuilt(home: CacheHome, why: str, timeout_s: float) -> sqlite3.Connection:
    """Delete the index (and the stores it committed) and create an empty one."""
    log.warning("the data index %s is %s: rebuilding it (files are checked again)", home.index, why)
    for p in home.index_files():
        p.unlink(missing_ok=True)
    home.remove_data()
    return _connect(home.index, timeout_s)


def _signed(v: int) -> int:
    """An unsigned 64-bit value as SQLite's signed INTEGER."""
    return v - (1 << 64) if v >= _TOP_BIT else v


def _unsigned(v: int) -> int:
    return v + (1 << 64) if v < 0 else v
