"""The training step (micro-batches + gradient accumulation + AMP, OOM-recovering) and evaluation.

The trainer runs these functions on real tensors and the memory simulator on fake ones
(``snugtune.memory.simulator``), so the step that is planned is the step that trains.

The loader yields whole effective batches; a step splits one into micro-batches of
``MicroBatch.size``, accumulates gradients, then takes one optimizer step. When a micro-batch
runs out of memory, the step's gradients are dropped, the RNG is rewound to the step's start,
the BatchNorm running statistics that the failed forwards updated are put back, and the
*same* step is retried at half the micro-batch (``step.microbatch``): no sample skipped or counted
twice, optimizer state and LR schedule untouched.

The step runs eagerly. ``torch.compile`` (inductor) of the model was measured on the 2-core CPU
(``benchmarks/results/cpu_step.json``, ``compiled`` against ``channels_last``, from
``benchmarks/cpu_step.py``; every layer and BatchNorm training, 96 px, batch 32,
channels_last, freed memory kept): 0.95x the eager step's images/s for mobilenet_v2 and 1.02x
for efficientnet_b0 (160.4 and 104.6 against 168.5 and 102.8; the spreads of three repeats
are 3.5-6.3%), its first three steps taking 3.67 and 3.28 s with a warm inductor cache (68 s
for efficientnet_b0 on a cold cache, in an earlier run of the benchmark); it does not pay
here, and the memory simulator could not vouch for a compiled step's peak. On a GPU it is not
measured yet.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snugtune.errors import BudgetError
from snugtune.step.device import autocast
from snugtune.step.loss import soft_targets, weight_total, weighted_loss_sum
from snugtune.step.microbatch import MicroBatch, retry_halving
from snugtune.step.sync import StepSync

__all__ = ["CPU_FORWARD_CHUNK", "Stats", "StepContext", "eval_micro_batch", "evaluate",
           "train_step"]

#: Images per inference forward pass on the CPU (evaluation, the feature-cache fill), at most
#: (a memory budget halves it). Timed on the 2-core Xeon at 96 px, fp32, channels_last, with
#: freed memory kept as a run keeps it (``forward_chunk`` in benchmarks/results/cpu_step.json,
#: from cpu_step.py): 64 images a pass ran 1.25x, 1.38x and 1.25x as fast as 16 for
#: mobilenet_v2, efficientnet_b0 and tf_efficientnet_lite0 (753.9, 538.0 and 591.6 images/s),
#: and the fastest of 8, 16, 32 and 64 for all three. (16 had been the fastest while glibc
#: handed every pass's activations back to the kernel.) An image's output depends on its chunk
#: only by float rounding.
CPU_FORWARD_CHUNK = 64

Mixer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class StepContext:
    """What a step needs besides the model and the batch."""

    device: torch.device
    num_classes: int
    label_smoothing: float = 0.0
    class_weights: Tensor | None = None
    precision: str = "fp32"
    channels_last: bool = False
    mixer: Mixer | None = None

    def to_device(self, x: Tensor) -> Tensor:
        """A host batch on the device (a copy unless it is there already), NHWC if asked."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


@dataclass(frozen=True)
class Stats:
    """Sums over some images: loss, correct predictions, images."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    def __add__(self, other: Stats) -> Stats:
        return Stats(self.loss_sum + other.loss_sum, self.correct + other.correct,
                     self.seen + other.seen)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.seen)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.seen)


def _bn_buffers(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(buffer, copy) of every BatchNorm running statistic that a forward pass updates now."""
    return [(b, b.detach().clone()) for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
            for b in m.buffers()]


def _rewinder(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """Undo a failed attempt of the step starting now: gradients, RNG, BatchNorm statistics."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    bn = _bn_buffers(model)

    def rewind() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        with torch.no_grad():
            for buffer, start in bn:
                buffer.copy_(start)

    return rewind


def _accumulate(model: nn.Module, x: Tensor, t: Tensor, ctx: StepContext, mb: int,
                total_w: Tensor, scaler: torch.amp.GradScaler | None) -> tuple[float, int]:
    loss_sum, correct = 0.0, 0
    for i in range(0, x.shape[0], mb):
        ti = t[i : i + mb].to(ctx.device)
        with autocast(ctx.device.type, ctx.precision):
            # the device copy of the images is not kept: autograd holds what backward needs
            # (under autocast, a half-precision cast), so the fp32 copy is freed before backward
            logits = model(ctx.to_device(x[i : i + mb]))  # (b, C)
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
    sync: StepSync | None = None,
) -> tuple[Stats, MicroBatch]:
    """One optimizer step over an effective batch ``x`` (B, 3, H, W), ``y`` (B,).

    With ``sync`` (data-parallel: ``x`` is this rank's share), the micro-batches run on this
    rank alone, then every rank agrees and sums the gradients (``step.sync``).

    Returns:
        The batch's sums (weighted loss, correct, images) and the micro-batch the step ran at
        (smaller than ``micro`` after an out-of-memory recovery, here or on another rank).

    Raises:
        BudgetError: out of memory at micro-batch 1, or in the optimizer step.
        DistributedError: another rank could not finish its share.
    """
    if ctx.mixer is not None:
        x, y = ctx.mixer(x, y)
    t = soft_targets(y, ctx.num_classes, ctx.label_smoothing)  # (B, C)
    total_w = weight_total(t, ctx.class_weights)
    failure: BaseException | None = None
    loss_sum, correct = 0.0, 0
    try:
        (loss_sum, correct), micro = retry_halving(
            lambda mb: _accumulate(model, x, t, ctx, mb, total_w, scaler), micro,
            where="train", step=step, epoch=epoch, rewind=_rewinder(model, optimizer))
    except Exception as e:  # noqa: BLE001 - the peers must hear of any failure, then it is raised
        if sync is None:
            raise
        failure = e
    if sync is not None:
        micro = sync.finish(model, weight=float(total_w), micro=micro, failure=failure, step=step,
                            epoch=epoch)
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
    return Stats(loss_sum, correct, int(x.shape[0])), micro


def eval_micro_batch(device: torch.device, size: int) -> MicroBatch:
    """The micro-batch evaluation starts at: at most ``CPU_FORWARD_CHUNK`` on the CPU."""
    return MicroBatch(min(size, CPU_FORWARD_CHUNK) if device.type == "cpu" else size)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    ctx: StepContext,
    micro: MicroBatch,
) -> tuple[Stats, Tensor, Tensor, MicroBatch]:
    """Loss (plain cross-entropy), accuracy, (N, C) probabilities and (N,) labels.

    Each batch runs in forward passes of ``micro`` images, halved on out-of-memory.
    """
    was = model.training
    model.eval()
    stats, probs, labels = Stats(), [], []
    for x, y in batches:
        out, micro = retry_halving(functools.partial(_eval_batch, model, x, ctx), micro,
                                   where="evaluate")
        p = out.softmax(-1)
        loss = float(nn.functional.cross_entropy(out, y, reduction="sum"))
        stats = stats + Stats(loss, int((p.argmax(-1) == y).sum()), int(y.shape[0]))
        probs.append(p)
        labels.append(y)
    model.train(was)
    empty = torch.empty(0, ctx.num_classes)
    return (stats, torch.cat(probs) if probs else empty, torch.cat(labels) if labels else empty,
            micro)


def _eval_batch(model: nn.Module, x: Tensor, ctx: StepContext, mb: int) -> Tensor:
    outs = []
    for i in range(0, x.shape[0], mb):
        with autocast(ctx.device.type, ctx.precision):
            outs.append(model(ctx.to_device(x[i : i + mb])).float().cpu())
    return torch.cat(outs)  # (B, C) fp32 logits on the host
