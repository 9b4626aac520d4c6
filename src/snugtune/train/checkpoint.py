"""Atomic, verifiable checkpoints: temp file, fsync, rename; the previous one kept as fallback.

A checkpoint is a plain dict of tensors and primitives, written with ``torch.save`` and read
with ``torch.load(weights_only=True)``, so loading never runs code. ``last.pt`` is the newest;
``prev.pt`` the one before.

Writing one (``save_checkpoint``)::

    .staged.pt.tmp-<pid>  --fsync, rename-->  .staged.pt     (complete, not yet current)
    last.pt               --rename-->         prev.pt
    .staged.pt            --rename-->         last.pt

A ``kill -9`` at any moment leaves a loadable state: a partial temp file is ignored (and
deleted by the next save), and a complete ``.staged.pt`` without ``last.pt`` (killed between
the two renames) is the newest. The CRC-32 of every member of the checkpoint's zip is checked
on load, so a file that loads but was damaged later (bad disk, interrupted copy) is detected
as well; a corrupt or partial ``last.pt`` falls back to ``prev.pt``. A file that asks the unpickler for a
code object (a malicious pickle) is refused outright: no fallback, since someone tampered with
the run. SIGINT/SIGTERM arriving while a checkpoint is written are held until it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import re
import shutil
import signal
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from snugtune.errors import CheckpointError
from snugtune.units import format_bytes

__all__ = [
    "DiskFullError",
    "atomic_write_bytes",
    "load_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

LAST, PREV, STAGED = "last.pt", "prev.pt", ".staged.pt"
FORMAT = 1
_TMP_MARK = ".tmp-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_UNSAFE_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it wraps is ENOSPC/EDQUOT.

    ``torch.save`` re-raises a failed ``write`` as a RuntimeError from its zip writer, with
    the original OSError only as ``__context__``, so the whole chain is searched.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class DiskFullError(CheckpointError):
    """No space left for an atomic write; the file being replaced is unchanged."""

    def __init__(self, path: Path, free_bytes: int) -> None:
        self.path, self.free_bytes = path, free_bytes
        super().__init__(
            f"disk full while writing {path} ({format_bytes(free_bytes)} free); "
            f"{path.name} is unchanged. Free some space and try again"
        )


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync, then rename over ``path``.

    Whatever goes wrong (including an interrupt), the temp file is removed and ``path`` is
    left as it was.

    Raises:
        DiskFullError: the disk is full (``path`` is left untouched).
    """
    tmp = path.with_name(f".{path.name.lstrip('.')}{_TMP_MARK}{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _disk_full(e):
            raise DiskFullError(path, shutil.disk_usage(path.parent).free) from e
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver the first one received.

    A Ctrl-C during the write would otherwise abort it; this way the checkpoint completes and
    the interrupt takes effect right after. Only possible in the main thread, and only for
    signals whose current handler was installed from Python (others are left alone).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if not received:
            log.info("finishing the checkpoint being written, then stopping")
        received.append(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: set outside Python, could not be restored
            previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])  # now handled as if it arrived just now


def _remove_stale_temps(ckpt_dir: Path) -> None:
    """Delete temp files left by killed writers (other pids); they can be as big as a
    checkpoint and would otherwise fill the disk over many interruptions."""
    mine = f"{_TMP_MARK}{os.getpid()}"
    for p in ckpt_dir.glob(f".*{_TMP_MARK}*"):
        if not p.name.endswith(mine):
            with contextlib.suppress(OSError):
                p.unlink()
                log.debug("removed %s, left by an interrupted checkpoint", p)


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the newest checkpoint; the old newest becomes ``prev.pt``.

    Raises:
        CheckpointError: the disk filled up; ``last.pt`` and ``prev.pt`` are unchanged.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(ckpt_dir)
    last, staged = ckpt_dir / LAST, ckpt_dir / STAGED
    payload = {"format": FORMAT, **state}
    with _signals_held():
        try:
            atomic_write_bytes(staged, lambda f: torch.save(payload, f))
        except DiskFullError as e:
            kept = f"the previous one ({LAST}) is kept" if last.exists() else "none was lost"
            raise CheckpointError(
                f"disk full while writing a checkpoint in {ckpt_dir} "
                f"({format_bytes(e.free_bytes)} free); {kept}. Free some space, then continue "
                f"with snugtune train --resume {ckpt_dir.parent}"
            ) from e
        if last.exists():
            os.replace(last, ckpt_dir / PREV)
        os.replace(staged, last)
        _fsync_dir(ckpt_dir)
    return last


def _unsafe_global(exc: BaseException) -> str | None:
    """The code object a pickle asked for (``posix.system``), if that is why it failed."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    m = _UNSAFE_GLOBAL.search(str(exc))
    return m.group(1) if m else None


def _read(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated or unsafe: all unusable
        name = _unsafe_global(e)
        if name is not None:
            raise _Unsafe(
                f"checkpoint {path} refused: loading it would call {name}, i.e. run code; "
                "snugtune checkpoints hold only tensors and plain values, so this file was "
                "not written by snugtune. Delete it (--resume then uses the previous "
                "checkpoint, or starts the run over) and check where it came from"
            ) from e
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable ({first})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a snugtune checkpoint (format {FORMAT})")
    damaged = _crc_mismatch(path)
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt ({damaged})")
    return obj


def _crc_mismatch(path: Path) -> str | None:
    """What fails the CRC-32 check of the checkpoint's zip members, if anything.

    ``torch.load`` does not check the CRCs that ``torch.save`` writes, so a flipped bit in
    tensor data (bad disk, interrupted copy) would load silently; this reads the file once
    more (~0.3 s per 170 MB) and catches it.
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"damaged zip structure: {e}"
    return f"{bad} fails its CRC-32 check" if bad is not None else None


class _Unsafe(CheckpointError):
    """A checkpoint that would run code: refused without falling back."""


def load_checkpoint(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint, or None when there is none yet.

    Raises:
        CheckpointError: checkpoints exist but none can be read, or one would run code.
    """
    errors: list[str] = []
    staged = ckpt_dir / STAGED
    candidates = [ckpt_dir / LAST, ckpt_dir / PREV]
    if staged.exists() and not (ckpt_dir / LAST).exists():
        candidates.insert(0, staged)  # killed between the two renames: the staged one is complete
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = _read(path)
        except _Unsafe:
            raise
        except CheckpointError as e:
            errors.append(str(e))
            log.warning("%s; trying the previous checkpoint", e)
            continue
        if errors:
            log.warning("resuming from %s instead", path.name)
        return state
    if errors:
        raise CheckpointError(
            "; ".join(errors) + f". Delete {ckpt_dir} to train this run again from the start "
            "with --resume, or start a new run with another --out"
        )
    return None
