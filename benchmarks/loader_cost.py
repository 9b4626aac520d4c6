"""What loading a training batch costs in the training process, and the two calls it trimmed.

The like-for-like Keras race (``keras_anchor.py``) loads in the training process (no loader
workers on 2 cores: ``cpu_step.json``'s ``workers`` decision), so every millisecond spent on a
batch's images is a millisecond the step waits. Measured here, each on one thread of this
machine, the medians of ``--repeats`` interleaved repeats:

* ``seed_us``: seeding one image's augmentation: ``torch.manual_seed`` (also seeds every
  accelerator module; each, with CUDA not initialised, records the caller's stack for its lazy
  seeding) against ``torch.default_generator.manual_seed`` (the CPU generator only, which is
  all a CPU transform draws from).
* ``grid_us``: one image's sampling grid for the affine warp, ``affine_grid`` against the
  product of a cached grid of output pixel centres with theta (``data/augment.py``).
* ``batch_ms``: one batch of 32 Animal-MNIST PNGs (28 px, grey) decoded and augmented as the race's
  snugtune side does (shear 0.2, zoom 0.2, horizontal flips, 96 px), through
  ``SeededDataset`` and ``make_loader`` without workers: as the run does now (``now``), and
  with each item seeded by ``torch.manual_seed`` as before (``manual_seed``).

Usage: ``python benchmarks/loader_cost.py --out benchmarks/results/loader_cost.json``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune.config import AugmentConfig
from snugtune.data import (
    ImageDataset,
    SeededDataset,
    build_transforms,
    make_loader,
    scan_folder,
    write_animal_mnist,
)
from snugtune.data.augment import _base_grid
from snugtune.recipe.sampler import EpochSampler
from snugtune.step import derive_seed

AUG = AugmentConfig(shear_range=0.2, zoom_range=0.2, horizontal_flip=True)
SIZE, BATCH = 96, 32


class ManualSeeded(SeededDataset):
    """Items seeded the way ``SeededDataset`` did before: ``torch.manual_seed``."""

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, index))
            return self.base[index]


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def batch_ms(dataset: SeededDataset, batches: int) -> float:
    sampler = EpochSampler(len(dataset), seed=1)
    loader = make_loader(dataset, batch_size=BATCH, sampler=sampler, workers=0)
    t0, n = time.perf_counter(), 0
    for _ in loader:
        n += 1
        if n == batches:
            break
    return (time.perf_counter() - t0) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    theta = torch.tensor([[[1.1, 0.2, 0.05], [-0.1, 0.9, 0.02]]])
    grid = nn.functional.affine_grid(theta, [1, 3, SIZE, SIZE], align_corners=False)
    cached = (_base_grid(SIZE) @ theta[0].T).view(1, SIZE, SIZE, 2)
    samples: dict[str, list[float]] = {k: [] for k in (
        "seed_manual_seed", "seed_default_generator", "grid_affine_grid", "grid_cached",
        "batch_now", "batch_manual_seed")}
    before = load()
    with tempfile.TemporaryDirectory(prefix="snugtune-loader-cost-") as tmp:
        data = write_animal_mnist(Path(tmp) / "animal", per_class=BATCH * args.batches // 10 + 1)
        scan = scan_folder(data, cache_dir=Path(tmp) / "cache")
        tf = build_transforms(AUG, size=SIZE, mean=(0.485, 0.456, 0.406),
                              std=(0.229, 0.224, 0.225), train=True)
        base = ImageDataset(scan.samples, tf, draft_size=SIZE)
        for _ in range(args.repeats):
            samples["seed_manual_seed"].append(per_call_us(lambda: torch.manual_seed(1), 2000))
            samples["seed_default_generator"].append(
                per_call_us(lambda: torch.default_generator.manual_seed(1), 2000))
            samples["grid_affine_grid"].append(per_call_us(lambda: nn.functional.affine_grid(
                theta, [1, 3, SIZE, SIZE], align_corners=False), 2000))
            samples["grid_cached"].append(per_call_us(
                lambda: (_base_grid(SIZE) @ theta[0].T).view(1, SIZE, SIZE, 2), 2000))
            samples["batch_now"].append(batch_ms(SeededDataset(base), args.batches))
            samples["batch_manual_seed"].append(batch_ms(ManualSeeded(base), args.batches))
    med = {k: round(statistics.median(v), 2) for k, v in samples.items()}
    report = {
        "benchmark": "loader_cost", "machine": machine(), "threads": 1, "load": [before, load()],
        "settings": {"size": SIZE, "batch": BATCH, "batches": args.batches,
                     "repeats": args.repeats, "augment": "shear 0.2, zoom 0.2, horizontal flip",
                     "source": "Animal-MNIST PNGs, 28 px, decoded from their files"},
        "grid_max_abs_difference": float((grid - cached).abs().max()),
        "seed_us": {"manual_seed": med["seed_manual_seed"],
                    "default_generator": med["seed_default_generator"]},
        "grid_us": {"affine_grid": med["grid_affine_grid"], "cached": med["grid_cached"]},
        "batch_ms": {"now": med["batch_now"], "manual_seed": med["batch_manual_seed"]},
        "samples": {k: [round(x, 2) for x in v] for k, v in samples.items()},
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
