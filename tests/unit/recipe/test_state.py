"""The run's state: early stopping and best epochs as pure data, saved and restored exactly."""

from __future__ import annotations

from dataclasses import replace

from snugtune.config import PhaseConfig
from snugtune.recipe.state import PhaseProgress, RunState
from snugtune.results import PhaseResult, Recovery
from snugtune.step import MicroBatch, Stats

PHASE = PhaseConfig(name="ft", epochs=10, lr=1e-3, patience=2)


def _epochs(losses: list[float]) -> PhaseProgress:
    p = PhaseProgress()
    for loss in losses:  # Stats(loss_sum, correct, seen): loss = loss_sum / seen
        p = p.after_epoch(PHASE, Stats(loss * 10, 7, 10), seconds=2.0, train_seconds=1.5,
                          samples=100, micro=MicroBatch(8))
    return p


def test_the_best_epoch_and_early_stopping_follow_the_monitored_loss() -> None:
    p = _epochs([1.0, 0.8, 0.9])
    assert (p.epoch, p.best_epoch, p.best_val_loss, p.bad_epochs) == (3, 1, 0.8, 1)
    assert not p.stopped_early
    p = _epochs([1.0, 0.8, 0.9, 0.85])
    assert p.stopped_early and p.bad_epochs == 2 and p.best_epoch == 1
    assert (p.seconds, p.train_seconds, p.samples) == (8.0, 6.0, 400)


def test_patience_running_out_on_the_last_epoch_is_not_an_early_stop() -> None:
    p = PhaseProgress(epochs=4)
    for loss in (1.0, 0.8, 0.9, 0.85):
        p = p.after_epoch(PHASE, Stats(loss * 10, 7, 10), seconds=2.0, train_seconds=1.5,
                          samples=100, micro=MicroBatch(8))
    assert p.bad_epochs == 2 and not p.stopped_early
    assert _epochs([1.0, 0.8, 0.9, 0.85]).stopped_early  # no set length: patience decides


def test_accuracy_as_the_monitor_keeps_the_highest() -> None:
    acc = PhaseConfig(name="a", epochs=5, lr=1e-3, monitor="val_accuracy", patience=None)
    p = PhaseProgress()
    for correct in (5, 9, 7):
        p = p.after_epoch(acc, Stats(1.0, correct, 10), seconds=1, train_seconds=1, samples=10,
                          micro=MicroBatch(4))
    assert p.best_epoch == 1 and p.best_val_accuracy == 0.9 and not p.stopped_early


def test_the_state_survives_a_checkpoint_round_trip() -> None:
    micro = MicroBatch(4, (Recovery(epoch=1, step=3, from_size=8, to_size=4),))
    result = PhaseResult(name="head", trainable="head", epochs_planned=2, epochs_run=2,
                         recoveries=micro.recoveries, checkpointing=(1, 2))
    state = RunState(phase_index=1, global_epoch=3, results=(result,), total_seconds=12.5,
                     phase=replace(_epochs([1.0, 0.7]), micro=micro))
    assert RunState.from_dict(state.to_dict()) == state
    after = state.next_phase(result)
    assert after.phase == PhaseProgress() and after.results == (result, result)


def test_patience_counts_only_once_the_learning_rate_has_decayed() -> None:
    """A rising loss while the LR is above ``DECAYED`` of its peak is the schedule's doing:
    it does not count; from the second half of a cosine schedule it does."""
    from snugtune.recipe.state import DECAYED

    def run(phase: PhaseConfig, factors: list[float]) -> PhaseProgress:
        p = PhaseProgress(epochs=10)
        for loss, f in zip([1.0, 0.8, 0.9, 0.95, 0.99, 0.97, 0.96], factors, strict=False):
            p = p.after_epoch(phase, Stats(loss * 10, 7, 10), seconds=1.0, train_seconds=1.0,
                              samples=10, micro=MicroBatch(8), lr_factor=f)
        return p

    high, low = DECAYED + 0.3, DECAYED - 0.1
    early = run(PHASE, [1.0, 0.95, 0.9, high, high, high, high])
    assert early.bad_epochs == 0 and not early.stopped_early and early.epoch == 7
    late = run(PHASE, [1.0, 0.95, 0.9, high, low, low])  # two epochs counted: patience 2
    assert late.stopped_early and late.bad_epochs == 2 and late.epoch == 6
    constant = run(replace(PHASE, schedule="constant"), [1.0] * 4)
    assert constant.stopped_early and constant.epoch == 4
