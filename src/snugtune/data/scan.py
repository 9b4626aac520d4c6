"""Scan a class-folder image tree: classes, usable files, and every file skipped or converted.

Which class a file belongs to is decided by the walk (``walk.py``): the class folder it really
lives in; symlinks across classes and files reachable from two classes are reported, not used.
With a labels file (``--labels``, or ``metadata.csv`` / ``metadata.jsonl`` in the folder), the
file's rows decide instead (``labels_file.py``), bad rows reported as skipped files.
Whether a file is usable, and its fingerprints, come from ``check.py``: from the data index
shared by every command (``store.DataIndex``) where the file is unchanged, else by decoding it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from snugtune.data.check import MIN_SIDE_PX, FileCheck, Progress, check_files
from snugtune.data.labels_file import LabelledTree, LabelsSpec, read_labels
from snugtune.data.results import FileIssue, Sample, ScanResult
from snugtune.data.walk import SplitTree, find_splits, walk_splits
from snugtune.errors import DataError
from snugtune.store import DataIndex

__all__ = ["MIN_SIDE_PX", "scan_folder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Split:
    """Checked files of one split: usable samples, skipped and converted files."""

    samples: list[Sample]
    skipped: list[FileIssue]
    converted: list[FileIssue]
    sizes: list[tuple[int, int]]
    unusable: dict[str, list[str]]  # class -> reasons, for classes left with no usable image


def scan_folder(
    root: str | Path,
    *,
    labels: LabelsSpec | None = None,
    workers: int | None = None,
    index: DataIndex | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan ``root`` and return its classes, usable images and every problem file.

    Args:
        root: ``root/<class>/**/<image>``, or ``root/train/<class>/..`` plus
            ``root/val/<class>/..`` (``valid/`` and ``validation/`` also accepted), or images
            that a labels file lists.
        labels: the labels file and its columns; None (or its ``file`` None): ``metadata.csv``
            or ``metadata.jsonl`` in ``root`` if there is one, else the class folders.
        workers: threads decoding files; None: one per core.
        index: the data index to reuse and extend; None opens the one in ``cache_dir``.
        cache_dir: the cache folder (None: ``$SNUGTUNE_CACHE_DIR`` or ``~/.cache/snugtune``).
        progress: called as ``progress(done, total)`` while files are checked.

    Raises:
        DataError: root missing, fewer than two classes, a class (of the training tree) left
            with no usable image, a val/ class that train/ lacks, or a labels file that cannot
            be used as a whole (see ``labels_file.read_labels``).
    """
    t0 = time.perf_counter()
    root_path = Path(os.path.abspath(root))
    labelled = read_labels(root_path, labels or LabelsSpec()) if root_path.is_dir() else None
    if labelled is None:
        train_dir, val_dir, ignored = find_splits(root_path)
        trees = walk_splits([train_dir] if val_dir is None else [train_dir, val_dir])
    else:
        train_dir, ignored, trees = root_path, [], [labelled.tree]
    classes = _classes(root_path, trees, labelled)
    files = [f for t in trees for name in sorted(t.classes) for f in t.classes[name]]
    with contextlib.nullcontext(index) if index is not None else DataIndex.at(cache_dir) as idx:
        checks, counts = check_files(files, idx, root=str(root_path), workers=workers,
                                     progress=progress)
    found = iter(checks)
    splits = [_assemble(t, classes, found) for t in trees]
    _require_usable(classes, splits[0], train_dir, labelled)
    result = _result(root_path, classes, splits, ignored, trees, labelled)
    log.info(
        "scanned %s: %d classes, %d usable images, %d skipped, %d converted (%d decoded, "
        "%d from the data index) in %.2f s", root_path, len(classes),
        len(result.samples) + len(result.val_samples or ()), len(result.skipped),
        len(result.converted), counts.decoded, counts.from_index, time.perf_counter() - t0,
    )  # fmt: skip
    return result


def _classes(root: Path, trees: list[SplitTree], labelled: LabelledTree | None,
             ) -> tuple[str, ...]:
    """Class names from the training tree; val/ may not add classes."""
    classes = tuple(sorted(trees[0].classes))
    if len(classes) < 2 and labelled is not None:
        issues = labelled.tree.issues
        first = (f" ({len(issues)} rows or files skipped, first: {issues[0].reason})"
                 if issues else "")
        raise DataError(
            f"Found {len(classes)} label(s) {list(classes)} in {labelled.file!r}{first}; need at "
            "least 2 classes. Give each image its class in the label column (--label-column)."
        )
    if len(classes) < 2:
        loose = sum(1 for i in trees[0].issues if i.reason == "not inside a class folder")
        hint = f" ({loose} images lie directly in it)" if loose else ""
        raise DataError(
            f"Found {len(classes)} class folder(s) {list(classes)} in {trees[0].root!r}{hint}; "
            "need at least 2. Put each class's images in its own sub-folder: "
            f"{root}/<class>/*.jpg."
        )
    if len(trees) > 1:
        extra = sorted(set(trees[1].classes) - set(classes))
        if extra:
            raise DataError(
                f"Validation folder {trees[1].root!r} has classes {extra} that the training "
                f"folder {trees[0].root!r} lacks; rename them to match or add them to train/."
            )
    return classes


def _assemble(tree: SplitTree, classes: tuple[str, ...], checks: Iterator[FileCheck]) -> _Split:
    """The split's samples from its files' checks (``checks`` in the order the files were
    listed: the tree's classes sorted by name, each in walk order)."""
    by_name: dict[str, list[tuple[str, FileCheck]]] = {
        name: [(f, next(checks)) for f in tree.classes[name]] for name in sorted(tree.classes)}
    out = _Split([], list(tree.issues), [], [], {})
    for label, name in enumerate(classes):
        reasons, usable = list(tree.excluded.get(name, ())), 0
        for f, c in by_name.get(name, []):
            if not c.ok:
                out.skipped.append(FileIssue(f, c.reason))
                reasons.append(c.reason)
                continue
            usable += 1
            out.samples.append(Sample(f, label, c.sha256, c.phash))
            out.sizes.append(c.size)
            if c.reason:
                out.converted.append(FileIssue(f, c.reason))
        if not usable:
            out.unusable[name] = reasons
    return out


def _require_usable(classes: tuple[str, ...], train: _Split, train_dir: Path,
                    labelled: LabelledTree | None) -> None:
    if not train.unusable:
        return
    parts = []
    for name, reasons in train.unusable.items():
        why = ", ".join(f"{n} {r}" for r, n in Counter(reasons).most_common(3))
        where = f"{train_dir / name}: " if labelled is None else ""
        parts.append(
            f"{name!r} ({where}{len(reasons)} files, none usable"
            + (f": {why}" if why else "")
            + ")"
        )
    fix = ("Add readable images to each class folder or remove the folder." if labelled is None
           else f"Give each class readable images in {labelled.file!r} or remove its rows.")
    raise DataError(f"{len(parts)} class(es) have no usable image: {'; '.join(parts)}. {fix}")


def _result(
    root: Path,
    classes: tuple[str, ...],
    splits: list[_Split],
    ignored: list[FileIssue],
    trees: list[SplitTree],
    labelled: LabelledTree | None,
) -> ScanResult:
    for tree, split in zip(trees[1:], splits[1:], strict=True):
        for name in split.unusable:
            log.warning("validation folder %s has no usable image of class %r", tree.root, name)
    sizes = [s for sp in splits for s in sp.sizes]
    return ScanResult(
        root=str(root),
        classes=classes,
        samples=tuple(splits[0].samples),
        val_samples=tuple(splits[1].samples) if len(splits) > 1 else None,
        skipped=tuple(ignored + [i for sp in splits for i in sp.skipped]),
        converted=tuple(i for sp in splits for i in sp.converted),
        median_size=(
            int(statistics.median_low(w for w, _ in sizes)),
            int(statistics.median_low(h for _, h in sizes)),
        ),
        labels_file=labelled.file if labelled else None,
        labels_sha256=labelled.sha256 if labelled else "",
    )
