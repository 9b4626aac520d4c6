"""Simulate training steps of a real model under ``FakeTensorMode`` and log their memory.

The simulated loop is the one ``snugtune.train`` runs (and the one most PyTorch code runs)::

    for step in range(2):                      # the optimizer state appears at step 1
        for micro in range(accumulation):      # grads are live during the 2nd micro-batch
            x, y = batch()                     # (B, 3, R, R) images, (B,) labels
            with autocast(dtype):              # fp32: no autocast
                logits = model(x)              # (B, C)
                loss = cross_entropy(logits, y)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval(); with no_grad(), autocast(dtype): model(x)   # the evaluation step

``device="cuda"`` means CUDA semantics while computing on fake CPU tensors (a GPU is not
needed): the optimizer uses the multi-tensor ``foreach`` kernels that PyTorch picks by default
for CUDA parameters, attention runs CUDA's fused kernels and autocast follows CUDA's op lists
(:mod:`._cuda`).
fp16 is simulated without ``GradScaler``, which only adds a few scalar tensors.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snugtune.memory._adapter import configured, parse_trainable
from snugtune.memory._cuda import CudaSemantics
from snugtune.memory._fake import DataDependentFallback, fake_parameters, new_fake_mode
from snugtune.memory.trace import Category, Trace
from snugtune.memory.tracker import MemoryTracker

__all__ = ["StepConfig", "make_optimizer", "run_steps", "simulate"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam", "sgd")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepConfig:
    """What a simulated (or measured) training step looks like.

    Attributes:
        batch: images per micro-batch.
        res: square input resolution in pixels.
        precision: ``fp32`` or an autocast dtype (``bf16``, ``fp16``).
        optimizer: ``adamw``, ``adam`` or ``sgd`` (momentum 0.9).
        trainable: ``all``, ``head`` or ``top:N``.
        checkpointing: block indices whose activations are recomputed in backward.
        channels_last: NHWC memory format for the input and 4-D weights.
        device: ``cuda`` or ``cpu`` semantics (optimizer kernels, autocast op lists).
        weight_decay: optimizer weight decay; ``None`` is the optimizer's default.
        accumulation: micro-batches per optimizer step (at most 2 are simulated: the rest
            repeat the second one exactly).
        steps: optimizer steps to simulate (2: the first creates the optimizer state).
        eval_step: also simulate an evaluation forward pass at the same batch size.
        label_smoothing: of the cross-entropy loss (does not change memory; kept for parity).
        foreach: the optimizer's multi-tensor kernels; ``None`` is PyTorch's default for the
            device (on for CUDA, off for the CPU).
    """

    batch: int
    res: int
    precision: str = "fp32"
    optimizer: str = "adamw"
    trainable: str = "all"
    checkpointing: tuple[int, ...] = ()
    channels_last: bool = False
    device: str = "cuda"
    weight_decay: float | None = None
    accumulation: int = 1
    steps: int = 2
    eval_step: bool = True
    label_smoothing: float = 0.0
    foreach: bool | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.batch < 1 or self.res < 1 or self.steps < 1 or self.accumulation < 1:
            raise ValueError("batch, res, steps and accumulation must be >= 1")
        parse_trainable(self.trainable)  # raises ValueError naming the accepted forms


def make_optimizer(
    params: list[nn.Parameter], name: str, *, weight_decay: float | None, foreach: bool | None
) -> torch.optim.Optimizer:
    """The optimizer the trainer builds (LR does not change memory; 1e-3 is used)."""
    kw: dict[str, Any] = {"lr": 1e-3, "foreach": foreach}
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if name == "adam":
        return torch.optim.Adam(params, **kw)
    return torch.optim.SGD(params, momentum=0.9, **kw)


def simulate(model: nn.Module, cfg: StepConfig, *, classes: int | None = None) -> Trace:
    """Trace ``cfg.steps`` training steps (+ an eval step) of ``model`` on fake tensors.

    ``model``'s own parameters (real or on the meta device) are swapped for fakes during the
    simulation and put back after; nothing is allocated for real.

    Args:
        model: a ``snugtune.models.Classifier`` or any image classifier module.
        cfg: the step to simulate.
        classes: number of output classes, for the labels (read from the logits if omitted).
    """
    fake_mode = new_fake_mode()
    fallback = DataDependentFallback(fake_mode)
    tracker = MemoryTracker(fallback)
    with ExitStack() as stack:
        params = stack.enter_context(
            fake_parameters(model, fake_mode, "cpu", cfg.channels_last)
        )
        stack.enter_context(configured(model, cfg.trainable, cfg.checkpointing))
        stack.enter_context(fake_mode)
        stack.enter_context(tracker)
        tracker.track_existing(params, Category.PARAMETERS)
        tracker.track_existing(list(model.buffers()), Category.PARAMETERS)
        run_steps(model, cfg, tracker=tracker, classes=classes)
    if fallback.count:
        log.debug("%d data-dependent ops ran on ones", fallback.count)
    return tracker.trace()


class _NoTracker:
    """Stands in for a tracker when the same loop runs for a measurement."""

    def mark(self, label: str) -> None:  # noqa: D102
        pass

    def set_category(self, tensors: Any, category: Category, *, device: str | None = None) -> None:  # noqa: D102
        pass

    def backward_phase(self) -> Any:  # noqa: D102
        return nullcontext()

    def watch_modules(self, model: nn.Module) -> Any:  # noqa: D102
        return nullcontext()


def _autocast(cfg: StepConfig) -> Any:
    if cfg.precision == "fp32":
        return nullcontext()
    return torch.autocast("cpu", dtype=_DTYPES[cfg.precision])


def _semantics(cfg: StepConfig) -> Any:
    """CUDA's kernel choices (attention, autocast lists) when simulating for CUDA."""
    if cfg.device != "cuda":
        return nullcontext()
    return CudaSemantics(_DTYPES.get(cfg.precision))


def run_steps(
    model: nn.Module,
    cfg: StepConfig,
    *,
    tracker: MemoryTracker | None = None,
    classes: int | None = None,
) -> None:
    """Run the loop of the module docstring on whatever tensors ``model`` holds.

    Used by :func:`simulate` (fake tensors, with a tracker) and by measurements (real
    tensors, no tracker). The model must already be configured (trainable set, checkpointing).
    """
    tr: Any = tracker if tracker is not None else _NoTracker()
    params = [p for p in model.parameters() if p.requires_grad]
    foreach = cfg.foreach if cfg.foreach is not None else (cfg.device == "cuda" or None)
    opt = make_optimizer(params, cfg.optimizer, weight_decay=cfg.weight_decay, foreach=foreach)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    with tr.watch_modules(model):
        tr.mark("train")
        for step in range(cfg.steps):
            _train_step(model, cfg, opt, params, tr, fmt, classes, step)
        tr.mark("eval")
        if cfg.eval_step:
            _eval_step(model, cfg, tr, fmt)
        tr.mark("end")


def _batch(cfg: StepConfig, fmt: torch.memory_format, classes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(cfg.batch, 3, cfg.res, cfg.res).contiguous(memory_format=fmt)  # (B, 3, R, R)
    y = torch.randint(0, classes or 2, (cfg.batch,))  # (B,)
    return x, y


def _train_step(
    model: nn.Module,
    cfg: StepConfig,
    opt: torch.optim.Optimizer,
    params: list[nn.Parameter],
    tr: Any,
    fmt: torch.memory_format,
    classes: int | None,
    step: int,
) -> None:
    model.train()
    for micro in range(min(cfg.accumulation, 2)):
        tr.mark(f"step{step}.micro{micro}.forward")
        x, y = _batch(cfg, fmt, classes)
        tr.set_category([x, y], Category.INPUT)
        with _semantics(cfg):
            with _autocast(cfg):
                logits = model(x)  # (B, C)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            del x, y
            tr.mark(f"step{step}.micro{micro}.backward")
            with tr.backward_phase():  # checkpointed blocks re-run their forward here
                (loss / cfg.accumulation).backward()
        del logits, loss
    tr.set_category([p.grad for p in params], Category.GRADIENTS)
    tr.mark(f"step{step}.optimizer")
    opt.step()
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                host = key == "step" and cfg.device == "cuda" and value.dim() == 0
                tr.set_category([value], Category.OPTIMIZER, device="host" if host else None)
    opt.zero_grad(set_to_none=True)


def _eval_step(model: nn.Module, cfg: StepConfig, tr: Any, fmt: torch.memory_format) -> None:
    model.eval()
    x, _ = _batch(cfg, fmt, None)
    tr.set_category([x], Category.INPUT)
    with torch.no_grad(), _semantics(cfg), _autocast(cfg):
        logits = model(x)
    del logits, x
    tr.mark("eval.done")
