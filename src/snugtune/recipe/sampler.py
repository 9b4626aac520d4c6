"""An epoch's sample order as a pure function of its seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from snugtune.step import derive_seed

__all__ = ["EpochSampler", "epoch_seed"]


def epoch_seed(seed: int, phase_index: int, epoch: int) -> int:
    """One seed per (run seed, phase, epoch): shuffling, augmentation and dropout derive from it."""
    return derive_seed(seed, "epoch", phase_index, epoch)


class EpochSampler(Sampler[tuple[int, int]]):
    """The shuffled ``(index, seed)`` items of one epoch.

    Each item carries the epoch's seed so that augmentation can be seeded per item (see
    ``data.SeededDataset``); ``seed`` is set before each epoch, which keeps persistent loader
    workers usable.

    Args:
        n: dataset size.
        seed: the epoch's seed (``epoch_seed``).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def order(self) -> list[int]:
        """The epoch's permutation of ``range(n)``."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.seed) for i in self.order()])

    def __len__(self) -> int:
        return self.n
