"""What a phase feeds its steps: augmented images, or cached backbone features."""

from __future__ import annotations

from pathlib import Path

import torch

from snugtune.config import TrainConfig
from snugtune.data import batch_mixer
from snugtune.models import Classifier
from snugtune.train.phase import PhaseInputs
from snugtune.train.planning import PhaseSetup
from snugtune.train.setup import DataBundle, SeededDataset, image_dataset

__all__ = ["phase_inputs"]


def phase_inputs(
    cfg: TrainConfig,
    model: Classifier,
    data: DataBundle,
    resolution: int,
    setup: PhaseSetup,
    device: torch.device,
    run_dir: Path,
) -> PhaseInputs:
    """Datasets and the module a phase trains."""
    train = SeededDataset(image_dataset(data.train, model, cfg, resolution, train=True))
    val = image_dataset(data.val, model, cfg, resolution, train=False) if data.val else None
    mixer = batch_mixer(cfg.augment, len(data.classes))
    return PhaseInputs(module=model, train=train, val=val, mixer=mixer)
