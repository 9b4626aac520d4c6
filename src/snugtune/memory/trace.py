"""The event log of a traced step and what can be read from it: peaks, breakdowns, layers.

A :class:`Trace` is plain data: a sequence of ``(kind, serial, nbytes)`` events where
``serial`` numbers a storage (one allocation lifetime), plus what is known about each storage
(:class:`StorageInfo`), the labels of marks, and the convolutions seen (for the device model's
workspace term). Live bytes after event ``i`` is the running sum of allocations minus frees.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import numpy as np

__all__ = [
    "ALLOC",
    "CONV",
    "FREE",
    "MARK",
    "Category",
    "ConvCall",
    "StorageInfo",
    "Trace",
    "at_batch",
]

ALLOC, FREE, MARK, CONV = 0, 1, 2, 3


class Category(str, Enum):
    """What a live storage is, in the terms a user can act on."""

    PARAMETERS = "parameters"  # weights and buffers (BatchNorm running stats)
    GRADIENTS = "gradients"
    OPTIMIZER = "optimizer_state"
    ACTIVATIONS = "activations"  # allocated in a module's forward, alive at the peak: saved for backward
    TEMPORARIES = "temporaries"  # backward/optimizer/loss intermediates
    AUTOCAST = "autocast_copies"  # low-precision copies of weights cached by autocast
    INPUT = "input"  # the batch (images and labels)


CATEGORIES: tuple[Category, ...] = tuple(Category)


@dataclass(frozen=True)
class StorageInfo:
    """What is known about one storage: its category, the module that made it, its device.

    ``device`` is ``"host"`` for tensors that live in host memory even on a GPU run (Adam's
    ``step`` counters), so the device model can leave them out.
    """

    category: Category
    module: str
    device: str


@dataclass(frozen=True)
class ConvCall:
    """One convolution (forward or backward) as seen at the dispatcher; shapes are NCHW-ordered."""

    backward: bool
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    itemsize: int
    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    channels_last: bool = False  # the kernel sees NHWC strides (input's or weight's)


@dataclass(frozen=True)
class Peak:
    """The highest live-byte count in a span of the log, and the event index where it happens."""

    bytes: int
    index: int


@dataclass(frozen=True)
class Trace:
    """An immutable allocation log; see the module docstring."""

    events: tuple[tuple[int, int, int], ...]
    infos: tuple[StorageInfo, ...]
    labels: tuple[str, ...]
    convs: tuple[ConvCall, ...]

    @cached_property
    def live_bytes(self) -> np.ndarray:
        """Live tensor bytes after each event, shape ``(len(events),)``."""
        if not self.events:
            return np.zeros(0, dtype=np.int64)
        arr = np.asarray(self.events, dtype=np.int64)
        delta = np.where(arr[:, 0] == ALLOC, arr[:, 2], 0) - np.where(arr[:, 0] == FREE, arr[:, 2], 0)
        return np.cumsum(delta)

    def mark_index(self, label: str) -> int:
        """Event index of the mark named ``label``."""
        want = self.labels.index(label)
        for i, (kind, ref, _) in enumerate(self.events):
            if kind == MARK and ref == want:
                return i
        raise KeyError(label)

    def span(self, start: str | None = None, stop: str | None = None) -> tuple[int, int]:
        """Event index range ``[lo, hi)`` between two marks (the whole log by default)."""
        lo = 0 if start is None else self.mark_index(start)
        hi = len(self.events) if stop is None else self.mark_index(stop)
        return lo, hi

    def peak(self, start: str | None = None, stop: str | None = None) -> Peak:
        """Highest live bytes between the marks ``start`` and ``stop`` (first occurrence)."""
        lo, hi = self.span(start, stop)
        if hi <= lo:
            return Peak(0, lo)
        seg = self.live_bytes[lo:hi]
        i = int(np.argmax(seg))
        return Peak(int(seg[i]), lo + i)

    def live_at(self, index: int) -> dict[int, int]:
        """Storages live right after event ``index``: serial -> bytes."""
        live: dict[int, int] = {}
        for kind, serial, nbytes in self.events[: index + 1]:
            if kind == ALLOC:
                live[serial] = nbytes
            elif kind == FREE:
                live.pop(serial, None)
        return live

    def breakdown_at(self, index: int, exclude_device: str | None = None) -> dict[str, int]:
        """Live bytes by category right after event ``index`` (every category present).

        Args:
            index: event index.
            exclude_device: leave out storages recorded on this device (``"host"``).
        """
        out = {c.value: 0 for c in CATEGORIES}
        for serial, nbytes in self.live_at(index).items():
            info = self.infos[serial]
            if info.device != exclude_device:
                out[info.category.value] += nbytes
        return out

    def top_layers_at(self, index: int, n: int = 10) -> tuple[tuple[str, int], ...]:
        """Modules holding the most activation bytes right after event ``index``."""
        by_module: dict[str, int] = defaultdict(int)
        for serial, nbytes in self.live_at(index).items():
            info = self.infos[serial]
            if info.category is Category.ACTIVATIONS:
                by_module[info.module] += nbytes
        ranked = sorted(by_module.items(), key=lambda kv: (-kv[1], kv[0]))
        return tuple(ranked[:n])


def at_batch(t1: Trace, t2: Trace, b1: int, b: int) -> Trace | None:
    """The trace at batch ``b`` from traces at ``b1`` and ``b1 + 1`` of the same step.

    Every tensor of an image-classifier step is either batch-independent (weights, optimizer
    state) or proportional to the batch (activations), so each event's size is
    ``n(b) = n(b1) + (n(b1 + 1) - n(b1)) * (b - b1)``: exact integers, no rounding. Returns
    ``None`` when the two traces do not have the same structure (a model whose control flow
    depends on the batch size), and the caller simulates ``b`` directly.
    """
    if (
        len(t1.events) != len(t2.events)
        or t1.infos != t2.infos
        or t1.labels != t2.labels
        or len(t1.convs) != len(t2.convs)
    ):
        return None
    a1 = np.asarray(t1.events, dtype=np.int64).reshape(-1, 3)
    a2 = np.asarray(t2.events, dtype=np.int64).reshape(-1, 3)
    if not np.array_equal(a1[:, :2], a2[:, :2]):
        return None
    sizes = a1[:, 2] + (a2[:, 2] - a1[:, 2]) * (b - b1)
    if (sizes < 0).any():
        return None
    out = a1.copy()
    out[:, 2] = sizes
    convs = tuple(_conv_at(c1, c2, b - b1) for c1, c2 in zip(t1.convs, t2.convs, strict=True))
    events = tuple(map(tuple, out.tolist()))
    return Trace(events=events, infos=t1.infos, labels=t1.labels, convs=convs)  # type: ignore[arg-type]


def _conv_at(c1: ConvCall, c2: ConvCall, steps: int) -> ConvCall:
    def shape(s1: tuple[int, ...], s2: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(a + (b - a) * steps for a, b in zip(s1, s2, strict=True))

    return ConvCall(
        backward=c1.backward,
        input_shape=shape(c1.input_shape, c2.input_shape),
        weight_shape=c1.weight_shape,
        output_shape=shape(c1.output_shape, c2.output_shape),
        itemsize=c1.itemsize,
        groups=c1.groups,
        stride=c1.stride,
        dilation=c1.dilation,
        channels_last=c1.channels_last,
    )
