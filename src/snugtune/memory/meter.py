"""Enforce the memory budget over a phase and measure its peak (``snugtune.memory.guard``).

* CUDA: the process is held to the budget, context included (the caching allocator is capped
  at the budget less the measured context: ``CudaBudget``); the peak is the whole process's,
  ``max_memory_reserved`` plus the context (what ``nvidia-smi`` would show at its highest),
  beside ``max_memory_allocated``, with or without a budget.
* CPU with a budget (``--gpu-memory`` on ``--device cpu``): the virtual device budget counts
  live tensor bytes and raises ``torch.OutOfMemoryError`` like a capped GPU, so the OOM
  recovery runs for real; the peak is its live-tensor peak; ``reserved_bytes`` stays ``None``
  (no caching allocator to measure).
* CPU without a budget: counting every operator in Python adds a large share of a CPU step
  (timed on ResNet-18 at 32 px and a tiny EfficientNet, in an earlier measurement that no
  committed JSON records), too much to impose on a whole run, so one step of the phase is
  counted (``sampling()``, at ``sampled_step``): the second, as the optimizer state appears at
  the end of the first, so the second holds the step's peak (weights, state, gradients and
  activations at once) and later steps repeat it; the only one in a one-step epoch. What the
  step starts with (the model's tensors, gradients, optimizer state) is passed in rather than
  found by walking the garbage collector (the two walks a phase used to make were slow; their
  timing is not recorded in a committed JSON).

A ``BudgetError`` leaving the meter (micro-batch 1 still out of memory) is re-raised with the
figures the meter saw: the bytes held before the first step and a lower bound of the need.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from types import TracebackType

import torch
from torch import Tensor, nn

from snugtune.errors import BudgetError
from snugtune.memory.guard import CudaBudget, VirtualDeviceBudget
from snugtune.units import format_bytes

__all__ = ["PeakMeter", "held_tensors", "sampled_step"]

log = logging.getLogger(__name__)


def sampled_step(steps: int) -> int:
    """The step of a phase's first epoch that ``PeakMeter.sampling`` counts."""
    return 1 if steps > 1 else 0


def held_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[Tensor]:
    """What a step starts with: ``model``'s parameters, buffers and gradients, and the
    optimizer's state."""
    params = list(model.parameters())
    held = params + list(model.buffers()) + [p.grad for p in params if p.grad is not None]
    if optimizer is not None:
        held += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, Tensor)]
    return held


class PeakMeter:
    """Context manager enforcing ``budget_bytes`` on ``device`` and recording the peak.

    Args:
        device: where the phase runs.
        budget_bytes: what the process may hold there (CUDA: context included).
        context_bytes: CUDA: what the process holds outside the caching allocator (measured).

    Attributes:
        peak_bytes: peak allocated tensor bytes while open (``None`` where not measured).
        reserved_bytes: peak bytes reserved by the CUDA caching allocator (CUDA only).
        process_bytes: CUDA: the whole process at its peak, ``reserved_bytes`` plus the context.
        entry_bytes: bytes already allocated when the meter opened (``None`` where unknown).
    """

    def __init__(self, device: torch.device, *, budget_bytes: int | None = None,
                 context_bytes: int = 0) -> None:
        self.device = device
        self.budget_bytes = budget_bytes
        self.context_bytes = context_bytes
        self.peak_bytes: int | None = None
        self.reserved_bytes: int | None = None
        self.process_bytes: int | None = None
        self.entry_bytes: int | None = None
        self._cuda: CudaBudget | None = None
        self._virtual: VirtualDeviceBudget | None = None

    def __enter__(self) -> PeakMeter:
        if self.device.type == "cuda":
            self._cuda = CudaBudget(self.budget_bytes, self.device, context_bytes=self.context_bytes)
            self.entry_bytes = int(torch.cuda.memory_allocated(self.device))
            self._cuda.__enter__()
        elif self.budget_bytes is not None:
            self._virtual = VirtualDeviceBudget(self.budget_bytes, device=self.device.type)
            self._virtual.__enter__()
            self.entry_bytes = self._virtual.entry_bytes
            log.info(
                "virtual %s budget %s: %s held before the first step",
                self.device.type,
                format_bytes(self.budget_bytes),
                format_bytes(self.entry_bytes),
            )
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        oom_floor = None
        if self._cuda is not None:
            self._cuda.__exit__(et, e, tb)
            self.peak_bytes, self.reserved_bytes = self._cuda.peak_bytes, self._cuda.reserved_bytes
            self.process_bytes = (self.reserved_bytes or 0) + self.context_bytes
        elif self._virtual is not None:
            self._virtual.__exit__(et, e, tb)
            self.peak_bytes = self._virtual.peak_bytes
            if self._virtual.ooms:
                last = self._virtual.ooms[-1]
                oom_floor = last.live_bytes + last.requested_bytes
        if self.peak_bytes is not None:
            log.info("measured peak %s on %s", format_bytes(self.peak_bytes), self.device)
        if (
            isinstance(e, BudgetError)
            and self.budget_bytes is not None
            and self.peak_bytes is not None
        ):
            raise BudgetError(self._explain(e, oom_floor)) from e

    @contextlib.contextmanager
    def sampling(self, held: Iterable[Tensor]) -> Iterator[None]:
        """Count live tensor bytes over one step where nothing else measures (CPU, no budget).

        Args:
            held: the tensors live when the step starts (see ``held_tensors``).
        """
        if self.device.type == "cuda" or self._virtual is not None:
            yield
            return
        counter = VirtualDeviceBudget(None, device=self.device.type, track_existing=False)
        counter.track(held)
        with counter:
            yield
        if counter.peak_bytes is not None:
            self.peak_bytes = max(self.peak_bytes or 0, int(counter.peak_bytes))

    def _explain(self, e: BudgetError, needed_more_than: int | None) -> str:
        """The budget error with the figures: what was held, at least how much was needed.

        ``needed_more_than`` (live bytes plus the refused request) is known on the virtual
        device; on CUDA only the peak reached before the refusal is.
        """
        assert self.budget_bytes is not None and self.peak_bytes is not None
        held = (
            f"{format_bytes(self.entry_bytes)} of it held before the first step "
            "(weights, buffers, optimizer state)"
            if self.entry_bytes
            else ""
        )
        if needed_more_than is not None and needed_more_than > self.budget_bytes:
            head = (
                f"Budget {format_bytes(self.budget_bytes)} < more than "
                f"{format_bytes(needed_more_than)} needed at micro-batch 1"
            )
            return f"{head}; {held}. {e}" if held else f"{head}. {e}"
        head = (
            f"Budget {format_bytes(self.budget_bytes)} exceeded at micro-batch 1 "
            f"(peak {format_bytes(self.peak_bytes)} allocated"
        )
        return f"{head}; {held}). {e}" if held else f"{head}). {e}"
