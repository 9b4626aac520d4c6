"""One step configuration at every batch size, from two simulations.

Simulating costs the same at batch 2 or 512 (fake tensors hold no data), and every traced
size is affine in the batch (:func:`~snugtune.memory.trace.at_batch`), so a
:class:`BatchSweep` simulates batches 2 and 3 once and derives the exact trace of any other
batch; the device model is then replayed on it. A model whose traces differ in structure
between the two batches is simulated directly at each batch asked for.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from torch import nn

from snugtune.memory.device import DeviceEstimate, GpuProfile, needed_bytes, replay
from snugtune.memory.estimate import MemoryReport, report_from_trace
from snugtune.memory.simulator import StepConfig, simulate
from snugtune.memory.trace import Trace, at_batch

__all__ = ["BatchSweep"]

log = logging.getLogger(__name__)

BASE_BATCH = 2  # batch 1 is avoided: BatchNorm refuses one value per channel in training


class BatchSweep:
    """Traces and estimates of ``cfg`` (its ``batch`` ignored) at any batch size.

    Args:
        model: the model to simulate (a ``Classifier`` or a plain module).
        cfg: the step configuration; ``batch`` is replaced per query.
        classes: number of classes (labels of the simulated batch).
        name: model name for reports.
    """

    def __init__(self, model: nn.Module, cfg: StepConfig, *, classes: int, name: str) -> None:
        self.model, self.cfg, self.classes, self.name = model, cfg, classes, name
        self._base: tuple[Trace, Trace] | None = None
        self._direct: dict[int, Trace] = {}
        self.simulations = 0

    def _simulate(self, batch: int) -> Trace:
        self.simulations += 1
        return simulate(self.model, replace(self.cfg, batch=batch), classes=self.classes)

    def trace(self, batch: int, *, direct: bool = False) -> Trace:
        """The step's trace at ``batch``; ``direct`` simulates it instead of deriving it."""
        if direct or batch in self._direct:
            if batch not in self._direct:
                self._direct[batch] = self._simulate(batch)
            return self._direct[batch]
        if self._base is None:
            t2, t3 = self._simulate(BASE_BATCH), self._simulate(BASE_BATCH + 1)
            self._direct[BASE_BATCH], self._direct[BASE_BATCH + 1] = t2, t3
            self._base = (t2, t3)
        derived = at_batch(self._base[0], self._base[1], BASE_BATCH, batch)
        if derived is None:
            log.debug("%s: batch changes the step's structure; simulating %d", self.name, batch)
            return self.trace(batch, direct=True)
        return derived

    def estimate(self, batch: int, gpu: GpuProfile, *, budget: int | None = None) -> DeviceEstimate:
        """Device estimate at ``batch`` (within ``budget`` bytes of device memory if given)."""
        return replay(self.trace(batch), self.cfg.device, gpu, budget=budget)

    def needed(self, batch: int, gpu: GpuProfile) -> int:
        """The least device memory the step at ``batch`` runs in (:func:`needed_bytes`)."""
        return needed_bytes(self.trace(batch), self.cfg.device, gpu)

    def report(
        self, batch: int, gpu: GpuProfile, *, budget: int | None = None, direct: bool = False
    ) -> MemoryReport:
        """Full :class:`MemoryReport` at ``batch``."""
        cfg = replace(self.cfg, batch=batch)
        return report_from_trace(
            self.trace(batch, direct=direct), cfg, name=self.name, classes=self.classes, gpu=gpu,
            budget=budget,
        )
