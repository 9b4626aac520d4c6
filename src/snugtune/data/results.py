"""The scan's result types: frozen, printable, JSON round-trippable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataBundle", "FileIssue", "Sample", "ScanResult"]


@dataclass(frozen=True)
class Sample:
    """One usable image.

    Attributes:
        path: absolute path of the file (symlinks are kept as the user named them).
        label: index into ``ScanResult.classes``.
    """

    path: str
    label: int


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
        fingerprints: path -> (SHA-256 of the bytes, perceptual hash) of every usable image.
    """

    root: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    val_samples: tuple[Sample, ...] | None
    skipped: tuple[FileIssue, ...]
    converted: tuple[FileIssue, ...]
    median_size: tuple[int, int]
    fingerprints: Mapping[str, tuple[str, str]] = field(default_factory=dict)

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
            "samples": [[s.path, s.label] for s in self.samples],
            "val_samples": None
            if self.val_samples is None
            else [[s.path, s.label] for s in self.val_samples],
            "skipped": [{"path": i.path, "reason": i.reason} for i in self.skipped],
            "converted": [{"path": i.path, "reason": i.reason} for i in self.converted],
            "fingerprints": {p: list(f) for p, f in self.fingerprints.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanResult:
        """Rebuild a result from ``to_dict`` output."""
        val = d.get("val_samples")
        return cls(
            root=d["root"],
            classes=tuple(d["classes"]),
            samples=tuple(Sample(p, int(lbl)) for p, lbl in d["samples"]),
            val_samples=None if val is None else tuple(Sample(p, int(lbl)) for p, lbl in val),
            skipped=tuple(FileIssue(i["path"], i["reason"]) for i in d["skipped"]),
            converted=tuple(FileIssue(i["path"], i["reason"]) for i in d["converted"]),
            median_size=(int(d["median_size"][0]), int(d["median_size"][1])),
            fingerprints={p: (str(f[0]), str(f[1])) for p, f in d.get("fingerprints", {}).items()},
        )


def _counts(classes: tuple[str, ...], samples: tuple[Sample, ...]) -> dict[str, int]:
    c = Counter(s.label for s in samples)
    return {name: c.get(i, 0) for i, name in enumerate(classes)}


@dataclass(frozen=True)
class DataBundle:
    """A scanned folder split into train and validation samples."""

    scan: ScanResult
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.scan.classes

    def train_counts(self) -> list[int]:
        """Training images per class."""
        counts = [0] * len(self.classes)
        for s in self.train:
            counts[s.label] += 1
        return counts
