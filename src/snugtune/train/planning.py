"""Per-phase execution settings: from the memory planner, or the user's forced micro-batch."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from snugtune.config import TrainConfig
from snugtune.models import Classifier
from snugtune.train.setup import DataBundle, resolve_precision

__all__ = ["PhaseSetup", "plan_phases"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseSetup:
    """How one phase runs."""

    micro_batch: int
    precision: str
    checkpointing: tuple[int, ...] = ()
    channels_last: bool = False
    feature_cache: bool = False
    predicted_peak_bytes: int | None = None


def plan_phases(
    cfg: TrainConfig, model: Classifier, data: DataBundle, resolution: int, device: torch.device,
    run_dir: Path,
) -> Sequence[PhaseSetup]:
    """One ``PhaseSetup`` per phase; also writes ``plan.json`` in the run."""
    precision = resolve_precision(cfg.precision, device)
    micro = min(cfg.micro_batch or cfg.batch_size, cfg.batch_size)
    setups = [
        PhaseSetup(micro_batch=micro, precision=precision,
                   feature_cache=cfg.feature_cache and ph.trainable == "head")
        for ph in cfg.phases
    ]
    plan = {"resolution": resolution, "device": device.type,
            "phases": [{"phase": ph.name, **s.__dict__} for ph, s in zip(cfg.phases, setups, strict=True)]}
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    return setups
