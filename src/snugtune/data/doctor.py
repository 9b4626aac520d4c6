"""The data doctor: the same picture more than once, in one class, in two classes, or on both
sides of the train/validation split.

From the fingerprints the scan records for every usable image (``ScanResult.fingerprints``):

* **exact** duplicates share the SHA-256 of their bytes;
* **near** duplicates (the same picture re-encoded, resized or re-saved) have perceptual
  hashes (``imagehash.phash``, 64 bits) within ``NEAR_BITS`` bits, confirmed by their 32x32
  grayscale thumbnails differing by at most ``NEAR_MAD`` grey levels on average. The hash
  alone is not enough on small images: on Animal-MNIST (10,000 PNGs of 28x28 silhouettes),
  7,065 pairs of different files are within 4 bits and 45 share the hash exactly, but their
  thumbnails differ by 9-26 grey levels (10th-90th percentile; median 13.6 at 0 bits, 17.9
  at 4): different drawings of the same animal; 9 pairs differ by less than 5, 1 by less
  than 2. Exact duplicates there: 284 pairs of identical files, all within one class.

Each group of copies is one problem, the worst it shows: **conflicting labels** (copies in
two classes: at least one label is wrong), **leakage** (copies on both sides of the split:
validation accuracy is inflated by images the model trained on), or **duplicates** (copies in
one class and one split: they weigh that picture more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from snugtune.data.images import decode_image
from snugtune.data.results import Sample
from snugtune.errors import ImageLoadError

__all__ = ["NEAR_BITS", "NEAR_MAD", "DataDoctor", "DuplicateGroup", "examine"]

#: Perceptual-hash distance (bits of 64) under which two images are near-duplicate candidates.
NEAR_BITS = 4
#: Mean absolute difference of 32x32 grayscale thumbnails (0-255) confirming a candidate.
NEAR_MAD = 3.0
_THUMB = 32
_BLOCK_ELEMENTS = 1 << 22  # pairwise distances computed this many at a time (32 MiB)

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
    """What the doctor found: every group of copies, and how many images it looked at."""

    images: int
    groups: tuple[DuplicateGroup, ...]

    def of(self, problem: str) -> tuple[DuplicateGroup, ...]:
        """The groups whose problem is ``problem``."""
        return tuple(g for g in self.groups if g.problem == problem)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per problem: groups, and the copies beyond the first of each (``extra``)."""
        return {p: {"groups": len(gs := self.of(p)), "extra": sum(len(g.files) - 1 for g in gs)}
                for p in PROBLEMS}

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "counts": self.counts(),
                "near_bits": NEAR_BITS, "near_mad": NEAR_MAD,
                "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataDoctor:
        groups = tuple(DuplicateGroup(str(g["kind"]), tuple(
            (str(f["path"]), str(f["class"]), str(f["split"])) for f in g["files"]))
            for g in d.get("groups", ()))
        return cls(images=int(d.get("images", 0)), groups=groups)


def examine(classes: Sequence[str], train: Sequence[Sample], val: Sequence[Sample],
            fingerprints: Mapping[str, tuple[str, str]]) -> DataDoctor:
    """Group the copies among ``train`` and ``val`` (see the module docstring)."""
    files = [(s.path, classes[s.label], "train") for s in train]
    files += [(s.path, classes[s.label], "val") for s in val]
    files = [f for f in files if f[0] in fingerprints]
    parent = list(range(len(files)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    exact: dict[str, int] = {}
    for i, (path, _, _) in enumerate(files):
        first = exact.setdefault(fingerprints[path][0], i)
        if first != i:
            parent[find(i)] = find(first)
    near_pairs = _confirmed(files, fingerprints, [i for i in range(len(files)) if find(i) == i])
    for i, j in near_pairs:
        parent[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    for i in range(len(files)):
        members.setdefault(find(i), []).append(i)
    groups = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        shas = {fingerprints[files[i][0]][0] for i in idx}
        groups.append(DuplicateGroup("exact" if len(shas) == 1 else "near",
                                     tuple(files[i] for i in sorted(idx))))
    order = {p: k for k, p in enumerate(PROBLEMS)}
    groups.sort(key=lambda g: (order[g.problem], g.files[0][0]))
    return DataDoctor(images=len(files), groups=tuple(groups))


def _confirmed(files: list[tuple[str, str, str]], fingerprints: Mapping[str, tuple[str, str]],
               heads: list[int]) -> list[tuple[int, int]]:
    """Pairs among ``heads`` (one file per exact group) whose hashes are within ``NEAR_BITS``
    and whose thumbnails are within ``NEAR_MAD``."""
    hashes = np.array([int(fingerprints[files[i][0]][1] or "0", 16) for i in heads],
                      dtype=np.uint64)
    n = len(hashes)
    rows = max(1, _BLOCK_ELEMENTS // max(1, n))
    pairs = []
    for start in range(0, n, rows):
        d = np.bitwise_count(hashes[start:start + rows, None] ^ hashes[None, :])
        ii, jj = np.nonzero(d <= NEAR_BITS)
        keep = ii + start < jj
        pairs += [(heads[a], heads[b]) for a, b in zip(ii[keep] + start, jj[keep], strict=True)]
    thumbs: dict[int, np.ndarray | None] = {}

    def thumb(i: int) -> np.ndarray | None:
        if i not in thumbs:
            thumbs[i] = _thumbnail(files[i][0])
        return thumbs[i]

    out = []
    for i, j in pairs:
        a, b = thumb(i), thumb(j)
        if a is not None and b is not None and float(np.abs(a - b).mean()) <= NEAR_MAD:
            out.append((i, j))
    return out


def _thumbnail(path: str) -> np.ndarray | None:
    try:
        image = decode_image(path, draft_size=4 * _THUMB).image
    except ImageLoadError:
        return None  # changed since the scan: not a duplicate we can show
    small = image.convert("L").resize((_THUMB, _THUMB), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)
