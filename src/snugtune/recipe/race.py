"""``--model auto``: choose the backbone for this card, these minutes and these images.

1. **Shortlist** (``models.candidates``): the table's backbones whose pretrained weights are
   here, or the user's list (``--model auto:a,b,c``).
2. **Plan and time each**: the planner fits each to the budget or card exactly as it would for
   the run (a candidate that fits in no configuration is dropped, with the planner's reason);
   its forward speed is measured on the validation images at the resolution it would train
   at (``timing.measure_forward``). A candidate whose weights cannot be loaded is dropped too.
3. **Race on frozen features** (successive halving, Jamieson & Talwalkar 2016): every
   candidate fills the feature cache for a seeded subset of the training images and the
   validation images, and a copy of its new head trains ``RACE_STEPS`` steps on them (seconds);
   the better half by validation accuracy goes on to twice the images, until one is left. The
   cache is the run's own (content-keyed): the winner's head phase finds the features the race
   filled. The winner is the fastest candidate within one standard error of the leader's
   accuracy (``pick_winner``): a slower backbone must win by more than the race can resolve.
4. **Its cost is bounded**: the race's predicted fill time (images x each candidate's measured
   seconds per image) is kept within ``RACE_SHARE`` of the time budget, or without one of the
   run's own predicted fine-tuning time, by racing on fewer images (at least
   ``MIN_PER_CLASS`` per class).

The record (``race.json`` in the run folder, the summary's ``race``, the report's "Backbone
race") says what each candidate did and why the winner won; a resumed run reads it back and
continues with the same backbone.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from snugtune.config import PhaseConfig, TrainConfig
from snugtune.data import DataBundle, make_loader
from snugtune.errors import BudgetError, WeightsError
from snugtune.memory import resolve_gpu
from snugtune.models import Classifier, build_classifier
from snugtune.models.candidates import ZooEntry, auto_entries
from snugtune.planner import Plan, plan_run
from snugtune.recipe.inputs import cached_inputs
from snugtune.recipe.sampler import EpochSampler
from snugtune.recipe.setup import choose_resolution, image_dataset, load_folder
from snugtune.recipe.timing import TRAIN_FORWARDS, default_epochs, measure_forward
from snugtune.rundir import RunDir, write_json
from snugtune.step import (
    MicroBatch,
    StepContext,
    build_optimizer,
    build_scheduler,
    evaluate,
    param_groups,
    plan_device,
    resolve_device,
    train_step,
)
from snugtune.store import DataIndex

__all__ = ["MIN_PER_CLASS", "RACE_SHARE", "RACE_STEPS", "Entrant", "Race", "choose_backbone",
           "pick_winner", "plan_candidates", "rung_sizes", "run_race", "shortlist", "survivors"]

log = logging.getLogger(__name__)

#: Optimizer steps of a candidate's head on its cached features, per rung. Profiled on
#: Animal-MNIST at --time-budget 5m (3 candidates, 2 rungs), the head steps were a small part of
#: the race, the feature fills most of it (a profile that no committed JSON records); every
#: second of the race is a second less of fine-tuning for the winner.
RACE_STEPS = 100
#: The race's predicted fill time, at most this share of the time budget (or of the run's
#: predicted fine-tuning time without one). At 0.2 the race took 65-68 s of a 5-minute budget
#: on Animal-MNIST and the auto runs' median ended 0.1 point below the default's
#: (benchmarks/results/model_auto.json as committed in 78fdc35, from benchmarks/model_auto.py).
RACE_SHARE = 0.05
#: Training images per class the first rung keeps at least.
MIN_PER_CLASS = 20


@dataclass(frozen=True)
class Entrant:
    """One candidate: dropped (and why), or what it measured and how it raced.

    ``rungs``: (training images, validation accuracy, seconds) per rung it ran.
    """

    name: str
    top1: float | None = None
    dropped: str | None = None
    resolution: int | None = None
    trainable: str | None = None  # what its fine-tuning phase trains under the budget
    predicted_peak_bytes: int | None = None
    images_per_s: float | None = None
    rungs: tuple[tuple[int, float, float], ...] = ()

    @property
    def score(self) -> tuple[int, float, float]:
        """Rank: furthest rung, its accuracy, then speed (ties go to the faster)."""
        last = self.rungs[-1] if self.rungs else (0, -1.0, 0.0)
        return len(self.rungs), last[1], self.images_per_s or 0.0


@dataclass(frozen=True)
class Race:
    """The race's record (``race.json``)."""

    entrants: tuple[Entrant, ...]
    winner: str
    reason: str
    seconds: float
    budget_seconds: float | None
    val_images: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["entrants"] = [{**asdict(e), "rungs": [list(r) for r in e.rungs]} for e in self.entrants]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Race:
        entrants = tuple(Entrant(**{**e, "rungs": tuple(tuple(r) for r in e.get("rungs") or ())})
                         for e in data["entrants"])
        return cls(entrants=entrants, winner=str(data["winner"]), reason=str(data["reason"]),
                   seconds=float(data["seconds"]), budget_seconds=data.get("budget_seconds"),
                   val_images=int(data.get("val_images", 0)))


@dataclass
class _Ready:
    entrant: Entrant
    model: Classifier
    plan: Plan


def choose_backbone(cfg: TrainConfig, data: DataBundle, run: RunDir, index: DataIndex,
                    device: torch.device, world_size: int) -> Race:
    """The race's record: read from the run (a resumed run) or run now and saved.

    Raises:
        BudgetError: no candidate fits (each one's reason is in the message).
    """
    saved = run.read_json(run.race)
    if saved is not None:
        race = Race.from_dict(saved)
        log.info("--model %s: %s (chosen before this resume)", cfg.model, race.winner)
        return race
    race = run_race(cfg, data, index, device, world_size)
    write_json(run.race, race.to_dict())
    return race


def plan_candidates(cfg: TrainConfig) -> list[Entrant]:
    """``snugtune plan DATA --model auto``: every candidate planned for the budget or card
    (``--gpu``, as ``plan`` does) and timed here, without training; dropped ones say why."""
    with DataIndex.at(cfg.cache_dir) as index:
        data = load_folder(cfg, index)
    return shortlist(cfg, data, resolve_device(cfg.device), plan_device(cfg.device, cfg.gpu))[0]


def shortlist(cfg: TrainConfig, data: DataBundle, device: torch.device,
              planned_for: str | None = None,
              world_size: int = 1) -> tuple[list[Entrant], list[_Ready]]:
    """Every candidate planned (for ``planned_for``, by default ``device``'s type) and timed on
    ``device``: all of them (dropped ones with their reason), and those that can race."""
    entries, skipped = auto_entries(cfg.model, cfg.weights)
    out = [Entrant(name, dropped=why) for name, why in skipped]
    ready = []
    for e in entries:
        r = _prepare(cfg, e, data, device, planned_for or device.type, world_size)
        out.append(r.entrant if isinstance(r, _Ready) else r)
        if isinstance(r, _Ready):
            ready.append(r)
    return out, ready


def _prepare(cfg: TrainConfig, e: ZooEntry, data: DataBundle, device: torch.device,
             planned_for: str, world_size: int) -> _Ready | Entrant:
    """``e`` built, planned and timed; or dropped with the reason."""
    try:
        model = build_classifier(e.name, len(data.classes), weights=cfg.weights,
                                 head_hidden=cfg.head_hidden, head_dropout=cfg.head_dropout,
                                 pre_logits=cfg.pre_logits)
    except WeightsError as err:
        return Entrant(e.name, e.top1, dropped=f"no pretrained weights: {_first(err)}")
    res = choose_resolution(cfg.resolution, model.preprocessing, data.scan.median_size)
    try:
        plan = plan_run(replace(cfg, model=e.name), num_classes=len(data.classes),
                        num_train=len(data.train), resolution=res, device=planned_for,
                        model=model, world_size=world_size,
                        gpu=resolve_gpu(cfg.gpu, planned_for)[0])
    except BudgetError as err:
        return Entrant(e.name, e.top1, dropped=f"does not fit: {_first(err)}", resolution=res)
    last = plan.phases[-1]
    images = image_dataset(data.val or data.train, model, cfg, res, train=False)
    seconds = measure_forward(model.to(device), images, device, plan.phases[0].precision,
                              plan.phases[0].channels_last)
    model.to("cpu")
    return _Ready(Entrant(e.name, e.top1, resolution=res, trainable=last.trainable,
                          predicted_peak_bytes=max(p.predicted_peak_bytes for p in plan.phases),
                          images_per_s=round(1 / max(seconds, 1e-9), 1)), model, plan)


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def rung_sizes(n_train: int, candidates: int, floor: int) -> list[int]:
    """Training images per rung: halving's rungs end at all ``n_train`` images, each half the
    next; the first at least ``floor`` (at most ``n_train``)."""
    rungs = max(1, math.ceil(math.log2(max(1, candidates))))
    sizes = [n_train // 2 ** (rungs - 1 - r) for r in range(rungs)]
    return [min(n_train, max(floor, s)) for s in sizes]


def survivors(entrants: Sequence[Entrant]) -> list[Entrant]:
    """The better half (rounded up) by the last rung's accuracy; ties to the faster."""
    ranked = sorted(entrants, key=lambda e: e.score, reverse=True)
    return ranked[: max(1, math.ceil(len(ranked) / 2))]


def run_race(cfg: TrainConfig, data: DataBundle, index: DataIndex, device: torch.device,
             world_size: int = 1) -> Race:
    """Shortlist, plan, time and race the candidates (module doc)."""
    t0 = time.perf_counter()
    every, ready = shortlist(cfg, data, device, world_size=world_size)
    if not ready:
        raise BudgetError(f"--model {cfg.model}: no candidate can train here: " + "; ".join(
            f"{e.name}: {e.dropped}" for e in every))
    budget = _race_budget(cfg, data, ready)
    n_train, n_val = _race_sizes(data, ready, budget)
    order = np.random.default_rng(cfg.seed).permutation(len(data.train))
    val = tuple(data.val[i] for i in np.random.default_rng(cfg.seed).permutation(len(data.val))[:n_val])
    floor = min(len(data.train), MIN_PER_CLASS * len(data.classes))
    racing = {r.entrant.name: r for r in ready}
    results = {r.entrant.name: r.entrant for r in ready}
    alive = list(results.values())
    for size in rung_sizes(n_train, len(ready), floor):
        train = tuple(data.train[i] for i in sorted(order[:size]))
        for e in alive:
            acc, seconds = _score(cfg, racing[e.name], replace(data, train=train, val=val),
                                  index, device)
            results[e.name] = replace(results[e.name],
                                      rungs=(*results[e.name].rungs, (size, acc, seconds)))
            log.info("race: %s on %d images: %.2f%% validation accuracy (%.1f s)", e.name, size,
                     100 * acc, seconds)
        alive = [results[e.name] for e in alive]
        if len(alive) == 1:
            break
        alive = survivors(alive)
    winner, reason = pick_winner(list(results.values()), len(val))
    log.info("--model %s: %s (%s)", cfg.model, winner.name, reason)
    entrants = tuple(results.get(e.name, e) for e in every)
    return Race(entrants, winner.name, reason, round(time.perf_counter() - t0, 1),
                round(budget, 1) if budget is not None else None, len(val))


def noise(p: float, q: float, n: int) -> float:
    """One standard error of the difference of two accuracies ``p`` and ``q`` measured on the
    same ``n`` validation images, as if independent: sqrt((p(1-p) + q(1-q)) / n). Independence
    overstates it (both heads err on the same hard images), so it leans to the faster model."""
    return math.sqrt((p * (1 - p) + q * (1 - q)) / max(1, n))


def pick_winner(entrants: Sequence[Entrant], n_val: int) -> tuple[Entrant, str]:
    """The fastest finalist (a candidate that ran the last rung; halving's eliminations stand)
    whose accuracy is within one standard error (``noise``) of the leader's, and why.

    Halving's leader is the most accurate on the most images; a slower backbone costs
    fine-tuning epochs in the time that is left, so it must win by more than the race can
    resolve. Measured on Animal-MNIST with the race's earlier share of 0.2
    (benchmarks/results/model_auto.json as committed in 78fdc35, ``runs.auto[1]``, from
    benchmarks/model_auto.py): Lite2 led Lite0 by 0.35 points on 1,457 validation images, one
    standard error being 0.88, and fine-tuned to 0.35 points less than Lite0 did in the same
    5 minutes.
    """
    raced = [e for e in entrants if e.rungs]
    leader = max(raced, key=lambda e: e.score)
    size, lead, _ = leader.rungs[-1]
    close = [e for e in raced if len(e.rungs) == len(leader.rungs)
             and lead - e.rungs[-1][1] <= noise(lead, e.rungs[-1][1], n_val)]
    winner = max(close, key=lambda e: e.images_per_s or 0.0)
    if winner is leader:
        return leader, _why(leader, [e for e in raced if e is not leader])
    acc = winner.rungs[-1][1]
    return winner, (f"{100 * acc:.2f}% on {size} images' frozen features, within one standard "
                    f"error ({100 * noise(lead, acc, n_val):.2f} points on {n_val} validation "
                    f"images) of {leader.name}'s {100 * lead:.2f}%, and faster "
                    f"({winner.images_per_s:.0f} vs {leader.images_per_s:.0f} images/s)")


def _why(winner: Entrant, others: Sequence[Entrant]) -> str:
    if not others:
        return "the only candidate that can train here"
    size, acc, _ = winner.rungs[-1]
    rival = max(others, key=lambda e: e.score)
    rsize, racc, _ = rival.rungs[-1]
    if rsize == size and racc == acc:
        return (f"tied with {rival.name} at {100 * acc:.2f}% on {size} images and faster "
                f"({winner.images_per_s:.0f} vs {rival.images_per_s:.0f} images/s)")
    return (f"{100 * acc:.2f}% validation accuracy of its head on {size} images' frozen features, "
            f"against {100 * racc:.2f}% for {rival.name}" + (
                f" (on {rsize})" if rsize != size else "") + ", more than one standard error")


def _race_budget(cfg: TrainConfig, data: DataBundle, ready: Sequence[_Ready]) -> float | None:
    """Seconds the race's fills may take: a share of the time budget, else of the run's
    predicted fine-tuning with the fastest candidate (None: nothing to go by)."""
    if cfg.time_budget is not None:
        return RACE_SHARE * cfg.time_budget
    fastest = max(r.entrant.images_per_s or 0.0 for r in ready)
    tuned = [p for p in cfg.phases if p.top_blocks() != 0 and p.epochs != 0]
    if not fastest or not tuned:
        return None
    steps = max(1, math.ceil(len(data.train) / cfg.batch_size))
    epochs = sum(default_epochs(p, steps) for p in tuned)
    return RACE_SHARE * epochs * len(data.train) * TRAIN_FORWARDS / fastest


def _race_sizes(data: DataBundle, ready: Sequence[_Ready], budget: float | None) -> tuple[int, int]:
    """Training and validation images of the last rung: all, or fewer so that every
    candidate's fills fit ``budget`` (each rung's images once per candidate still in it)."""
    n_train, n_val = len(data.train), len(data.val)
    if budget is None:
        return n_train, n_val
    sizes = rung_sizes(n_train, len(ready), 0)
    # images each candidate encodes: the first rung's plus the val set, then what each rung adds
    per_image = sorted((1 / max(r.entrant.images_per_s or 1e-9, 1e-9) for r in ready), reverse=True)
    cost = sum(per_image) * (sizes[0] + n_val)
    alive = len(ready)
    for prev, size in zip(sizes, sizes[1:], strict=False):
        alive = math.ceil(alive / 2)
        cost += sum(per_image[:alive]) * (size - prev)  # the slowest left, to be safe
    if cost <= budget:
        return n_train, n_val
    f = budget / cost
    floor = MIN_PER_CLASS * len(data.classes)
    return min(n_train, max(floor, int(f * n_train))), min(n_val, max(floor, int(f * n_val)))


def _head_phase(cfg: TrainConfig) -> PhaseConfig:
    first = cfg.phases[0]
    if first.top_blocks() == 0:
        return replace(first, name="race", epochs=None)
    return PhaseConfig(name="race", epochs=None, lr=1e-3, trainable="head")


def _score(cfg: TrainConfig, ready: _Ready, data: DataBundle, index: DataIndex,
           device: torch.device) -> tuple[float, float]:
    """Validation accuracy of a copy of the candidate's head trained ``RACE_STEPS`` steps on
    its cached features of ``data``, and the seconds (fill included)."""
    t0 = time.perf_counter()
    model, phase = ready.model.to(device), _head_phase(cfg)
    try:
        inputs = cached_inputs(cfg, model, data, ready.entrant.resolution or 0,
                               ready.plan.phases[0], device, index, None)
    finally:
        model.to("cpu")
    head = copy.deepcopy(inputs.module).to(device)
    batch = min(cfg.batch_size, len(data.train))
    sampler = EpochSampler(len(inputs.train), seed=cfg.seed)  # type: ignore[arg-type]
    loader = make_loader(inputs.train, batch_size=batch, sampler=sampler, workers=0,
                         seed=cfg.seed, device=device.type)
    steps_per_epoch = max(1, len(loader))
    epochs = max(1, math.ceil(RACE_STEPS / steps_per_epoch))
    optimizer = build_optimizer(param_groups(head, [], head, phase), phase, device.type)
    scheduler = build_scheduler(optimizer, phase, steps_per_epoch, epochs)
    ctx = StepContext(device=device, num_classes=len(data.classes),
                      label_smoothing=phase.label_smoothing)
    head.train()
    for epoch in range(epochs):
        sampler.seed = cfg.seed + epoch
        for step, (x, y) in enumerate(loader):
            train_step(head, optimizer, x, y, ctx, MicroBatch(batch), step=step)
            scheduler.step()
    val = make_loader(inputs.val, batch_size=max(batch, 256), workers=0,  # type: ignore[arg-type]
                      device=device.type) if inputs.val is not None else None
    stats = evaluate(head, val, ctx, MicroBatch(max(batch, 256)))[0] if val is not None else None
    return (round(stats.accuracy, 4) if stats else 0.0), round(time.perf_counter() - t0, 1)
