"""Keep a CPU step's freed memory for the next step instead of handing it back to the kernel.

A training step allocates and frees the same activations every step. With glibc's default
malloc settings the freed heap above its trim threshold (at most 64 MiB, as the mmap threshold
adapts up to 32 MiB on 64-bit systems: man 3 mallopt) goes back to the kernel at the end of a step, and blocks above the mmap
threshold are mapped and unmapped every time, so the next step takes a page fault for every
4 KiB it touches again and the kernel zeroes each page. Measured on the 2-core Xeon
(``benchmarks/results/cpu_step.json``, ``host_memory``, from ``benchmarks/cpu_step.py``; every
layer and BatchNorm training, batch 32, channels_last; medians of 3 interleaved pairs of fresh
processes), glibc's defaults against kept memory:

=====================  ==================  ====================  ===========  ==============
step                   page faults a step  kernel ms a step      speedup      peak RSS (MB)
=====================  ==================  ====================  ===========  ==============
mobilenet_v2, 96 px    15,664 -> 504       25.9 -> 2.0           1.028x       1,322 -> 1,380
efficientnet_b0, 96    17,998 -> 62        32.8 -> 1.1           1.068x       1,418 -> 1,431
mobilenet_v2, 224 px   740,496 -> 0        1,431.6 -> 3.5        1.865x       3,312 -> 4,031
=====================  ==================  ====================  ===========  ==============

The price is the last column: freed blocks are reused where they fit rather than returned, so
the heap holds more than the live tensors at the peak (22% more at 224 px). The CPU plan
counts live tensors (``memory.device``), so its figures and budgets are unchanged. With glibc's
defaults the same step also ran at rates that depended on what the process had allocated
before (mobilenet_v2 at 224 px: 15.9 to 21.2 images/s over the three default runs, 35.8 to
36.8 kept; at 96 px the previous run of the benchmark, in git history, had 131.8 to 162.0
against 169.6 to 175.1, a 1.073x median speedup).

This is what PyTorch's CPU performance guide gets from preloading jemalloc or tcmalloc; glibc
offers the same through ``mallopt`` (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``; man 3
mallopt), which a running process can call. The setting is process-wide and lasts until the
process ends (glibc's adaptive thresholds cannot be switched back on), so it is made where a
run starts to train on the CPU, and where ``evaluate`` and ``predict`` start on the CPU (their
forward passes free activations the same way: a whole ``snugtune evaluate runs/demo``, 2,000
images, took 7.0 and 7.15 s against 8.61 and 8.93 s with glibc's defaults, peak RSS 862 MB
against 844-863, in an earlier measurement that no committed JSON records), once, and logged.
Elsewhere (not glibc, or a GPU step whose activations live in CUDA's own caching allocator)
nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

import torch

from snugtune.units import GIB

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>

#: Blocks below this come from the heap (and are reused when freed) rather than from a fresh
#: mapping: above every activation of the measured steps (the largest, mobilenet_v2's expanded
#: first block at 224 px, batch 32: 32 x 96 x 112 x 112 floats, 154 MB).
MMAP_THRESHOLD = 1 * GIB

#: Free memory at the top of the heap is handed back to the kernel only beyond this. Bounded
#: (the largest value ``mallopt``'s int takes) rather than switched off, so a pattern that keeps
#: extending the heap instead of reusing it cannot grow the process without limit.
TRIM_THRESHOLD = 2 * GIB - 1


def keep_freed_memory(device: torch.device) -> bool:
    """On the CPU with glibc: keep freed memory for reuse (the module docstring). Returns
    whether the settings are in force (made now or by an earlier call)."""
    if device.type != "cpu" or platform.libc_ver()[0] != "glibc":
        return False
    return _set_thresholds()


@functools.cache
def _set_thresholds() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # a glibc without the symbol in the process: leave it
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        log.info("glibc refused the malloc thresholds; freed CPU memory is returned as before")
        return False
    log.info("CPU step: freed memory kept for reuse (glibc mmap threshold %d MiB, trim "
             "threshold %d MiB)", MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    return True
