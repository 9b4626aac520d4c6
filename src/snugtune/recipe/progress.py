"""Progress bars for long loops (tqdm on stderr; hidden when not a terminal or disabled)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "progress_bar"]

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, enabled: bool = True, total: int | None = None,
             unit: str = "batch") -> Iterator[T]:
    """Iterate with a progress bar; ``disable=None`` lets tqdm hide it on non-TTY output (CI)."""
    yield from tqdm(items, desc=desc, total=total, disable=None if enabled else True,
                    leave=False, dynamic_ncols=True, unit=unit)


def progress_bar(desc: str, enabled: bool = True, unit: str = "image",
                 ) -> Callable[[Iterable[T], int], Iterator[T]]:
    """``progress`` for a library loop that takes a bar: ``bar(items, total)``."""
    return lambda items, total: progress(items, desc=desc, enabled=enabled, total=total, unit=unit)
