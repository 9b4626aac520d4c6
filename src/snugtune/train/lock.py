"""One process trains into a run folder at a time.

``train`` and ``resume`` hold an exclusive, non-blocking ``flock`` on ``RUN/.lock`` for the
whole run (rank 0 only under torchrun: the other ranks share its folder). A second ``train``
or ``--resume`` on the same folder fails at once with the holder's pid, instead of two
processes interleaving checkpoints and metrics. The kernel drops the lock when its process
ends, however it ends (SIGKILL included), so a killed run resumes without clean-up.
Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from snugtune.errors import CheckpointError

__all__ = ["LOCK_NAME", "run_lock"]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock while the block runs.

    Raises:
        CheckpointError: another live process holds it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        enabled = False
    if not enabled:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CheckpointError(
                f"{run_dir} is in use by another snugtune process (pid {holder}); wait for it "
                "to finish (or stop it), or train into another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
