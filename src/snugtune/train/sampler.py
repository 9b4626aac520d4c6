"""An epoch's sample order as a pure function of (seed, epoch): resumable from any batch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "epoch_seed"]


def epoch_seed(seed: int, phase_index: int, epoch: int) -> int:
    """One seed per (run seed, phase, epoch): shuffling, augmentation and dropout derive from it."""
    return (seed * 1_000_003 + phase_index * 10_007 + epoch) % (2**63 - 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled ``(index, seed)`` items of one epoch, for one rank of several, from ``start`` on.

    Each item carries the epoch's seed so that augmentation can be seeded per item (see
    ``SeededDataset``); ``seed`` and ``start`` may be changed between epochs, which keeps
    persistent loader workers usable.

    Args:
        n: dataset size.
        seed: the epoch's seed (``epoch_seed``).
        shuffle: False keeps dataset order.
        start: number of leading indices (of this rank's share) to skip, for a resumed epoch.
        rank: this process's rank; world_size: number of processes. Each rank gets every
            ``world_size``-th index, so every sample is seen exactly once per epoch in total.
    """

    def __init__(
        self, n: int, seed: int, *, shuffle: bool = True, start: int = 0, rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.start, self.rank, self.world_size = start, rank, world_size

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.seed) for i in self.order()[self.start :]])

    def __len__(self) -> int:
        return max(0, len(self.order()) - self.start)
