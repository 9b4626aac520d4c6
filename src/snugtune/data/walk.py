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
* a file's class is the class folder it lives in, never the path the walk reached it by:
  the real paths (``os.path.realpath``) of every class folder of every split are known before
  walking (and so which folders hold class folders: the root, ``train/``, ``val/``), and
  symlinks are judged by where they really lead:

  - a directory symlink into another class's folder (the folder itself or one inside it)
    is not followed (``link into class folder 'b': not followed ...``); nor is one to a
    folder that holds class folders (the root, ``train/``, an ancestor): ``link to a
    folder holding class folders 'a', 'b': not followed ...``;
  - a directory symlink back to a parent folder is a ``symlink loop``; one to another
    folder of its own class, or a second path to a folder already scanned for this class,
    a ``duplicate folder``; links to folders outside every class folder (other disks) are
    followed;
  - a file symlink to a file of another class folder is not counted for this class
    (``links to a file of class 'b': not counted for 'a' ...``);
  - a file outside every class folder reachable from two classes goes to neither: each path
    is listed (``conflicting labels: reachable from classes a, b``); two paths to one file
    from one class count once, the other is a ``duplicate path`` (the path that needs no
    symlink is kept, else the first walked; ``train/`` before ``val/``);
  - a plain folder that is another class's folder (``DATA/b -> a/sub``) is scanned as that
    class only (``folder of class 'b' (DATA/b links here): not scanned as class 'a'``).

  In a ``train/`` + ``val/`` layout a class folder of the other split is named with it
  (``'val/b'``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from snugtune.data.images import IMAGE_EXTENSIONS
from snugtune.data.results import FileIssue
from snugtune.errors import DataError

__all__ = ["SplitTree", "find_splits", "walk_splits"]

log = logging.getLogger(__name__)

VAL_NAMES = ("val", "valid", "validation")
_WHY = "(a file's class is the folder it lives in)"
_LOOP = "symlink loop: links back to a parent folder"


@dataclass
class SplitTree:
    """Candidate files of one split (the whole root, or ``train/`` or ``val/``).

    Attributes:
        root: the split's folder.
        classes: class name -> candidate file paths (absolute, in walk order).
        issues: entries skipped while walking.
        excluded: class name -> short reasons for the files the walk kept out of that class
            (links to another class's files, conflicting labels, duplicate paths), so that
            a class left with no usable image can say why.
    """

    root: str
    classes: dict[str, list[str]] = field(default_factory=dict)
    issues: list[FileIssue] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)


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


def walk_splits(split_roots: list[Path]) -> list[SplitTree]:
    """Collect the class folders of each split and their candidate image files.

    The real paths of every class folder (of all splits) are known before any is walked, so
    a file's class never depends on the path the walk reached it by: see the module docstring.

    Args:
        split_roots: folders whose sub-folders are classes: the data root, or ``train/``
            then ``val/``.
    """
    trees = [SplitTree(root=str(r)) for r in split_roots]
    layout = _Layout(splits=[r.name for r in split_roots])
    for i, (split_root, tree) in enumerate(zip(split_roots, trees, strict=True)):
        for name, path in _class_entries(split_root, tree.issues):
            tree.classes[name] = []
            real = os.path.realpath(path)
            first = layout.by_real.get(real)
            if first is not None:  # e.g. DATA/b -> a: the folder is scanned once, as a
                tree.issues.append(
                    FileIssue(path, f"duplicate folder: already scanned as {first.path}")
                )
                continue
            layout.by_real[real] = _ClassDir(i, name, path, real)
    found: list[tuple[_ClassDir, _Found]] = []
    visited: dict[str, dict[tuple[int, int], str]] = {}  # per class name, across splits
    for home in layout.by_real.values():
        walk = _ClassWalk(layout, home, visited.setdefault(home.name, {}), trees[home.split])
        walk.folder(home.path, home.real, False, ())
        found += [(home, f) for f in walk.found]
    _assign(found, trees)
    return trees


def _class_entries(split_root: Path, issues: list[FileIssue]) -> list[tuple[str, str]]:
    """(name, path) of the class folders of a split; reports what else lies in it."""
    classes = []
    for entry in _entries(split_root, issues):
        path = os.path.join(split_root, entry.name)
        if entry.name.startswith("."):
            log.debug("ignoring hidden entry %s", path)
        elif _is_dir(entry) and entry.name == "__MACOSX":
            issues.append(FileIssue(path, "macOS zip metadata folder, not a class"))
        elif _is_dir(entry):
            classes.append((entry.name, path))
        elif _ext(entry.name) in IMAGE_EXTENSIONS:
            issues.append(FileIssue(path, "not inside a class folder"))
        else:
            log.debug("ignoring non-image file %s", path)
    return classes


@dataclass(frozen=True)
class _ClassDir:
    """One class folder: its split (index), class name, path as named, and real path."""

    split: int
    name: str
    path: str
    real: str


@dataclass(frozen=True, slots=True)
class _Found:
    """A candidate file: its path, real path (None for a dangling link or a loop), and
    whether it was reached without any symlink from its class folder."""

    path: str
    real: str | None
    direct: bool


@dataclass
class _Layout:
    """Real paths of the class folders of every split: which class a real path belongs to."""

    splits: list[str]  # split folder names ("train", "val"), to name a class of another split
    by_real: dict[str, _ClassDir] = field(default_factory=dict)

    def owner(self, real: str) -> _ClassDir | None:
        """The innermost class folder holding ``real`` (or being it), or None."""
        path = real
        while True:
            found = self.by_real.get(path)
            if found is not None:
                return found
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent

    def holds(self, real: str) -> list[_ClassDir]:
        """Class folders strictly inside ``real``."""
        return [cf for r, cf in self.by_real.items() if _under(r, real)]

    def name(self, cf: _ClassDir, here: _ClassDir) -> str:
        """How a report names class folder ``cf`` to a reader looking at class ``here``."""
        if len(self.splits) == 1 or cf.split == here.split:
            return repr(cf.name)
        return repr(f"{self.splits[cf.split]}/{cf.name}")


@dataclass
class _ClassWalk:
    """Depth-first walk of one class folder (see the module docstring for the rules)."""

    layout: _Layout
    home: _ClassDir
    visited: dict[tuple[int, int], str]  # (st_dev, st_ino) -> path, folders of this class
    tree: SplitTree
    found: list[_Found] = field(default_factory=list)

    @property
    def issues(self) -> list[FileIssue]:
        return self.tree.issues

    def folder(
        self, folder: str, real: str, via_link: bool, ancestors: tuple[tuple[int, int], ...]
    ) -> None:
        try:
            st = os.stat(folder)
        except OSError as e:
            self.issues.append(FileIssue(folder, _os_reason(e, "folder")))
            return
        key = (st.st_dev, st.st_ino)
        if key in ancestors:  # real paths catch loops first; this guards bind mounts
            self.issues.append(FileIssue(folder, _LOOP))
            return
        if key in self.visited:
            self.issues.append(
                FileIssue(folder, f"duplicate folder: already scanned as {self.visited[key]}")
            )
            return
        self.visited[key] = folder
        for entry in _entries(Path(folder), self.issues):
            path = os.path.join(folder, entry.name)
            if entry.name.startswith("."):
                kind = "folder" if _is_dir(entry) else "file"
                self.issues.append(FileIssue(path, f"hidden {kind}"))
            elif _is_dir(entry):
                link = _is_link(entry)
                sub_real = os.path.realpath(path) if link else os.path.join(real, entry.name)
                why = self._refuse(path, sub_real, real, link)
                if why:
                    self.issues.append(FileIssue(path, why))
                else:
                    self.folder(path, sub_real, via_link or link, (*ancestors, key))
            elif _ext(entry.name) in IMAGE_EXTENSIONS or _is_dangling(entry):
                self._file(path, entry, real, via_link)
            else:
                ext = _ext(entry.name) or "no extension"
                self.issues.append(FileIssue(path, f"not an image file ({ext})"))

    def _refuse(self, path: str, real: str, parent_real: str, link: bool) -> str | None:
        """Why the sub-folder at ``path`` (real path ``real``) is not walked, or None."""
        lay, home = self.layout, self.home
        if not link:  # a plain folder that is another class's folder (that class links here)
            other = lay.by_real.get(real)
            if other is None or other is home:
                return None
            return (
                f"folder of class {lay.name(other, home)} ({other.path} links here): "
                f"not scanned as class {home.name!r}"
            )
        held = lay.holds(real)
        if held:
            names = [lay.name(cf, home) for cf in held]
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            return (
                f"link to a folder holding class folders {', '.join(names[:3])}{more}: "
                f"not followed {_WHY}"
            )
        if real == parent_real or _under(parent_real, real):
            return _LOOP
        owner = lay.owner(real)
        if owner is None:
            return None  # a folder outside every class folder: followed
        if owner is not home:
            return f"link into class folder {lay.name(owner, home)}: not followed {_WHY}"
        same = os.path.normpath(os.path.join(home.path, os.path.relpath(real, home.real)))
        return f"duplicate folder: already scanned as {same}"

    def _file(self, path: str, entry: os.DirEntry[str], folder_real: str, via_link: bool) -> None:
        if _is_dangling(entry):  # goes on so that the checker names the reason
            self.found.append(_Found(path, None, False))
        elif not _is_link(entry):
            self.found.append(_Found(path, os.path.join(folder_real, entry.name), not via_link))
        else:
            real = os.path.realpath(path)
            owner = self.layout.owner(real)
            if owner is None or owner is self.home:
                self.found.append(_Found(path, real, False))
            else:
                other = self.layout.name(owner, self.home)
                self.issues.append(
                    FileIssue(
                        path,
                        f"links to a file of class {other}: not counted for "
                        f"{self.home.name!r} {_WHY}",
                    )
                )
                self.tree.excluded.setdefault(self.home.name, []).append(
                    f"links to a file of class {other}"
                )


def _assign(found: list[tuple[_ClassDir, _Found]], trees: list[SplitTree]) -> None:
    """Give each file to its class: a real file outside every class folder reachable from
    several classes goes to none of them, and a second path to a file counts once."""
    first: dict[str, int] = {}  # real path -> the first file reaching it
    shared: dict[str, list[int]] = {}  # real path -> every file reaching it, when several do
    for i, (_, f) in enumerate(found):
        if f.real is not None and first.setdefault(f.real, i) != i:
            shared.setdefault(f.real, [first[f.real]]).append(i)
    del first
    drop: dict[int, str] = {}
    for idx in shared.values():
        names = sorted({found[i][0].name for i in idx})
        if len(names) > 1:
            reason = f"conflicting labels: reachable from classes {', '.join(names)}"
            drop.update((i, reason) for i in idx)
        else:  # keep the path that needs no symlink, else the first one walked
            keep = min(idx, key=lambda i: (not found[i][1].direct, i))
            drop.update((i, f"duplicate path: same file as {found[keep][1].path}")
                        for i in idx if i != keep)
    for i, (home, f) in enumerate(found):
        tree = trees[home.split]
        if i in drop:
            tree.issues.append(FileIssue(f.path, drop[i]))
            tree.excluded.setdefault(home.name, []).append(drop[i])
        else:
            tree.classes[home.name].append(f.path)


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


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _under(path: str, folder: str) -> bool:
    """Whether ``path`` lies strictly inside ``folder`` (both real, absolute paths)."""
    return path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


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
