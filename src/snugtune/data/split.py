"""Stratified, seeded train/validation split.

Within each class, samples are ranked by ``derive_seed(seed, "split", path relative to the
samples' common folder)`` and the lowest-ranked go to validation. Compared with shuffling a list this
is deterministic across Python versions and machines, does not change when the dataset folder
is moved, and is stable under edits: adding or removing one image moves at most one other
image between the splits, so a grown dataset keeps (almost) the same validation set.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

from snugtune.data.results import Sample
from snugtune.errors import ConfigError
from snugtune.step import derive_seed

__all__ = ["split_samples"]


def split_samples(
    samples: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Split samples into (train, val), stratified per class.

    Each class contributes ``round(n * val_fraction)`` images to validation, clamped so that
    a class with at least 2 images keeps at least one in each split; a class with a single
    image stays in training. Both outputs keep the input order.

    Args:
        samples: the pool, e.g. ``ScanResult.samples``.
        val_fraction: share of each class held out, in [0, 1); 0 gives ``(all, ())``.
        seed: changes which images are held out.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1).
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(
            f"--val-split: {val_fraction!r} must be in [0, 1); use e.g. 0.2 (0: no validation)"
        )
    if val_fraction == 0 or not samples:
        return tuple(samples), ()
    base = _common_folder(samples)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_class[s.label].append(i)
    val_idx: set[int] = set()
    for idx in by_class.values():
        n_val = _n_val(len(idx), val_fraction)
        ranked = sorted(idx, key=lambda i: (_rank(seed, samples[i].path, base), i))
        val_idx.update(ranked[:n_val])
    train = tuple(s for i, s in enumerate(samples) if i not in val_idx)
    val = tuple(s for i, s in enumerate(samples) if i in val_idx)
    return train, val


def _n_val(n: int, fraction: float) -> int:
    if n < 2:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


def _common_folder(samples: Sequence[Sample]) -> str:
    try:
        return os.path.commonpath([os.path.dirname(s.path) for s in samples])
    except ValueError:  # mixed absolute/relative or drives: rank by the full path
        return ""


def _rank(seed: int, path: str, base: str) -> int:
    rel = os.path.relpath(path, base) if base else path
    return derive_seed(seed, "split", rel.replace(os.sep, "/"))
