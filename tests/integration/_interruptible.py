"""Run ``snugtune`` and freeze at a chosen point so a test can ``kill -9`` it exactly there.

Usage::

    python tests/integration/_interruptible.py POINT MARKER -- snugtune arguments...

At POINT the process writes the file MARKER (its content names the point) and sleeps; the
test polls for MARKER, then sends SIGKILL. Freezing instead of exiting means the kill hits
a process in the middle of real work: open files, partial temp files, a half-done rename
sequence. The points only wrap functions (nothing else changes), so what the test resumes
is exactly what a real kill at that moment would leave.

POINT is one of:

``scan:N``
    inside the N-th image decode of the folder scan (before any checkpoint exists).
``step:N``
    right after the N-th optimizer step of this process (mid-epoch when N is not a
    multiple of the steps per epoch).
``write:N``
    halfway through the bytes of the N-th checkpoint this process writes: its temp file is
    partial, ``last.pt``/``prev.pt`` untouched.
``renamed:N``
    inside the N-th checkpoint, between its two renames: ``last.pt`` is already
    ``prev.pt`` and the new one is still ``.staged.pt``.
``saved:N``
    right after the N-th checkpoint became ``last.pt``: between two epochs (or phases).
``fill``
    inside the feature-cache fill: the first appended records are on disk (fsynced), the
    data index has not committed them yet.
``outputs``
    halfway through writing the final weights (after the last checkpoint).

``pause:POINT`` pauses there instead: the process announces the point, then waits until the
file ``MARKER.go`` exists and carries on (a checkpoint paused halfway through its bytes then
writes the rest). A test sends a signal to the paused process, then lets it go: the signal
arrives at that exact moment, with no polling race. SIGINT is at its default here (a test
session started in the background hands its children SIGINT ignored).
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch  # patched before snugtune imports ``save_file`` from it
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

FREEZE_S = 1800


def _freezer(marker: Path, point: str, pause: bool) -> Callable[[], None]:
    """A function that announces ``point`` through ``marker`` and then never returns (or,
    with ``pause``, returns once ``MARKER.go`` exists)."""
    go = marker.with_name(marker.name + ".go")

    def freeze() -> None:
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(f"{point} pid={os.getpid()} thread={threading.current_thread().name}\n")
        os.replace(tmp, marker)
        deadline = time.monotonic() + FREEZE_S
        while time.monotonic() < deadline:  # a signal's handler may interrupt a sleep
            if pause and go.exists():
                return
            time.sleep(0.01 if pause else 1.0)
        os._exit(3)  # a test that died without killing us must not leave us behind

    return freeze


def _counter(n: int) -> Callable[[], bool]:
    """True on exactly the ``n``-th call."""
    state = {"calls": 0}
    lock = threading.Lock()  # the scan decodes in a thread pool

    def tick() -> bool:
        with lock:
            state["calls"] += 1
            return state["calls"] == n

    return tick


def _at_scan(n: int, freeze: Callable[[], None]) -> None:
    check = importlib.import_module("snugtune.data.check")

    original, hit = check.decode_image, _counter(n)

    def decode_image(*a: Any, **k: Any) -> Any:
        if hit():
            freeze()
        return original(*a, **k)

    check.decode_image = decode_image  # type: ignore[assignment]


def _at_step(n: int, freeze: Callable[[], None]) -> None:
    hit = _counter(n)

    def after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
        if hit():
            freeze()

    register_optimizer_step_post_hook(after_step)


def _at_write(n: int, freeze: Callable[[], None]) -> None:
    original, hit = torch.save, _counter(n)

    def save(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        if ".staged.pt" not in str(getattr(f, "name", "")) or not hit():  # checkpoints only
            original(obj, f, *a, **k)
            return
        buf = io.BytesIO()
        original(obj, buf, *a, **k)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        freeze()
        f.write(data[len(data) // 2 :])  # paused, not frozen: the write completes

    torch.save = save


class _OsWithHook:
    """The ``os`` module as ``snugtune.recipe.checkpoint`` sees it, with ``replace`` watched."""

    def __init__(self, on_replace: Callable[[str, str], None]) -> None:
        self._on_replace = on_replace

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        os.replace(src, dst)
        self._on_replace(Path(src).name, Path(dst).name)


def _at_checkpoint(kind: str, n: int, freeze: Callable[[], None]) -> None:
    ckpt = importlib.import_module("snugtune.recipe.checkpoint")

    saves = {"n": 0}

    def on_replace(src: str, dst: str) -> None:
        if src == ckpt.STAGED and dst == ckpt.LAST:
            saves["n"] += 1  # the N-th checkpoint is complete
            if kind == "saved" and saves["n"] == n:
                freeze()
        elif src == ckpt.LAST and dst == ckpt.PREV and kind == "renamed" and saves["n"] == n - 1:
            freeze()

    ckpt.os = _OsWithHook(on_replace)  # type: ignore[assignment]


def _at_fill(freeze: Callable[[], None]) -> None:
    index = importlib.import_module("snugtune.store.index")
    original = index.DataIndex.add_records

    def add_records(self: Any, key: str, *a: Any, **k: Any) -> None:
        store = self.store(key)
        if store is not None and store.kind == "features":
            freeze()
        original(self, key, *a, **k)

    index.DataIndex.add_records = add_records


def _at_outputs(freeze: Callable[[], None]) -> None:
    def save_file(tensors: dict[str, torch.Tensor], filename: str, *a: Any, **k: Any) -> None:
        data = safetensors.torch.save(tensors)
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2])
        freeze()

    safetensors.torch.save_file = save_file


def install(point: str, marker: Path) -> None:
    """Arrange for the process to freeze (or pause) at ``point`` (see the module docstring)."""
    pause = point.startswith("pause:")
    point = point.removeprefix("pause:")
    freeze = _freezer(marker, point, pause)
    kind, _, arg = point.partition(":")
    n = int(arg) if arg else 0
    if kind == "scan":
        _at_scan(n, freeze)
    elif kind == "step":
        _at_step(n, freeze)
    elif kind == "write":
        _at_write(n, freeze)
    elif kind in ("renamed", "saved"):
        _at_checkpoint(kind, n, freeze)
    elif kind == "fill":
        _at_fill(freeze)
    elif kind == "outputs":
        _at_outputs(freeze)
    else:
        raise SystemExit(f"unknown point {point!r}")


def main(argv: list[str]) -> int:
    """``POINT MARKER -- ARGS``: install the freeze point, then run ``snugtune ARGS``."""
    point, marker, sep, *args = argv
    if sep != "--":
        raise SystemExit("usage: _interruptible.py POINT MARKER -- snugtune arguments...")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as from a terminal
    install(point, Path(marker))
    from snugtune.cli import main as snugtune_main

    return snugtune_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
