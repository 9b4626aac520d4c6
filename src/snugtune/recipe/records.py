"""What the recipe records: an epoch's outcome and its metrics row, and a finished phase's
result (the typed records the summary, the report and the CLI read)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from snugtune.config import PhaseConfig
from snugtune.memory import PeakMeter
from snugtune.planner import PhasePlan
from snugtune.recipe.inputs import PhaseInputs
from snugtune.recipe.state import PhaseProgress, RunState
from snugtune.results import EpochResult, PhaseResult
from snugtune.step import MicroBatch, Stats

__all__ = ["EpochOutcome", "after_epoch", "epoch_row", "phase_result"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochOutcome:
    """One epoch's training and validation sums, the micro-batch it ended at, its seconds
    (all, and training alone) and optimizer steps."""

    train: Stats
    val: Stats | None
    micro: MicroBatch
    seconds: float
    train_seconds: float
    steps: int


def epoch_row(phase: PhaseConfig, state: RunState, epoch: EpochOutcome,
              optimizer: torch.optim.Optimizer, batch: int) -> EpochResult:
    """The metrics row of the epoch that ``state`` has just counted."""
    return EpochResult(
        phase=phase.name, epoch=state.phase.epoch, global_epoch=state.global_epoch,
        train_loss=epoch.train.loss, train_accuracy=epoch.train.accuracy,
        val_loss=epoch.val.loss if epoch.val else None,
        val_accuracy=epoch.val.accuracy if epoch.val else None,
        lr=optimizer.param_groups[0]["lr"], seconds=round(epoch.seconds, 3),
        images_per_s=round(epoch.train.seen / max(epoch.train_seconds, 1e-9), 2),
        samples_seen=epoch.train.seen, micro_batch=epoch.micro.size,
        accumulation=epoch.micro.accumulation(batch))


def phase_result(phase: PhaseConfig, plan: PhasePlan, st: PhaseProgress, micro: MicroBatch,
                 batch: int, inputs: PhaseInputs | None, meter: PeakMeter | None) -> PhaseResult:
    """A finished phase as the summary and the report read it: its progress ``st``, its plan,
    the micro-batch it ended at, its inputs (the feature cache) and its measured peaks."""
    predicted_seconds = st.predicted_seconds
    return PhaseResult(
        name=phase.name, trainable=plan.trainable,
        epochs_planned=st.epochs if st.epochs is not None else phase.epochs,
        epochs_run=st.epoch, stopped_early=st.stopped_early,
        best_epoch=st.best_epoch + 1 if st.best_epoch >= 0 else None,
        best_val_accuracy=st.best_val_accuracy, best_val_loss=st.best_val_loss,
        seconds=round(st.seconds, 2),
        predicted_seconds=round(predicted_seconds, 2) if predicted_seconds is not None else None,
        images_per_s=round(st.samples / st.train_seconds, 2) if st.train_seconds else None,
        samples_seen=st.samples, micro_batch=micro.size, accumulation=micro.accumulation(batch),
        precision=plan.precision, checkpointing=plan.checkpointing,
        channels_last=plan.channels_last, recoveries=micro.recoveries,
        predicted_peak_bytes=plan.predicted_peak_bytes,
        measured_peak_bytes=meter.peak_bytes if meter else None,
        measured_reserved_bytes=meter.reserved_bytes if meter else None,
        measured_process_bytes=meter.process_bytes if meter else None,
        measured_entry_bytes=meter.entry_bytes if meter else None,  # held before step 1
        budget_bytes=plan.budget_bytes, feature_cache=inputs.feature_cache if inputs else None,
    )


def after_epoch(state: RunState, phase: PhaseConfig, epoch: EpochOutcome, best: dict[str, Tensor] | None,
                 model: nn.Module, lr_factor: float) -> tuple[RunState, dict[str, Tensor] | None]:
    """The state after an epoch (best score, early stopping, totals) and the best weights."""
    progress_ = state.phase.after_epoch(phase, epoch.val or epoch.train, seconds=epoch.seconds,
                                        train_seconds=epoch.train_seconds,
                                        samples=epoch.train.seen, micro=epoch.micro,
                                        lr_factor=lr_factor)
    if progress_.best_epoch == state.phase.epoch:  # this epoch is the best so far
        # a host copy: a second set of weights on the device would count against the budget
        best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if progress_.stopped_early:
        log.info("phase %s: early stop after epoch %d (%s did not improve for %d epochs)",
                 phase.name, progress_.epoch, phase.monitor, progress_.bad_epochs)
    return replace(state, phase=progress_, global_epoch=state.global_epoch + 1), best
