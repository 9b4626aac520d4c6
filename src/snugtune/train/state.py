"""The mutable progress of a run, persisted in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PhaseState", "RunState"]


@dataclass
class PhaseState:
    """Progress inside the current phase."""

    epoch: int = 0  # completed epochs of this phase
    best_metric: float | None = None
    best_epoch: int = -1
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    train_seconds: float = 0.0
    samples: int = 0
    micro_batch: int | None = None  # after OOM recoveries; None until the phase starts
    recoveries: list[dict[str, int]] = field(default_factory=list)

    def improved(self, value: float, mode: str) -> bool:
        """Whether ``value`` beats the best so far (``mode``: "min" or "max")."""
        if self.best_metric is None:
            return True
        return value < self.best_metric if mode == "min" else value > self.best_metric


@dataclass
class RunState:
    """Which phase, how far, and the results of finished phases."""

    phase_index: int = 0
    global_epoch: int = 0
    phase: PhaseState = field(default_factory=PhaseState)
    results: list[dict[str, Any]] = field(default_factory=list)
    total_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        phase = PhaseState(**data.get("phase", {}))
        rest = {k: v for k, v in data.items() if k != "phase"}
        return cls(phase=phase, **rest)
