"""Dataset over scanned samples, and DataLoaders sized to the machine.

Transforms draw from torch's RNG: in the main process that is the global RNG, in worker
processes PyTorch seeds each worker from the loader's seeded ``generator``
(``base_seed + worker_id``). Same seed, same worker count, same order of iteration: same
batches. Training addresses items as ``(index, seed)`` instead (:class:`SeededDataset`), so
that an item's augmentation does not depend on the worker or on a resume.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from snugtune.data.decoded import DecodedImages
from snugtune.data.images import load_image
from snugtune.data.results import Sample
from snugtune.step import derive_seed

__all__ = ["ImageDataset", "SeededDataset", "default_workers", "make_loader", "seed_worker"]

log = logging.getLogger(__name__)

MAX_DEFAULT_WORKERS = 4
TINY_DATASET = 256  # below this many items, worker start-up costs more than it saves
PREFETCH_FACTOR = 2  # batches in flight per worker (each holds a full float32 batch in RAM)


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Map-style dataset: item ``i`` is ``(transform(image), label)``, the image read from the
    decoded-image store when it holds it, else decoded from its file (``load_image``).

    Args:
        samples: images to serve, e.g. from ``scan_folder`` / ``split_samples``.
        transform: PIL RGB image -> tensor (3, H, W), e.g. from ``build_transforms``.
        draft_size: passed to ``load_image``: JPEGs decode at a reduced scale whose sides are
            at least this many pixels (set it to the model's input size).
        decoded: the samples' stored images (``ImageStore.view(samples)``), or None.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        draft_size: int | None = None,
        decoded: DecodedImages | None = None,
    ) -> None:
        self.samples = tuple(samples)
        self.transform = transform
        self.draft_size = draft_size
        if decoded is not None and len(decoded) != len(self.samples):
            raise ValueError(f"{len(decoded)} stored images for {len(self.samples)} samples")
        self.decoded = decoded

    @property
    def labels(self) -> tuple[int, ...]:
        """Label of every item, in order (for samplers and class weights)."""
        return tuple(s.label for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        image = self.decoded.get(index) if self.decoded is not None else None
        if image is None:
            image = load_image(sample.path, draft_size=self.draft_size)
        return self.transform(image), sample.label


class SeededDataset(Dataset[Any]):
    """Items addressed as ``(index, seed)``: augmentation randomness is a pure function of both.

    With this, an epoch's augmented images depend only on the epoch's seed and the index —
    not on which worker loads them or whether the run was resumed — and the main process's
    RNG stream (dropout) is left untouched.
    """

    def __init__(self, base: Dataset[Any]) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: ``torch.manual_seed`` also seeds every accelerator
            # module, each of which (CUDA not yet initialised) formats the caller's stack for
            # its lazy seeding: 128 us a call against 1.2 us, a third of a batch's loading
            # (32.9 against 22.5 ms for 32 Animal-MNIST PNGs at 96 px; ``seed_us`` and
            # ``batch_ms`` in benchmarks/results/loader_cost.json, from loader_cost.py).
            torch.default_generator.manual_seed(derive_seed(seed, index))
            return self.base[index]


def default_workers(device: str = "cuda") -> int:
    """Loader worker processes for this machine and the device that trains.

    CUDA: the usable CPU count, at most 4 (the CPU is free while the GPU computes). CPU: a
    quarter of the cores (none on 2 or 3): a worker preempts the step's own intra-op threads,
    and every multi-threaded operation then waits for the descheduled one. On the 2-core CPU,
    EfficientNet-Lite0 top-2 fine-tuning at 96 px loaded faster in the training process than
    with 1 or 2 workers, in an earlier measurement that no committed JSON records. (A quarter on
    larger CPUs is a choice, not a measurement.)
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    if device == "cpu":
        return min(cpus // 4, MAX_DEFAULT_WORKERS)
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: one torch thread per worker, numpy/random seeded from torch.

    PyTorch already seeds each worker's torch RNG from the loader's generator; seeding
    numpy and ``random`` from it too makes any transform that uses them reproducible.
    """
    torch.set_num_threads(1)  # N workers x all-core intra-op pools would oversubscribe
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    log.debug("loader worker %d seeded with %d", worker_id, seed)


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool = False,
    sampler: Sampler[Any] | None = None,
    seed: int = 0,
    workers: int | None = None,
    device: str = "cpu",
    drop_last: bool = False,
) -> DataLoader[Any]:
    """A DataLoader with a seeded generator and machine-sized workers.

    Args:
        dataset: e.g. an ``ImageDataset``; batch_size: items per batch.
        shuffle: reshuffle every epoch (from the seeded generator); not with ``sampler``.
        sampler: custom sampler (e.g. weighted, distributed); its own seed applies.
        seed: seeds the shuffle order and the worker RNG base seeds.
        workers: worker processes; None: ``default_workers(device)``, or 0 (load in the main
            process) when the dataset has fewer than ``TINY_DATASET`` items.
        device: the device type the batches go to; ``cuda`` also pins them (page-locked
            memory, for faster host-to-GPU copies).
        drop_last: drop a final incomplete batch.

    Raises:
        ValueError: both ``shuffle`` and ``sampler`` given.
    """
    if shuffle and sampler is not None:
        raise ValueError("make_loader: pass shuffle=True or a sampler, not both")
    n = workers if workers is not None else _auto_workers(dataset, device)
    generator = torch.Generator()
    generator.manual_seed(seed)
    extra: dict[str, Any] = {}
    if n > 0:
        extra = {
            "persistent_workers": True,
            "prefetch_factor": PREFETCH_FACTOR,
            "worker_init_fn": seed_worker,
        }
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=n,
        pin_memory=device == "cuda",
        drop_last=drop_last,
        generator=generator,
        **extra,
    )


def _auto_workers(dataset: Dataset[Any], device: str) -> int:
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return default_workers(device)
    return 0 if size < TINY_DATASET else default_workers(device)
