"""Atomic file writes and JSON-safe conversion shared by the report modules.

Every file the report package writes goes through :func:`atomic_write_bytes`: the bytes land
in a temporary file in the same directory, are fsynced, and then replace the target with
``os.replace`` — so a reader (or a resumed run after ``kill -9``) sees either the old file or
the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "to_jsonable",
]


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file atomically: ``write`` fills a temp file that then replaces ``path``.

    Args:
        path: Final file path; its parent directory is created if missing.
        write: Called with a binary file object opened on the temporary file.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.chmod(tmp_name, _file_mode(path))
        os.replace(tmp_name, path)
    except BaseException:
        # Never leave temp files behind, whatever interrupted the write.
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _file_mode(path: Path) -> int:
    """The existing file's mode, else ``0o666`` less the process umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any threads write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as indented, strict JSON (NaN/inf become ``null``) atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def to_jsonable(obj: object) -> object:
    """Convert ``obj`` to plain JSON types.

    Mappings become dicts with string keys, sequences and sets become lists, dataclasses are
    expanded, numpy scalars/arrays become Python numbers/lists, paths become strings, and
    non-finite floats become ``None`` (strict JSON has no NaN). Anything else becomes ``str``.
    """
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    # numpy scalars and arrays (and torch tensors) without importing either here.
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return to_jsonable(obj.tolist())
    return str(obj)
