"""One training phase: epochs of steps, validation, early stopping, checkpoints."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from snugtune.config import PhaseConfig, TrainConfig
from snugtune.data import make_loader
from snugtune.train.distributed import ShardedBatches, World, begin_step, sharded_loader
from snugtune.train.loop import EpochStats, MicroBatch, StepContext, evaluate, train_step
from snugtune.train.optim import build_optimizer, build_scheduler
from snugtune.train.peak import PeakMeter, held_tensors, sampled_step
from snugtune.train.progress import progress
from snugtune.train.sampler import EpochSampler, epoch_seed
from snugtune.train.state import RunState

__all__ = ["PhaseInputs", "PhaseRunner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseInputs:
    """What a phase trains: a module (the classifier, or just its head on cached features)
    and datasets addressed by ``(index, seed)`` (train) and plain index (val)."""

    module: nn.Module
    train: Dataset
    val: Dataset | None
    mixer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    feature_cache: dict[str, Any] | None = None

    @property
    def workers(self) -> int | None:
        """Loader workers: none for cached features (a gather from a memory map, faster in
        this process than a worker's start and hand-over), else the config's."""
        return 0 if self.feature_cache and self.feature_cache.get("used") else None


@dataclass
class PhaseRunner:
    """Runs ``cfg.phases[index]`` from ``state`` to its end, checkpointing every epoch."""

    cfg: TrainConfig
    index: int
    model: nn.Module
    inputs: PhaseInputs
    ctx: StepContext
    micro: MicroBatch
    state: RunState
    on_epoch: Callable[[dict[str, Any]], None]
    save: Callable[[dict[str, Any]], None]
    best_state: dict[str, Tensor] | None = None
    scaler: torch.amp.GradScaler | None = None
    meter: PeakMeter | None = None
    world: World = field(default_factory=World)  # data-parallel peers (one process: no-op)
    _val_loader: DataLoader | None = None

    @property
    def phase(self) -> PhaseConfig:
        return self.cfg.phases[self.index]

    def run(self, resume: dict[str, Any] | None) -> None:
        """Train the remaining epochs of this phase, then restore the best weights."""
        phase, st = self.phase, self.state.phase
        sampler = self.world.epoch_sampler(len(self.inputs.train), self.cfg.batch_size)  # type: ignore[arg-type]
        loader = self._loader(sampler)
        self._val_loader = self._make_val_loader()  # one per phase: its workers persist
        self.module = self.world.wrap(self.inputs.module)  # DDP when data-parallel
        steps = max(1, len(loader))
        optimizer = build_optimizer(self.model, phase)  # type: ignore[arg-type]
        scheduler = build_scheduler(optimizer, phase, steps)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if self.scaler is not None and resume.get("scaler"):
                self.scaler.load_state_dict(resume["scaler"])
        while st.epoch < phase.epochs and not st.stopped_early:
            self._epoch(loader, sampler, optimizer, scheduler)
        if phase.restore_best and self.best_state is not None and st.best_epoch >= 0:
            self.model.load_state_dict(self.best_state)
            log.info("phase %s: restored the best weights (epoch %d)", phase.name, st.best_epoch + 1)

    @property
    def _workers(self) -> int | None:
        return self.cfg.workers if self.inputs.workers is None else self.inputs.workers

    def _loader(self, sampler: EpochSampler | ShardedBatches) -> DataLoader:
        if isinstance(sampler, ShardedBatches):
            return sharded_loader(self.inputs.train, sampler, workers=self._workers,
                                  seed=self.cfg.seed, device=self.ctx.device.type)
        return make_loader(self.inputs.train, batch_size=self.cfg.batch_size, sampler=sampler,
                           workers=self._workers, seed=self.cfg.seed, device=self.ctx.device.type)

    def _make_val_loader(self) -> DataLoader | None:
        if self.inputs.val is None or len(self.inputs.val) == 0:  # type: ignore[arg-type]
            return None
        return make_loader(self.world.val_shard(self.inputs.val), batch_size=self.cfg.batch_size * 2,
                           workers=self._workers, device=self.ctx.device.type)

    def _epoch(self, loader: DataLoader, sampler: EpochSampler | ShardedBatches, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        st, phase = self.state.phase, self.phase
        seed = epoch_seed(self.cfg.seed, self.index, st.epoch)
        sampler.seed = seed
        torch.manual_seed(seed)  # dropout, MixUp: a pure function of (seed, phase, epoch)
        t0 = time.perf_counter()
        stats = self._train_epoch(loader, optimizer, scheduler)
        train_s = time.perf_counter() - t0
        val = self._validate()
        seconds = time.perf_counter() - t0
        st.seconds += seconds
        st.train_seconds += train_s
        st.samples += stats.seen
        row = {
            "phase": phase.name, "epoch": st.epoch + 1, "global_epoch": self.state.global_epoch + 1,
            "train_loss": stats.loss, "train_accuracy": stats.accuracy,
            "val_loss": val.loss if val else None, "val_accuracy": val.accuracy if val else None,
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
            "images_per_s": round(stats.seen / max(train_s, 1e-9), 2), "samples_seen": stats.seen,
            "micro_batch": self.micro.size,
            "accumulation": self.micro.accumulation(self.world.local_batch(self.cfg.batch_size)),
        }
        self._early_stopping(val if val is not None else stats)
        st.epoch += 1
        st.micro_batch = self.micro.size
        st.recoveries = list(self.micro.recoveries)
        self.state.global_epoch += 1
        self.on_epoch(row)
        self.save({"best": self.best_state, "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(),
                   "scaler": self.scaler.state_dict() if self.scaler else None})

    def _train_epoch(self, loader: DataLoader, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler) -> EpochStats:
        self.model.train()
        stats = EpochStats()
        desc = f"{self.phase.name} {self.state.phase.epoch + 1}/{self.phase.epochs}"
        batches = progress(loader, desc=desc, enabled=self.cfg.progress and self.world.is_main)
        counted = sampled_step(len(loader)) if self.meter is not None and self.state.phase.epoch == 0 else -1
        for step, (x, y) in enumerate(batches):
            begin_step(self.module, y, self.ctx)
            with (self.meter.sampling(held_tensors(self.model, optimizer))  # type: ignore[union-attr]
                  if step == counted else contextlib.nullcontext()):
                loss_sum, correct = train_step(self.module, optimizer, x, y, self.ctx, self.micro,
                                               step=step, epoch=self.state.global_epoch + 1,
                                               scaler=self.scaler)
            scheduler.step()
            stats.loss_sum += loss_sum
            stats.correct += correct
            stats.seen += int(x.shape[0])
        self.world.broadcast_buffers(self.inputs.module)
        return self.world.reduce_stats(stats)

    def _validate(self) -> EpochStats | None:
        if self._val_loader is None:
            return None
        stats, _, _ = evaluate(self.inputs.module, iter(self._val_loader), self.ctx, self.micro)
        self.model.train()
        return self.world.reduce_stats(stats)

    def _early_stopping(self, stats: EpochStats) -> None:
        st, phase = self.state.phase, self.phase
        mode = "min" if phase.monitor == "val_loss" else "max"
        value = stats.loss if mode == "min" else stats.accuracy
        if st.improved(value, mode):
            st.best_metric, st.best_epoch, st.bad_epochs = value, st.epoch, 0
            st.best_val_accuracy, st.best_val_loss = stats.accuracy, stats.loss
            # a host copy: a second set of weights on the device would count against the budget
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in self.model.state_dict().items()}
            return
        st.bad_epochs += 1
        if phase.patience is not None and st.bad_epochs >= phase.patience:
            st.stopped_early = True
            log.info("phase %s: early stop after epoch %d (%s did not improve for %d epochs)",
                     phase.name, st.epoch + 1, phase.monitor, st.bad_epochs)
