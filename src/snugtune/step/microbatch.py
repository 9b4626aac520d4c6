"""Micro-batches: a device's share of the batch, and the one out-of-memory recovery (free,
rewind, halve the micro-batch, retry the same work).

Training steps, evaluation batches and the feature-cache fill all recover through
:func:`retry_halving`, in the same way as Composer's ``device_train_microbatch_size="auto"``:
a ``torch.OutOfMemoryError`` (raised by the CUDA caching allocator, or by the CPU's virtual
device budget) frees what the failed attempt held, undoes what it changed (``rewind``), and
runs the *same* work again with half the micro-batch. Below one image it is a ``BudgetError``.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from snugtune.errors import BudgetError
from snugtune.results import Recovery

__all__ = ["MicroBatch", "free_memory", "local_batch", "retry_halving"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def local_batch(batch_size: int, num_train: int, world_size: int = 1) -> int:
    """Images one device takes per optimizer step: its share of the effective batch.

    A training set smaller than ``batch_size`` makes every batch the whole set; the batch is
    shared by ``world_size`` data-parallel processes (the largest share, ``ceil``).
    """
    return max(1, math.ceil(min(batch_size, max(1, num_train)) / world_size))


@dataclass(frozen=True)
class MicroBatch:
    """Images per forward/backward, and the recoveries that brought it there."""

    size: int
    recoveries: tuple[Recovery, ...] = ()

    def accumulation(self, batch: int) -> int:
        """Micro-batches per optimizer step for a (local) batch of ``batch`` images."""
        return max(1, math.ceil(batch / self.size))

    def halved(self, where: str, step: int, epoch: int) -> MicroBatch:
        """Half the size, with the recovery recorded.

        Raises:
            BudgetError: already at one image.
        """
        if self.size <= 1:
            raise BudgetError(
                "out of memory at micro-batch 1: the model does not fit the budget even one "
                "image at a time. Try --precision bf16, a smaller --resolution, freezing more "
                "(phases.*.trainable: top:1 or head) or a larger --gpu-memory")
        new = max(1, self.size // 2)
        log.warning("%s: out of memory at micro-batch %d (epoch %d, step %d); retrying the same "
                    "work at %d (accumulation x2, same effective batch)", where, self.size, epoch,
                    step, new)
        return MicroBatch(new, (*self.recoveries, Recovery(epoch, step, self.size, new)))


def free_memory() -> None:
    """Return what a failed attempt held: Python's cycles, then CUDA's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def retry_halving(
    attempt: Callable[[int], T],
    micro: MicroBatch,
    *,
    where: str,
    step: int = -1,
    epoch: int = 0,
    rewind: Callable[[], None] | None = None,
) -> tuple[T, MicroBatch]:
    """``attempt(micro.size)``, halving the micro-batch after each out-of-memory error.

    Args:
        attempt: the work, given the micro-batch size to use.
        micro: the size to start at.
        where, step, epoch: recorded with each recovery (and logged).
        rewind: undoes what a failed attempt changed (gradients, RNG, BatchNorm statistics).

    Returns:
        The result, and the micro-batch it was computed at.

    Raises:
        BudgetError: out of memory at micro-batch 1.
    """
    while True:
        try:
            return attempt(micro.size), micro
        except torch.OutOfMemoryError:
            pass  # free outside the handler: its traceback pins the failed attempt's tensors
        if rewind is not None:
            rewind()
        free_memory()
        micro = micro.halved(where, step, epoch)
