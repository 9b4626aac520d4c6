"""What the planner's search of one run works from: the run, the model, the device, the budget,
and the simulations made so far (one ``BatchSweep`` per configuration, cached)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from snugtune.config import PhaseConfig, TrainConfig
from snugtune.memory import BatchSweep, GpuProfile, StepConfig
from snugtune.planner.cost import Candidate

__all__ = ["SAFETY_MARGIN", "PlanContext"]

# Share of the budget kept free for what the model cannot see (allocation order of the real
# autograd engine, library versions, driver allocations): of the order of the estimator's
# measured error (benchmarks/results/planner_accuracy.json).
SAFETY_MARGIN = 0.04


@dataclass
class PlanContext:
    """Everything the search of one run needs, and its cache of sweeps."""

    cfg: TrainConfig
    model: nn.Module
    gpu: GpuProfile
    device: str
    resolution: int
    num_classes: int
    num_train: int
    batch: int  # the local batch (``step.local_batch``): what one device takes per step
    world_size: int = 1  # data-parallel processes: each step ends with a gradient sum
    sweeps: dict[tuple[object, ...], BatchSweep] = field(default_factory=dict)

    @property
    def budget(self) -> int | None:
        """What the process may hold on the device: ``--gpu-memory``, at most what the card
        has room for (measured: its free memory and what this process holds; offline: its
        capacity); without a budget, that room (CUDA only; the generic profile has none)."""
        room = None
        if self.device == "cuda":
            room = self.gpu.available_bytes or self.gpu.memory_bytes
        if self.cfg.gpu_memory is None:
            return room
        return self.cfg.gpu_memory if room is None else min(self.cfg.gpu_memory, room)

    @property
    def usable(self) -> int | None:
        """The budget less the safety margin: what a plan's predicted peak must stay within."""
        if self.budget is None:
            return None
        return int(self.budget * (1.0 - SAFETY_MARGIN))

    @property
    def cap(self) -> tuple[int, str]:
        """Largest useful micro-batch (the local batch) and what caps it."""
        return self.batch, "dataset" if self.num_train < self.cfg.batch_size else "batch_size"

    def sweep(self, phase: PhaseConfig, cand: Candidate, accumulation: int) -> BatchSweep:
        """The (cached) batch sweep of ``cand`` for ``phase``."""
        key = (phase.trainable, phase.optimizer, phase.weight_decay, cand.precision,
               cand.checkpointing, cand.channels_last, accumulation)
        if key not in self.sweeps:
            step = StepConfig(
                batch=1, res=self.resolution, precision=cand.precision,
                optimizer=phase.optimizer, trainable=phase.trainable,
                checkpointing=cand.checkpointing, channels_last=cand.channels_last,
                device=self.device, weight_decay=phase.weight_decay,
                accumulation=accumulation, label_smoothing=phase.label_smoothing,
                world_size=self.world_size,
            )
            self.sweeps[key] = BatchSweep(
                self.model, step, classes=self.num_classes, name=self.cfg.model
            )
        return self.sweeps[key]
