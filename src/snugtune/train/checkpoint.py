"""Atomic, verifiable checkpoints: temp file, fsync, rename; the previous one kept as fallback.

A checkpoint is a plain dict of tensors and primitives, written with ``torch.save`` and read
with ``torch.load(weights_only=True)``, so loading never runs code. ``last.pt`` is the newest;
``prev.pt`` the one before. A partial or corrupt ``last.pt`` (a kill mid-write leaves only a
temp file, but a bad disk or a copy can still corrupt it) falls back to ``prev.pt``.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import torch

from snugtune.errors import CheckpointError

__all__ = ["atomic_write_bytes", "load_checkpoint", "save_checkpoint"]

log = logging.getLogger(__name__)

LAST, PREV = "last.pt", "prev.pt"
FORMAT = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync, then rename over ``path``.

    Raises:
        CheckpointError: the disk is full (the previous file is kept untouched).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"disk full while writing {path}; the previous checkpoint is kept. "
                "Free some space and run again with --resume"
            ) from e
        raise


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the newest checkpoint; the old newest becomes ``prev.pt``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = ckpt_dir / LAST
    payload = {"format": FORMAT, **state}
    tmp_name = ckpt_dir / ".staged.pt"
    atomic_write_bytes(tmp_name, lambda f: torch.save(payload, f))
    if last.exists():
        os.replace(last, ckpt_dir / PREV)
    os.replace(tmp_name, last)
    _fsync_dir(ckpt_dir)
    return last


def _read(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated or unsafe: all unusable
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable or unsafe ({first})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a snugtune checkpoint (format {FORMAT})")
    return obj


def load_checkpoint(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint, or None when there is none yet.

    Raises:
        CheckpointError: checkpoints exist but none can be read safely.
    """
    errors: list[str] = []
    staged = ckpt_dir / ".staged.pt"
    candidates = [ckpt_dir / LAST, ckpt_dir / PREV]
    if staged.exists() and not (ckpt_dir / LAST).exists():
        candidates.insert(0, staged)  # killed between the two renames: the staged one is complete
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = _read(path)
        except CheckpointError as e:
            errors.append(str(e))
            log.warning("%s; trying the previous checkpoint", e)
            continue
        return state
    if errors:
        raise CheckpointError("; ".join(errors) + ". Start a new run (without --resume)")
    return None
