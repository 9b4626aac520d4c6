"""The data doctor: the same picture more than once, in one class, in two classes, or on both
sides of the train/validation split.

From the fingerprints the scan records for every usable image (``Sample.sha256``, ``.phash``):

* **exact** duplicates share the SHA-256 of their bytes;
* **near** duplicates (the same picture re-encoded, resized or re-saved) have perceptual
  hashes (``imagehash.phash``, 64 bits) within ``NEAR_BITS`` bits, confirmed by their 32x32
  grayscale thumbnails differing by at most ``NEAR_MAD`` grey levels on average. The hash
  alone is not enough on small images: on Animal-MNIST (10,000 PNGs of 28x28 silhouettes),
  many pairs of different files are within ``NEAR_BITS`` bits and some share the hash exactly,
  but nearly all of their thumbnails differ by far more than ``NEAR_MAD``: different drawings
  of the same animal. Its exact duplicates are all within one class. (Those pair counts and
  differences come from an earlier reading that no committed JSON records; the doctor's groups
  on it are in ``benchmarks/results/data_scale_demo.json``, ``demo_split``, from
  ``benchmarks/data_scale.py --demo``.)

Pairs within ``NEAR_BITS`` are found without comparing all pairs, by multi-index hashing
(Norouzi, Punjani and Fleet, "Fast search in Hamming space with multi-index hashing", CVPR
2012): the 64 bits are cut into ``_BLOCKS`` = 3 blocks of 22, 21 and 21 bits; two hashes within
4 bits differ in at most 1 bit of at least one block (else 2 + 2 + 2 > 4), so every such pair
is found by looking up, in each block's sorted table, the block's value and its 21-22
one-bit neighbours: ~66 binary searches per image instead of N comparisons, and every pair
the brute force finds (the tests hold the two against each other). Groups are the connected
components of "exact copy" and "confirmed near pair" (``scipy.sparse.csgraph``).

Each group of copies is one problem, the worst it shows: **conflicting labels** (copies in
two classes: at least one label is wrong), **leakage** (copies on both sides of the split:
validation accuracy is inflated by images the model trained on), or **duplicates** (copies in
one class and one split: they weigh that picture more). The default split keeps each group
on one side (``data.split``), so leakage comes only from an explicit ``train/`` + ``val/``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from snugtune.data.images import decode_image
from snugtune.data.results import Copies, DataBundle, Sample
from snugtune.errors import ImageLoadError

__all__ = ["NEAR_BITS", "NEAR_MAD", "PROBLEMS", "DataDoctor", "DuplicateGroup", "diagnose",
           "examine", "find_copies", "near_pairs"]

#: Perceptual-hash distance (bits of 64) under which two images are near-duplicate candidates.
NEAR_BITS = 4
#: Mean absolute difference of 32x32 grayscale thumbnails (0-255) confirming a candidate.
NEAR_MAD = 3.0
_THUMB = 32
_BLOCKS = ((42, 22), (21, 21), (0, 21))  # (shift, width) of each block of the 64-bit hash
_PROBE_ELEMENTS = 1 << 22  # lookups expanded into pairs this many at a time

PROBLEMS = ("conflicting labels", "leakage", "duplicates")


@dataclass(frozen=True)
class DuplicateGroup:
    """Copies of one picture.

    Attributes:
        kind: ``exact`` (identical bytes) or ``near`` (the same picture, re-encoded).
        files: (path, class, split) of each copy, split being ``train`` or ``val``.
    """

    kind: str
    files: tuple[tuple[str, str, str], ...]

    @property
    def problem(self) -> str:
        """``conflicting labels``, ``leakage`` or ``duplicates`` (see the module docstring)."""
        if len({c for _, c, _ in self.files}) > 1:
            return "conflicting labels"
        if len({s for _, _, s in self.files}) > 1:
            return "leakage"
        return "duplicates"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "problem": self.problem,
                "files": [{"path": p, "class": c, "split": s} for p, c, s in self.files]}


@dataclass(frozen=True)
class DataDoctor:
    """What the doctor found: every group of copies, how many images it looked at, and how
    many groups the split kept on one side (0 when the split was the folder's own)."""

    images: int
    groups: tuple[DuplicateGroup, ...]
    kept_together: int = 0

    def of(self, problem: str) -> tuple[DuplicateGroup, ...]:
        """The groups whose problem is ``problem``."""
        return tuple(g for g in self.groups if g.problem == problem)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per problem: groups, and the copies beyond the first of each (``extra``)."""
        return {p: {"groups": len(gs := self.of(p)), "extra": sum(len(g.files) - 1 for g in gs)}
                for p in PROBLEMS}

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "counts": self.counts(), "kept_together": self.kept_together,
                "near_bits": NEAR_BITS, "near_mad": NEAR_MAD,
                "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataDoctor:
        groups = tuple(DuplicateGroup(str(g["kind"]), tuple(
            (str(f["path"]), str(f["class"]), str(f["split"])) for f in g["files"]))
            for g in d.get("groups", ()))
        return cls(images=int(d.get("images", 0)), groups=groups,
                   kept_together=int(d.get("kept_together", 0)))


def find_copies(samples: Sequence[Sample]) -> Copies:
    """Group the exact and near copies among ``samples`` (those without fingerprints are
    left out): see the module docstring."""
    known = np.flatnonzero(np.fromiter((len(s.sha256) == 32 for s in samples), bool, len(samples)))
    if len(known) < 2:
        return Copies((), ())
    digests = np.frombuffer(b"".join(samples[int(i)].sha256 for i in known), dtype="V32")
    _, first, exact = np.unique(digests, return_index=True, return_inverse=True)
    heads = known[first]  # one sample per distinct content
    hashes = np.fromiter((samples[int(i)].phash for i in heads), np.uint64, len(heads))
    pairs = _confirmed(samples, heads, near_pairs(hashes))
    edges = np.concatenate([np.stack([np.arange(len(known)), first[exact]]),  # copy -> its head
                            first[pairs.T] if len(pairs) else np.zeros((2, 0), np.int64)], axis=1)
    graph = coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])),
                       shape=(len(known), len(known)))
    _, component = connected_components(graph, directed=False)
    return _groups(samples, known, component)


def _groups(samples: Sequence[Sample], known: np.ndarray, component: np.ndarray) -> Copies:
    order = np.argsort(component, kind="stable")
    bounds = np.flatnonzero(np.diff(component[order])) + 1
    kinds, members = [], []
    for part in np.split(order, bounds):
        if len(part) < 2:
            continue
        idx = tuple(int(i) for i in known[part])
        kinds.append("exact" if len({samples[i].sha256 for i in idx}) == 1 else "near")
        members.append(idx)
    return Copies(tuple(kinds), tuple(members))


def near_pairs(hashes: np.ndarray, bits: int = NEAR_BITS) -> np.ndarray:
    """(P, 2) int64 positions (i < j) of every pair of ``hashes`` (uint64) within ``bits``
    bits, by multi-index hashing (module docstring; ``bits`` at most 5)."""
    if bits > 5:
        raise ValueError("near_pairs finds pairs within at most 5 bits (3 blocks, radius 1)")
    hashes = np.asarray(hashes, dtype=np.uint64)
    found = [np.zeros((0, 2), np.int64)]
    for shift, width in _BLOCKS:
        key = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(key, kind="stable")  # the block's table: positions by value
        count = np.bincount(key, minlength=1 << width).astype(np.int32)  # how many per value
        start = np.zeros_like(count)  # where each value's run starts in ``order``
        np.cumsum(count[:-1], out=start[1:])
        for flip in (0, *(1 << b for b in range(width))):
            for i, j in _matches(key ^ flip, start, count, order):
                keep = (i < j) & (np.bitwise_count(hashes[i] ^ hashes[j]) <= bits)
                found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _matches(queries: np.ndarray, start: np.ndarray, count: np.ndarray, order: np.ndarray
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j): every position j whose block value is ``queries[i]``, in batches of at most
    ``_PROBE_ELEMENTS`` pairs (a direct table: the values have at most 22 bits)."""
    counts = count[queries]
    hit = np.flatnonzero(counts)
    lo = start[queries[hit]]
    c = counts[hit]
    cum = np.cumsum(c)
    first = 0
    while first < len(hit):  # the queries whose matches fit the budget
        stop = max(first + 1, int(np.searchsorted(cum, cum[first] - c[first] + _PROBE_ELEMENTS,
                                                  side="right")))
        q, k = hit[first:stop], c[first:stop]
        offsets = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
        yield np.repeat(q, k), order[np.repeat(lo[first:stop], k) + offsets]
        first = stop


def _confirmed(samples: Sequence[Sample], heads: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The (P', 2) rows of ``pairs`` (positions in ``heads``) whose thumbnails are within
    ``NEAR_MAD``."""
    thumbs: dict[int, np.ndarray | None] = {}

    def thumb(k: int) -> np.ndarray | None:
        if k not in thumbs:
            thumbs[k] = _thumbnail(samples[int(heads[k])].path)
        return thumbs[k]

    keep = []
    for a, b in pairs.tolist():
        ta, tb = thumb(a), thumb(b)
        keep.append(ta is not None and tb is not None and float(np.abs(ta - tb).mean()) <= NEAR_MAD)
    return pairs[np.asarray(keep, dtype=bool)] if len(pairs) else pairs


def _thumbnail(path: str) -> np.ndarray | None:
    try:
        image = decode_image(path, draft_size=4 * _THUMB).image
    except ImageLoadError:
        return None  # changed since the scan: not a duplicate we can show
    small = image.convert("L").resize((_THUMB, _THUMB), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)


def examine(classes: Sequence[str], train: Sequence[Sample], val: Sequence[Sample],
            copies: Copies | None = None, *, kept_together: int = 0) -> DataDoctor:
    """Say what each group of copies among ``train`` and ``val`` breaks.

    Args:
        classes: class names (``Sample.label`` indexes them).
        train, val: the split.
        copies: ``find_copies(train + val)`` when already known (positions in that order);
            None finds them.
        kept_together: groups the split kept on one side (for the report).
    """
    pool = (*train, *val)
    copies = find_copies(pool) if copies is None else copies
    groups = []
    for kind, idx in zip(copies.kinds, copies.members, strict=True):
        files = tuple((pool[i].path, classes[pool[i].label], "train" if i < len(train) else "val")
                      for i in sorted(idx))
        groups.append(DuplicateGroup(kind, files))
    order = {p: k for k, p in enumerate(PROBLEMS)}
    groups.sort(key=lambda g: (order[g.problem], g.files[0][0]))
    images = sum(1 for s in pool if len(s.sha256) == 32)
    return DataDoctor(images=images, groups=tuple(groups), kept_together=kept_together)


def diagnose(data: DataBundle) -> DataDoctor:
    """``examine`` of a split folder, with the copies it found when splitting."""
    return examine(data.classes, data.train, data.val, data.copies,
                   kept_together=data.kept_together)
