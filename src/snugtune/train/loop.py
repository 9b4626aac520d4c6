"""The training step (micro-batches + gradient accumulation + AMP, OOM-recovering) and evaluation.

The loader yields whole effective batches; a step splits one into micro-batches of
``MicroBatch.size``, accumulates gradients, then takes one optimizer step. When a micro-batch
runs out of memory, the step's gradients are dropped, the RNG is rewound to the step's start,
the micro-batch is halved (accumulation doubles) and the *same* step is retried: no sample
skipped or counted twice, optimizer state and LR schedule untouched, and the running
statistics of BatchNorm layers in training mode put back to the step's start (the failed
attempt's forward passes had already updated them).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from snugtune.errors import BudgetError
from snugtune.train.losses import soft_targets, weight_total, weighted_loss_sum

__all__ = ["CPU_FORWARD_CHUNK", "EpochStats", "MicroBatch", "StepContext", "evaluate", "train_step"]

log = logging.getLogger(__name__)

#: Images per inference forward pass on the CPU (evaluation, the feature-cache fill): small
#: chunks keep a layer's activations in cache. Measured on the 2-core CPU at 96 px, fp32,
#: channels_last, images/s at 16 / 32 / 64 per pass: tf_efficientnet_lite0 429 / 287 / 240,
#: mobilenet_v2 455 / 335 / 267. An image's output depends on its chunk only by float rounding.
CPU_FORWARD_CHUNK = 16

Mixer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class MicroBatch:
    """The current micro-batch size and the history of OOM recoveries (mutable run state)."""

    size: int
    recoveries: list[dict[str, int]] = field(default_factory=list)

    def accumulation(self, batch: int) -> int:
        return max(1, math.ceil(batch / self.size))

    def halve(self, where: str, step: int, epoch: int = 0) -> None:
        if self.size <= 1:
            raise BudgetError(
                "out of memory at micro-batch 1: the model does not fit the budget even one "
                "image at a time. Try --precision bf16, a smaller --resolution, freezing more "
                "(phases.*.trainable: top:1 or head) or a larger --gpu-memory"
            )
        old = self.size
        self.size = max(1, old // 2)
        self.recoveries.append({"epoch": epoch, "step": step, "from": old, "to": self.size})
        log.warning("%s: out of memory at micro-batch %d (epoch %d, step %d); retrying the same "
                    "step at %d (accumulation x2, same effective batch)", where, old, epoch, step,
                    self.size)


@dataclass(frozen=True)
class StepContext:
    """What a step needs besides the model and batch."""

    device: torch.device
    num_classes: int
    label_smoothing: float = 0.0
    class_weights: Tensor | None = None
    precision: str = "fp32"
    channels_last: bool = False
    mixer: Mixer | None = None

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


@dataclass
class EpochStats:
    """Running sums of one epoch."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.seen)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.seen)


def _free_after_oom(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _bn_buffers(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(buffer, copy) of every BatchNorm running statistic that a forward pass updates now."""
    return [(b, b.detach().clone()) for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
            for b in m.buffers()]


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _accumulate(
    model: nn.Module, x: Tensor, t: Tensor, ctx: StepContext, mb: int, total_w: Tensor,
    scaler: torch.amp.GradScaler | None,
) -> tuple[float, int]:
    loss_sum, correct = 0.0, 0
    for i in range(0, x.shape[0], mb):
        xi, ti = ctx.to_device(x[i : i + mb]), t[i : i + mb].to(ctx.device)
        with ctx.autocast():
            logits = model(xi)  # (b, C)
        loss = weighted_loss_sum(logits, ti, ctx.class_weights) / total_w.to(ctx.device)
        (scaler.scale(loss) if scaler else loss).backward()
        loss_sum += float(loss.detach()) * float(total_w)
        correct += int((logits.detach().argmax(-1) == ti.argmax(-1)).sum())
    return loss_sum, correct


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    ctx: StepContext,
    micro: MicroBatch,
    *,
    step: int,
    epoch: int = 0,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """One optimizer step over an effective batch ``x`` (B, 3, H, W), ``y`` (B,).

    Returns:
        (sum of per-sample weighted losses, number of correct predictions).
    """
    if ctx.mixer is not None:
        x, y = ctx.mixer(x, y)
    t = soft_targets(y, ctx.num_classes, ctx.label_smoothing)  # (B, C)
    total_w = weight_total(t, ctx.class_weights)
    rng, bn = _rng_state(), _bn_buffers(model)
    while True:
        failed = False
        try:
            loss_sum, correct = _accumulate(model, x, t, ctx, micro.size, total_w, scaler)
        except torch.OutOfMemoryError:
            failed = True  # free outside the handler: the traceback pins the failed tensors
        if not failed:
            break
        _free_after_oom(model, optimizer)
        _set_rng_state(rng)
        with torch.no_grad():
            for buffer, start in bn:
                buffer.copy_(start)
        micro.halve("train", step, epoch)
    try:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    except torch.OutOfMemoryError as e:
        raise BudgetError(
            "out of memory in the optimizer step (its state is created at the first step): "
            "a smaller micro-batch cannot help. Try --optimizer sgd (1 state tensor instead of "
            "2), freezing more (phases.*.trainable: top:1 or head) or a larger --gpu-memory"
        ) from e
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, correct


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterator[tuple[Tensor, Tensor]],
    ctx: StepContext,
    micro: MicroBatch,
) -> tuple[EpochStats, Tensor, Tensor]:
    """Loss (plain cross-entropy), accuracy, and (N, C) probabilities with (N,) labels."""
    was = model.training
    model.eval()
    stats, probs, labels = EpochStats(), [], []
    for x, y in batches:
        while True:
            try:
                mb = min(micro.size, CPU_FORWARD_CHUNK) if ctx.device.type == "cpu" else micro.size
                out = _eval_batch(model, x, ctx, mb)
                break
            except torch.OutOfMemoryError:
                pass
            gc.collect()
            micro.halve("evaluate", -1)
        p = out.softmax(-1)
        stats.loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        stats.correct += int((p.argmax(-1) == y).sum())
        stats.seen += int(y.shape[0])
        probs.append(p)
        labels.append(y)
    model.train(was)
    empty = torch.empty(0, ctx.num_classes)
    return stats, torch.cat(probs) if probs else empty, torch.cat(labels) if labels else empty


def _eval_batch(model: nn.Module, x: Tensor, ctx: StepContext, mb: int) -> Tensor:
    outs = []
    for i in range(0, x.shape[0], mb):
        with ctx.autocast():
            outs.append(model(ctx.to_device(x[i : i + mb])).float().cpu())
    return torch.cat(outs)  # (B, C) fp32 logits on CPU
