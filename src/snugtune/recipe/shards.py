"""This rank's share of each global batch (see ``snugtune.recipe.distributed`` for the policy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from snugtune.data import make_loader
from snugtune.errors import DataError
from snugtune.recipe.sampler import EpochSampler

__all__ = ["ShardedBatches", "sharded_loader"]


class ShardedBatches:
    """Batch sampler: this rank's contiguous block of every global batch of an epoch.

    The global batches are those a single process takes (``EpochSampler`` order cut into
    ``batch_size`` chunks); a last chunk smaller than ``world_size`` joins the one before.
    Items are ``(index, seed)`` as for ``SeededDataset``; set ``seed`` before each epoch.

    Raises:
        DataError: fewer images than processes.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int, world_size: int) -> None:
        if n < world_size:
            raise DataError(f"{n} training images cannot be shared by {world_size} processes; "
                            "use fewer processes (--nproc-per-node) or more images")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size

    def global_batches(self) -> list[list[int]]:
        order = EpochSampler(self.n, seed=self.seed).order()
        batches = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.world_size:
            batches[-2].extend(batches.pop())
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.global_batches():
            block = torch.tensor_split(torch.tensor(batch), self.world_size)[self.rank]
            yield [(i, self.seed) for i in block.tolist()]

    def __len__(self) -> int:
        return len(self.global_batches())


class _Collated(Dataset):
    """Fetches a whole batch per key list (lets ``make_loader`` serve a batch sampler)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, keys: list[Any]) -> Any:
        many = getattr(self.base, "__getitems__", None)  # one gather for cached features
        return default_collate(many(keys) if many else [self.base[k] for k in keys])


def sharded_loader(dataset: Dataset, sampler: ShardedBatches, *, workers: int | None, seed: int,
                   device: str) -> DataLoader:
    """A loader yielding this rank's block of each global batch, collated."""
    return make_loader(_Collated(dataset), batch_size=None, sampler=sampler,  # type: ignore[arg-type]
                       workers=workers, seed=seed, device=device)
