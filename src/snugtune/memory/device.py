"""Device model: from a traced tensor log to the memory a device really needs.

CUDA (``nvidia-smi`` view of a training process)::

    predicted = context + reserved_peak
    reserved_peak = caching-allocator replay of [tensor allocations and frees
                    + cuBLAS workspaces (one per handle: forward thread, autograd thread)
                    + cuDNN workspace around each convolution]

The replay (:mod:`.allocator`) accounts for 512 B rounding, 2 MiB / 20 MiB segments, splitting
and fragmentation by construction instead of a flat percentage.

CPU: the predicted figure is the live-tensor peak, with oneDNN's reorder buffers around each
convolution replayed the same way (:mod:`.backends`); there is no allocator model. A training
process keeps freed memory in glibc's heap for the next step (``step.keep_freed_memory``), so
its resident set can stand above that peak (``host_memory.*.maxrss_mb`` in
``benchmarks/results/cpu_step.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

from snugtune.memory.allocator import CachingAllocatorModel, OutOfMemory
from snugtune.memory.backends import (
    cudnn_workspace_bytes,
    onednn_block,
    onednn_conv_extra_bytes,
)
from snugtune.memory.gpus import GpuProfile, get_gpu_profile
from snugtune.memory.trace import ALLOC, CONV, MARK, ConvCall, Trace
from snugtune.units import MIB

__all__ = [
    "CUBLAS_HANDLES",
    "DeviceEstimate",
    "context_bytes",
    "needed_bytes",
    "replay",
]

# Handles are per thread: the forward runs on the Python thread, backward on the autograd
# engine's device thread (torch/csrc/autograd/engine.cpp), so a training step holds two.
CUBLAS_HANDLES = 2
# A lone convolution (a transformer's patch embedding) loads few kernels.
CUDNN_MODULES_MIN_CONVS = 4


@dataclass(frozen=True)
class DeviceEstimate:
    """What a device needs for a traced step.

    Attributes:
        tensor_peak_bytes: live tensor bytes at the peak, library workspaces included (what
            ``torch.cuda.max_memory_allocated`` would count, unrounded).
        peak_index: event index of that peak in the trace.
        backend_bytes: library workspace bytes live at the peak.
        train_peak_bytes: the same peak over the training steps only.
        eval_peak_bytes: the same peak over the evaluation step only.
        reserved_bytes: allocator segments at their peak (CUDA; the tensor peak on CPU).
        context_bytes: CUDA context (0 on CPU).
        predicted_peak_bytes: the device total.
        oom: the step does not fit the replay's budget.
    """

    tensor_peak_bytes: int
    peak_index: int
    backend_bytes: int
    train_peak_bytes: int
    eval_peak_bytes: int
    reserved_bytes: int
    context_bytes: int
    predicted_peak_bytes: int
    oom: bool = False


class _Replay:
    """One pass over a trace: live bytes, library workspaces, and the allocator model."""

    def __init__(self, trace: Trace, device: str, gpu: GpuProfile, limit: int | None) -> None:
        self.trace, self.cuda = trace, device == "cuda"
        self.alloc = CachingAllocatorModel(limit=limit) if self.cuda else None
        self.block = onednn_block()
        self.gpu = gpu
        self.persistent = 0
        self.live = 0
        self.best = (0, 0, 0)  # bytes, event index, workspace bytes
        self.peaks = [0, 0]  # training, evaluation

    def run(self) -> None:
        trace, alloc, cuda = self.trace, self.alloc, self.cuda
        if alloc is not None:
            for h in range(CUBLAS_HANDLES):
                alloc.malloc(-1 - h, self.gpu.cublas_workspace_bytes)
                self.persistent += self.gpu.cublas_workspace_bytes
        eval_mark = trace.labels.index("eval") if "eval" in trace.labels else -1
        in_eval = False
        for i, (kind, ref, nbytes) in enumerate(trace.events):
            extra = 0
            if kind == MARK:
                in_eval = in_eval or ref == eval_mark
                continue
            if kind == CONV:
                extra = self._workspace(trace.convs[ref])
                if alloc is not None and extra > 0:
                    alloc.malloc(-100 - i, extra)
                    alloc.free(-100 - i)
            elif cuda and trace.infos[ref].device == "host":
                continue
            elif kind == ALLOC:
                self.live += nbytes
                if alloc is not None:
                    alloc.malloc(ref, nbytes)
            else:  # FREE
                self.live -= nbytes
                if alloc is not None:
                    alloc.free(ref)
                continue
            now = self.live + self.persistent + extra
            self.peaks[in_eval] = max(self.peaks[in_eval], now)
            if now > self.best[0]:
                self.best = (now, i, self.persistent + extra)

    def _workspace(self, call: ConvCall) -> int:
        if self.cuda:
            return cudnn_workspace_bytes(call)
        return onednn_conv_extra_bytes(call, self.block)


def context_bytes(trace: Trace, gpu: GpuProfile) -> int:
    """CUDA context of a process running ``trace``: the profile's, plus the cuDNN kernels a
    network of many convolutions loads where the profile's context did not see them."""
    forward_convs = sum(1 for c in trace.convs if not c.backward)
    steps = max(1, sum(1 for label in trace.labels if label.endswith(".forward")))
    many = forward_convs / steps > CUDNN_MODULES_MIN_CONVS
    return gpu.context_bytes + (gpu.conv_kernels_bytes if many else 0)


def replay(
    trace: Trace,
    device: str,
    gpu: GpuProfile | None = None,
    *,
    budget: int | None = None,
) -> DeviceEstimate:
    """Replay ``trace`` on the device model of ``device`` (``"cuda"`` or ``"cpu"``).

    Args:
        trace: a simulated (or measured) step.
        device: ``cuda`` or ``cpu``.
        gpu: the GPU profile (CUDA); generic by default.
        budget: device memory the step must fit (CUDA: the allocator may reserve the budget
            minus the context, as ``set_per_process_memory_fraction`` caps it; CPU: live
            bytes); beyond it the estimate has ``oom=True``.
    """
    gpu = gpu or get_gpu_profile("generic")
    cuda = device == "cuda"
    context = context_bytes(trace, gpu) if cuda else 0
    limit = None if budget is None else budget - context
    r = _Replay(trace, device, gpu, limit)
    oom = limit is not None and limit <= 0
    if not oom:
        try:
            r.run()
        except OutOfMemory:
            oom = True
    reserved = r.alloc.peak_reserved if r.alloc is not None else r.best[0]
    if r.alloc is None and limit is not None:
        oom = r.best[0] > limit
    return DeviceEstimate(
        tensor_peak_bytes=r.best[0],
        peak_index=r.best[1],
        backend_bytes=r.best[2],
        train_peak_bytes=r.peaks[0],
        eval_peak_bytes=r.peaks[1],
        reserved_bytes=reserved,
        context_bytes=context,
        predicted_peak_bytes=context + reserved,
        oom=oom,
    )


def needed_bytes(trace: Trace, device: str, gpu: GpuProfile | None = None) -> int:
    """The least device memory ``trace`` runs in (CUDA: to 1 MiB; CPU: its tensor peak).

    Under a cap the caching allocator frees its unused cached segments and retries before it
    raises (``c10/cuda/CUDACachingAllocator.cpp``, ``release_cached_blocks``), so a card
    smaller than the uncapped peak (``predicted_peak_bytes``, what ``nvidia-smi`` shows on a
    big card) can still run the step: the cap is bisected between the live tensors and that
    peak. Whether a step fits a card is this against the card's memory.
    """
    free = replay(trace, device, gpu)
    if device != "cuda":
        return free.predicted_peak_bytes
    lo, hi = free.context_bytes + free.tensor_peak_bytes - 1, free.predicted_peak_bytes
    while hi - lo > MIB:  # lo does not fit, hi does
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if replay(trace, device, gpu, budget=mid).oom else (lo, mid)
    return hi
