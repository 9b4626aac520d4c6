"""How long each phase trains: epochs scaled to the data, or fitted to ``--time-budget``.

Without a time budget a phase's epochs follow the data set (``default_epochs``): at least
``MIN_STEPS`` optimizer steps, so 1,000 images get more epochs than 100,000, within
``EPOCHS``; early stopping (``patience``) still ends a phase whose validation loss stopped
improving, and the best epoch's weights are kept. A head trained on cached features takes
many more steps (an epoch of it is a pass of the head over a feature matrix and costs little;
the epoch time behind this is not recorded in a committed JSON): its default is the larger
``MIN_STEPS["cached"]``.

With a time budget the run measures what its work costs on this machine and fits each
phase's length, in optimizer steps, to the time left (``PhaseClock``):

* a phase may use a share of what is left of the budget when it starts, less the final
  evaluation (validation images x the per-image forward time measured up front) and
  ``OUTPUT_SECONDS``: a frozen phase followed by others at most ``FROZEN_SHARE`` and its
  default epochs (on cached features its epochs cost little; the time is better spent
  fine-tuning), the other phases equal parts of the rest;
* the first ``PROBE_STEPS`` steps of a phase are timed (the first step apart: it pays the
  loader's start); the phase then gets the most steps whose training and validation passes
  fit its share; the last epoch may be cut short (it ends on the step the time runs out, then
  validates), so a run with minute-long epochs still ends near its budget;
* after each epoch the fit is redone from the measured averages (seconds per step and per
  validation pass), so the run ends inside the budget even when the first estimate was off;
* the learning-rate schedule spans the fitted steps (``step.PhaseSchedule``), and the fit is
  kept in the run state and the scheduler's, so a resumed run continues on the same curve.

Before training, a few images are decoded and passed forward (``measure_forward``); a budget
that cannot cover even the first phase's first epoch is refused with the time it would need
on this machine (``TimeBudget.check``), and the others are planned from that speed
(``TimeBudget.plan``: the feature-cache fill and each phase's seconds, logged and kept in the
run's summary), which the report shows beside the prediction from each phase's first steps
and the time it took.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import Dataset

from snugtune.config import PhaseConfig, TrainConfig
from snugtune.errors import ConfigError
from snugtune.models import Classifier
from snugtune.planner import PhasePlan
from snugtune.step import PhaseSchedule, autocast
from snugtune.units import format_duration

__all__ = [
    "EPOCHS",
    "MIN_STEPS",
    "PhaseClock",
    "TimeBudget",
    "default_epochs",
    "measure_forward",
    "phase_share",
    "start_budget",
]

log = logging.getLogger(__name__)

#: Optimizer steps a phase takes at least by default: a head on cached features, a frozen
#: backbone run on images, and a phase whose backbone trains.
MIN_STEPS = {"cached": 1500, "frozen": 300, "unfrozen": 1000}
#: Default epochs per phase, at least and at most.
EPOCHS = (3, 30)
#: With a time budget: at most this share of the time left goes to a frozen phase that
#: other phases follow, and an unfrozen phase runs at most this many epochs.
FROZEN_SHARE = 0.15
MAX_BUDGET_EPOCHS = 60
#: Steps timed before a phase's epochs are fitted to the budget (the first one apart).
PROBE_STEPS = 6
#: Images decoded and passed forward per chunk to measure the forward speed up front.
PROBE_IMAGES = 16
#: A training step's forward and backward pass, in forward passes (backward ~2x forward).
TRAIN_FORWARDS = 3.0
#: Seconds kept for what follows the last epoch: the final evaluation of the validation
#: split is counted apart (measured); this is the weights, card, plots and report.
OUTPUT_SECONDS = 3.0


def _frozen(phase: PhaseConfig) -> bool:
    return phase.top_blocks() == 0


def default_epochs(phase: PhaseConfig, steps_per_epoch: int, cached: bool = False) -> int:
    """The phase's epochs: as configured, else at least ``MIN_STEPS`` steps within ``EPOCHS``
    (``cached``: the phase trains on cached features)."""
    if phase.epochs is not None:
        return phase.epochs
    need = MIN_STEPS["unfrozen" if not _frozen(phase) else "cached" if cached else "frozen"]
    return min(EPOCHS[1], max(EPOCHS[0], math.ceil(need / max(1, steps_per_epoch))))


def phase_share(phases: tuple[PhaseConfig, ...], index: int) -> float:
    """Share of the time left that phase ``index`` may use (the phases after it get the rest)."""
    rest = phases[index:]
    if len(rest) == 1:
        return 1.0
    if _frozen(rest[0]):
        return FROZEN_SHARE
    return 1.0 / sum(1 for p in rest if not _frozen(p))


@dataclass
class PhaseClock:
    """Times one phase's steps and validation passes and fits its length, in optimizer
    steps, to a deadline (see the module docstring). The last epoch may be cut short: a
    phase ends on the step its time runs out, then validates.

    Args:
        deadline: ``time.perf_counter()`` value by which the whole run must have ended.
        share: of the time left when the phase starts, the part it may use.
        steps_per_epoch: optimizer steps per epoch.
        steps: the phase's steps before any fit (its default epochs' or a resumed fit's).
        val_seconds: predicted seconds of one validation pass, until one is measured.
        reserve: seconds kept after the phase: the final evaluation and the outputs.
        cap: the most steps a fit may choose.
        schedule: the phase's LR schedule, told of every new fit.
        sync: runs a fit on rank 0 and gives every rank its result (``World.from_main``), so
            data-parallel processes stop on the same step.
        fitted: the steps were already fitted (a phase resumed after its first epoch).
    """

    deadline: float
    share: float
    steps_per_epoch: int
    steps: int
    val_seconds: float
    reserve: float
    cap: int
    schedule: PhaseSchedule
    sync: Callable[[Callable[[], int]], int] = field(default=lambda fit: fit())
    fitted: bool = False
    predicted_seconds: float | None = None  # the phase's seconds, as the first fit predicted
    _started: float = field(default_factory=lambda: time.perf_counter())  # patchable in tests
    _allowed: float | None = None  # the phase's seconds, from its start
    _first_step_done: float | None = None
    _train_seconds: float = 0.0  # measured over finished epochs
    _train_steps: int = 0
    _val_seconds: float = 0.0
    _val_passes: int = 0

    @classmethod
    def for_phase(cls, budget: TimeBudget, phases: tuple[PhaseConfig, ...], index: int, *,
                  steps_per_epoch: int, epochs: int, steps: int | None, val_images: int,
                  cached: bool, schedule: PhaseSchedule,
                  sync: Callable[[Callable[[], int]], int]) -> PhaseClock:
        """The clock of phase ``index``: its share of the time left, its validation pass
        (free on cached features), and at most its default epochs when it is a frozen phase
        that others follow (more time there is better spent fine-tuning). ``steps``: the
        length a resumed phase was fitted to."""
        frozen_first = index < len(phases) - 1 and _frozen(phases[index])
        images = val_images * budget.image_seconds  # the final evaluation runs on images
        cap = epochs if frozen_first else MAX_BUDGET_EPOCHS
        return cls(deadline=budget.deadline, share=phase_share(phases, index),
                   steps_per_epoch=steps_per_epoch,
                   steps=steps if steps is not None else epochs * steps_per_epoch,
                   val_seconds=0.0 if cached else images, reserve=OUTPUT_SECONDS + images,
                   cap=cap * steps_per_epoch, schedule=schedule, sync=sync,
                   fitted=steps is not None)

    @property
    def epochs(self) -> int:
        """Epochs the phase runs (the last may be cut short)."""
        return max(1, math.ceil(self.steps / self.steps_per_epoch))

    def left(self) -> float:
        """Seconds left for training: to the deadline, less the final evaluation and outputs."""
        return self.deadline - time.perf_counter() - self.reserve

    def stop(self, epoch: int, step: int) -> bool:
        """Whether step ``step`` of epoch ``epoch`` (both 0-based) is past the phase's end."""
        return epoch * self.steps_per_epoch + step >= self.steps

    def step_done(self, step: int) -> None:
        """Called after each step of the phase's first epoch: fits the phase's length once
        the probe steps are timed (the first step apart: it pays the loader's start)."""
        now = time.perf_counter()
        if self._allowed is None:
            self._allowed = self.share * (self.left() + now - self._started)
        if self.fitted:
            return
        if step == 0:
            self._first_step_done = now
            return
        if step < PROBE_STEPS and step < self.steps_per_epoch - 1:
            return
        assert self._first_step_done is not None
        per_step = (now - self._first_step_done) / step
        self._fit(per_step, self.val_seconds, done_steps=step + 1)

    def epoch_done(self, train_seconds: float, steps: int, val_seconds: float, epochs: int) -> int:
        """Refit after an epoch of ``steps`` steps (``train_seconds``, then ``val_seconds`` of
        validation), ``epochs`` epochs done; the phase's epochs now."""
        self._train_seconds += train_seconds
        self._train_steps += steps
        if val_seconds > 0:
            self._val_seconds += val_seconds
            self._val_passes += 1
        if self._allowed is None:  # resumed: the share of what is left now
            self._allowed = self.share * self.left()
            self._started = time.perf_counter()
        per_step = self._train_seconds / max(1, self._train_steps)
        val = self._val_seconds / self._val_passes if self._val_passes else self.val_seconds
        self._fit(per_step, val, done_steps=epochs * self.steps_per_epoch)
        return self.epochs

    def _fit(self, step_seconds: float, val_seconds: float, done_steps: int) -> None:
        """The most steps whose training and validation passes end the phase within its
        share of the time, at the measured rates from now on (at least the steps done)."""
        spent = time.perf_counter() - self._started
        room = (self._allowed or 0.0) - spent

        def best() -> int:
            steps = done_steps
            done_epochs = math.ceil(done_steps / self.steps_per_epoch)
            for epochs in range(max(1, done_epochs), math.ceil(self.cap / self.steps_per_epoch) + 1):
                # validation passes still to come: the epoch under way's, and each later one's
                vals = epochs - done_epochs + (1 if done_steps % self.steps_per_epoch else 0)
                more = math.floor((room - vals * val_seconds) / max(step_seconds, 1e-9))
                fits = min(epochs * self.steps_per_epoch, self.cap, done_steps + more)
                if fits <= (epochs - 1) * self.steps_per_epoch:
                    break
                steps = max(steps, fits)
            return max(1, steps)

        steps = self.sync(best)
        log.log(logging.DEBUG if self.fitted else logging.INFO,
                "time budget: %d steps (%d epochs) at %.0f ms per step fit the %s left", steps,
                math.ceil(steps / self.steps_per_epoch), 1000 * step_seconds,
                format_duration(max(0.0, room)))
        if not self.fitted:  # the prediction the report checks: made once, from the probe
            epochs_left = math.ceil(steps / self.steps_per_epoch) - math.ceil(
                done_steps / self.steps_per_epoch) + (1 if done_steps % self.steps_per_epoch else 0)
            self.predicted_seconds = spent + (steps - done_steps) * step_seconds + max(
                0, epochs_left) * val_seconds
        self.fitted = True
        if steps != self.steps:
            self.schedule.set_steps(steps)
        self.steps = steps


@dataclass(frozen=True)
class TimeBudget:
    """The run's deadline and what one image's forward pass costs on this machine.

    Attributes:
        deadline: ``time.perf_counter()`` value by which the run must have ended.
        image_seconds: decode, preprocessing and an inference forward pass of one image
            (measured up front: ``measure_forward``): the feature-cache fill and validation.
        planned: a fresh run's plan (``plan``): (phase or ``feature cache``, seconds).
    """

    deadline: float
    image_seconds: float
    planned: tuple[tuple[str, float], ...] = ()

    def plan(self, phases: tuple[PhaseConfig, ...], cached: tuple[bool, ...], *, num_train: int,
             num_val: int, steps_per_epoch: int) -> tuple[tuple[str, float], ...]:
        """Seconds planned before anything trained, per phase and for the feature-cache fill:
        the time left less the final evaluation and outputs, shared as ``PhaseClock`` will
        share it. A frozen phase that others follow takes its default epochs at one forward
        pass per image, at most its share; on cached features it is not planned (its epochs
        cost next to nothing) but the fill is, as ``"feature cache"`` (one forward pass over
        the data); the other phases take their share of what is left. ``cached``: per phase,
        whether it trains on cached features."""
        left = self.deadline - time.perf_counter() - OUTPUT_SECONDS - num_val * self.image_seconds
        epoch = (num_train + num_val) * self.image_seconds  # a forward pass over the data
        out = []
        for i, phase in enumerate(phases):
            if phase.epochs != 0 and i < len(phases) - 1 and _frozen(phase):
                if cached[i]:
                    out.append(("feature cache", round(epoch, 1)))
                    left -= epoch
                    continue
                seconds = min(phase_share(phases, i) * max(0.0, left),
                              default_epochs(phase, steps_per_epoch) * epoch)
            else:
                seconds = 0.0 if phase.epochs == 0 else phase_share(phases, i) * max(0.0, left)
            out.append((phase.name, round(seconds, 1)))
            left -= seconds
        return tuple(out)

    def first_epoch(self, num_train: int, num_val: int, cached: bool) -> float:
        """Predicted seconds of the first phase's first epoch: the feature-cache fill (train
        and validation images) when the phase trains on cached features, else a training
        pass (forward and backward, ~3 forwards) and a validation pass."""
        if cached:
            return (num_train + num_val) * self.image_seconds
        return (TRAIN_FORWARDS * num_train + num_val) * self.image_seconds

    def check(self, cfg: TrainConfig, first_epoch: float) -> None:
        """Refuse a budget that cannot cover the first phase's first epoch.

        Raises:
            ConfigError: with the time the run would need on this machine.
        """
        budget = cfg.time_budget or 0.0
        spent = budget - (self.deadline - time.perf_counter())
        need = spent + first_epoch + OUTPUT_SECONDS
        if need > budget:
            raise ConfigError(
                f"--time-budget {format_duration(budget)} cannot cover one epoch of phase "
                f"{cfg.phases[0].name!r} on this machine: it needs about {format_duration(need)}"
                f" (setup {format_duration(spent)}, the epoch {format_duration(first_epoch)} at "
                f"{1 / self.image_seconds:.0f} images/s); give --time-budget "
                f"{format_duration(_round_up(need * 1.2))} or more")


def _round_up(seconds: float) -> float:
    """To 10 s under a minute, else to the minute."""
    step = 10 if seconds < 60 else 60
    return float(step * math.ceil(seconds / step))


def start_budget(cfg: TrainConfig, model: Classifier, images: Dataset[Any], first: PhasePlan,
                 device: torch.device, *, deadline: float, sizes: tuple[int, int] | None,
                 cached: tuple[bool, ...]) -> TimeBudget:
    """The run's budget: ``deadline`` and this machine's forward time on ``images`` (in the
    first phase's precision and layout). With ``sizes`` (train and validation images: a fresh
    run), a budget that cannot cover the first phase's first epoch stops the run here, and
    the phases' planned seconds are logged and kept (``TimeBudget.planned``). ``cached``: per
    phase, whether it trains on cached features.

    Raises:
        ConfigError: the budget is too small (with what would do).
    """
    seconds = measure_forward(model, images, device, first.precision, first.channels_last,
                              chunk=min(PROBE_IMAGES, first.micro_batch))
    budget = TimeBudget(deadline=deadline, image_seconds=seconds)
    if sizes is None:
        return budget
    budget.check(cfg, budget.first_epoch(*sizes, cached=cached[0]))
    planned = budget.plan(cfg.phases, cached, num_train=sizes[0], num_val=sizes[1],
                          steps_per_epoch=math.ceil(sizes[0] / cfg.batch_size))
    log.info("time budget %s (%.0f images/s forward here): %s", format_duration(cfg.time_budget or 0),
             1 / max(seconds, 1e-9), ", ".join(f"{n} ~{format_duration(t)}" for n, t in planned))
    return replace(budget, planned=planned)


def measure_forward(model: Classifier, dataset: Dataset[Any], device: torch.device,
                    precision: str, channels_last: bool, chunk: int = PROBE_IMAGES) -> float:
    """Seconds per image of decoding and an inference forward pass of ``chunk`` images, from
    two chunks (the first apart: it pays one-time initialisation)."""
    n = min(len(dataset), 2 * chunk)  # type: ignore[arg-type]
    if n == 0:
        return 0.0
    was_training = model.training
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    times = []
    try:
        with torch.inference_mode(), autocast(device.type, precision):
            for start in range(0, n, chunk):
                t0 = time.perf_counter()
                x = torch.stack([dataset[i][0] for i in range(start, min(n, start + chunk))])
                model(x.to(device, memory_format=fmt))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append((time.perf_counter() - t0) / len(x))
    finally:
        model.train(was_training)
    return times[-1]
