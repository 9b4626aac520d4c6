"""Stratified, seeded train/validation split that keeps copies of a picture on one side.

Within each class, samples are ranked by ``derive_seed(seed, "split", path relative to the
samples' common folder)`` and the lowest-ranked go to validation. Compared with shuffling a list this
is deterministic across Python versions and machines, does not change when the dataset folder
is moved, and is stable under edits: adding or removing one image moves at most one other
image between the splits, so a grown dataset keeps (almost) the same validation set.

With ``copies`` (the data doctor's groups: exact and near copies of one picture), each group
is one unit ranked by its lowest-ranked member: units are taken in rank order, and a unit goes
to validation only if every class it holds still has room there (each class's share is
``round(n * val_fraction)``), so no picture is on both sides and validation never holds more
of a class than the plain split would. Without copies this is exactly the plain split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from snugtune.data.doctor import find_copies
from snugtune.data.results import DataBundle, Sample, ScanResult
from snugtune.errors import ConfigError
from snugtune.step import derive_seed

__all__ = ["saved_samples", "split_folder", "split_samples"]


def split_folder(scan: ScanResult, val_fraction: float, seed: int, *, group_copies: bool = True,
                 saved: tuple[Sequence[tuple[str, int]], Sequence[tuple[str, int]]] | None = None,
                 ) -> DataBundle:
    """The scanned folder as training splits it, with its groups of copies.

    The split is ``saved`` when given (a run's ``split.json``: a resumed run keeps its split),
    else the folder's own ``train/`` + ``val/``, else ``split_samples`` with each group of
    copies kept on one side (``group_copies``; off: the plain split).
    """
    everything = scan.samples + (scan.val_samples or ())
    copies = find_copies(everything)
    kept = 0
    if saved is not None:
        train, val = (saved_samples(scan, part) for part in saved)
    elif scan.val_samples is not None:
        train, val = scan.samples, scan.val_samples
    else:
        groups = copies.group_of(len(scan.samples)) if group_copies else None
        train, val = split_samples(scan.samples, val_fraction, seed, groups)
        kept = len(copies) if group_copies else 0
    return DataBundle(scan, train, val, copies.moved(everything, train + val), kept)


def saved_samples(scan: ScanResult, saved: Sequence[tuple[str, int]]) -> tuple[Sample, ...]:
    """A saved (path, label) list as samples with the scan's fingerprints (none for a file the
    scan no longer has)."""
    found = {s.path: s for s in scan.samples + (scan.val_samples or ())}
    return tuple(Sample(p, k) if (s := found.get(p)) is None else Sample(p, k, s.sha256, s.phash)
                 for p, k in saved)


def split_samples(
    samples: Sequence[Sample], val_fraction: float, seed: int,
    groups: np.ndarray | None = None,
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Split samples into (train, val), stratified per class.

    Each class contributes ``round(n * val_fraction)`` images to validation, clamped so that
    a class with at least 2 images keeps at least one in each split; a class with a single
    image stays in training. Both outputs keep the input order.

    Args:
        samples: the pool, e.g. ``ScanResult.samples``.
        val_fraction: share of each class held out, in [0, 1); 0 gives ``(all, ())``.
        seed: changes which images are held out.
        groups: (N,) group index of each sample, -1 for none (``Copies.group_of``): the
            members of a group land on the same side. None: every sample on its own.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1).
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(
            f"--val-split: {val_fraction!r} must be in [0, 1); use e.g. 0.2 (0: no validation)"
        )
    if val_fraction == 0 or not samples:
        return tuple(samples), ()
    n = len(samples)
    labels = np.fromiter((s.label for s in samples), np.int64, n)
    base = _common_folder(samples)
    rank = np.fromiter((_rank(seed, s.path, base) for s in samples), np.uint64, n)
    unit = np.arange(n) if groups is None else np.where(groups < 0, np.arange(n), n + groups)
    is_val = _choose(labels, rank, unit, val_fraction)
    train = tuple(s for s, v in zip(samples, is_val.tolist(), strict=True) if not v)
    val = tuple(s for s, v in zip(samples, is_val.tolist(), strict=True) if v)
    return train, val


def _choose(labels: np.ndarray, rank: np.ndarray, unit: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) bool: validation. Units in order of their best (rank, position); a unit goes to
    validation when each of its classes still has room for its members there."""
    n = len(labels)
    room = [_n_val(int(c), fraction) for c in np.bincount(labels)]
    _, unit = np.unique(unit, return_inverse=True)  # 0..U-1
    order = np.lexsort((np.arange(n), rank))  # by rank, ties by position
    place = np.full(int(unit.max()) + 1, n, dtype=np.int64)
    np.minimum.at(place, unit[order], np.arange(n))  # a unit's place: its best member's
    members = np.argsort(unit, kind="stable")
    bounds = np.searchsorted(unit[members], np.arange(len(place) + 1)).tolist()
    members_l, labels_l, is_val = members.tolist(), labels.tolist(), [False] * n
    for u in np.argsort(place, kind="stable").tolist():
        idx = members_l[bounds[u] : bounds[u + 1]]
        need: dict[int, int] = {}
        for i in idx:
            need[labels_l[i]] = need.get(labels_l[i], 0) + 1
        if all(room[c] >= k for c, k in need.items()):
            for c, k in need.items():
                room[c] -= k
            for i in idx:
                is_val[i] = True
    return np.array(is_val, dtype=bool)


def _n_val(n: int, fraction: float) -> int:
    if n < 2:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


def _common_folder(samples: Sequence[Sample]) -> str:
    folders = {os.path.dirname(s.path) for s in samples}  # few: one list per folder, not file
    try:
        return os.path.commonpath(list(folders))
    except ValueError:  # mixed absolute/relative or drives: rank by the full path
        return ""


def _rank(seed: int, path: str, base: str) -> int:
    rel = os.path.relpath(path, base) if base else path
    return derive_seed(seed, "split", rel.replace(os.sep, "/"))
