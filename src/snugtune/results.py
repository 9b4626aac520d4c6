"""What a run produced, as data: the typed records the recipe makes and the report, the CLI and
``summary.json`` read.

::

    RunSummary                 summary.json
      phases: PhaseResult...   one per phase of the recipe
        recoveries: Recovery...      each OOM recovery (micro-batch halved)
        feature_cache: CacheInfo     whether cached features were used, and the fill's cost

Each record is a frozen dataclass with ``to_dict`` (JSON-ready, the keys ``summary.json`` has
always had) and ``from_dict``. A value that was not recorded is ``None`` (a crashed run, an
older summary layout): ``from_dict`` leaves out what it does not know, and the report renders
what is missing as a dash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

__all__ = ["CacheInfo", "EpochResult", "PhaseResult", "Recovery", "RunSummary"]

T = TypeVar("T")


def _known(cls: type[T], data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return {k: v for k, v in data.items() if k in names}


def _records(items: Any) -> list[Mapping[str, Any]]:
    """The mappings of a JSON list (anything else: none)."""
    if not isinstance(items, list | tuple):
        return []
    return [item for item in items if isinstance(item, Mapping)]


@dataclass(frozen=True)
class Recovery:
    """One out-of-memory recovery: the micro-batch went from ``from_size`` to ``to_size`` at
    ``step`` of ``epoch`` (the run's epoch count, 1-based; -1 for evaluation)."""

    epoch: int
    step: int
    from_size: int
    to_size: int

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "from": self.from_size, "to": self.to_size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recovery:
        return cls(int(data["epoch"]), int(data["step"]), int(data["from"]), int(data["to"]))


@dataclass(frozen=True)
class CacheInfo:
    """How a frozen phase got its inputs: cached backbone features, or images and why.

    Attributes:
        used: the phase trained on cached features.
        reason: why not, when ``used`` is False.
        hits, misses: entries found in the cache, and computed by this run.
        hit_rate: ``hits / (hits + misses)``.
        seconds: hashing the files, looking up and filling the cache.
        fill_seconds, fill_images_per_s: computing the missing entries.
        precision, channels_last: how the backbone ran for the fill.
        dir: the cache store's folder.
    """

    used: bool = False
    reason: str | None = None
    hits: int = 0
    misses: int = 0
    hit_rate: float | None = None
    seconds: float | None = None
    fill_seconds: float | None = None
    fill_images_per_s: float | None = None
    precision: str | None = None
    channels_last: bool | None = None
    dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.used:
            return {"used": False, "reason": self.reason}
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "reason"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheInfo:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class EpochResult:
    """One epoch of a phase: a row of ``metrics.csv``.

    Attributes:
        phase, epoch: the phase and its epoch (1-based); global_epoch counts over the run.
        train_loss, train_accuracy: over the epoch's training images (augmented).
        val_loss, val_accuracy: on the validation split (None without one).
        lr: the head's learning rate at the epoch's end.
        seconds: the epoch with its validation; images_per_s: training images per second.
        micro_batch, accumulation: per device, after any OOM recovery.
    """

    phase: str
    epoch: int
    global_epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    images_per_s: float
    samples_seen: int
    micro_batch: int
    accumulation: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PhaseResult:
    """How one phase of the recipe ran: its epochs, best validation scores, speed and memory.

    Attributes:
        name, trainable: the phase and the depth it trained (the plan's, which a budget may
            have made shallower than configured).
        epochs_planned, epochs_run, stopped_early: the schedule and where it ended.
        best_epoch: 1-based epoch of the best validation score (None: no validation).
        seconds: wall time of its epochs, validation included.
        predicted_seconds: with a time budget, what the phase was predicted to take once its
            steps were timed (its epochs fitted to the budget).
        images_per_s: training images per second (validation excluded).
        samples_seen: training images over all its epochs.
        micro_batch, accumulation: per device, after any OOM recovery.
        predicted_peak_bytes: the plan's device peak for the phase.
        measured_peak_bytes: the tensors' peak (CUDA: ``max_memory_allocated``; CPU: live
            tensor bytes on the virtual device).
        measured_reserved_bytes: CUDA: the caching allocator's peak reserve.
        measured_process_bytes: CUDA: the whole process at its peak (reserve + context), what
            ``predicted_peak_bytes`` predicts.
        measured_entry_bytes: held before its first step (weights, optimizer state).
        budget_bytes: ``--gpu-memory``.
        feature_cache: None when the backbone trains (a cache does not apply).
    """

    name: str = ""
    trainable: str | None = None
    epochs_planned: int | None = None
    epochs_run: int | None = None
    stopped_early: bool | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    seconds: float | None = None
    predicted_seconds: float | None = None
    images_per_s: float | None = None
    samples_seen: int | None = None
    micro_batch: int | None = None
    accumulation: int | None = None
    precision: str | None = None
    checkpointing: tuple[int, ...] = ()
    channels_last: bool | None = None
    recoveries: tuple[Recovery, ...] = ()
    predicted_peak_bytes: int | None = None
    measured_peak_bytes: int | None = None
    measured_reserved_bytes: int | None = None
    measured_process_bytes: int | None = None
    measured_entry_bytes: int | None = None
    budget_bytes: int | None = None
    feature_cache: CacheInfo | None = None

    @property
    def oom_recoveries(self) -> int:
        return len(self.recoveries)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["checkpointing"] = list(self.checkpointing)
        d["recoveries"] = [r.to_dict() for r in self.recoveries]
        d["oom_recoveries"] = self.oom_recoveries
        d["feature_cache"] = self.feature_cache.to_dict() if self.feature_cache else None
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseResult:
        kw = _known(cls, data)
        kw["name"] = str(kw.get("name") or data.get("phase") or "")
        kw["checkpointing"] = tuple(int(i) for i in kw.get("checkpointing") or ())
        kw["recoveries"] = tuple(Recovery.from_dict(r) for r in _records(kw.get("recoveries")))
        cache = kw.get("feature_cache")
        kw["feature_cache"] = CacheInfo.from_dict(cache) if isinstance(cache, Mapping) else None
        return cls(**kw)


@dataclass(frozen=True)
class RunSummary:
    """A finished run: data, model, device, best scores, time, and every phase's result."""

    backbone: str | None = None
    data: str | None = None
    classes: tuple[str, ...] = ()
    num_train: int | None = None
    num_val: int | None = None
    resolution: int | None = None
    device: str | None = None
    processes: int = 1  # data-parallel processes (torchrun), 1 otherwise
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    final_val_accuracy: float | None = None
    total_seconds: float | None = None
    time_budget: float | None = None
    time_plan: dict[str, float] | None = None  # phase -> seconds planned up front (time budget)
    flip_check: dict[str, Any] | None = None  # horizontal flips decided from the training images
    decoded_images: dict[str, Any] | None = None  # the decoded-image store: where, size, fill
    race: dict[str, Any] | None = None  # --model auto: the backbones raced, the winner and why
    skipped_files: int = 0
    converted_files: int = 0
    phases: tuple[PhaseResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["classes"] = list(self.classes)
        d["phases"] = [p.to_dict() for p in self.phases]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        kw = _known(cls, data)
        classes = kw.get("classes")
        kw["classes"] = tuple(str(c) for c in classes) if isinstance(classes, list | tuple) else ()
        kw["phases"] = tuple(PhaseResult.from_dict(p) for p in _records(kw.get("phases")))
        return cls(**kw)
