"""``train(cfg)``: scan, plan, run the phases, write everything a run promises; resumable."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from snugtune import __version__
from snugtune.config import TrainConfig, build_config, config_to_dict
from snugtune.errors import CheckpointError
from snugtune.models import build_classifier, resolve_backbone
from snugtune.report import MetricsLog
from snugtune.train.checkpoint import load_checkpoint, save_checkpoint
from snugtune.train.distributed import NullMetrics, World, restarted_by_torchrun, session
from snugtune.train.inputs import phase_inputs
from snugtune.train.lock import run_lock
from snugtune.train.loop import MicroBatch, StepContext
from snugtune.train.losses import balanced_class_weights
from snugtune.train.outputs import write_outputs
from snugtune.train.peak import PeakMeter
from snugtune.train.phase import PhaseRunner
from snugtune.train.planning import PhaseSetup, plan_phases
from snugtune.train.setup import (
    choose_resolution,
    prepare_data,
    resolve_device,
)
from snugtune.train.state import PhaseState, RunState

__all__ = ["TrainResult", "resume", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_val_accuracy: float | None
    classes: tuple[str, ...]
    summary: dict[str, Any]
    rank: int = 0  # data-parallel rank; only rank 0 wrote the files (render results there)

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.md"


def train(cfg: TrainConfig) -> TrainResult:
    """Train a classifier as configured; refuses to overwrite a run that has a checkpoint.

    Raises:
        CheckpointError: ``cfg.out`` already holds a run (use ``resume``), or another process
            is training into it (``train/lock.py``).
    """
    run_dir = Path(cfg.out)
    if (run_dir / "checkpoints" / "last.pt").exists() or (run_dir / "summary.json").exists():
        if restarted_by_torchrun() and (run_dir / "config.yaml").exists():
            log.info("restarted by torchrun: resuming %s", run_dir)
            return resume(run_dir)
        raise CheckpointError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                              "or choose another --out")
    resolve_backbone(cfg.model)  # an unknown --model fails before any scanning
    with session(resolve_device(cfg.device)) as world, run_lock(run_dir, enabled=world.is_main):
        if world.is_main:
            _start_run_dir(run_dir, cfg)
        return _Run(cfg, run_dir, world).execute(None)


def _start_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Write the resolved config atomically; drop what a run that died before its first
    checkpoint left (its split and plan were made for other settings)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("split.json", "plan.json"):
        (run_dir / stale).unlink(missing_ok=True)
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    tmp.replace(run_dir / "config.yaml")


def resume(run_dir: str | Path) -> TrainResult:
    """Continue a stopped run from its newest checkpoint, with its saved configuration.

    Raises:
        CheckpointError: no run or no readable checkpoint there, or another process is
            training into it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise CheckpointError(f"{run_dir} is not a snugtune run (no config.yaml); check the path")
    cfg = build_config(run_dir / "config.yaml")
    with session(resolve_device(cfg.device)) as world, run_lock(run_dir, enabled=world.is_main):
        ckpt = load_checkpoint(run_dir / "checkpoints")  # under the lock: no writer is running
        return _Run(cfg, run_dir, world).execute(ckpt)


class _Run:
    def __init__(self, cfg: TrainConfig, run_dir: Path, world: World | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.world = world or World(device=resolve_device(cfg.device))
        self.state = RunState()
        self.best: dict[str, torch.Tensor] | None = None

    def execute(self, ckpt: dict[str, Any] | None) -> TrainResult:
        cfg, t0 = self.cfg, time.perf_counter()
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.seed)
        self.data = self.world.from_main(lambda: prepare_data(cfg, self.run_dir))
        self.model = build_classifier(cfg.model, len(self.data.classes), weights=cfg.weights,
                                      head_hidden=cfg.head_hidden, head_dropout=cfg.head_dropout)
        self.device = self.world.device
        self.resolution = choose_resolution(cfg.resolution, self.model.preprocessing,
                                            self.data.scan.median_size)
        if ckpt is not None:
            self._restore(ckpt)
        self.model.to(self.device)
        per_device = replace(cfg, batch_size=self.world.local_batch(cfg.batch_size))
        self.setups = self.world.from_main(lambda: plan_phases(  # the budget is per device
            per_device, self.model, self.data, self.resolution, self.device, self.run_dir))
        self.metrics = MetricsLog(self.run_dir) if self.world.is_main else NullMetrics()
        self.metrics.truncate(self.state.global_epoch)
        try:
            while self.state.phase_index < len(cfg.phases):
                self._run_phase(ckpt if ckpt and ckpt.get("optimizer") else None)
                ckpt = None
        finally:
            self.metrics.close()
        self.state.total_seconds += time.perf_counter() - t0
        summary = self.world.from_main(lambda: write_outputs(self))
        return TrainResult(self.run_dir, summary.get("best_val_accuracy"), self.data.classes, summary,
                           rank=self.world.rank)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.state = RunState.from_dict(ckpt["run"])
        self.best = ckpt.get("best")
        self.resolution = int(ckpt.get("resolution", self.resolution))
        log.info("resuming %s at phase %d, epoch %d", self.run_dir, self.state.phase_index + 1,
                 self.state.phase.epoch + 1)

    def _class_weights(self) -> torch.Tensor | None:
        counts = self.data.train_counts()
        mode = self.cfg.class_weights
        if mode == "auto":
            mode = "balanced" if max(counts) > 1.5 * max(1, min(counts)) else "none"
        return torch.tensor(balanced_class_weights(counts)) if mode == "balanced" else None

    def _run_phase(self, resume_ckpt: dict[str, Any] | None) -> None:
        i = self.state.phase_index
        phase, setup = self.cfg.phases[i], self.setups[i]
        if phase.epochs == 0:  # nothing to train: no inputs (a frozen phase would fill the cache)
            self._finish_phase(self._phase_result(i, setup, MicroBatch(setup.micro_batch), None, None))
            return
        # the plan's depth: the budget may have frozen more than the phase asked
        self.model.set_trainable(replace(phase, trainable=setup.trainable).top_blocks(), train_bn=phase.train_bn)
        self.model.set_checkpointing(setup.checkpointing)
        self.model.to(memory_format=torch.channels_last if setup.channels_last else torch.contiguous_format)  # type: ignore[call-overload]
        inputs = self.world.main_first(lambda: phase_inputs(  # rank 0 fills the feature cache
            self.cfg, self.model, self.data, self.resolution, setup, self.device, self.run_dir))
        ctx = StepContext(device=self.device, num_classes=len(self.data.classes),
                          label_smoothing=phase.label_smoothing, class_weights=self._class_weights(),
                          precision=setup.precision, channels_last=setup.channels_last,
                          mixer=inputs.mixer)
        st = self.state.phase
        micro = MicroBatch(st.micro_batch or setup.micro_batch, list(st.recoveries))
        scaler = torch.amp.GradScaler("cuda") if setup.precision == "fp16" and self.device.type == "cuda" else None
        meter = PeakMeter(self.device, budget_bytes=self.cfg.gpu_memory)
        runner = PhaseRunner(self.cfg, i, self.model, inputs, ctx, micro, self.state,
                             on_epoch=self.metrics.append, save=self._save,
                             best_state=self.best, scaler=scaler, world=self.world, meter=meter)
        log.info("phase %s: %s, micro-batch %d x %d, %s, %d epochs", phase.name, setup.trainable,
                 micro.size, micro.accumulation(self._local_batch), setup.precision, phase.epochs)
        with meter:
            runner.run(resume_ckpt)
        self._finish_phase(self._phase_result(i, setup, micro, inputs.feature_cache, meter))

    def _finish_phase(self, result: dict[str, Any]) -> None:
        self.state.results.append(result)
        self.state.phase_index += 1
        self.state.phase = PhaseState()
        self.best = None
        self._save({})

    def _phase_result(self, i: int, setup: PhaseSetup, micro: MicroBatch,
                      cache: dict[str, Any] | None, meter: PeakMeter | None) -> dict[str, Any]:
        st, phase = self.state.phase, self.cfg.phases[i]
        return {
            "name": phase.name, "trainable": setup.trainable, "epochs_planned": phase.epochs,
            "epochs_run": st.epoch, "stopped_early": st.stopped_early,
            "best_epoch": st.best_epoch + 1 if st.best_epoch >= 0 else None,
            "best_val_accuracy": st.best_val_accuracy, "best_val_loss": st.best_val_loss,
            "seconds": round(st.seconds, 2),
            "images_per_s": round(st.samples / st.train_seconds, 2) if st.train_seconds else None,
            "samples_seen": st.samples, "micro_batch": micro.size,
            "accumulation": micro.accumulation(self._local_batch), "precision": setup.precision,
            "checkpointing": list(setup.checkpointing), "channels_last": setup.channels_last,
            "oom_recoveries": len(micro.recoveries), "recoveries": micro.recoveries,
            "predicted_peak_bytes": setup.predicted_peak_bytes,
            "measured_peak_bytes": meter.peak_bytes if meter else None,
            "measured_reserved_bytes": meter.reserved_bytes if meter else None,
            "measured_entry_bytes": meter.entry_bytes if meter else None,  # held before step 1
            "budget_bytes": self.cfg.gpu_memory, "feature_cache": cache,
        }

    @property
    def _local_batch(self) -> int:
        # A training set smaller than the batch makes every batch the whole set (as the planner).
        return self.world.local_batch(min(self.cfg.batch_size, max(1, len(self.data.train))))

    def _save(self, extra: dict[str, Any]) -> None:
        # One writer, and every rank waits for it: a rank that dies after this point leaves a
        # checkpoint of this epoch behind, and a failed write stops every rank alike.
        self.world.from_main(lambda: self._write_checkpoint(extra))

    def _write_checkpoint(self, extra: dict[str, Any]) -> None:
        state = {
            "model": self.model.state_dict(),
            "best": self.best,
            "run": self.state.to_dict(),
            "resolution": self.resolution,
            "versions": {"snugtune": __version__, "torch": str(torch.__version__),
                         "python": platform.python_version()},
            **extra,
        }
        save_checkpoint(self.run_dir / "checkpoints", state)
