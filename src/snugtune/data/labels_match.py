"""Match the rows of a labels file to the image files of the data folder (``labels_file.py``
reads the rows; the rules are in its docstring).

The folder's images are listed once (hidden entries and the insides of symlinked folders left
out) and looked up by path, then by path without the extension; a row naming a file the listing
lacks is looked up on disk.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from snugtune.data.images import IMAGE_EXTENSIONS
from snugtune.data.results import FileIssue
from snugtune.data.walk import SplitTree
from snugtune.errors import DataError

__all__ = ["Row", "match_rows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a labels file: its line number (1-based, the header is line 1 of a CSV),
    the path and the label as written (stripped; "" when empty)."""

    line: int
    path: str
    label: str


def match_rows(root: Path, file: Path, path_column: str, rows: list[Row],
               malformed: list[tuple[int, str]]) -> SplitTree:
    """The labelled images of ``root``: a one-split tree whose classes are the labels (each
    class's files sorted by path), and whose issues are the bad rows in line order (the
    ``malformed`` lines of ``file`` among them, as (line, why)), then the images no row names.

    Raises:
        DataError: rows name no image of the folder at all.
    """
    matcher = _Matcher(root, file, path_column)
    for line, why in malformed:
        matcher.bad(str(file), line, why, "malformed lines")
    return matcher.match(rows)


@dataclass
class _Matcher:
    """Matches rows to the image files of the data folder (see the module docstring)."""

    root: Path
    file: Path
    path_column: str
    issues: list[tuple[int, FileIssue]] = field(default_factory=list)  # (line, issue)
    kinds: Counter[str] = field(default_factory=Counter)

    def match(self, rows: list[Row]) -> SplitTree:
        images = _images_under(self.root)
        exact, stems = set(images), _stems(images)
        named: set[str] = set()  # every image a row names, well or not
        chosen: dict[str, list[Row]] = {}  # image -> its rows with a label
        for row in rows:
            target, why = self._resolve(row.path, exact, stems, named)
            if why:
                self.bad(target, row.line, why, why.split(":")[0].split(" (")[0])
            elif not row.label:
                named.add(target)
                self.bad(target, row.line, "empty label", "empty label")
            else:
                named.add(target)
                chosen.setdefault(target, []).append(row)
        if rows and not named:
            raise DataError(self._none_found(rows[0], images, stems))
        tree = self._assign(chosen)
        tree.issues.extend(i for _, i in sorted(self.issues, key=lambda li: li[0]))
        unlisted = [p for p in (os.path.join(self.root, rel) for rel in images) if p not in named]
        tree.issues.extend(FileIssue(p, f"no row in {self.file.name}: not used") for p in unlisted)
        if unlisted:
            self.kinds["images without a row"] = len(unlisted)
        self._log(len(rows), tree)
        return tree

    def bad(self, path: str, line: int, why: str, kind: str) -> None:
        """Report row ``line`` (about ``path``: an image, or the labels file) as ``kind``."""
        self.issues.append((line, FileIssue(path, f"{self.file.name} line {line}: {why}")))
        self.kinds[kind] += 1

    def _resolve(self, value: str, exact: set[str], stems: dict[str, list[str]],
                 named: set[str]) -> tuple[str, str]:
        """(the image a row's path names, why it names none: "" when it does)."""
        if not value:
            return str(self.file), f"empty {self.path_column}"
        rel = os.path.normpath(value)
        target = os.path.join(self.root, rel)
        if rel in exact:
            return target, ""
        matches = stems.get(rel, [])
        if len(matches) == 1:
            return os.path.join(self.root, matches[0]), ""
        if matches:
            named.update(os.path.join(self.root, m) for m in matches)
            more = f" and {len(matches) - 3} more" if len(matches) > 3 else ""
            return target, f"ambiguous: {', '.join(matches[:3])}{more} match"
        if os.path.isfile(target):  # outside the listing: a symlinked folder, an absolute path
            ext = os.path.splitext(rel)[1].lower()
            why = "" if ext in IMAGE_EXTENSIONS else f"not an image file ({ext or 'no extension'})"
            return target, why
        return target, "no such file"

    def _assign(self, chosen: dict[str, list[Row]]) -> SplitTree:
        """Each image to its label: two labels -> none (conflicting), repeated rows once."""
        tree = SplitTree(root=str(self.root))
        for target, rows in chosen.items():
            labels = list(dict.fromkeys(r.label for r in rows))
            if len(labels) > 1:
                lines = ", ".join(f"{r.line} ({r.label})" for r in rows)
                self.issues.append((rows[0].line, FileIssue(
                    target, f"conflicting labels: {self.file.name} lines {lines}: not used")))
                self.kinds["conflicting labels"] += 1
                for label in labels:  # a label on no other file makes no class
                    tree.excluded.setdefault(label, []).append("conflicting labels")
                continue
            tree.classes.setdefault(labels[0], []).append(target)
            for r in rows[1:]:
                self.bad(str(self.file), r.line, f"duplicate row of line {rows[0].line} "
                         f"({os.path.relpath(target, self.root)}, {labels[0]}): used once",
                         "duplicate rows")
        for files in tree.classes.values():
            files.sort()
        return tree

    def _none_found(self, first: Row, images: list[str], stems: dict[str, list[str]]) -> str:
        """The error when no row names an image, naming the sub-folder they are in, if one."""
        rel = os.path.normpath(first.path or ".")
        subs = sorted({k.split(os.sep, 1)[0] for k in (*images, *stems)
                       if os.sep in k and k.split(os.sep, 1)[1] == rel})
        hint = (f"; they are in {self.root / subs[0]}: pass that folder as the data folder"
                if len(subs) == 1 else "")
        return (f"No row of {str(self.file)!r} names an image in {self.root} (line "
                f"{first.line}: {first.path!r}); its {self.path_column} column holds paths "
                f"relative to the data folder, with or without the extension{hint}")

    def _log(self, n_rows: int, tree: SplitTree) -> None:
        used = sum(len(v) for v in tree.classes.values())
        log.info("%s: %d rows, %d images in %d classes", self.file, n_rows, used,
                 len(tree.classes))
        if self.kinds:
            log.warning("%s: bad rows and images without one, listed with the skipped files: "
                        "%s", self.file, ", ".join(f"{k} {n}" for k, n in self.kinds.most_common()))


def _images_under(root: Path) -> list[str]:
    """Paths (relative to ``root``, sorted) of the image files under it, hidden entries and
    the insides of symlinked folders left out."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        out += [os.path.normpath(os.path.join(rel, f)) for f in files
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(out)


def _stems(images: list[str]) -> dict[str, list[str]]:
    """Image path without its extension -> the images with that stem."""
    out: dict[str, list[str]] = {}
    for rel in images:
        out.setdefault(os.path.splitext(rel)[0], []).append(rel)
    return out
