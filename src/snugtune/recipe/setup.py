"""The recipe's setup: the data (scanned, split once, saved), the resolution, the class weights,
the datasets of a phase, and the plan (made once, saved, reused by a resumed run)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from snugtune.config import PhaseConfig, TrainConfig
from snugtune.data import (
    DataBundle,
    ImageDataset,
    ImageStore,
    LabelsSpec,
    Sample,
    ScanResult,
    build_transforms,
    scan_folder,
    split_folder,
)
from snugtune.data.doctor import DataDoctor, diagnose
from snugtune.errors import DataError, SnugtuneError
from snugtune.memory import PeakMeter, build_model, resolve_gpu
from snugtune.models import Classifier, Preprocessing
from snugtune.planner import PhasePlan, Plan, plan_run
from snugtune.recipe.distributed import World
from snugtune.recipe.flips import FlipCheck
from snugtune.recipe.timing import TimeBudget
from snugtune.rundir import RunDir, write_json
from snugtune.step import balanced_class_weights, plan_device
from snugtune.store import DataIndex

__all__ = [
    "Setup",
    "choose_resolution",
    "class_weights",
    "configure_model",
    "device_cap",
    "diagnose_folder",
    "image_dataset",
    "labels_spec",
    "load_folder",
    "plan_folder",
    "plan_phases",
    "prepare_data",
]

log = logging.getLogger(__name__)

MIN_AUTO_RES = 96  # px; below this pretrained ImageNet features degrade sharply
CLASS_IMBALANCE = 1.5  # class_weights=auto weighs classes when the largest is this many times the smallest


@dataclass(frozen=True)
class Setup:
    """What the recipe's setup made: the data, the model, its input size, the plan, this
    process's place among the data-parallel processes, the data index with the decoded-image
    store (None: the files are decoded every epoch), the time budget's deadline, the
    flips decided from the data (None: set by the user), and the backbone race (``--model
    auto``)."""

    data: DataBundle
    model: Classifier
    resolution: int
    plan: Plan
    world: World
    index: DataIndex
    images: ImageStore | None = None
    time: TimeBudget | None = None
    flips: FlipCheck | None = None
    race: dict[str, Any] | None = None  # --model auto: the race's record (recipe.race)


def configure_model(model: Classifier, phase: PhaseConfig, plan: PhasePlan) -> None:
    """The model as the plan says: depth (a budget may have frozen more than the phase asked),
    checkpointing, layout."""
    model.set_trainable(replace(phase, trainable=plan.trainable).top_blocks(), train_bn=phase.train_bn)
    model.set_checkpointing(plan.checkpointing)
    model.to(memory_format=torch.channels_last if plan.channels_last else torch.contiguous_format)  # type: ignore[call-overload]


def device_cap(budget_bytes: int | None, setup: Setup) -> PeakMeter:
    """The cap every device step of a run works under, training or not (the feature-cache
    fill, the time budget's forward measurement, the final predictions): ``--gpu-memory``
    (CUDA: the allocator capped at it less the plan's context and kernels; the CPU: the virtual
    device), peaks measured."""
    return PeakMeter(setup.world.device, budget_bytes=budget_bytes,
                     context_bytes=setup.plan.context_bytes)


def load_folder(cfg: TrainConfig, index: DataIndex,
                saved: tuple[list[tuple[str, int]], list[tuple[str, int]]] | None = None,
                ) -> DataBundle:
    """Scan ``cfg.data`` through the data index and split it as training does (``saved``: a
    run's own split, kept)."""
    scan = scan_folder(cfg.data, labels=labels_spec(cfg), workers=cfg.workers, index=index)
    return split_folder(scan, cfg.val_split, cfg.seed, group_copies=cfg.group_split, saved=saved)


def labels_spec(cfg: TrainConfig) -> LabelsSpec:
    """Where the run's labels come from: ``--labels`` and its columns (no file: the folder's
    ``metadata.csv`` / ``metadata.jsonl``, else its class folders)."""
    return LabelsSpec(cfg.labels, cfg.path_column, cfg.label_column)


def prepare_data(cfg: TrainConfig, run: RunDir, index: DataIndex) -> DataBundle:
    """The run's data: scanned, split once, and recorded in the run (``scan.json``,
    ``split.json``); a resumed run reloads its split."""
    data = load_folder(cfg, index, saved=run.read_split())
    if not data.train:
        raise DataError(f"{cfg.data}: no training images left after the split; lower --val-split")
    if run.scan.exists():  # a resumed run: its labels are the saved split's, its classes kept
        _same_classes(cfg, run.read_json(run.scan), data.scan)
    if data.kept_together:
        log.info("split: %d groups of copies kept on one side (--no-group-split: the plain "
                 "split)", data.kept_together)
    if not run.scan.exists():
        write_json(run.scan, data.scan.to_dict(), indent=None)
    run.write_split([(s.path, s.label) for s in data.train], [(s.path, s.label) for s in data.val])
    return data


def _same_classes(cfg: TrainConfig, saved: dict[str, Any], scan: ScanResult) -> None:
    """A resumed run's classes are those it started with (its split keeps each image's label;
    a changed labels file is logged)."""
    was = list(saved.get("classes", []))
    source = scan.labels_file or "the class folders"
    if was != list(scan.classes):
        raise DataError(f"{cfg.data}: the classes changed since the run started ({was} -> "
                        f"{list(scan.classes)}, labels from {source}); restore the labels or "
                        "class folders it started with, or start a new run with another --out")
    if saved.get("labels_sha256", "") != scan.labels_sha256:
        log.warning("%s changed since the run started: the resumed run keeps the labels of its "
                    "saved split", source)


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


def class_weights(cfg: TrainConfig, data: DataBundle) -> torch.Tensor | None:
    """Loss weights per class: ``balanced`` (Keras/scikit-learn), ``none``, or ``auto``
    (balanced when the largest class has more than ``CLASS_IMBALANCE`` times the smallest's)."""
    counts = data.train_counts()
    mode = cfg.class_weights
    if mode == "auto":
        mode = "balanced" if max(counts) > CLASS_IMBALANCE * max(1, min(counts)) else "none"
    return torch.tensor(balanced_class_weights(counts)) if mode == "balanced" else None


def image_dataset(
    samples: Sequence[Sample], model: Classifier, cfg: TrainConfig, resolution: int, *, train: bool,
    images: ImageStore | None = None,
) -> ImageDataset:
    """Dataset of preprocessed (and, for training, augmented) images for ``model``, read from
    the decoded-image store ``images`` where it holds them."""
    pre = model.preprocessing
    tf = build_transforms(cfg.augment, size=resolution, mean=pre.mean, std=pre.std, train=train,
                          interpolation=pre.interpolation)
    return ImageDataset(samples, tf, draft_size=resolution,
                        decoded=images.view(samples) if images is not None else None)


def plan_phases(cfg: TrainConfig, model: Classifier, data: DataBundle, resolution: int,
                device: torch.device, world_size: int, run: RunDir) -> Plan:
    """The run's plan (``plan.json``); a resumed run reuses the plan it saved.

    Raises:
        BudgetError: a phase fits the budget in no configuration.
    """
    if run.plan.exists():
        try:
            plan = Plan.load(run.plan)
            if [p.phase for p in plan.phases] == [ph.name for ph in cfg.phases]:
                return plan
        except (SnugtuneError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable %s (%s); planning again", run.plan, e)
    gpu, info = resolve_gpu(cfg.gpu, device.type)  # auto on CUDA: ask the card
    plan = plan_run(cfg, num_classes=len(data.classes), num_train=len(data.train),
                    resolution=resolution, device=device.type, model=model, world_size=world_size,
                    gpu=gpu, device_info=info.to_dict() if info else None)
    plan.save(run.plan)
    for p in plan.phases:
        log.info("plan %s: micro-batch %d x %d, %s, checkpointing %s, predicted peak %.1f MiB%s",
                 p.phase, p.micro_batch, p.accumulation, p.precision, list(p.checkpointing) or "none",
                 p.predicted_peak_bytes / 2**20,
                 f" of {p.budget_bytes / 2**20:.0f} MiB" if p.budget_bytes else "")
    return plan


def diagnose_folder(cfg: TrainConfig) -> tuple[ScanResult, DataDoctor]:
    """Scan ``cfg.data`` and split it as training would, then look for copies of one picture
    within a class, across classes and across the split (``data.doctor``).

    Raises:
        DataError: the folder cannot be used.
    """
    with DataIndex.at(cfg.cache_dir) as index:
        data = load_folder(cfg, index)
    return data.scan, diagnose(data)


def plan_folder(cfg: TrainConfig) -> Plan:
    """Plan a run on ``cfg.data`` without training: scan, split, resolve the resolution, plan
    for ``cfg.device`` (``auto``: the visible GPU, or the card ``cfg.gpu`` names, else the CPU).

    Raises:
        DataError: the folder cannot be used. BudgetError: nothing fits the budget.
    """
    with DataIndex.at(cfg.cache_dir) as index:
        data = load_folder(cfg, index)
    model = build_model(cfg.model, len(data.classes), cfg.head_hidden, cfg.pre_logits)
    resolution = choose_resolution(cfg.resolution, model.preprocessing, data.scan.median_size)
    device = plan_device(cfg.device, cfg.gpu)
    gpu, info = resolve_gpu(cfg.gpu, device)
    return plan_run(cfg, num_classes=len(data.classes), num_train=len(data.train),
                    resolution=resolution, device=device, model=model, gpu=gpu,
                    device_info=info.to_dict() if info else None)
