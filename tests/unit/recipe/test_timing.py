"""Phase lengths: scaled to the data by default, fitted to a time budget from measured steps."""

from __future__ import annotations

import pytest
import torch

from snugtune.config import PhaseConfig, build_config, default_phases
from snugtune.errors import ConfigError
from snugtune.recipe import timing
from snugtune.recipe.timing import (
    EPOCHS,
    FROZEN_SHARE,
    MIN_STEPS,
    OUTPUT_SECONDS,
    PhaseClock,
    TimeBudget,
    default_epochs,
    phase_share,
)
from snugtune.step import build_scheduler
from snugtune.units import format_duration, parse_duration

HEAD, FINETUNE = default_phases()


def test_default_epochs_follow_the_data_size():
    assert HEAD.epochs is None and FINETUNE.epochs is None
    small, large = default_epochs(FINETUNE, 30), default_epochs(FINETUNE, 3000)
    assert small > large == EPOCHS[0]  # 1,000 images get more epochs than 100,000
    assert small * 30 >= MIN_STEPS["unfrozen"] or small == EPOCHS[1]
    assert default_epochs(HEAD, 10) * 10 >= MIN_STEPS["frozen"]
    assert default_epochs(HEAD, 100, cached=True) > default_epochs(HEAD, 100)  # cheap epochs
    assert default_epochs(FINETUNE, 1) == EPOCHS[1]
    fixed = PhaseConfig(name="x", epochs=7, lr=1e-3)
    assert default_epochs(fixed, 5) == 7


def test_frozen_phases_take_a_small_share_when_others_follow():
    phases = (HEAD, FINETUNE)
    assert phase_share(phases, 0) == FROZEN_SHARE and phase_share(phases, 1) == 1.0
    two = (FINETUNE, FINETUNE)
    assert phase_share(two, 0) == 0.5 and phase_share((HEAD,), 0) == 1.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def _clock(fake: FakeTime, budget: float, *, steps_per_epoch: int = 10, val_images: int = 0,
           cached: bool = False, phases=(FINETUNE,), index: int = 0) -> PhaseClock:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = build_scheduler(opt, FINETUNE, steps_per_epoch, 3)
    tb = TimeBudget(deadline=fake.now + budget, image_seconds=0.01)
    return PhaseClock.for_phase(tb, phases, index, steps_per_epoch=steps_per_epoch, epochs=3,
                                steps=None, val_images=val_images, cached=cached,
                                schedule=sched, sync=lambda fit: fit())


def test_the_phase_is_fitted_in_steps_from_the_timed_probe(clock_time):
    # 100 s budget, 1 s per step, 2 s validation (200 images x 0.01 s), 3 s of outputs
    clock = _clock(clock_time, 100.0, val_images=200)
    clock.step_done(0)
    for step in range(1, 7):
        clock_time.now += 1.0
        clock.step_done(step)
    assert clock.fitted
    room = 100.0 - OUTPUT_SECONDS - 2.0  # the final evaluation is kept too
    # n steps and ceil(n / 10) validation passes of 2 s within the room (minus the 1st step)
    n = clock.steps
    assert n + 2.0 * -(-n // 10) <= room + 1 and (n + 1) + 2.0 * -(-(n + 1) // 10) > room - 1
    assert clock.schedule.total == n  # the LR schedule spans the fitted steps
    assert clock.epochs == -(-n // 10) and clock.stop(n // 10, n % 10)
    assert not clock.stop(0, 5)


def test_a_slower_epoch_than_predicted_shortens_the_phase(clock_time):
    clock = _clock(clock_time, 60.0)
    clock.step_done(0)
    for step in range(1, 7):
        clock_time.now += 0.5
        clock.step_done(step)
    fitted, predicted = clock.steps, clock.predicted_seconds
    assert predicted is not None and predicted == pytest.approx(3.0 + 0.5 * (fitted - 7), abs=0.01)
    clock_time.now += 20.0  # the rest of the epoch was much slower
    clock.epoch_done(train_seconds=25.0, steps=10, val_seconds=0.0, epochs=1)
    assert 10 <= clock.steps < fitted
    assert clock.predicted_seconds == predicted  # the report compares the probe's prediction


def test_a_frozen_phase_before_fine_tuning_keeps_to_its_share_and_default(clock_time):
    clock = _clock(clock_time, 1000.0, cached=True, phases=(HEAD, FINETUNE))
    clock.step_done(0)
    for step in range(1, 7):
        clock_time.now += 0.01
        clock.step_done(step)
    assert clock.steps == 30  # its 3 default epochs: more time goes to fine-tuning


def test_the_time_plan_shares_the_budget_as_the_phase_clocks_will(clock_time):
    tb = TimeBudget(deadline=clock_time.now + 120.0, image_seconds=0.003)
    left = 120.0 - OUTPUT_SECONDS - 2000 * 0.003  # less the final evaluation and outputs
    cached = dict(tb.plan((HEAD, FINETUNE), (True, False), num_train=8000, num_val=2000,
                          steps_per_epoch=250))
    assert cached["feature cache"] == pytest.approx(30.0)  # the fill: 10,000 images forward
    assert "head" not in cached  # epochs on cached features: next to nothing
    assert cached["finetune"] == pytest.approx(left - 30.0, abs=0.1)
    images = dict(tb.plan((HEAD, FINETUNE), (False, False), num_train=8000, num_val=2000,
                          steps_per_epoch=250))
    assert images["head"] == pytest.approx(FROZEN_SHARE * left, abs=0.1)  # epochs cost more
    assert images["finetune"] == pytest.approx((1 - FROZEN_SHARE) * left, abs=0.1)
    skipped = dict(tb.plan((HEAD, PhaseConfig(name="ft", epochs=0, lr=1e-3, trainable="top:2")),
                           (True, False), num_train=8000, num_val=2000, steps_per_epoch=250))
    assert skipped["ft"] == 0.0


def test_a_budget_below_the_first_epoch_is_refused_with_what_would_do(clock_time):
    c = build_config(overrides={"data": "d", "time_budget": "30s"})
    tb = TimeBudget(deadline=clock_time.now + 28.0, image_seconds=0.01)  # 2 s of setup spent
    tb.check(c, tb.first_epoch(1000, 200, cached=True))  # 12 s: fits
    with pytest.raises(ConfigError, match=r"--time-budget 30.0s cannot cover one epoch of phase "
                                          r"'head'.*about 49.0s.*--time-budget 1m00s or more"):
        tb.check(c, tb.first_epoch(4000, 400, cached=True))  # 44 s


def test_durations():
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("2.5m") == 150 and parse_duration(45) == 45
    for bad in ("abc", "10x", "0", "1h30", True):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert format_duration(125) == "2m05s" and format_duration(9.54) == "9.5s"
