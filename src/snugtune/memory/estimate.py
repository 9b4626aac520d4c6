"""``estimate_memory``: the public entry of the memory model, and its ``MemoryReport``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from snugtune.errors import ConfigError
from snugtune.memory.device import GpuProfile, get_gpu_profile, needed_bytes, replay
from snugtune.memory.modules import block_count
from snugtune.memory.simulator import StepConfig, simulate
from snugtune.memory.trace import MARK, Trace
from snugtune.models import Classifier, build_classifier

__all__ = ["MemoryReport", "build_model", "estimate_memory", "report_from_trace"]

log = logging.getLogger(__name__)

DEVICES = ("cuda", "cpu")


@dataclass(frozen=True)
class MemoryReport:
    """Predicted memory of one training configuration.

    Attributes:
        model: model name (or class name for a module).
        tensor_peak_bytes: live tensor bytes at the peak (library workspaces included): what
            real tensors reach on the CPU, ``max_memory_allocated`` on CUDA before rounding.
        predicted_peak_bytes: the device total (CUDA: context + allocator reserve), as
            ``nvidia-smi`` would show it at its highest on a card with room to spare.
        needed_bytes: the least device memory the step runs in: on CUDA below
            ``predicted_peak_bytes`` where the allocator, capped, frees its cache rather than
            fail; whether it fits a card is this against the card's memory.
        eval_peak_bytes: tensor peak of the evaluation step alone.
        breakdown: bytes by term at the peak; sums to ``predicted_peak_bytes``.
        top_layers: (module, saved activation bytes) at the peak, largest first.
        peak_phase: where the peak happens (``step1.micro0.backward``, ``step1.optimizer``...).
        fits: False when the step does not fit the budget it was replayed under.
        gpu_memory_bytes: CUDA: what the card has room for (measured: free memory and what this
            process holds; offline: its capacity); None for the generic profile and the CPU.
    """

    model: str
    batch: int
    res: int
    classes: int
    precision: str
    optimizer: str
    trainable: str
    checkpointing: tuple[int, ...]
    channels_last: bool
    device: str
    gpu: str
    tensor_peak_bytes: int
    predicted_peak_bytes: int
    needed_bytes: int
    eval_peak_bytes: int
    breakdown: dict[str, int] = field(hash=False)
    top_layers: tuple[tuple[str, int], ...]
    peak_phase: str
    fits: bool = True
    gpu_memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["checkpointing"] = list(self.checkpointing)
        d["top_layers"] = [{"module": m, "bytes": b} for m, b in self.top_layers]
        return d


@functools.lru_cache(maxsize=16)
def build_model(name: str, classes: int, head_hidden: int | None = None,
                pre_logits: bool = False) -> Classifier:
    """A snugtune ``Classifier`` for ``name`` on the meta device (cached; nothing allocated)."""
    return build_classifier(name, classes, weights="none", head_hidden=head_hidden,
                            pre_logits=pre_logits, device="meta")


def _checkpoint_indices(model: nn.Module, checkpointing: bool | Sequence[int]) -> tuple[int, ...]:
    if checkpointing is True:
        return tuple(range(block_count(model)))
    if checkpointing is False:
        return ()
    return tuple(int(i) for i in checkpointing)  # type: ignore[union-attr]


def estimate_memory(
    model: str | nn.Module,
    *,
    batch: int,
    res: int,
    classes: int = 1000,
    precision: str = "fp32",
    optimizer: str = "adamw",
    trainable: str = "all",
    checkpointing: bool | Sequence[int] = False,
    channels_last: bool = False,
    device: str = "cuda",
    gpu: str | GpuProfile = "generic",
    weight_decay: float | None = None,
    accumulation: int = 1,
) -> MemoryReport:
    """Predict the peak memory of training ``model`` with one configuration.

    Two training steps and an evaluation step are simulated on fake tensors (no memory, no
    GPU), then replayed on the device model. Options are those of ``snugtune memory``.

    Args:
        model: a model name (built as a snugtune ``Classifier`` with a new ``classes``-way
            head) or a module (a ``Classifier`` or any image classifier).
        batch, res, classes: micro-batch size, square input resolution, output classes.
        precision, optimizer, trainable: ``fp32|bf16|fp16``, ``adamw|adam|sgd``,
            ``all|head|top:N``.
        checkpointing: ``True`` for every block, or block indices.
        channels_last, device, gpu: NHWC format; ``cuda|cpu``; GPU profile (CUDA only).
        weight_decay, accumulation: the optimizer's (``None``: its default); micro-batches
            per optimizer step.

    Raises:
        ConfigError: unknown GPU profile, device or option.
    """
    if device not in DEVICES:
        raise ConfigError(f"--device: {device!r} is not one of {', '.join(DEVICES)}")
    profile = gpu if isinstance(gpu, GpuProfile) else get_gpu_profile(gpu)
    name = model if isinstance(model, str) else type(model).__name__
    module = build_model(model, classes) if isinstance(model, str) else model
    try:
        cfg = StepConfig(
            batch=batch, res=res, precision=precision, optimizer=optimizer, trainable=trainable,
            checkpointing=_checkpoint_indices(module, checkpointing), channels_last=channels_last,
            device=device, weight_decay=weight_decay, accumulation=accumulation,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    trace = simulate(module, cfg, classes=classes)
    return report_from_trace(trace, cfg, name=name, classes=classes, gpu=profile)


def report_from_trace(
    trace: Trace,
    cfg: StepConfig,
    *,
    name: str,
    classes: int,
    gpu: GpuProfile,
    budget: int | None = None,
) -> MemoryReport:
    """Turn a simulated trace into a :class:`MemoryReport` on ``cfg.device``.

    ``budget`` (device bytes) caps the allocator's reserve at the budget minus the context:
    the allocator then releases its cache under pressure and the peak is the one under the cap.
    Without a budget a card's own room caps it the same way, where the step fits in it.
    """
    room = (gpu.available_bytes or gpu.memory_bytes) if cfg.device == "cuda" else None
    need = needed_bytes(trace, cfg.device, gpu)
    cap = budget if budget is not None else room if room is not None and need <= room else None
    est = replay(trace, cfg.device, gpu, budget=cap)
    exclude = "host" if cfg.device == "cuda" else None
    breakdown = trace.breakdown_at(est.peak_index, exclude_device=exclude)
    breakdown["workspace"] = est.backend_bytes
    breakdown["allocator_reserve"] = est.reserved_bytes - est.tensor_peak_bytes if cfg.device == "cuda" else 0
    breakdown["cuda_context"] = est.context_bytes
    return MemoryReport(
        model=name,
        batch=cfg.batch,
        res=cfg.res,
        classes=classes,
        precision=cfg.precision,
        optimizer=cfg.optimizer,
        trainable=cfg.trainable,
        checkpointing=cfg.checkpointing,
        channels_last=cfg.channels_last,
        device=cfg.device,
        gpu=gpu.name if cfg.device == "cuda" else "cpu",
        tensor_peak_bytes=est.tensor_peak_bytes,
        predicted_peak_bytes=est.predicted_peak_bytes,
        needed_bytes=need,
        eval_peak_bytes=est.eval_peak_bytes,
        breakdown=breakdown,
        top_layers=trace.top_layers_at(est.peak_index),
        peak_phase=_phase_at(trace, est.peak_index),
        fits=not est.oom,
        gpu_memory_bytes=room,
    )


def _phase_at(trace: Trace, index: int) -> str:
    label = ""
    for kind, ref, _ in trace.events[: index + 1]:
        if kind == MARK:
            label = trace.labels[ref]
    return label
