"""Live-storage tracking under any tensor type: a ``TorchDispatchMode`` that logs allocations.

Every operator's outputs pass through :class:`MemoryTracker`, which counts storages through the
shared :class:`~snugtune.memory.storages.StorageLedger` (views count once, frees are seen by
weakref). The same code runs on ``FakeTensor`` (no memory) and on real CPU tensors (to check
itself).

The tracker only records an event log (allocations, frees, marks); :mod:`.trace` turns that
log into peaks and a breakdown by category. Categories are decided as late as possible: a
storage allocated during backward and later found as a parameter's ``.grad`` is a gradient.

Unlike ``torch.distributed._tools.mem_tracker.MemTracker``, nothing here registers hooks on
parameters, so frozen parameters (transfer learning's normal case) are fine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._prims_common import suggest_memory_format
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from snugtune.memory.storages import StorageLedger
from snugtune.memory.trace import (
    ALLOC,
    CONV,
    FREE,
    MARK,
    Category,
    ConvCall,
    StorageInfo,
    Trace,
)

__all__ = ["MemoryTracker"]

log = logging.getLogger(__name__)

_aten = torch.ops.aten
_COPY_OPS = {_aten._to_copy.default}
DATA_DEPENDENT_ERRORS = (DataDependentOutputException, DynamicOutputShapeException)
_CONV_OPS = {_aten.convolution.default, _aten.convolution_backward.default}


@dataclass
class _State:
    """Mutable bookkeeping of one tracking session (kept apart from the mode for clarity)."""

    infos: list[StorageInfo] = field(default_factory=list)
    events: list[tuple[int, int, int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    convs: list[ConvCall] = field(default_factory=list)
    param_serials: set[int] = field(default_factory=set)
    module_stack: list[str] = field(default_factory=list)
    category: Category = Category.TEMPORARIES  # of the storage being recorded


class MemoryTracker(TorchDispatchMode):
    """Record every storage allocated or freed while active, and where it came from.

    Use as a context manager around the work to trace (inside ``FakeTensorMode`` for a
    simulation). Pre-existing tensors (parameters, buffers) are added with
    :meth:`track_existing`; phases are delimited with :meth:`mark`; modules are named with
    :meth:`watch_modules` so saved activations can be attributed to layers.
    """

    def __init__(self, fallback: Callable[[Any, Any, Any], Any] | None = None) -> None:
        """Args:
        fallback: runs an operator that raised a data-dependent error under a fake mode
            (:class:`snugtune.memory._fake.DataDependentFallback`); ``None`` re-raises.
        """
        super().__init__()
        self._s = _State()
        self._ledger = StorageLedger(self._alloc, self._resize, self._free)
        self._fallback = fallback

    # ------------------------------------------------------------------ recording
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        try:
            out = func(*args, **kwargs)
        except DATA_DEPENDENT_ERRORS:
            if self._fallback is None:
                raise
            out = self._fallback(func, args, kwargs)
        category = self._category_for(func, args)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                if self._serial(t) is None and _aliases_input(t, args, kwargs):
                    # a view of a tensor made before tracking (a constant held by a module):
                    # it exists already, like the weights
                    self.set_category([t], Category.PARAMETERS)
                else:
                    self._see(t, category)
        if func in _CONV_OPS:
            self._record_conv(func, args, out)
        return out

    def _category_for(self, func: Any, args: Any) -> Category:
        if func in _COPY_OPS and args and isinstance(args[0], torch.Tensor):
            serial = self._serial(args[0])
            if serial in self._s.param_serials:
                return Category.AUTOCAST  # the autocast weight cache, or a dtype copy of a weight
        if self._s.module_stack:  # in a forward, or a checkpointed block's recompute
            return Category.ACTIVATIONS
        return Category.TEMPORARIES

    def _serial(self, t: torch.Tensor) -> int | None:
        return self._ledger.serial(t)

    def _see(self, t: torch.Tensor, category: Category) -> int | None:
        self._s.category = category
        return self._ledger.see(t)

    def _alloc(self, serial: int, nbytes: int, t: torch.Tensor) -> None:
        s = self._s
        module = s.module_stack[-1] if s.module_stack else ""
        s.infos.append(StorageInfo(category=s.category, module=module, device=t.device.type))
        s.events.append((ALLOC, serial, nbytes))

    def _resize(self, serial: int, old: int, new: int) -> None:  # resize_ / out= on a storage
        self._s.events.append((FREE, serial, old))
        self._s.events.append((ALLOC, serial, new))

    def _free(self, serial: int, nbytes: int) -> None:
        self._s.events.append((FREE, serial, nbytes))

    def _record_conv(self, func: Any, args: Any, out: Any) -> None:
        # aten.convolution(input, weight, bias, stride, padding, dilation, transposed,
        #                  output_padding, groups)
        # aten.convolution_backward(grad_output, input, weight, bias_sizes, stride, padding,
        #                           dilation, transposed, output_padding, groups, output_mask)
        backward = func is _aten.convolution_backward.default
        if backward:
            y, x, w = args[0], args[1], args[2]
            stride, dilation, groups = args[4], args[6], args[9]
        else:
            x, w, y = args[0], args[1], out
            stride, dilation, groups = args[3], args[5], args[8]
        call = ConvCall(
            backward=backward,
            input_shape=tuple(int(d) for d in x.shape),
            weight_shape=tuple(int(d) for d in w.shape),
            output_shape=tuple(int(d) for d in y.shape),
            itemsize=int(x.element_size()),
            groups=int(groups),
            stride=tuple(int(v) for v in stride),
            dilation=tuple(int(v) for v in dilation),
            channels_last=_nhwc(x) or _nhwc(w),
        )
        self._s.events.append((CONV, len(self._s.convs), 0))
        self._s.convs.append(call)

    # ------------------------------------------------------------------ user API
    def track_existing(self, tensors: Iterable[torch.Tensor], category: Category) -> None:
        """Add tensors that exist before tracking started (parameters, buffers, inputs)."""
        self.set_category(tensors, category)

    def set_category(
        self,
        tensors: Iterable[torch.Tensor | None],
        category: Category,
        *,
        device: str | None = None,
    ) -> None:
        """Declare what storages are (gradients after backward, optimizer state, inputs).

        Args:
            tensors: tensors whose storages to re-label (``None`` entries are skipped); ones
                not seen yet are added as allocated now.
            category: the new category.
            device: overrides the recorded device type (``"host"`` for CPU-side scalars).
        """
        for t in tensors:
            if t is None:
                continue
            serial = self._serial(t)
            if serial is None:
                serial = self._see(t, category)
            if serial is None:
                continue
            info = self._s.infos[serial]
            self._s.infos[serial] = StorageInfo(category, info.module, device or info.device)
            if category is Category.PARAMETERS:
                self._s.param_serials.add(serial)

    def mark(self, label: str) -> None:
        """Put a named mark in the log (phase boundaries: ``step1.forward``, ``eval`` ...)."""
        self._s.events.append((MARK, len(self._s.labels), 0))
        self._s.labels.append(label)

    @contextmanager
    def watch_modules(self, model: nn.Module) -> Iterator[None]:
        """Name the innermost running module so activations can be attributed to layers."""
        handles = []
        stack = self._s.module_stack
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(_push(stack, name or "<model>")))
            handles.append(module.register_forward_hook(_pop(stack), always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            stack.clear()

    def trace(self) -> Trace:
        """The log so far as an immutable :class:`Trace` (storages still live stay live).

        Consecutive frees are put in serial order: their order is that of a hash map in some
        cases (autocast's weight cache is cleared in pointer order), it changes neither live
        bytes nor the allocator's final state, and a canonical order lets traces at two batch
        sizes be compared event by event.
        """
        s = self._s
        return Trace(
            events=_canonical(s.events),
            infos=tuple(s.infos),
            labels=tuple(s.labels),
            convs=tuple(s.convs),
        )


def _nhwc(t: torch.Tensor) -> bool:
    """Whether PyTorch's convolution treats ``t`` as channels-last (``suggest_memory_format``)."""
    return t.dim() == 4 and suggest_memory_format(t) == torch.channels_last


def _aliases_input(t: torch.Tensor, args: Any, kwargs: Any) -> bool:
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return False
    for a in tree_flatten((args, kwargs))[0]:
        if isinstance(a, torch.Tensor):
            try:
                if a.untyped_storage() is st:
                    return True
            except (RuntimeError, NotImplementedError):
                continue
    return False


def _canonical(events: list[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...]:
    out: list[tuple[int, int, int]] = []
    run: list[tuple[int, int, int]] = []
    for ev in events:
        if ev[0] == FREE:
            run.append(ev)
            continue
        if run:
            out.extend(sorted(run, key=lambda e: e[1]))
            run = []
        out.append(ev)
    out.extend(sorted(run, key=lambda e: e[1]))
    return tuple(out)


def _push(stack: list[str], name: str) -> Any:
    def hook(_module: nn.Module, _args: Any) -> None:
        stack.append(name)

    return hook


def _pop(stack: list[str]) -> Any:
    def hook(_module: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()

    return hook
