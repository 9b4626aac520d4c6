"""The scan's result types: frozen, printable, JSON round-trippable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Copies", "DataBundle", "FileIssue", "Sample", "ScanResult"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One usable image.

    Attributes:
        path: absolute path of the file (symlinks are kept as the user named them).
        label: index into ``ScanResult.classes``.
        sha256: SHA-256 digest of the file's bytes when the scan checked it (32 bytes; b""
            when not known, e.g. files named to ``predict``): the key of its cached records.
        phash: perceptual hash of its pixels (``imagehash.phash``, 64 bits; 0 when not
            known): near copies are found from it (``data.doctor``).
    """

    path: str
    label: int
    sha256: bytes = field(default=b"", repr=False)
    phash: int = field(default=0, repr=False)


@dataclass(frozen=True)
class FileIssue:
    """A file (or folder) that was skipped or converted, and why.

    Attributes:
        path: absolute path.
        reason: short human-readable reason, e.g. ``"truncated JPEG"`` or
            ``"CMYK converted to RGB"``; several conversions are joined with ``"; "``.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    """What a folder scan found.

    Attributes:
        root: absolute path of the scanned folder.
        classes: sorted class folder names; ``Sample.label`` indexes this.
        samples: usable images, sorted by (label, path); the training pool when
            ``val_samples`` is None, else the explicit ``train/`` tree.
        val_samples: usable images of an explicit ``val/`` (or ``valid/``, ``validation/``)
            tree, or None when the folder has no such split.
        skipped: files and folders not used, with the reason.
        converted: usable files whose pixels were converted (mode, bit depth, alpha,
            EXIF orientation, first frame of several), with what was done.
        median_size: median (width, height) of the usable images, upright, full size.
        labels_file: absolute path of the labels file the classes come from (``--labels`` or
            the folder's ``metadata.csv`` / ``.jsonl``); None: class folders.
        labels_sha256: hex SHA-256 of that file's bytes ("" without one).
    """

    root: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    val_samples: tuple[Sample, ...] | None
    skipped: tuple[FileIssue, ...]
    converted: tuple[FileIssue, ...]
    median_size: tuple[int, int]
    labels_file: str | None = None
    labels_sha256: str = ""

    def class_counts(self) -> dict[str, int]:
        """Number of images per class in ``samples`` (every class listed, in label order)."""
        return _counts(self.classes, self.samples)

    def val_class_counts(self) -> dict[str, int] | None:
        """Number of images per class in ``val_samples``, or None without an explicit split."""
        return None if self.val_samples is None else _counts(self.classes, self.val_samples)

    def reason_counts(self) -> dict[str, dict[str, int]]:
        """How many files were skipped / converted for each reason (for short reports)."""
        return {
            "skipped": dict(Counter(i.reason for i in self.skipped).most_common()),
            "converted": dict(Counter(i.reason for i in self.converted).most_common()),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists and plain types only); inverse of ``from_dict``."""
        return {
            "root": self.root,
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "val_class_counts": self.val_class_counts(),
            "median_size": list(self.median_size),
            "samples": [_row(s) for s in self.samples],
            "val_samples": None if self.val_samples is None else [_row(s) for s in self.val_samples],
            "skipped": [{"path": i.path, "reason": i.reason} for i in self.skipped],
            "converted": [{"path": i.path, "reason": i.reason} for i in self.converted],
            "labels_file": self.labels_file,
            "labels_sha256": self.labels_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanResult:
        """Rebuild a result from ``to_dict`` output."""
        val = d.get("val_samples")
        return cls(
            root=d["root"],
            classes=tuple(d["classes"]),
            samples=tuple(_sample(r) for r in d["samples"]),
            val_samples=None if val is None else tuple(_sample(r) for r in val),
            skipped=tuple(FileIssue(i["path"], i["reason"]) for i in d["skipped"]),
            converted=tuple(FileIssue(i["path"], i["reason"]) for i in d["converted"]),
            median_size=(int(d["median_size"][0]), int(d["median_size"][1])),
            labels_file=d.get("labels_file"),
            labels_sha256=str(d.get("labels_sha256") or ""),
        )


def _row(s: Sample) -> list[Any]:
    """A sample as JSON: [path, label, sha256 hex, phash hex]."""
    return [s.path, s.label, s.sha256.hex(), f"{s.phash:016x}"]


def _sample(row: list[Any]) -> Sample:
    sha, phash = (row[2], row[3]) if len(row) >= 4 else ("", "0")
    return Sample(str(row[0]), int(row[1]), bytes.fromhex(sha), int(phash, 16))


def _counts(classes: tuple[str, ...], samples: tuple[Sample, ...]) -> dict[str, int]:
    c = Counter(s.label for s in samples)
    return {name: c.get(i, 0) for i, name in enumerate(classes)}


@dataclass(frozen=True)
class Copies:
    """Groups of copies of one picture among N samples (``data.doctor.find_copies``): each
    group's kind (``exact`` or ``near``) and its members' positions."""

    kinds: tuple[str, ...] = ()
    members: tuple[tuple[int, ...], ...] = ()

    def __len__(self) -> int:
        return len(self.members)

    def group_of(self, n: int) -> np.ndarray:
        """(n,) int64: the group of each of the first ``n`` samples, -1 for none."""
        out = np.full(n, -1, dtype=np.int64)
        for g, idx in enumerate(self.members):
            out[[i for i in idx if i < n]] = g
        return out

    def moved(self, old: Sequence[Sample], new: Sequence[Sample]) -> Copies:
        """The same groups as positions in ``new`` (the same samples, reordered: members
        that ``new`` lacks are dropped, and groups left with one member)."""
        wanted = {old[i].path: None for idx in self.members for i in idx}
        where = {s.path: k for k, s in enumerate(new) if s.path in wanted}
        kinds, members = [], []
        for kind, idx in zip(self.kinds, self.members, strict=True):
            moved = tuple(sorted(where[old[i].path] for i in idx if old[i].path in where))
            if len(moved) > 1:
                kinds.append(kind)
                members.append(moved)
        return Copies(tuple(kinds), tuple(members))


@dataclass(frozen=True)
class DataBundle:
    """A scanned folder split into train and validation samples, with the groups of copies
    among ``train + val`` and how many of them the split kept on one side."""

    scan: ScanResult
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    copies: Copies = field(default_factory=Copies)
    kept_together: int = 0

    @property
    def classes(self) -> tuple[str, ...]:
        return self.scan.classes

    def train_counts(self) -> list[int]:
        """Training images per class."""
        counts = [0] * len(self.classes)
        for s in self.train:
            counts[s.label] += 1
        return counts
