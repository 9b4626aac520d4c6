"""Simulate training steps of a real model under ``FakeTensorMode`` and log their memory.

The simulated step *is* the trainer's: :func:`run_steps` builds the optimizer with
``snugtune.step.build_optimizer`` and runs ``snugtune.step.train_step`` twice (the optimizer
state appears at the end of the first) and ``snugtune.step.evaluate`` once, on a model whose
tensors are fakes. The tracker watches through hooks on the model and the optimizer, without
a line of the step knowing about it::

    for step in range(2):
        train_step(model, optimizer, x, y, ...)   # x: (A*B, 3, R, R), A = min(accumulation, 2)
            # per micro-batch: to_device, forward under autocast, weighted soft-target loss,
            # backward; data-parallel: the gradient sum's buckets (step.sync); then
            # optimizer.step() (fused AdamW / Adam, foreach SGD on CUDA)
    evaluate(model, [(x_eval, y_eval)], ...)      # the evaluation step, no grad

``device="cuda"`` means CUDA semantics while computing on fake CPU tensors (a GPU is not
needed): the batch lives on the host (a fake ``meta`` tensor) and each micro-batch is copied
to the device as the trainer copies it; attention runs CUDA's fused kernels and autocast
follows CUDA's op lists (:mod:`._cuda`). fp16 is simulated without ``GradScaler``, which only
adds a few scalar tensors. At most two micro-batches of a step are simulated: the rest repeat
the second exactly (on the CPU, where the whole batch is device memory, the images of
micro-batches beyond the second are not counted).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from snugtune.config import OPTIMIZERS, PhaseConfig, parse_trainable
from snugtune.memory._cuda import CudaSemantics
from snugtune.memory._fake import DataDependentFallback, fake_parameters, new_fake_mode
from snugtune.memory.modules import blocks_of, configured, head_of
from snugtune.memory.trace import Category, Trace
from snugtune.memory.tracker import MemoryTracker
from snugtune.step import (
    AUTOCAST_DTYPES,
    Alone,
    MicroBatch,
    StepContext,
    StepSync,
    build_optimizer,
    evaluate,
    param_groups,
    train_step,
)

__all__ = ["StepConfig", "run_steps", "simulate"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")  # the config's, less "auto" (a plan decides it)


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
        device: ``cuda`` or ``cpu`` semantics (optimizer kernels, autocast op lists, where the
            batch lives).
        weight_decay: optimizer weight decay; ``None`` is the phase default.
        accumulation: micro-batches per optimizer step (at most 2 are simulated: the rest
            repeat the second one exactly).
        steps: optimizer steps to simulate (2: the first creates the optimizer state).
        eval_step: also simulate an evaluation forward pass at the same batch size.
        label_smoothing: of the loss (does not change memory; kept for parity).
        world_size: data-parallel processes; above 1 each step ends with the gradient sum of
            ``snugtune.step.sync`` (its bucket buffers), with nothing communicated.
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
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if min(self.batch, self.res, self.steps, self.accumulation, self.world_size) < 1:
            raise ValueError("batch, res, steps, accumulation and world_size must be >= 1")
        parse_trainable(self.trainable)  # raises ValueError naming the accepted forms

    def phase(self) -> PhaseConfig:
        """The phase settings the trainer would build this step's optimizer from."""
        base = PhaseConfig(name="simulated", epochs=1, lr=1e-3, trainable=self.trainable,
                           optimizer=self.optimizer, label_smoothing=self.label_smoothing)
        if self.weight_decay is None:
            return base
        return PhaseConfig(**{**base.__dict__, "weight_decay": self.weight_decay})


def simulate(model: nn.Module, cfg: StepConfig, *, classes: int | None = None) -> Trace:
    """Trace ``cfg.steps`` training steps (+ an eval step) of ``model`` on fake tensors.

    ``model``'s own parameters (real or on the meta device) are swapped for fakes during the
    simulation and put back after; nothing is allocated for real.

    Args:
        model: a ``snugtune.models.Classifier`` or any image classifier module.
        cfg: the step to simulate.
        classes: number of output classes, for the labels (2 if omitted).
    """
    fake_mode = new_fake_mode()
    fallback = DataDependentFallback(fake_mode)
    tracker = MemoryTracker(fallback)
    with ExitStack() as stack:
        params = stack.enter_context(fake_parameters(model, fake_mode, "cpu", cfg.channels_last))
        stack.enter_context(configured(model, cfg.trainable, cfg.checkpointing))
        stack.enter_context(fake_mode)
        stack.enter_context(tracker)
        tracker.track_existing(params, Category.PARAMETERS)
        tracker.track_existing(list(model.buffers()), Category.PARAMETERS)
        run_steps(model, cfg, tracker=tracker, classes=classes)
    if fallback.count:
        log.debug("%d data-dependent ops ran on ones", fallback.count)
    return tracker.trace()


def run_steps(
    model: nn.Module,
    cfg: StepConfig,
    *,
    tracker: MemoryTracker | None = None,
    classes: int | None = None,
    sync: StepSync | None = None,
) -> int:
    """Run the trainer's step ``cfg.steps`` times and its evaluation once, on whatever tensors
    ``model`` holds (fakes in :func:`simulate`; real ones to measure), watched by ``tracker``.
    A data-parallel step (``cfg.world_size`` > 1) ends with ``sync``, by default one that
    communicates nothing (``step.Alone``); a real one measures a real data-parallel step.

    The model must already be configured (trainable set, checkpointing). Returns the smallest
    micro-batch the steps ended at: ``cfg.batch`` unless an out-of-memory error was recovered
    by halving it (on a capped device).
    """
    cuda = cfg.device == "cuda"
    param = next(model.parameters())
    fake = isinstance(param, FakeTensor)
    host = "meta" if fake and cuda else "cpu"  # a fake host batch: each micro-batch is copied
    ctx = StepContext(device=torch.device("cpu") if fake else param.device,
                      num_classes=_output_width(model) or classes or 2,
                      label_smoothing=cfg.label_smoothing, precision=cfg.precision,
                      channels_last=cfg.channels_last)
    phase = cfg.phase()
    groups = param_groups(head_of(model), blocks_of(model), model, phase)
    optimizer = build_optimizer(groups, phase, cfg.device)
    watch = _Watch(tracker, optimizer, cuda) if tracker is not None else None
    if sync is None and cfg.world_size > 1:
        sync = StepSync(Alone(cfg.world_size))
    smallest = cfg.batch
    with watch.hooks(model) if watch else nullcontext(), _semantics(cfg):
        if watch:
            watch.mark("train")
        for step in range(cfg.steps):
            model.train()
            x, y = _batch(cfg.batch * min(cfg.accumulation, 2), cfg, host, ctx.num_classes, watch)
            micro = train_step(model, optimizer, x, y, ctx, MicroBatch(cfg.batch), step=step,
                               sync=sync)[1]
            smallest = min(smallest, micro.size)
            del x, y
        if watch:
            watch.mark("eval")
        if cfg.eval_step:
            x, y = _batch(cfg.batch, cfg, host, ctx.num_classes, watch)
            micro = evaluate(model, [(x, y)], ctx, MicroBatch(cfg.batch))[-1]
            smallest = min(smallest, micro.size)
            del x, y
            if watch:
                watch.mark("eval.done")
        if watch:
            watch.mark("end")
    return smallest


def _output_width(model: nn.Module) -> int | None:
    """The logits' width: the classes the labels of a simulated batch are drawn from."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _batch(n: int, cfg: StepConfig, host: str, classes: int,
           watch: _Watch | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A host batch: (n, 3, R, R) images and (n,) labels, as the loader yields it (NCHW: the
    step makes the channels-last copy, as it does in training)."""
    x = torch.randn(n, 3, cfg.res, cfg.res, device=host)
    y = torch.randint(0, classes, (n,))
    if watch is not None:
        watch.tracker.set_category([x], Category.INPUT, device="host" if host == "meta" else None)
        watch.tracker.set_category([y], Category.INPUT)
    return x, y


def _semantics(cfg: StepConfig) -> Any:
    """CUDA's kernel choices (attention, autocast lists) when simulating for CUDA."""
    if cfg.device != "cuda":
        return nullcontext()
    return CudaSemantics(AUTOCAST_DTYPES.get(cfg.precision))


class _Watch:
    """Marks the phases of each step in the trace and names what the step's tensors are,
    through hooks: the model's forward (a micro-batch starts; its input is the device copy of
    the images), the forward's end (backward follows), the optimizer's step (the gradients
    are complete; then its state exists)."""

    def __init__(self, tracker: MemoryTracker, optimizer: torch.optim.Optimizer, cuda: bool) -> None:
        self.tracker, self.optimizer, self.cuda = tracker, optimizer, cuda
        self.step = self.micro = 0
        self.mark = tracker.mark

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[None]:
        handles = [
            model.register_forward_pre_hook(self._forward),
            model.register_forward_hook(self._forward_done),
            self.optimizer.register_step_pre_hook(self._optimizer),
            self.optimizer.register_step_post_hook(self._optimizer_done),
        ]
        try:
            with self.tracker.watch_modules(model):
                yield
        finally:
            for h in handles:
                h.remove()

    def _forward(self, module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():
            self.mark(f"step{self.step}.micro{self.micro}.forward")
        self.tracker.set_category([a for a in args if isinstance(a, torch.Tensor)], Category.INPUT)

    def _forward_done(self, module: nn.Module, args: Any, out: Any) -> None:
        if torch.is_grad_enabled():
            self.mark(f"step{self.step}.micro{self.micro}.backward")
            self.micro += 1

    def _optimizer(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.tracker.set_category([p.grad for p in params], Category.GRADIENTS)
        self.mark(f"step{self.step}.optimizer")

    def _optimizer_done(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        fused = bool(optimizer.defaults.get("fused"))
        for state in optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    # Adam's step counter is a host scalar unless the fused kernel keeps it on
                    # the device (torch/optim/adam.py: fused and capturable steps are device
                    # tensors)
                    host = self.cuda and key == "step" and not fused and value.dim() == 0
                    self.tracker.set_category([value], Category.OPTIMIZER,
                                              device="host" if host else None)
        self.step, self.micro = self.step + 1, 0
