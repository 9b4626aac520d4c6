"""The one storage-counting core: which tensor storages exist, their sizes, and when they go.

Both the simulator's :class:`~snugtune.memory.tracker.MemoryTracker` (which logs every event of
a simulated step) and the guard's :class:`~snugtune.memory.guard.VirtualDeviceBudget` (which
keeps a running total over a whole phase) count through a :class:`StorageLedger`.

A storage is identified by its ``torch.UntypedStorage`` object: PyTorch keeps one Python object
per storage alive exactly as long as the storage ("PyObject preservation"), so views and
in-place results that share a storage count once, and a ``weakref`` callback on that object
sees the storage freed (and drops its entry before the object's ``id`` can be reused). A
``FakeTensor``'s storage is a meta storage: it is identified the same way, and holds no memory.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["StorageLedger", "tensors_in"]


class StorageLedger:
    """Live storages, each with a serial number and its bytes.

    Args:
        on_alloc: ``(serial, nbytes, tensor)`` for a storage seen for the first time.
        on_resize: ``(serial, old_nbytes, new_nbytes)`` for a storage that changed size.
        on_free: ``(serial, nbytes)`` when a seen storage is freed.
        device: only storages of this device type are counted (None: every storage).
    """

    def __init__(
        self,
        on_alloc: Callable[[int, int, torch.Tensor], None],
        on_resize: Callable[[int, int, int], None],
        on_free: Callable[[int, int], None],
        *,
        device: str | None = None,
    ) -> None:
        self._on_alloc, self._on_resize, self._on_free = on_alloc, on_resize, on_free
        self.device = device
        self._live: dict[int, tuple[int, int]] = {}  # id(storage) -> (serial, nbytes)
        self._refs: dict[int, weakref.ref[Any]] = {}  # keeps the free callbacks registered
        self._next = 0
        # Re-entrant: an allocation under the lock may run the cyclic GC, whose frees call back.
        self._lock = threading.RLock()

    def storage(self, t: torch.Tensor) -> Any | None:
        """``t``'s storage object, or None (no storage, or not of the counted device)."""
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested: no storage
            return None
        if self.device is not None and st.device.type != self.device:
            return None  # a fake tensor's storage is on "meta": no memory of this device
        return st

    def serial(self, t: torch.Tensor) -> int | None:
        """The serial of ``t``'s storage if it was seen (nothing is recorded)."""
        st = self.storage(t)
        entry = None if st is None else self._live.get(id(st))
        return None if entry is None else entry[0]

    def pending_bytes(self, t: torch.Tensor) -> int:
        """Bytes that seeing ``t`` would add (0 when seen at its current size)."""
        st = self.storage(t)
        if st is None:
            return 0
        entry = self._live.get(id(st))
        return max(0, int(st.nbytes()) - (entry[1] if entry else 0))

    def see(self, t: torch.Tensor) -> int | None:
        """Record ``t``'s storage (or its new size); returns its serial (None: not counted)."""
        st = self.storage(t)
        if st is None:
            return None
        key, nbytes = id(st), int(st.nbytes())
        entry = self._live.get(key)
        if entry is not None and entry[1] == nbytes:  # fast path: known, same size
            return entry[0]
        with self._lock:
            entry = self._live.get(key)
            if entry is None:
                serial = self._next
                self._next += 1
                self._live[key] = (serial, nbytes)
                self._refs[key] = weakref.ref(st, self._freed_callback(key))
                self._on_alloc(serial, nbytes, t)
            else:
                serial = entry[0]
                self._live[key] = (serial, nbytes)
                self._on_resize(serial, entry[1], nbytes)
        return serial

    def _freed_callback(self, key: int) -> Callable[[Any], None]:
        def freed(_: Any) -> None:
            with self._lock:
                entry = self._live.pop(key, None)
                self._refs.pop(key, None)
                if entry is not None:
                    self._on_free(*entry)

        return freed

    def release(self) -> None:
        """Stop counting: drop every weakref (cancelling its callback)."""
        with self._lock:
            self._refs.clear()
            self._live.clear()


def tensors_in(tree: Any) -> list[torch.Tensor]:
    """Tensors in an operator's args or result (nested lists, tuples and dicts)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    out: list[torch.Tensor] = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            out.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return out
