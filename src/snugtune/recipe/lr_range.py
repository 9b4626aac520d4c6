"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates", section 3.3; fastai's
``lr_find``): train the recipe's first phase from its starting point for up to ``steps``
optimizer steps while the learning rate grows exponentially from ``start`` to ``end``; record
the loss (smoothed exponentially, bias-corrected), stop once it exceeds ``DIVERGE`` times its
minimum, and suggest a learning rate: the steepest descent of the smoothed loss, as fastai's
``steep``, and the minimum's tenth (``valley``-like, the classic rule). The model is a
throwaway: the run's own training starts from the pretrained weights whatever is found. The
phase runs as training would run it: planned for the budget (depth, checkpointing, precision,
layout, micro-batch) and under the same cap (``--gpu-memory``).

The recipe does not use it by default. On the 2-core CPU, for the head phase, both of the
test's suggestions were above the recipe's 1e-3 on Animal-MNIST and on the MNIST digit scans
(300 per digit), and a default run of the digits with ``--head-lr 5e-3`` ended within a few
images of the 1e-3 run's validation and test accuracy (2,000 held-out scans): the range
test's time bought nothing. Those runs are not recorded in a committed JSON.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snugtune.config import TrainConfig
from snugtune.data import make_loader
from snugtune.errors import ConfigError
from snugtune.memory import PeakMeter, resolve_gpu
from snugtune.models import build_classifier
from snugtune.models.candidates import is_auto
from snugtune.planner import plan_run
from snugtune.recipe.setup import choose_resolution, image_dataset, load_folder
from snugtune.report.plots import plot_lr_find
from snugtune.step import (
    MicroBatch,
    StepContext,
    build_optimizer,
    keep_freed_memory,
    local_batch,
    param_groups,
    resolve_device,
    train_step,
)
from snugtune.store import DataIndex

__all__ = ["LRFind", "lr_find"]

log = logging.getLogger(__name__)

DIVERGE = 4.0  # stop when the smoothed loss exceeds this many times its minimum
SMOOTHING = 0.98  # exponential moving average of the loss (fastai's beta)


@dataclass(frozen=True)
class LRFind:
    """The losses at each learning rate and the suggestions."""

    phase: str
    trainable: str
    lrs: tuple[float, ...]
    losses: tuple[float, ...]  # smoothed
    steep: float  # the steepest descent of the smoothed loss
    minimum_tenth: float  # a tenth of the learning rate at the smoothed loss's minimum
    configured: float  # the phase's learning rate now

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "trainable": self.trainable, "lrs": list(self.lrs),
                "losses": list(self.losses), "steep": self.steep,
                "minimum_tenth": self.minimum_tenth, "configured": self.configured}


def lr_find(cfg: TrainConfig, *, steps: int = 100, start: float = 1e-7, end: float = 10.0,
            plot: Path | None = None) -> LRFind:
    """Run the range test on the first phase of ``cfg`` (see the module docstring)."""
    if is_auto(cfg.model):
        raise ConfigError(f"lr-find trains one backbone, not --model {cfg.model}: name it with "
                          "--model (a run trained with --model auto names its choice in "
                          "model_card.json)")
    with DataIndex.at(cfg.cache_dir) as index:
        folder = load_folder(cfg, index)
    scan, train = folder.scan, folder.train
    device = resolve_device(cfg.device)
    keep_freed_memory(device)
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model, len(scan.classes), weights=cfg.weights,
                             head_hidden=cfg.head_hidden, head_dropout=cfg.head_dropout,
                             pre_logits=cfg.pre_logits).to(device)
    phase = cfg.phases[0]
    resolution = choose_resolution(cfg.resolution, model.preprocessing, scan.median_size)
    plan = plan_run(replace(cfg, phases=(phase,)), num_classes=len(scan.classes),
                    num_train=len(train), resolution=resolution, device=device.type, model=model,
                    gpu=resolve_gpu(cfg.gpu, device.type)[0])
    first = plan.phases[0]  # the phase as it will train: depth, checkpointing, precision, layout
    model.set_trainable(replace(phase, trainable=first.trainable).top_blocks(),
                        train_bn=phase.train_bn)
    model.set_checkpointing(first.checkpointing)
    model.to(memory_format=torch.channels_last if first.channels_last  # type: ignore[call-overload]
             else torch.contiguous_format)
    data = image_dataset(train, model, cfg, resolution, train=True)
    batch = local_batch(cfg.batch_size, len(train), 1)
    loader = make_loader(data, batch_size=batch, shuffle=True, workers=cfg.workers, seed=cfg.seed,
                         device=device.type)
    optimizer = build_optimizer(param_groups(model.head, model.blocks, model.backbone, phase),
                                phase, device.type)
    ratio = (end / start) ** (1.0 / max(1, steps - 1))
    for group in optimizer.param_groups:  # the groups' own ratios (backbone LR) are kept
        group["lr"] = group["lr"] / phase.lr * start
    ctx = StepContext(device=device, num_classes=len(scan.classes),
                      label_smoothing=phase.label_smoothing, precision=first.precision,
                      channels_last=first.channels_last)
    with PeakMeter(device, budget_bytes=cfg.gpu_memory, context_bytes=plan.context_bytes):
        lrs, losses = _sweep(model, optimizer, loader, ctx, start, ratio, steps,
                             MicroBatch(first.micro_batch))
    steep, tenth = _suggest(lrs, losses)
    found = LRFind(phase.name, phase.trainable, tuple(lrs), tuple(losses), steep, tenth, phase.lr)
    log.info("lr-find on %s (%s): steepest descent at %.2g, minimum / 10 = %.2g (configured %.2g)",
             phase.name, phase.trainable, steep, tenth, phase.lr)
    if plot is not None:
        plot_lr_find(lrs, losses, {"steep": steep, "minimum / 10": tenth,
                                   "configured": phase.lr}, plot)
    return found


def _sweep(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
           ctx: StepContext, start: float, ratio: float, steps: int,
           micro: MicroBatch) -> tuple[list[float], list[float]]:
    lrs: list[float] = []
    losses: list[float] = []
    avg, best, step = 0.0, math.inf, 0
    model.train()
    while step < steps:
        for x, y in loader:
            stats, micro = train_step(model, optimizer, x, y, ctx, micro, step=step)
            avg = SMOOTHING * avg + (1 - SMOOTHING) * stats.loss
            smooth = avg / (1 - SMOOTHING ** (step + 1))
            lrs.append(start * ratio**step)
            losses.append(smooth)
            best = min(best, smooth)
            step += 1
            if step >= steps or not math.isfinite(smooth) or smooth > DIVERGE * best:
                return lrs, losses
            for group in optimizer.param_groups:
                group["lr"] *= ratio
    return lrs, losses


def _suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """(steepest descent, a tenth of the minimum's learning rate) of the smoothed loss; the
    first tenth of the points is skipped, as fastai skips its first 10 (the average is still
    settling there)."""
    if len(lrs) < 3:
        return lrs[0], lrs[0]
    skip = max(1, len(lrs) // 10)
    log_lr = np.log10(np.asarray(lrs))
    loss = np.asarray(losses)
    grad = np.gradient(loss, log_lr)
    lowest = skip + int(np.argmin(loss[skip:]))
    steep = skip + int(np.argmin(grad[skip:lowest])) if lowest > skip else lowest
    return float(lrs[steep]), float(lrs[lowest] / 10)
