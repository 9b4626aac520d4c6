"""Runtime memory guards, the plan held while it runs: a real cap on CUDA, a virtual one on CPU.

* :class:`CudaBudget` holds one CUDA process to the budget as ``nvidia-smi`` shows it (the
  CUDA context and loaded kernels plus the caching allocator): it caps the allocator at the
  budget less the measured context with ``torch.cuda.set_per_process_memory_fraction``, so a
  4 GiB run on an 80 GiB card behaves like a 4 GB card, and reads
  ``max_memory_allocated/reserved`` on exit.
* :class:`VirtualDeviceBudget` makes the CPU behave like a capped device, so the whole OOM
  path (halve the micro-batch, retry the step, give up at 1 with a ``BudgetError``) runs in CI.
  It is a ``TorchDispatchMode`` that counts the live bytes of every tensor storage of the
  process and raises ``torch.OutOfMemoryError`` the moment an operator's new storage would
  take the total over the budget, as ``c10::cuda::CUDACachingAllocator`` does.

What the virtual device counts (a model of ``torch.cuda.memory_allocated``):

* storages allocated by operators while the guard is active; a storage is identified by its
  ``torch.UntypedStorage`` object, which PyTorch keeps alive exactly as long as the storage
  ("PyObject preservation"), so views count once and a ``weakref`` callback subtracts a
  storage when it is freed;
* at entry, the parameters, buffers and gradients of every live ``nn.Module`` and the state of
  every live optimizer (a real device holds them before the first step); the process is
  assumed to hold one model, the one being trained;
* any other tensor the moment an operator first reads it (optimizer state loaded from a
  checkpoint, a batch made by ``torch.from_numpy``): it evidently lives on the device.

Choices, and where the model is knowingly approximate:

* The data loader runs under :func:`host_side` (on a GPU, decoding, augmentation, collation
  and batches from workers are host memory); a batch counts when an operator first reads it,
  i.e. is sliced into micro-batches for the device. Counting the whole effective batch
  overstates the peak by ``batch - micro_batch`` images (0.6 MiB each at 224 px fp32):
  conservative and small. Forked worker processes are never counted.
* Exact storage bytes: no 512 B rounding, no segment reserve, no cuBLAS/cuDNN workspace.
  ``reserved_bytes`` is therefore not measured on the CPU.
* A tensor adopted on first read may take the total over the budget without raising (it
  exists already); the next allocation raises.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import dataloader as _dataloader

from snugtune.errors import BudgetError
from snugtune.memory.storages import StorageLedger, tensors_in
from snugtune.units import format_bytes

__all__ = [
    "CudaBudget",
    "OomEvent",
    "VirtualDeviceBudget",
    "existing_device_tensors",
    "host_side",
]

log = logging.getLogger(__name__)

_ACTIVE: weakref.WeakSet[VirtualDeviceBudget] = weakref.WeakSet()


def _disable_in_child() -> None:
    # A forked loader worker inherits the dispatch-mode stack; its memory is never the device's.
    for guard in list(_ACTIVE):
        guard._enabled = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disable_in_child)

_LOCAL = threading.local()  # .host: depth of host_side() on this thread


@contextmanager
def host_side() -> Iterator[None]:
    """Inside, this thread's new tensors are host memory: active guards do not count them."""
    depth = getattr(_LOCAL, "host", 0)
    _LOCAL.host = depth + 1
    try:
        yield
    finally:
        _LOCAL.host = depth


class _LoaderPatch:
    """Run ``DataLoader`` iteration under :func:`host_side` while guards live.

    Covers the single-process fetch (decode, augment, collate) and, with workers, the batch
    rebuilt from shared memory in this process (prefetched batches are host memory).
    """

    users = 0
    original: Any = None

    @classmethod
    def install(cls) -> None:
        cls.users += 1
        if cls.users > 1:
            return
        klass = _dataloader._BaseDataLoaderIter
        cls.original = original = klass.__next__

        def __next__(self: Any) -> Any:
            with host_side():
                return original(self)

        klass.__next__ = __next__  # type: ignore[method-assign]

    @classmethod
    def remove(cls) -> None:
        cls.users = max(0, cls.users - 1)
        if cls.users == 0 and cls.original is not None:
            _dataloader._BaseDataLoaderIter.__next__ = cls.original  # type: ignore[method-assign]
            cls.original = None


@dataclass(frozen=True)
class OomEvent:
    """One refused allocation: what was asked, what was live, under which budget."""

    requested_bytes: int
    live_bytes: int
    budget_bytes: int
    op: str

    def message(self) -> str:
        return (
            f"virtual device out of memory in {self.op}: tried to allocate "
            f"{format_bytes(self.requested_bytes)} with {format_bytes(self.live_bytes)} "
            f"live of a {format_bytes(self.budget_bytes)} budget"
        )


def existing_device_tensors() -> list[Tensor]:
    """Parameters, buffers and gradients of every live module, and every optimizer's state.

    What a real device holds before a phase starts (after ``gc.collect()``: finished runs go).
    """
    gc.collect()
    found: list[Any] = []
    for obj in gc.get_objects():
        kind = type(obj)
        try:
            if issubclass(kind, nn.Module):
                params = list(obj._parameters.values())
                found.extend(params)
                found.extend(obj._buffers.values())
                found.extend(p.grad for p in params if p is not None)
            elif issubclass(kind, torch.optim.Optimizer):
                for state in obj.state.values():
                    found.extend(state.values())
        except (AttributeError, TypeError):  # half-built or scripted objects: nothing to add
            continue
    return [t for t in found if isinstance(t, Tensor)]


class VirtualDeviceBudget(TorchDispatchMode):
    """Count live tensor bytes of this process; raise ``torch.OutOfMemoryError`` over budget.

    Use as a context manager. With ``budget_bytes=None`` it only measures. Storages are counted
    by the shared :class:`~snugtune.memory.storages.StorageLedger`.

    Attributes:
        live_bytes: bytes of the storages live now (among those counted).
        peak_bytes: the highest ``live_bytes`` seen while active (refused allocations excluded).
        entry_bytes: bytes already live at entry (see ``track_existing``).
        ooms: every refused allocation, oldest first.
    """

    def __init__(
        self, budget_bytes: int | None = None, *, device: str = "cpu", track_existing: bool = True
    ) -> None:
        """Args:
        budget_bytes: the virtual device's capacity; ``None`` to measure without a cap.
        device: device type whose tensors are counted (others, e.g. meta or fake, are not).
        track_existing: count modules and optimizers alive at entry
            (:func:`existing_device_tensors`).
        """
        super().__init__()
        self.budget_bytes = budget_bytes
        self.device = device
        self.track_existing = track_existing
        self.live_bytes = 0
        self.peak_bytes = 0
        self.entry_bytes = 0
        self.ooms: list[OomEvent] = []
        self._ledger = StorageLedger(self._alloc, self._resize, self._free, device=device)
        self._enabled = False

    def _alloc(self, serial: int, nbytes: int, t: Tensor) -> None:
        self.live_bytes += nbytes

    def _resize(self, serial: int, old: int, new: int) -> None:
        self.live_bytes += new - old

    def _free(self, serial: int, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def __enter__(self) -> VirtualDeviceBudget:
        if self.track_existing:
            self.track(existing_device_tensors())
        self.entry_bytes = self.live_bytes
        if self.budget_bytes is not None and self.entry_bytes > self.budget_bytes:
            self._release()
            raise _held_too_much(self.budget_bytes, self.entry_bytes, "")
        self._enabled = True
        _ACTIVE.add(self)
        _LoaderPatch.install()
        super().__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(et, e, tb)
        _LoaderPatch.remove()
        self._release()

    def _release(self) -> None:
        """Stop counting (the figures are kept)."""
        self._enabled = False
        _ACTIVE.discard(self)
        self._ledger.release()

    def track(self, tensors: Iterable[Tensor | None]) -> None:
        """Count tensors that exist already (each storage once), without a budget check."""
        for t in tensors:
            if t is not None:
                self._ledger.see(t)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not self._enabled or getattr(_LOCAL, "host", 0) > 0:
            return func(*args, **kwargs)
        for t in tensors_in(args):
            self._ledger.see(t)
        out = func(*args, **kwargs)
        produced = tensors_in(out)
        if self.budget_bytes is not None:
            new = sum(self._ledger.pending_bytes(t) for t in _distinct_storages(produced, self._ledger))
            if new and self.live_bytes + new > self.budget_bytes:
                self._refuse(new, str(func))
        for t in produced:
            self._ledger.see(t)
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
        return out

    def _refuse(self, requested: int, op: str) -> None:
        assert self.budget_bytes is not None
        event = OomEvent(requested, self.live_bytes, self.budget_bytes, op)
        self.ooms.append(event)
        log.debug("%s", event.message())
        raise torch.OutOfMemoryError(event.message())


def _distinct_storages(tensors: list[Tensor], ledger: StorageLedger) -> list[Tensor]:
    """One tensor per storage (outputs that share a storage count once)."""
    seen: set[int] = set()
    out = []
    for t in tensors:
        st = ledger.storage(t)
        if st is not None and id(st) not in seen:
            seen.add(id(st))
            out.append(t)
    return out


def _held_too_much(budget: int, held: int, where: str) -> BudgetError:
    return BudgetError(
        f"Budget {format_bytes(budget)} < {format_bytes(held)} already held {where}before the "
        "first step (weights, buffers, optimizer state). Try a smaller model, --precision bf16, "
        "or a larger --gpu-memory"
    )


def _cuda_device(device: torch.device | int | None) -> torch.device:
    """A CUDA device with an explicit index (the current one when not given)."""
    if isinstance(device, int):
        return torch.device("cuda", device)
    dev = torch.device("cuda") if device is None else torch.device(device)
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


class CudaBudget:
    """Hold one CUDA process to a budget (context included) and record its peaks.

    Args:
        budget_bytes: what the process may hold on the device; None: no cap, peaks only.
        device: the CUDA device.
        context_bytes: what the process holds outside the caching allocator (measured by
            ``memory.gpus.probe``); the allocator gets the rest of the budget.
    """

    def __init__(self, budget_bytes: int | None, device: torch.device | int | None = None, *,
                 context_bytes: int = 0) -> None:
        self.budget_bytes = budget_bytes
        self.context_bytes = context_bytes
        self.device = _cuda_device(device)
        self.peak_bytes: int | None = None
        self.reserved_bytes: int | None = None
        self._previous_fraction: float = 1.0

    @property
    def allocator_bytes(self) -> int | None:
        """The caching allocator's cap: the budget less the context."""
        return None if self.budget_bytes is None else self.budget_bytes - self.context_bytes

    def fraction(self) -> float:
        """The allocator fraction that makes the process's total the budget (1.0 without one)."""
        cap = self.allocator_bytes
        if cap is None:
            return 1.0
        total = torch.cuda.get_device_properties(self.device).total_memory
        return min(1.0, max(0.0, cap / total))

    def __enter__(self) -> CudaBudget:
        torch.cuda.synchronize(self.device)
        if self.budget_bytes is not None:
            held = int(torch.cuda.memory_allocated(self.device)) + self.context_bytes
            if held > self.budget_bytes:
                raise _held_too_much(self.budget_bytes, held, "on the GPU (context included) ")
            getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
            if getter is not None:
                self._previous_fraction = float(getter(self.device))
            torch.cuda.empty_cache()  # cached blocks above the new cap would count against it
            fraction = self.fraction()
            torch.cuda.set_per_process_memory_fraction(fraction, self.device)
            log.info("CUDA budget %s: %s context, allocator capped at %s (fraction %.4f)",
                     format_bytes(self.budget_bytes), format_bytes(self.context_bytes),
                     format_bytes(self.allocator_bytes or 0), fraction)
        torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        torch.cuda.synchronize(self.device)
        self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        self.reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
        if self.budget_bytes is not None:
            torch.cuda.set_per_process_memory_fraction(self._previous_fraction, self.device)
