"""Where a run stands, as frozen data saved in every checkpoint: ``RunState`` and the current
phase's ``PhaseProgress``. The recipe replaces them; nothing mutates them.

Early stopping respects the schedule: with warm-up and cosine decay, the validation loss of a
small set may rise for a few epochs while the learning rate is high and fall below its
earlier best as the rate decays; counting those epochs against the patience ended fine-tuning
in the middle of its schedule. So an epoch without improvement counts only once the rate is at
most ``DECAYED`` of its peak; a phase that has truly converged still stops ``patience`` epochs
into the second half of its schedule. Measured in ``benchmarks/early_stopping.py``
(``benchmarks/results/early_stopping.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from snugtune.config import PhaseConfig
from snugtune.results import PhaseResult, Recovery
from snugtune.step import MicroBatch, Stats

__all__ = ["DECAYED", "PhaseProgress", "RunState"]

#: Early stopping's patience counts epochs without improvement only once the learning rate is
#: at most this share of its peak (cosine: the schedule's second half).
DECAYED = 0.5


@dataclass(frozen=True)
class PhaseProgress:
    """Progress inside the current phase.

    Attributes:
        epoch: completed epochs of this phase.
        best_metric, best_epoch: the monitored value's best and its epoch (0-based; -1: none).
        best_val_accuracy, best_val_loss: the validation scores at that epoch.
        bad_epochs: epochs since the best (early stopping's count).
        stopped_early: patience ran out before the phase's last epoch.
        seconds, train_seconds, samples: the phase's totals so far.
        micro: the micro-batch after any OOM recovery (None until the phase starts).
        epochs: the phase's epochs as decided when it started (its setting, scaled to the
            data, or fitted to the time budget; None until then).
        steps: with a time budget, the phase's optimizer steps as fitted (its last epoch may
            be cut short); None: whole epochs.
        predicted_seconds: with a time budget, the phase's seconds as predicted once its first
            steps were timed (kept across a resume, for the report).
    """

    epoch: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    train_seconds: float = 0.0
    samples: int = 0
    micro: MicroBatch | None = None
    epochs: int | None = None
    steps: int | None = None
    predicted_seconds: float | None = None

    def after_epoch(self, phase: PhaseConfig, score: Stats, *, seconds: float,
                    train_seconds: float, samples: int, micro: MicroBatch,
                    lr_factor: float = 0.0) -> PhaseProgress:
        """The progress after one more epoch whose monitored scores are ``score`` (validation,
        or training without a validation split): best so far, early stopping, totals.

        ``lr_factor``: the schedule's LR multiplier at the epoch's end. An epoch without
        improvement counts against the patience only once the learning rate has decayed to
        ``DECAYED`` of its peak (or with a constant schedule): while it is high, a rising
        validation loss is the schedule's doing, and the low-LR epochs still to come recover
        it (module doc).
        """
        value = score.loss if phase.monitor == "val_loss" else score.accuracy
        better = self.best_metric is None or (
            value < self.best_metric if phase.monitor == "val_loss" else value > self.best_metric)
        done = replace(self, epoch=self.epoch + 1, seconds=self.seconds + seconds,
                       train_seconds=self.train_seconds + train_seconds,
                       samples=self.samples + samples, micro=micro)
        if better:
            return replace(done, best_metric=value, best_epoch=self.epoch, bad_epochs=0,
                           best_val_accuracy=score.accuracy, best_val_loss=score.loss)
        counts = phase.schedule == "constant" or lr_factor <= DECAYED
        bad = self.bad_epochs + 1 if counts else 0
        last = self.epochs is not None and done.epoch >= self.epochs  # ends here anyway
        return replace(done, bad_epochs=bad, stopped_early=(
            phase.patience is not None and bad >= phase.patience and not last))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "micro"}
        d["micro_batch"] = self.micro.size if self.micro else None
        d["recoveries"] = [r.to_dict() for r in self.micro.recoveries] if self.micro else []
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseProgress:
        names = {f.name for f in fields(cls)} - {"micro"}
        kw = {k: v for k, v in data.items() if k in names}
        size = data.get("micro_batch")
        recoveries = tuple(Recovery.from_dict(r) for r in data.get("recoveries") or ())
        return cls(**kw, micro=MicroBatch(int(size), recoveries) if size else None)


@dataclass(frozen=True)
class RunState:
    """Which phase, how far, and the results of finished phases."""

    phase_index: int = 0
    global_epoch: int = 0
    phase: PhaseProgress = field(default_factory=PhaseProgress)
    results: tuple[PhaseResult, ...] = ()
    total_seconds: float = 0.0
    time_plan: tuple[tuple[str, float], ...] = ()  # phase, seconds: a time budget's up-front plan

    def next_phase(self, result: PhaseResult) -> RunState:
        """The state once the current phase has ended as ``result``."""
        return replace(self, phase_index=self.phase_index + 1, phase=PhaseProgress(),
                       results=(*self.results, result))

    def to_dict(self) -> dict[str, Any]:
        return {"phase_index": self.phase_index, "global_epoch": self.global_epoch,
                "phase": self.phase.to_dict(), "results": [r.to_dict() for r in self.results],
                "total_seconds": self.total_seconds,
                "time_plan": [list(p) for p in self.time_plan]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(phase_index=int(data.get("phase_index", 0)),
                   global_epoch=int(data.get("global_epoch", 0)),
                   phase=PhaseProgress.from_dict(data.get("phase") or {}),
                   results=tuple(PhaseResult.from_dict(r) for r in data.get("results") or ()),
                   total_seconds=float(data.get("total_seconds", 0.0)),
                   time_plan=tuple((str(n), float(t)) for n, t in data.get("time_plan") or ()))
