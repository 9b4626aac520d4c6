"""The recipe's records: a finished phase's result and an epoch's metrics row, from its state."""

from __future__ import annotations

import torch

from snugtune.config import PhaseConfig
from snugtune.planner import PhasePlan
from snugtune.recipe.records import EpochOutcome, epoch_row, phase_result
from snugtune.recipe.state import PhaseProgress, RunState
from snugtune.results import PhaseResult, Recovery
from snugtune.step import MicroBatch, Stats

PHASE = PhaseConfig(name="finetune", epochs=None, lr=1e-3, trainable="top:2")


def _plan() -> PhasePlan:
    return PhasePlan(phase="finetune", trainable="top:2", optimizer="adamw", micro_batch=16,
                     accumulation=2, precision="fp32", checkpointing=(3,), channels_last=True,
                     feature_cache=False, predicted_peak_bytes=1 << 20,
                     tensor_peak_bytes=1 << 19, budget_bytes=None, utilisation=None,
                     breakdown={})


def test_a_phase_result_reads_the_progress_one_based_and_rounded() -> None:
    micro = MicroBatch(8, (Recovery(epoch=0, step=3, from_size=16, to_size=8),))
    st = PhaseProgress(epoch=3, best_epoch=1, best_val_accuracy=0.9, best_val_loss=0.3,
                       seconds=12.3456, train_seconds=10.0, samples=300, epochs=5,
                       predicted_seconds=11.987)
    r = phase_result(PHASE, _plan(), st, micro, 32, None, None)
    assert isinstance(r, PhaseResult)
    assert (r.epochs_planned, r.epochs_run, r.best_epoch) == (5, 3, 2)  # best epoch 1-based
    assert (r.seconds, r.predicted_seconds, r.images_per_s) == (12.35, 11.99, 30.0)
    assert (r.micro_batch, r.accumulation, r.recoveries) == (8, 4, micro.recoveries)
    assert (r.trainable, r.checkpointing, r.measured_peak_bytes) == ("top:2", (3,), None)
    assert phase_result(PHASE, _plan(), PhaseProgress(), micro, 32, None, None).best_epoch is None


def test_an_epoch_row_is_the_epoch_the_state_has_counted() -> None:
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.05)
    state = RunState(phase_index=1, global_epoch=4, phase=PhaseProgress(epoch=2))
    epoch = EpochOutcome(Stats(6.0, 8, 10), Stats(2.0, 9, 10), MicroBatch(8), seconds=2.0,
                         train_seconds=1.0, steps=3)
    row = epoch_row(PHASE, state, epoch, opt, 32)
    assert (row.phase, row.epoch, row.global_epoch, row.lr) == ("finetune", 2, 4, 0.05)
    assert (row.train_loss, row.val_accuracy, row.images_per_s) == (0.6, 0.9, 10.0)
    assert (row.micro_batch, row.accumulation) == (8, 4)
