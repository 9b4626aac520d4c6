"""Turn a config into data, splits, resolution, device and model — shared by train and evaluate."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from snugtune.config import TrainConfig
from snugtune.data import (
    ImageDataset,
    Sample,
    ScanResult,
    build_transforms,
    scan_folder,
    split_samples,
)
from snugtune.errors import DataError
from snugtune.models import Classifier, Preprocessing

__all__ = [
    "DataBundle",
    "SeededDataset",
    "choose_resolution",
    "load_split",
    "prepare_data",
    "resolve_device",
    "resolve_precision",
]

log = logging.getLogger(__name__)

MIN_AUTO_RES = 96  # px; below this pretrained ImageNet features degrade sharply


@dataclass(frozen=True)
class DataBundle:
    """A scanned folder split into train and validation samples."""

    scan: ScanResult
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.scan.classes

    def train_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for s in self.train:
            counts[s.label] += 1
        return counts


def prepare_data(cfg: TrainConfig, run_dir: Path) -> DataBundle:
    """Scan (cached in the run), split once and save the split, or reload the saved split."""
    scan = scan_folder(cfg.data, workers=cfg.workers, cache_path=run_dir / "scan.json")
    saved = load_split(run_dir)
    if saved is not None:
        train, val = saved
    elif scan.val_samples is not None:
        train, val = scan.samples, scan.val_samples
    else:
        train, val = split_samples(scan.samples, cfg.val_split, cfg.seed)
    if not train:
        raise DataError(f"{cfg.data}: no training images left after the split; lower --val-split")
    _save_split(run_dir, train, val)
    return DataBundle(scan=scan, train=tuple(train), val=tuple(val))


def _save_split(run_dir: Path, train: Sequence[Sample], val: Sequence[Sample]) -> None:
    path = run_dir / "split.json"
    if path.exists():
        return
    data = {name: [[s.path, s.label] for s in part] for name, part in (("train", train), ("val", val))}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def load_split(run_dir: Path) -> tuple[tuple[Sample, ...], tuple[Sample, ...]] | None:
    """The train/val split a run used, so a resume or an evaluation sees the same images."""
    path = run_dir / "split.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    parts = [tuple(Sample(path=p, label=int(label)) for p, label in data[k]) for k in ("train", "val")]
    return parts[0], parts[1]


def choose_resolution(requested: int | None, pre: Preprocessing, median_size: tuple[int, int]) -> int:
    """The user's resolution, else the pretrained size, lowered for small images.

    Upscaling a 28 px image to 224 px costs ~5x the compute of 96 px for no new information,
    so small images train at ``max(96, short side rounded up to a multiple of 32)``.
    """
    if requested:
        return requested
    short = min(median_size) if all(median_size) else pre.size
    if short >= pre.size:
        return pre.size
    return min(pre.size, max(MIN_AUTO_RES, 32 * math.ceil(short / 32)))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on the CPU."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class SeededDataset(Dataset):
    """Items addressed as ``(index, seed)``: augmentation randomness is a pure function of both.

    With this, an epoch's augmented images depend only on the epoch's seed and the index —
    not on which worker loads them or whether the run was resumed — and the main process's
    RNG stream (dropout) is left untouched.
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((seed * 2654435761 + index) % (2**63 - 1))
            return self.base[index]


def image_dataset(
    samples: Sequence[Sample], model: Classifier, cfg: TrainConfig, resolution: int, *, train: bool
) -> ImageDataset:
    """Dataset of preprocessed (and, for training, augmented) images for ``model``."""
    pre = model.preprocessing
    tf = build_transforms(cfg.augment, size=resolution, mean=pre.mean, std=pre.std, train=train,
                          interpolation=pre.interpolation)
    return ImageDataset(samples, tf, draft_size=resolution)
