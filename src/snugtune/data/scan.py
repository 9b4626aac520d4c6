"""Scan a class-folder image tree: classes, usable files, and every file skipped or converted.

Each candidate file is checked by decoding it with the same ``decode_image`` that training
uses (JPEGs at 1/8 scale via draft mode, which still entropy-decodes the whole file and so
catches truncation), in a thread pool (Pillow releases the GIL while decoding). A file is
usable when it decodes, is within the pixel limit and is at least ``MIN_SIDE_PX`` pixels on
each side (a 1x1 tracking pixel or icon carries nothing to learn from). Per-file results are
cached in a JSON file keyed by (size, mtime, mode, inode): a rescan only decodes new or
changed files. Which class a file belongs to is decided by the walk (``walk.py``): the class
folder it really lives in; symlinks across classes and files reachable from two classes are
reported, not used. The check also records each usable file's SHA-256 and perceptual hash,
from which ``data.doctor`` finds duplicates.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import imagehash
import PIL

from snugtune.data.images import decode_image, pixel_limit
from snugtune.data.results import FileIssue, Sample, ScanResult
from snugtune.data.scan_cache import FileCheck, ScanCache
from snugtune.data.walk import SplitTree, find_splits, walk_splits
from snugtune.errors import DataError, ImageLoadError

__all__ = ["MIN_SIDE_PX", "SCAN_DRAFT_PX", "scan_folder"]

log = logging.getLogger(__name__)

MIN_SIDE_PX = 4  # smaller images (1x1 pixels, favicons) are skipped as "too small"
SCAN_DRAFT_PX = 32  # JPEG check decodes at the smallest DCT scale with both sides >= this

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Split:
    """Checked files of one split: usable samples, skipped and converted files."""

    samples: list[Sample]
    skipped: list[FileIssue]
    converted: list[FileIssue]
    sizes: list[tuple[int, int]]
    unusable: dict[str, list[str]]  # class -> reasons, for classes left with no usable image
    prints: dict[str, tuple[str, str]]  # path -> (sha256, phash) of usable files


def scan_folder(
    root: str | Path,
    *,
    workers: int | None = None,
    cache_path: Path | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan ``root`` and return its classes, usable images and every problem file.

    Args:
        root: ``root/<class>/**/<image>``, or ``root/train/<class>/..`` plus
            ``root/val/<class>/..`` (``valid/`` and ``validation/`` also accepted).
        workers: threads decoding files; None picks ``min(8, cpu count + 2)``.
        cache_path: JSON file for per-file results, reused for files whose size, mtime,
            mode and inode are unchanged; created (atomically) if missing.
        progress: called as ``progress(done, total)`` while files are checked.

    Raises:
        DataError: root missing, fewer than two class folders, a class (of the training
            tree) left with no usable image, or a val/ class that train/ lacks.
    """
    t0 = time.perf_counter()
    root_path = Path(os.path.abspath(root))
    train_dir, val_dir, ignored = find_splits(root_path)
    trees = walk_splits([train_dir] if val_dir is None else [train_dir, val_dir])
    classes = _classes(root_path, trees)
    cache = ScanCache.load(cache_path, _cache_settings())
    checks = _check_all(
        [f for t in trees for fs in t.classes.values() for f in fs], cache, workers, progress
    )
    cache.save(cache_path)
    splits = [_assemble(t, classes, checks) for t in trees]
    _require_usable(classes, splits[0], train_dir)
    result = _result(root_path, classes, splits, ignored, trees)
    log.info(
        "scanned %s: %d classes, %d usable images, %d skipped, %d converted (%d decoded, "
        "%d from cache) in %.2f s", root_path, len(classes),
        len(result.samples) + len(result.val_samples or ()), len(result.skipped),
        len(result.converted), cache.misses, cache.hits, time.perf_counter() - t0,
    )  # fmt: skip
    return result


def _cache_settings() -> dict[str, object]:
    """What decides usability besides the file itself: a change invalidates the cache."""
    return {
        "pillow": PIL.__version__,
        "pixel_limit": pixel_limit(),
        "min_side_px": MIN_SIDE_PX,
        "draft_px": SCAN_DRAFT_PX,
        "fingerprints": f"sha256, imagehash {imagehash.__version__} phash",
    }


def default_scan_workers() -> int:
    """Threads for scanning: one per core. Measured on 2 cores (files in the page cache), 1 /
    2 / 4 threads: 600 JPEGs of 1024x768 in 0.95 / 0.50 / 0.6-0.87 s (decoding releases the
    GIL); Animal-MNIST's 10,000 small PNGs in 4.3 / 6.1 / 7.3 s (the perceptual hash and the
    per-file Python hold it). More threads than cores lost in both."""
    return min(8, os.cpu_count() or 1)


def check_file(path: str) -> FileCheck:
    """Decide whether one file is usable (uncached); never raises."""
    try:
        st = os.stat(path)
    except OSError as e:
        return FileCheck(ok=False, reason=_stat_reason(path, e))
    if not stat.S_ISREG(st.st_mode):
        return FileCheck(ok=False, reason="not a regular file")
    if st.st_size == 0:
        return FileCheck(ok=False, reason="zero-byte file")
    try:
        loaded = decode_image(path, draft_size=SCAN_DRAFT_PX)
    except ImageLoadError as e:
        return FileCheck(ok=False, reason=e.reason)
    except Exception as e:  # belt and braces: a scan must never crash on a file
        return FileCheck(ok=False, reason=f"unreadable ({type(e).__name__}: {e})")
    w, h = loaded.size
    if min(w, h) < MIN_SIDE_PX:
        return FileCheck(ok=False, reason=f"too small: {w}x{h} pixels (minimum {MIN_SIDE_PX})")
    try:
        with open(path, "rb") as f:  # just decoded: the bytes come from the page cache
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        return FileCheck(ok=False, reason=_stat_reason(path, e))
    return FileCheck(ok=True, reason="; ".join(loaded.conversions), size=(w, h), sha256=digest,
                     phash=str(imagehash.phash(loaded.image)))


def _stat_reason(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(e, FileNotFoundError):
        return "broken symlink" if os.path.islink(path) else "file vanished during scan"
    if isinstance(e, PermissionError):
        return "unreadable (permission denied)"
    return f"unreadable ({e.strerror or e})"


def _check_all(
    files: list[str], cache: ScanCache, workers: int | None, progress: Progress | None
) -> dict[str, FileCheck]:
    """Check every file, from the cache where its stat key is unchanged, else in threads."""
    results: dict[str, FileCheck] = {}
    todo: list[str] = []
    for f in files:
        hit = cache.get(f)
        if hit is not None:
            results[f] = hit
        else:
            todo.append(f)
    total, done = len(files), len(results)
    if progress:
        progress(done, total)
    n = workers if workers is not None else default_scan_workers()
    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="snugtune-scan") as ex:
        futures = {ex.submit(check_file, f): f for f in todo}
        for fut in as_completed(futures):
            f = futures[fut]
            results[f] = fut.result()
            cache.put(f, results[f])
            done += 1
            if progress:
                progress(done, total)
    return results


def _classes(root: Path, trees: list[SplitTree]) -> tuple[str, ...]:
    """Class names from the training tree; val/ may not add classes."""
    classes = tuple(sorted(trees[0].classes))
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


def _assemble(tree: SplitTree, classes: tuple[str, ...], checks: dict[str, FileCheck]) -> _Split:
    out = _Split([], list(tree.issues), [], [], {}, {})
    for label, name in enumerate(classes):
        reasons, usable = list(tree.excluded.get(name, ())), 0
        for f in tree.classes.get(name, []):
            c = checks[f]
            if not c.ok:
                out.skipped.append(FileIssue(f, c.reason))
                reasons.append(c.reason)
                continue
            usable += 1
            out.samples.append(Sample(f, label))
            out.sizes.append(c.size)
            out.prints[f] = (c.sha256, c.phash)
            if c.reason:
                out.converted.append(FileIssue(f, c.reason))
        if not usable:
            out.unusable[name] = reasons
    return out


def _require_usable(classes: tuple[str, ...], train: _Split, train_dir: Path) -> None:
    if not train.unusable:
        return
    parts = []
    for name, reasons in train.unusable.items():
        why = ", ".join(f"{n} {r}" for r, n in Counter(reasons).most_common(3))
        parts.append(
            f"{name!r} ({train_dir / name}: {len(reasons)} files, none usable"
            + (f": {why}" if why else "")
            + ")"
        )
    raise DataError(
        f"{len(parts)} class(es) have no usable image: "
        + "; ".join(parts)
        + ". Add readable images to each class folder or remove the folder."
    )


def _result(
    root: Path,
    classes: tuple[str, ...],
    splits: list[_Split],
    ignored: list[FileIssue],
    trees: list[SplitTree],
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
        fingerprints={p: f for sp in splits for p, f in sp.prints.items()},
    )
