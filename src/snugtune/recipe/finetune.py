"""The fine-tuning recipe, top to bottom: ``train(cfg)``, and ``resume(run_dir)`` after a stop.

::

    setup     scan and split the folder, build the model, choose the input size      (setup)
    plan      per phase: micro-batch, precision, checkpointing, feature cache         (planner)
    phases    per phase: its inputs (images or cached features), then epochs of
              train_step + evaluate, early stopping and a checkpoint every epoch      (step)
    outputs   weights, model card, evaluation, plots, summary, report                 (outputs)

Where the run stands is data: a frozen ``RunState`` (saved in every checkpoint) that only this
module replaces, epoch by epoch; each phase ends as a ``PhaseResult``, the run as a
``RunSummary``. Randomness is a pure function of the seed, the phase and the epoch, so on the
CPU with ``--deterministic`` a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from snugtune._version import __version__
from snugtune.config import PhaseConfig, TrainConfig
from snugtune.data import decode_once, make_loader
from snugtune.errors import CheckpointError
from snugtune.memory import PeakMeter, held_tensors, sampled_step
from snugtune.models import build_classifier, resolve_backbone
from snugtune.models.candidates import auto_entries, is_auto
from snugtune.planner import PhasePlan
from snugtune.recipe.checkpoint import load_checkpoint, save_checkpoint
from snugtune.recipe.distributed import (
    NullMetrics,
    ShardedBatches,
    World,
    restarted_by_torchrun,
    session,
    sharded_loader,
)
from snugtune.recipe.flips import check_flips, with_flips
from snugtune.recipe.inputs import PhaseInputs, phase_inputs
from snugtune.recipe.outputs import write_outputs
from snugtune.recipe.progress import progress, progress_bar
from snugtune.recipe.race import choose_backbone
from snugtune.recipe.records import EpochOutcome, after_epoch, epoch_row, phase_result
from snugtune.recipe.sampler import EpochSampler, epoch_seed
from snugtune.recipe.setup import (
    Setup,
    choose_resolution,
    class_weights,
    configure_model,
    device_cap,
    image_dataset,
    plan_phases,
    prepare_data,
)
from snugtune.recipe.state import RunState
from snugtune.recipe.timing import PhaseClock, default_epochs, start_budget
from snugtune.report import MetricsLog, notebook_bundle
from snugtune.results import RunSummary
from snugtune.rundir import RunDir
from snugtune.step import (
    MicroBatch,
    PhaseSchedule,
    Stats,
    StepContext,
    StepSync,
    build_optimizer,
    build_scheduler,
    deterministic,
    eval_micro_batch,
    evaluate,
    grad_scaler,
    local_batch,
    param_groups,
    resolve_device,
    train_step,
)
from snugtune.store import DataIndex

__all__ = ["TrainResult", "resume", "run_epoch", "train"]

log = logging.getLogger(__name__)

Checkpoint = dict[str, Any]


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (``rank``: only rank 0 of a data-parallel run wrote it)."""

    run_dir: Path
    summary: RunSummary
    rank: int = 0

    _repr_mimebundle_ = notebook_bundle  # a notebook shows the summary, curves and report

    @property
    def best_val_accuracy(self) -> float | None:
        return self.summary.best_val_accuracy

    @property
    def classes(self) -> tuple[str, ...]:
        return self.summary.classes

    @property
    def report_path(self) -> Path:
        return RunDir(self.run_dir).report_md


def train(cfg: TrainConfig) -> TrainResult:
    """Train a classifier as configured; refuses to overwrite a run that has a checkpoint.

    Raises:
        CheckpointError: ``cfg.out`` already holds a run (use ``resume``), or another process
            is training into it.
    """
    run = RunDir(cfg.out)
    if run.holds_run():
        if restarted_by_torchrun() and run.config.exists():
            log.info("restarted by torchrun: resuming %s", run.path)
            return resume(run.path)
        raise CheckpointError(f"{run.path} already holds a run; continue it with --resume "
                              f"{run.path} or choose another --out")
    if is_auto(cfg.model):  # an unknown --model fails before any scanning
        auto_entries(cfg.model, cfg.weights)
    else:
        resolve_backbone(cfg.model)
    with (session(resolve_device(cfg.device)) as world, run.lock(enabled=world.is_main),
          DataIndex.at(cfg.cache_dir) as index):
        if world.is_main:
            run.start(cfg)
        return _run(cfg, run, world, index, checkpoint=None)


def resume(run_dir: str | Path) -> TrainResult:
    """Continue a stopped run from its newest checkpoint, with its saved configuration.

    Raises:
        CheckpointError: no run or no readable checkpoint there, or another process is
            training into it.
    """
    run = RunDir(run_dir)
    cfg = run.read_config()
    with (session(resolve_device(cfg.device)) as world, run.lock(enabled=world.is_main),
          DataIndex.at(cfg.cache_dir) as index):
        return _run(cfg, run, world, index, checkpoint=load_checkpoint(run.checkpoints))


def _run(cfg: TrainConfig, run: RunDir, world: World, index: DataIndex,
         checkpoint: Checkpoint | None) -> TrainResult:
    started = time.perf_counter()
    cfg, setup, state = _setup(cfg, run, world, checkpoint, started, index)
    metrics: MetricsLog | NullMetrics = MetricsLog(run) if world.is_main else NullMetrics()
    metrics.truncate(state.global_epoch)  # rows logged after the checkpoint are redone
    with contextlib.closing(metrics):
        while state.phase_index < len(cfg.phases):
            resuming = checkpoint if checkpoint and checkpoint.get("optimizer") else None
            state = _train_phase(with_flips(cfg, setup.flips), run, setup, state, metrics, resuming)
            checkpoint = None
    state = replace(state, total_seconds=state.total_seconds + time.perf_counter() - started)
    summary = world.from_main(lambda: write_outputs(run, cfg, setup, state, metrics.rows))
    return TrainResult(run.path, summary, rank=world.rank)


# ---------------------------------------------------------------- setup and plan


def _setup(cfg: TrainConfig, run: RunDir, world: World, checkpoint: Checkpoint | None,
           started: float, index: DataIndex) -> tuple[TrainConfig, Setup, RunState]:
    """The data, the backbone (``--model auto``: raced, and ``cfg`` names the winner), the
    model (restored from ``checkpoint``), its input size, the images decoded once, the plan,
    whether to flip (decided from the training images unless set), and the time budget's
    deadline (counted from ``started``, less what earlier sessions spent)."""
    if cfg.deterministic:
        deterministic(world.device)
    data = world.from_main(lambda: prepare_data(cfg, run, index))
    race = None
    if is_auto(cfg.model):  # the race's time is the run's: the deadline counts from ``started``
        race = world.from_main(lambda: choose_backbone(cfg, data, run, index, world.device,
                                                       world.world_size))
        cfg = replace(cfg, model=race.winner)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    model = build_classifier(cfg.model, len(data.classes), weights=cfg.weights,
                             head_hidden=cfg.head_hidden, head_dropout=cfg.head_dropout,
                             pre_logits=cfg.pre_logits)
    state, resolution = RunState(), choose_resolution(cfg.resolution, model.preprocessing,
                                                      data.scan.median_size)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        state, resolution = RunState.from_dict(checkpoint["run"]), int(checkpoint["resolution"])
        log.info("resuming %s at phase %d, epoch %d", run.path, state.phase_index + 1,
                 state.phase.epoch + 1)
    model.to(world.device)
    plan = world.from_main(lambda: plan_phases(cfg, model, data, resolution, world.device,
                                               world.world_size, run))  # the budget is per device
    images = world.main_first(lambda: decode_once(  # rank 0 fills, the others find it filled
        data.train + data.val, index, resolution, workers=cfg.workers,
        bar=progress_bar("decode once", cfg.progress and world.is_main)))
    flips = None if cfg.augment.horizontal_flip is not None else world.from_main(
        lambda: check_flips(data.train, data.classes, images))
    setup = Setup(data, model, resolution, plan, world, index, images, flips=flips,
                  race=race.to_dict() if race else None)
    if cfg.time_budget is not None:
        first = plan.phases[state.phase_index]
        spent = sum(r.seconds or 0.0 for r in state.results) + state.phase.seconds
        with device_cap(cfg.gpu_memory, setup):  # its forward passes, at the plan's micro-batch
            budget = start_budget(
                cfg, model, image_dataset(data.val or data.train, model, cfg, resolution,
                                          train=False, images=images),
                first, world.device, deadline=started + cfg.time_budget - spent,
                sizes=(len(data.train), len(data.val)) if checkpoint is None else None,
                cached=tuple(p.feature_cache and cfg.feature_cache for p in plan.phases))
        setup = replace(setup, time=budget)
        if setup.time is not None and setup.time.planned:  # a fresh run: its plan is kept
            state = replace(state, time_plan=setup.time.planned)
    return cfg, setup, state


# ---------------------------------------------------------------- one phase


def _train_phase(cfg: TrainConfig, run: RunDir, setup: Setup, state: RunState,
                 metrics: MetricsLog | NullMetrics, checkpoint: Checkpoint | None) -> RunState:
    """Train the current phase from where ``state`` says to its end; the state after it."""
    phase, plan = cfg.phases[state.phase_index], setup.plan.phases[state.phase_index]
    batch = local_batch(cfg.batch_size, len(setup.data.train), setup.world.world_size)
    if phase.epochs == 0:  # nothing to train, no inputs (a frozen phase would fill the cache)
        state = state.next_phase(phase_result(
            phase, plan, state.phase, MicroBatch(plan.micro_batch), batch, None, None))
        _save(run, setup, state, best=None)
        return state
    configure_model(setup.model, phase, plan)
    meter = device_cap(cfg.gpu_memory, setup)
    with meter:  # the feature-cache fill (in the phase's parts) and every step
        parts = _phase_parts(cfg, setup, phase, plan, checkpoint, state.phase.epochs)
        state = replace(state, phase=replace(state.phase, epochs=parts.epochs))
        clock = None if setup.time is None else PhaseClock.for_phase(
            setup.time, cfg.phases, state.phase_index, steps_per_epoch=max(1, len(parts.loader)),
            epochs=parts.epochs, steps=state.phase.steps,
            val_images=len(parts.inputs.val or ()),  # type: ignore[arg-type]
            cached=parts.inputs.module is not setup.model, schedule=parts.scheduler,
            sync=setup.world.from_main)
        micro, best = state.phase.micro or MicroBatch(plan.micro_batch), parts.best
        log.info("phase %s: %s, micro-batch %d x %d, %s, %d epochs%s", phase.name, plan.trainable,
                 micro.size, micro.accumulation(batch), plan.precision, parts.epochs,
                 " (to be fitted to the time budget)" if clock and not clock.fitted else "")
        while state.phase.epoch < (state.phase.epochs or 0) and not state.phase.stopped_early:
            seed = epoch_seed(cfg.seed, state.phase_index, state.phase.epoch)
            parts.sampler.seed = seed
            torch.manual_seed(seed)  # dropout, MixUp: a pure function of (seed, phase, epoch)
            epoch = run_epoch(parts, micro, setup=setup, meter=meter, state=state, phase=phase,
                              show=cfg.progress and setup.world.is_main, clock=clock)
            micro = epoch.micro
            state, best = after_epoch(state, phase, epoch, best, setup.model,
                                       parts.scheduler.factor())
            if clock is not None:  # refit with the epoch's measured time
                epochs = clock.epoch_done(epoch.train_seconds, epoch.steps,
                                          epoch.seconds - epoch.train_seconds, state.phase.epoch)
                predicted = clock.predicted_seconds or state.phase.predicted_seconds  # resumed: kept
                state = replace(state, phase=replace(state.phase, epochs=epochs, steps=clock.steps,
                                                     predicted_seconds=predicted))
            metrics.append(epoch_row(phase, state, epoch, parts.optimizer, batch).to_dict())
            _save(run, setup, state, best=best, optimizer=parts.optimizer.state_dict(),
                  scheduler=parts.scheduler.state_dict(),
                  scaler=parts.scaler.state_dict() if parts.scaler else None)
    if phase.restore_best and best is not None and state.phase.best_epoch >= 0:
        setup.model.load_state_dict(best)
        log.info("phase %s: restored the best weights (epoch %d)", phase.name,
                 state.phase.best_epoch + 1)
    state = state.next_phase(phase_result(phase, plan, state.phase, micro, batch, parts.inputs, meter))
    _save(run, setup, state, best=None)  # the phase boundary: no optimizer to resume
    return state


@dataclass(frozen=True)
class _PhaseParts:
    """What a phase's epochs run: its inputs and step context, loaders, the module that trains
    and how its steps end among the ranks, optimizer, schedule, loss scaler, the
    best weights so far (from a checkpoint inside the phase), and its epochs."""

    inputs: PhaseInputs
    ctx: StepContext
    sampler: EpochSampler | ShardedBatches
    loader: DataLoader[Any]
    val_loader: DataLoader[Any] | None
    sync: StepSync | None
    optimizer: torch.optim.Optimizer
    scheduler: PhaseSchedule
    scaler: torch.amp.GradScaler | None
    best: dict[str, Tensor] | None
    epochs: int


def _phase_parts(cfg: TrainConfig, setup: Setup, phase: PhaseConfig, plan: PhasePlan,
                 checkpoint: Checkpoint | None, epochs: int | None) -> _PhaseParts:
    """What trains the model (configured as the plan says) for ``epochs`` epochs (None: the
    phase's default for its steps per epoch)."""
    model, world = setup.model, setup.world
    inputs = world.main_first(lambda: phase_inputs(  # rank 0 fills the feature cache
        cfg, model, setup.data, setup.resolution, plan, world.device, setup.index, setup.images))
    ctx = StepContext(device=world.device, num_classes=len(setup.data.classes),
                      label_smoothing=phase.label_smoothing, class_weights=class_weights(cfg, setup.data),
                      precision=plan.precision, channels_last=plan.channels_last, mixer=inputs.mixer)
    workers = cfg.workers if inputs.workers is None else inputs.workers
    sampler = world.epoch_sampler(len(inputs.train), cfg.batch_size)  # type: ignore[arg-type]
    if isinstance(sampler, ShardedBatches):
        loader = sharded_loader(inputs.train, sampler, workers=workers, seed=cfg.seed,
                                device=world.device.type)
    else:
        loader = make_loader(inputs.train, batch_size=cfg.batch_size, sampler=sampler,
                             workers=workers, seed=cfg.seed, device=world.device.type)
    val_loader = None if not inputs.val or len(inputs.val) == 0 else make_loader(  # type: ignore[arg-type]
        world.val_shard(inputs.val), batch_size=cfg.batch_size * 2, workers=workers,
        device=world.device.type)  # one per phase: its workers persist
    optimizer = build_optimizer(param_groups(model.head, model.blocks, model.backbone, phase),
                                phase, world.device.type)
    epochs = epochs if epochs is not None else default_epochs(
        phase, max(1, len(loader)), cached=inputs.module is not model)
    scheduler = build_scheduler(optimizer, phase, max(1, len(loader)), epochs)
    scaler = grad_scaler(plan.precision, world.device)
    if checkpoint is not None:  # resumed inside this phase
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
    world.broadcast_weights(inputs.module)
    return _PhaseParts(inputs, ctx, sampler, loader, val_loader, world.step_sync(), optimizer,
                       scheduler, scaler, checkpoint.get("best") if checkpoint else None, epochs)


# ---------------------------------------------------------------- one epoch


def run_epoch(parts: _PhaseParts, micro: MicroBatch, *, setup: Setup, meter: PeakMeter,
              state: RunState, phase: PhaseConfig, show: bool,
              clock: PhaseClock | None = None) -> EpochOutcome:
    """One epoch: a step per batch (the meter counts one step of a phase's first epoch, the
    clock times the first steps), then validation. What trains is ``parts.inputs.module``
    (the classifier, or its head on cached features)."""
    t0 = time.perf_counter()
    model, world, ctx = setup.model, setup.world, parts.ctx
    net, optimizer, loader = parts.inputs.module, parts.optimizer, parts.loader
    model.train()
    stats = Stats()
    counted = sampled_step(len(loader)) if state.phase.epoch == 0 else -1
    batches = progress(loader, desc=f"{phase.name} {state.phase.epoch + 1}/{state.phase.epochs}",
                       enabled=show)
    timing = clock is not None and state.phase.epoch == 0
    steps = 0
    for step, (x, y) in enumerate(batches):
        if clock is not None and clock.stop(state.phase.epoch, step):
            break  # the time budget ends the phase inside this epoch
        with (meter.sampling(held_tensors(model, optimizer)) if step == counted
              else contextlib.nullcontext()):
            step_stats, micro = train_step(net, optimizer, x, y, ctx, micro, step=step,
                                           epoch=state.global_epoch + 1, scaler=parts.scaler,
                                           sync=parts.sync)
        parts.scheduler.step()
        if timing:
            clock.step_done(step)  # type: ignore[union-attr]
        stats = stats + step_stats
        steps += 1
    world.broadcast_buffers(net)
    train_s = time.perf_counter() - t0
    val = None
    if parts.val_loader is not None:
        val_stats, _, _, val_micro = evaluate(net, parts.val_loader, ctx,
                                              eval_micro_batch(ctx.device, micro.size))
        if len(val_micro.recoveries) > len(micro.recoveries):  # evaluation ran out of memory
            micro = MicroBatch(min(micro.size, val_micro.size), val_micro.recoveries)
        model.train()
        val = world.reduce_stats(val_stats)
    return EpochOutcome(world.reduce_stats(stats), val, micro, time.perf_counter() - t0, train_s, steps)


# ---------------------------------------------------------------- checkpoints


def _save(run: RunDir, setup: Setup, state: RunState, *, best: dict[str, Tensor] | None,
          **resume: Any) -> None:
    """A checkpoint of ``state``: one writer (rank 0), and every rank waits for it, so a rank
    that dies after this point leaves this epoch's checkpoint, and a failed write stops all."""
    payload = {
        "model": setup.model.state_dict(), "best": best, "run": state.to_dict(),
        "resolution": setup.resolution,
        "versions": {"snugtune": __version__, "torch": str(torch.__version__),
                     "python": platform.python_version()},
        **resume,
    }
    setup.world.from_main(lambda: save_checkpoint(run.checkpoints, payload))
