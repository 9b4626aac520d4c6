"""Fake-tensor plumbing: swap a model's tensors for fakes, and survive data-dependent ops.

``FakeTensorMode`` computes shapes and dtypes without data, so an operator whose output
depends on values (``.item()``, ``unique``, ``nonzero``) cannot run. Models use such ops for
bookkeeping (timm's convnext and regnet families at construction, BatchNorm with
``momentum=None``, GradScaler's inf check), almost never for the big tensors, so
:class:`DataDependentFallback` runs them for real on tensors of ones of the same shape and turns
the result back into fakes. Ones rather than zeros: a value used as a divisor stays finite.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_map

__all__ = ["DataDependentFallback", "fake_parameters", "new_fake_mode"]

log = logging.getLogger(__name__)

# Inputs of a data-dependent op are materialised for real; above this many elements that
# would cost real memory and time, so the simulation gives up with a clear error instead.
MAX_FALLBACK_NUMEL = 1 << 22


def new_fake_mode() -> FakeTensorMode:
    """A fake mode that accepts stray real tensors (module attributes that are not buffers)."""
    return FakeTensorMode(allow_non_fake_inputs=True)


@contextmanager
def fake_parameters(
    model: nn.Module, fake_mode: FakeTensorMode, device: str, channels_last: bool
) -> Iterator[list[torch.Tensor]]:
    """Temporarily replace every parameter and buffer of ``model`` by a fake of the same shape.

    The model's own tensors (real or meta) are put back on exit, untouched, so one built model
    can be simulated many times. Tied parameters stay tied. Yields the fake parameters.

    Args:
        model: any module.
        fake_mode: the mode that owns the fakes.
        device: device type of the fakes (``"cpu"``).
        channels_last: 4-D parameters get channels-last strides, as ``model.to(
            memory_format=torch.channels_last)`` would give them.
    """
    memo: dict[int, torch.Tensor] = {}
    saved: list[tuple[dict[str, Any], str, Any]] = []
    params: list[torch.Tensor] = []
    for module in model.modules():
        tables: tuple[tuple[dict[str, Any], bool], ...] = (
            (module._parameters, True), (module._buffers, False))
        for table, is_param in tables:
            for name, t in list(table.items()):
                if t is None:
                    continue
                if id(t) not in memo:
                    memo[id(t)] = _fake_like(t, fake_mode, device, channels_last, is_param)
                    if is_param:
                        params.append(memo[id(t)])
                saved.append((table, name, t))
                table[name] = memo[id(t)]
    try:
        yield params
    finally:
        for table, name, t in saved:
            table[name] = t


def _fake_like(
    t: torch.Tensor, mode: FakeTensorMode, device: str, channels_last: bool, is_param: bool
) -> torch.Tensor:
    fmt = torch.channels_last if channels_last and t.dim() == 4 else torch.contiguous_format
    with mode:
        fake = torch.empty(tuple(t.shape), dtype=t.dtype, device=device, memory_format=fmt)
    if is_param:
        return nn.Parameter(fake, requires_grad=t.requires_grad)
    return fake


class DataDependentFallback:
    """Run a data-dependent operator for real on ones; see the module docstring.

    Called by :class:`~snugtune.memory.tracker.MemoryTracker` when the fake mode refuses an
    operator; results come back as fakes of ``fake_mode``.
    """

    def __init__(self, fake_mode: FakeTensorMode) -> None:
        self.fake_mode = fake_mode
        self.count = 0

    def __call__(self, func: Any, args: Any, kwargs: Any) -> Any:
        self.count += 1
        log.debug("data-dependent op %s run on ones", func)

        def real(x: Any) -> Any:
            if not isinstance(x, FakeTensor):
                return x
            if x.constant is not None:
                return x.constant
            if x.numel() > MAX_FALLBACK_NUMEL:
                raise RuntimeError(
                    f"{func} needs the values of a {tuple(x.shape)} tensor; too large to "
                    "materialise for a memory simulation"
                )
            return torch.ones(tuple(x.shape), dtype=x.dtype, device="cpu")

        with _disable_current_modes():
            out = func(*tree_map(real, args), **tree_map(real, kwargs))

        def fake(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return self.fake_mode.from_tensor(x)
            return x

        return tree_map(fake, out)
