"""Per-phase execution settings of a run: the memory planner's plan, saved as ``plan.json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from snugtune.config import TrainConfig
from snugtune.errors import SnugtuneError
from snugtune.models import Classifier
from snugtune.plan import PLAN_FILE, PhasePlan, Plan, plan_run
from snugtune.train.setup import DataBundle

__all__ = ["PhaseSetup", "plan_folder", "plan_phases"]

log = logging.getLogger(__name__)

# A phase runs exactly as its plan says: micro-batch, precision, checkpointed blocks,
# channels_last, feature cache, and the predicted peak the report compares with the measured.
PhaseSetup = PhasePlan


def plan_phases(
    cfg: TrainConfig, model: Classifier, data: DataBundle, resolution: int, device: torch.device,
    run_dir: Path,
) -> Sequence[PhaseSetup]:
    """The run's plan, one ``PhasePlan`` per phase; a resumed run reuses its saved plan.

    Raises:
        BudgetError: a phase fits the budget in no configuration.
    """
    saved = run_dir / PLAN_FILE
    if saved.exists():
        try:
            plan = Plan.load(saved)
            if [p.phase for p in plan.phases] == [ph.name for ph in cfg.phases]:
                return plan.phases
        except (SnugtuneError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable %s (%s); planning again", saved, e)
    plan = plan_run(cfg, num_classes=len(data.classes), num_train=len(data.train),
                    resolution=resolution, device=device.type, model=model)
    plan.save(run_dir)
    for p in plan.phases:
        log.info("plan %s: micro-batch %d x %d, %s, checkpointing %s, predicted peak %.1f MiB%s",
                 p.phase, p.micro_batch, p.accumulation, p.precision, list(p.checkpointing) or "none",
                 p.predicted_peak_bytes / 2**20,
                 f" of {p.budget_bytes / 2**20:.0f} MiB" if p.budget_bytes else "")
    return plan.phases


def plan_folder(cfg: TrainConfig, device: str | None = None) -> Plan:
    """Plan a run on ``cfg.data`` without training: scan, split, resolve the resolution, plan.

    Args:
        cfg: the run's settings (``gpu_memory``, ``model``, ``batch_size``, ...).
        device: ``cuda`` or ``cpu`` to plan for; by default ``cfg.device`` (``auto``: cuda).

    Raises:
        DataError: the folder cannot be used. BudgetError: nothing fits the budget.
    """
    from snugtune.data import scan_folder, split_samples
    from snugtune.memory import build_model
    from snugtune.train.setup import choose_resolution

    scan = scan_folder(cfg.data, workers=cfg.workers)
    train = scan.samples
    if scan.val_samples is None:
        train, _ = split_samples(scan.samples, cfg.val_split, cfg.seed)
    model = build_model(cfg.model, len(scan.classes), cfg.head_hidden)
    resolution = choose_resolution(cfg.resolution, model.preprocessing, scan.median_size)
    return plan_run(cfg, num_classes=len(scan.classes), num_train=len(train),
                    resolution=resolution, device=device, model=model)
