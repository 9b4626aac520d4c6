"""Progress bars for long loops: tqdm where someone watches, hidden in logs or when disabled.

Someone watches a terminal (stderr is a TTY) or a Jupyter kernel's cells (Jupyter, Colab, VS
Code), whose stderr is no TTY but shows in the cell. There ``tqdm.auto`` is tqdm's notebook
widget when ipywidgets is installed, else its text bar, written to stderr: the cell shows it as
a stream output. Anywhere else (CI logs, a pipe) tqdm's own ``disable=None`` would hide the
bar, and so does this module.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm.auto import tqdm

__all__ = ["in_kernel", "progress", "progress_bar", "visible"]

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, enabled: bool = True, total: int | None = None,
             unit: str = "batch") -> Iterator[T]:
    """Iterate with a progress bar, drawn when ``enabled`` and someone can see it
    (:func:`visible`)."""
    yield from tqdm(items, desc=desc, total=total, disable=not (enabled and visible()),
                    leave=False, dynamic_ncols=True, unit=unit)


def progress_bar(desc: str, enabled: bool = True, unit: str = "image",
                 ) -> Callable[[Iterable[T], int], Iterator[T]]:
    """``progress`` for a library loop that takes a bar: ``bar(items, total)``."""
    return lambda items, total: progress(items, desc=desc, enabled=enabled, total=total, unit=unit)


def visible(stream: TextIO | None = None) -> bool:
    """Whether a bar on ``stream`` (default: stderr) is seen: it is a terminal, or this process
    is a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    return tty or in_kernel()


def in_kernel() -> bool:
    """Whether this process is an IPython kernel (Jupyter, Colab, VS Code).

    Found without importing IPython: a kernel has imported it already. A kernel's shell has a
    ``kernel`` (ipykernel's ``ZMQInteractiveShell``); the terminal's IPython has none.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    if shell is None:
        return False
    return (getattr(shell, "kernel", None) is not None
            or type(shell).__name__ == "ZMQInteractiveShell")
