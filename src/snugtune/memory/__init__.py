"""Memory model: simulate training steps on fake tensors, then model the device on top.

::

    estimate_memory("efficientnet_b0", batch=32, res=224, precision="bf16")
        -> MemoryReport(tensor_peak_bytes=..., predicted_peak_bytes=..., breakdown={...})

Layers, bottom up: :mod:`.tracker` (a dispatch mode logging storage lifetimes), :mod:`.trace`
(the log and what it says), :mod:`.simulate` (the training loop on fakes),
:mod:`.allocator` / :mod:`.backends` / :mod:`.device` (CUDA caching allocator, library
workspaces, context, GPU profiles), :mod:`.estimate` (the public report).
"""

from snugtune.memory.device import GPU_PROFILES, DeviceEstimate, GpuProfile, get_gpu_profile, replay
from snugtune.memory.estimate import MemoryReport, build_model, estimate_memory, report_from_trace
from snugtune.memory.simulate import StepConfig, run_steps, simulate
from snugtune.memory.sweep import BatchSweep
from snugtune.memory.trace import Category, Trace
from snugtune.memory.tracker import MemoryTracker

__all__ = [
    "BatchSweep",
    "GPU_PROFILES",
    "Category",
    "DeviceEstimate",
    "GpuProfile",
    "MemoryReport",
    "MemoryTracker",
    "StepConfig",
    "Trace",
    "build_model",
    "estimate_memory",
    "get_gpu_profile",
    "replay",
    "report_from_trace",
    "run_steps",
    "simulate",
]
