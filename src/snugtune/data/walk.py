"""Find the class folders of an image tree and the candidate files in each.

Layouts:

* ``root/<class>/**/<file>``: files in nested folders belong to the top-level class folder;
* ``root/train/<class>/**`` and ``root/val/<class>/**`` (``val``, ``valid`` or
  ``validation``): an explicit validation split. Other folders beside them (e.g. ``test/``)
  are not scanned and are reported once.

What is *not* a candidate, and how it is reported:

* hidden entries (``.DS_Store``, ``._IMG_1.jpg``, ``.ipynb_checkpoints/``) inside class folders
  are listed as skipped (``hidden file`` / ``hidden folder``), so the report accounts for every
  entry of a class folder; hidden entries directly in the root are ignored silently (``.git``,
  caches);
* files directly in the root (or in ``train/``, ``val/``): images are listed as skipped
  (``not inside a class folder``); other files (README, LICENSE, CSV) are ignored silently;
* files whose extension is not an image extension are listed (``not an image file (.txt)``);
  extensionless or odd files are not sniffed: real folders hold many such files;
* ``__MACOSX`` folders (zip metadata) are not classes and are listed once;
* directory symlinks are followed once: a link back to an ancestor is a ``symlink loop``,
  a second path to an already scanned folder a ``duplicate folder``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from snugtune.data.images import IMAGE_EXTENSIONS
from snugtune.data.results import FileIssue
from snugtune.errors import DataError

__all__ = ["SplitTree", "find_splits", "walk_split"]

log = logging.getLogger(__name__)

VAL_NAMES = ("val", "valid", "validation")


@dataclass
class SplitTree:
    """Candidate files of one split (the whole root, or ``train/`` or ``val/``).

    Attributes:
        root: the split's folder.
        classes: class name -> candidate file paths (absolute, sorted).
        issues: entries skipped while walking.
    """

    root: str
    classes: dict[str, list[str]] = field(default_factory=dict)
    issues: list[FileIssue] = field(default_factory=list)


def find_splits(root: Path) -> tuple[Path, Path | None, list[FileIssue]]:
    """Return (train folder, val folder or None, folders not scanned) for ``root``.

    Raises:
        DataError: when ``root`` is missing or not a folder.
    """
    if not root.exists():
        raise DataError(
            f"Image folder {str(root)!r} does not exist; pass a folder holding one "
            "sub-folder of images per class (DATA/<class>/*.jpg)."
        )
    if not root.is_dir():
        raise DataError(
            f"Image folder {str(root)!r} is a file, not a folder; pass the folder that holds "
            "one sub-folder per class."
        )
    names = {p.name: p for p in _subdirs(root)}
    val = next((names[n] for n in VAL_NAMES if n in names), None)
    if "train" not in names or val is None:
        return root, None, []
    ignored = [
        FileIssue(str(p), "not scanned: a train/ + val/ layout uses only those two folders")
        for n, p in sorted(names.items())
        if p not in (names["train"], val)
    ]
    return names["train"], val, ignored


def walk_split(split_root: Path, visited: dict[tuple[int, int], str]) -> SplitTree:
    """Collect the class folders of ``split_root`` and their candidate image files.

    Args:
        split_root: folder whose sub-folders are classes.
        visited: (st_dev, st_ino) -> path of folders already walked, shared across splits
            so that a folder reached twice through symlinks is scanned once.
    """
    tree = SplitTree(root=str(split_root))
    for entry in _entries(split_root, tree.issues):
        path = os.path.join(split_root, entry.name)
        if entry.name.startswith("."):
            log.debug("ignoring hidden entry %s", path)
        elif _is_dir(entry) and entry.name == "__MACOSX":
            tree.issues.append(FileIssue(path, "macOS zip metadata folder, not a class"))
        elif _is_dir(entry):
            files: list[str] = []
            _walk(path, visited, (), files, tree.issues)
            tree.classes[entry.name] = files
        elif _ext(entry.name) in IMAGE_EXTENSIONS:
            tree.issues.append(FileIssue(path, "not inside a class folder"))
        else:
            log.debug("ignoring non-image file %s", path)
    return tree


def _walk(
    folder: str,
    visited: dict[tuple[int, int], str],
    ancestors: tuple[tuple[int, int], ...],
    files: list[str],
    issues: list[FileIssue],
) -> None:
    """Depth-first walk of one class folder, following directory symlinks once."""
    try:
        st = os.stat(folder)
    except OSError as e:
        issues.append(FileIssue(folder, _os_reason(e, "folder")))
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        issues.append(FileIssue(folder, "symlink loop: links back to a parent folder"))
        return
    if key in visited:
        issues.append(FileIssue(folder, f"duplicate folder: already scanned as {visited[key]}"))
        return
    visited[key] = folder
    for entry in _entries(Path(folder), issues):
        path = os.path.join(folder, entry.name)
        if entry.name.startswith("."):
            kind = "folder" if _is_dir(entry) else "file"
            issues.append(FileIssue(path, f"hidden {kind}"))
        elif _is_dir(entry):
            _walk(path, visited, (*ancestors, key), files, issues)
        elif _ext(entry.name) in IMAGE_EXTENSIONS or _is_dangling(entry):
            files.append(path)  # dangling links go on so the checker names the reason
        else:
            ext = _ext(entry.name) or "no extension"
            issues.append(FileIssue(path, f"not an image file ({ext})"))


def _entries(folder: Path, issues: list[FileIssue]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        issues.append(FileIssue(str(folder), _os_reason(e, "folder")))
        return []


def _subdirs(folder: Path) -> list[Path]:
    return [Path(e.path) for e in _entries(folder, []) if _is_dir(e) and not e.name.startswith(".")]


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for loops and dangling links
    except OSError:
        return False


def _is_dangling(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink() and not entry.is_file()
    except OSError:
        return True


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _os_reason(e: OSError, what: str) -> str:
    if isinstance(e, PermissionError):
        return f"unreadable {what} (permission denied)"
    return f"unreadable {what} ({e.strerror or e})"
