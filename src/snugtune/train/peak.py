"""Measured peak memory of a phase: CUDA allocator statistics, or live tensor bytes on the CPU."""

from __future__ import annotations

from types import TracebackType

import torch

__all__ = ["PeakMeter"]


class PeakMeter:
    """Context manager recording the peak allocated (and reserved) bytes while it is open.

    On CUDA this is ``torch.cuda.max_memory_allocated/reserved``. On the CPU, the live-tensor
    peak comes from the virtual-device guard when one is active (``snugtune.memory.guard``);
    otherwise it is unknown (``None``) rather than guessed.
    """

    def __init__(self, device: torch.device, *, budget_bytes: int | None = None) -> None:
        self.device = device
        self.budget_bytes = budget_bytes
        self.peak_bytes: int | None = None
        self.reserved_bytes: int | None = None

    def __enter__(self) -> PeakMeter:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            self.reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
