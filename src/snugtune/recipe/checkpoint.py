"""Atomic, verifiable checkpoints: temp file, fsync, rename; the previous one kept as fallback.

A checkpoint is a plain dict of tensors and primitives, written with ``torch.save`` and read
with ``torch.load(weights_only=True)``, so loading never runs code. ``last.pt`` is the newest;
``prev.pt`` the one before.

Writing one (``save_checkpoint``; the first line is the run folder's one atomic writer)::

    .staged.pt.tmp-<pid>/.staged.pt  --fsync, rename-->  .staged.pt  (complete, not yet current)
    last.pt                          --rename-->         prev.pt
    .staged.pt                       --rename-->         last.pt

A ``kill -9`` at any moment leaves a loadable state: a partial staging folder is ignored (and
deleted by the next save), and a complete ``.staged.pt`` without ``last.pt`` (killed between
the two renames) is the newest. The CRC-32 of every member of the checkpoint's zip is checked
on load, so a file that loads but was damaged later (bad disk, interrupted copy) is detected
as well; a corrupt or partial ``last.pt`` falls back to ``prev.pt``. A file that asks the unpickler for a
code object (a malicious pickle) is refused outright: no fallback, since someone tampered with
the run. SIGINT/SIGTERM arriving while a checkpoint is written are held until it is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import signal
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from snugtune.errors import CheckpointError, DiskFullError, UnsafeCheckpointError
from snugtune.rundir import atomic_write, fsync, remove_stale_temps

__all__ = ["load_checkpoint", "save_checkpoint"]

log = logging.getLogger(__name__)

LAST, PREV, STAGED = "last.pt", "prev.pt", ".staged.pt"
FORMAT = 1
_UNSAFE_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


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
        # None: set outside Python, could not be restored; SIG_IGN: ignored (nohup, a
        # background job), nothing to hold
        if handler is not None and handler != signal.SIG_IGN:
            previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])  # now handled as if it arrived just now


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the newest checkpoint; the old newest becomes ``prev.pt``.

    Raises:
        CheckpointError: the disk filled up; ``last.pt`` and ``prev.pt`` are unchanged.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(ckpt_dir)
    last, staged = ckpt_dir / LAST, ckpt_dir / STAGED
    payload = {"format": FORMAT, **state}
    with _signals_held():
        try:
            atomic_write(staged, lambda tmp: _save(payload, tmp))
        except DiskFullError as e:
            kept = f"the previous one ({LAST}) is kept" if last.exists() else "none was lost"
            raise CheckpointError(
                f"disk full while writing a checkpoint in {ckpt_dir} ({e.free_text} free); "
                f"{kept}. Free some space, then continue with snugtune train --resume "
                f"{ckpt_dir.parent}"
            ) from e
        if last.exists():
            os.replace(last, ckpt_dir / PREV)
        os.replace(staged, last)
        fsync(ckpt_dir)
    return last


def _save(payload: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as f:  # torch.save writes through the file object it is given
        torch.save(payload, f)


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
            raise UnsafeCheckpointError(
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
    more and catches it (the cost of that read is not recorded in a committed JSON).
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"damaged zip structure: {e}"
    return f"{bad} fails its CRC-32 check" if bad is not None else None


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
        except UnsafeCheckpointError:
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
