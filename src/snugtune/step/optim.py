"""Optimizer with discriminative per-block learning rates, and the per-step LR schedule.

``build_optimizer`` is the one place that decides the optimizer's kernels: the trainer and the
memory simulator both call it, so the simulated step allocates what the trained one does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from snugtune.config import PhaseConfig

__all__ = ["PhaseSchedule", "build_optimizer", "build_scheduler", "lr_factor", "param_groups"]


def _split_decay(params: list[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weight decay on weights only: biases and norm scales (1-D) are not decayed (timm, BERT)."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return decay, no_decay


def param_groups(head: nn.Module, blocks: Sequence[nn.Module], backbone: nn.Module,
                 phase: PhaseConfig) -> list[dict[str, Any]]:
    """Head at ``lr``; backbone block k from the top at ``lr * ratio * layer_decay**k``.

    Args:
        head: the new head; blocks: the backbone's freeze groups, bottom first; backbone: the
            rest (its parameters outside every block share the backbone's base LR).
        phase: LR, ratio, layer decay and weight decay.
    """
    seen = {id(p) for p in head.parameters()}  # a plain module's head lies inside its backbone
    chunks: list[tuple[str, list[nn.Parameter], float]] = [
        ("head", [p for p in head.parameters() if p.requires_grad], phase.lr)
    ]
    base = phase.lr * phase.backbone_lr_ratio
    for depth, block in enumerate(reversed(blocks)):
        ps = [p for p in block.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in ps)
        chunks.append((f"block{len(blocks) - 1 - depth}", ps, base * phase.layer_decay**depth))
    rest = [p for p in backbone.parameters() if p.requires_grad and id(p) not in seen]
    chunks.append(("backbone_other", rest, base))
    groups: list[dict[str, Any]] = []
    for name, ps, lr in chunks:
        decay, no_decay = _split_decay(ps)
        for suffix, group, wd in (("", decay, phase.weight_decay), ("_no_decay", no_decay, 0.0)):
            if group:
                groups.append({"name": name + suffix, "params": group, "lr": lr, "weight_decay": wd})
    return groups


def build_optimizer(groups: list[dict[str, Any]], phase: PhaseConfig,
                    device_type: str) -> torch.optim.Optimizer:
    """AdamW (decoupled decay), Adam (L2 in the gradient) or SGD with Nesterov momentum.

    Kernels, explicit rather than PyTorch's per-device default (the simulator's tensors are
    fake CPU tensors standing for CUDA ones): Adam(W) runs its fused kernel on every device
    (one pass over all parameters, no per-step temporaries; the same update up to float
    rounding): 1.97 ms instead of 7.47 ms per step for mobilenet_v2 and 3.21 instead of 13.14
    for efficientnet_b0 on the 2-core CPU (``benchmarks/results/cpu_step.json``,
    ``adamw_step_ms``, from ``benchmarks/cpu_step.py``); SGD runs the multi-tensor ``foreach``
    kernel on CUDA (PyTorch's default there) and the per-parameter loop on the CPU.

    Args:
        groups: from :func:`param_groups`.
        phase: optimizer name, LR, momentum.
        device_type: ``cuda`` or ``cpu``, the device the step runs on.
    """
    if phase.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=phase.lr, fused=True)
    if phase.optimizer == "adam":
        return torch.optim.Adam(groups, lr=phase.lr, fused=True)
    return torch.optim.SGD(groups, lr=phase.lr, momentum=phase.momentum, nesterov=True,
                           foreach=device_type == "cuda")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up from ~0 over ``warmup`` steps, then ``cosine`` (to 1% of the base, as
    Loshchilov & Hutter 2017, SGDR, without restarts), ``onecycle`` (30% warm-up, then cosine
    to ~0, Smith 2018) or ``constant``.
    """
    if schedule == "onecycle":
        warmup = max(warmup, int(0.3 * total))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    floor = 0.01 if schedule == "cosine" else 1e-4
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class PhaseSchedule(LambdaLR):
    """Per-optimizer-step schedule over a phase's epochs (:func:`lr_factor`).

    The length may be set again while the phase runs (``set_steps``: a time budget fits it
    once the steps have been timed); the total is part of ``state_dict``, so a resumed phase
    continues on the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, phase: PhaseConfig,
                 steps_per_epoch: int, epochs: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.total = max(1, epochs * steps_per_epoch)
        self.warmup = int(round(phase.warmup_epochs * steps_per_epoch))
        self.kind = phase.schedule
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup, self.kind)

    def factor(self) -> float:
        """The LR multiplier of the step taken last (that of step 0 before any)."""
        return self._factor(max(0, self.last_epoch - 1))

    def set_steps(self, steps: int) -> None:
        """The phase now lasts ``steps`` optimizer steps: later steps follow the new curve."""
        self.total = max(1, steps)


def build_scheduler(optimizer: torch.optim.Optimizer, phase: PhaseConfig, steps_per_epoch: int,
                    epochs: int) -> PhaseSchedule:
    """Per-optimizer-step schedule over ``epochs`` epochs of the phase."""
    return PhaseSchedule(optimizer, phase, steps_per_epoch, epochs)
