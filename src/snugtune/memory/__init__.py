"""Memory model: simulate training steps on fake tensors, then model the device on top.

::

    estimate_memory("efficientnet_b0", batch=32, res=224, precision="bf16")
        -> MemoryReport(tensor_peak_bytes=..., predicted_peak_bytes=..., breakdown={...})

Layers, bottom up: :mod:`.storages` (which storages live, shared with the guard),
:mod:`.tracker` (a dispatch mode logging storage lifetimes), :mod:`.trace` (the log and what it
says), :mod:`.simulator` (the trainer's own step on fakes),
:mod:`.allocator` / :mod:`.backends` / :mod:`.device` (CUDA caching allocator, library
workspaces, the device model), :mod:`.gpus` (the card present, calibrated and offline GPU
profiles), :mod:`.estimate` (the public report). At run time,
:mod:`.guard` holds a run to its budget and :mod:`.meter` measures its peak.
"""

from snugtune.memory.device import DeviceEstimate, replay
from snugtune.memory.estimate import MemoryReport, build_model, estimate_memory, report_from_trace
from snugtune.memory.gpus import (
    PROFILES,
    DeviceInfo,
    GpuProfile,
    get_gpu_profile,
    probe,
    resolve_gpu,
    save_calibration,
)
from snugtune.memory.meter import PeakMeter, held_tensors, sampled_step
from snugtune.memory.modules import block_count
from snugtune.memory.simulator import StepConfig, run_steps, simulate
from snugtune.memory.sweep import BatchSweep
from snugtune.memory.trace import Category, Trace
from snugtune.memory.tracker import MemoryTracker

__all__ = [
    "PROFILES",
    "BatchSweep",
    "Category",
    "DeviceEstimate",
    "DeviceInfo",
    "GpuProfile",
    "MemoryReport",
    "MemoryTracker",
    "PeakMeter",
    "StepConfig",
    "Trace",
    "block_count",
    "build_model",
    "estimate_memory",
    "get_gpu_profile",
    "held_tensors",
    "probe",
    "replay",
    "report_from_trace",
    "resolve_gpu",
    "run_steps",
    "sampled_step",
    "save_calibration",
    "simulate",
]
