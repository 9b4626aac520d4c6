"""Labels from a file instead of class folders: a CSV, TSV or JSONL file of image paths and labels.

Which file: ``--labels FILE`` (its format read from the extension: ``.csv``, ``.tsv``,
``.jsonl``), else ``metadata.csv`` or ``metadata.jsonl`` in the data folder (Hugging Face
``imagefolder`` metadata), used without a flag and logged as such; neither: class folders
(``walk.py``). An auto-found metadata file without the label column leaves the labels to the
class folders, as ``imagefolder`` does; ``--labels`` without it is an error.

Columns: the path column (``--path-column``, default ``file_name``) and the label column
(``--label-column``, default ``label``): a CSV/TSV header names them, a JSONL line is one
object with them as keys. A column missing from the header (JSONL: from the first object) is
an error for the whole file, one line naming the columns found and the flag that chooses.
Values are stripped of surrounding spaces; a JSON number is taken as its text.

Paths are relative to the data folder (not to the labels file), and the extension may be left
out when one image file matches: a Kaggle ``train.csv`` of ``id,label`` is read with
``--labels train.csv --path-column id`` and the data folder ``train/`` (``0a3f`` is
``train/0a3f.jpg``). Images are listed once (every image file under the data folder, hidden
entries left out); a row naming a file that listing lacks (an absolute path, a symlinked
folder) is looked up on disk.

Bad rows are reported as the walk reports skipped files (``FileIssue``: the labels file, or
the image, and a reason with the row's line number), never a crash nor a silent drop: a
malformed line (CSV/TSV: its field count differs from the header's; JSONL: invalid JSON, not
an object, a key missing), an empty path or label, no such file, an ambiguous extension-less
name (two images match), one file under two labels (``conflicting labels``: the file is not
used, every row's line named), one file twice under one label (``duplicate row``: used once),
and an image of the folder that no row names (not used). Each class's files are sorted by
path, so the order of the rows changes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from snugtune.data.labels_match import Row, match_rows
from snugtune.data.walk import SplitTree
from snugtune.errors import DataError

__all__ = ["METADATA_NAMES", "LabelledTree", "LabelsSpec", "Row", "find_labels_file",
           "read_labels", "read_rows"]

log = logging.getLogger(__name__)

#: Hugging Face ``imagefolder`` metadata files, found in the data folder without a flag.
METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_FLAGS = {"path": "--path-column", "label": "--label-column"}


@dataclass(frozen=True)
class LabelsSpec:
    """Where a folder's labels come from (``TrainConfig.labels``, ``.path_column``,
    ``.label_column``).

    Attributes:
        file: the labels file; None: ``metadata.csv`` / ``metadata.jsonl`` in the data folder
            if there is one, else the class folders.
        path_column: column (JSONL: key) of the image paths.
        label_column: column (JSONL: key) of the labels.
    """

    file: str | None = None
    path_column: str = "file_name"
    label_column: str = "label"


@dataclass(frozen=True)
class LabelledTree:
    """The files of a labels file as the scan takes them: a one-split tree whose classes are
    the labels, with every bad row and unlisted image among its issues.

    Attributes:
        file: absolute path of the labels file.
        sha256: hex SHA-256 of its bytes (recorded in the scan: a changed file shows).
        tree: class -> image paths (absolute, sorted), issues, and per class the reasons of
            files kept out of it (conflicting labels).
    """

    file: str
    sha256: str
    tree: SplitTree


def find_labels_file(root: Path, spec: LabelsSpec) -> tuple[Path, bool] | None:
    """(labels file, whether it was found in the data folder rather than named), or None for
    class folders.

    Raises:
        DataError: the named file is missing or of another format, or the data folder holds
            both ``metadata.csv`` and ``metadata.jsonl``.
    """
    if spec.file is not None:
        path = Path(spec.file)
        if _format(path) is None:
            raise DataError(f"Labels file {spec.file!r} is not a .csv, .tsv or .jsonl file (the "
                            "format is read from the extension); save it as one of these")
        if not path.is_file():
            raise DataError(f"Labels file {spec.file!r} does not exist or is not a file; check "
                            "--labels (a path from the current folder, not from the data folder)")
        return path, False
    found = [root / n for n in METADATA_NAMES if (root / n).is_file()]
    if len(found) > 1:
        raise DataError(f"{root} holds both {' and '.join(p.name for p in found)}; remove one, "
                        "or choose one with --labels")
    return (found[0], True) if found else None


def read_labels(root: Path, spec: LabelsSpec) -> LabelledTree | None:
    """The labelled images of the data folder ``root`` (absolute), or None for class folders.

    Raises:
        DataError: see ``find_labels_file``; the file cannot be read or is not UTF-8 text; a
            column is missing; no row names an image of the folder.
    """
    where = find_labels_file(root, spec)
    if where is None:
        return None
    path, found = Path(os.path.abspath(where[0])), where[1]
    columns = _columns(path)
    missing = [(k, c) for k, c in (("path", spec.path_column), ("label", spec.label_column))
               if c not in columns]
    if found and any(k == "label" for k, _ in missing):
        log.info("%s has no %r column: labels from the class folders (Hugging Face "
                 "imagefolder); --label-column chooses another", path, spec.label_column)
        return None
    if missing:
        what = " and no ".join(f"{k} column {c!r}" for k, c in missing)
        flags = " and ".join(f"{_FLAGS[k]} NAME" for k, _ in missing)
        raise DataError(f"Labels file {str(path)!r} has no {what} (columns: "
                        f"{', '.join(map(repr, columns)) or 'none'}); choose it with {flags}")
    if found:
        log.info("labels from %s, found in the data folder (Hugging Face imagefolder "
                 "metadata); --labels FILE chooses another file", path)
    rows, malformed = read_rows(path, spec)
    labelled = match_rows(root, path, spec.path_column, rows, malformed)
    return LabelledTree(str(path), _sha256(path), labelled)


def read_rows(path: Path, spec: LabelsSpec) -> tuple[list[Row], list[tuple[int, str]]]:
    """The rows of a labels file, and its malformed lines as (line number, why); columns are
    assumed present (``read_labels`` checks them first).

    Raises:
        DataError: unreadable, or not UTF-8 text.
    """
    fmt = _format(path)
    rows: list[Row] = []
    malformed: list[tuple[int, str]] = []
    with _reading(path) as f:
        lines = _jsonl(f, spec) if fmt == ".jsonl" else _table(f, spec, _DELIMITERS[str(fmt)])
        for line, row in lines:
            if isinstance(row, Row):
                rows.append(row)
            else:
                malformed.append((line, row))
    return rows, malformed


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[TextIO]:
    """The file as text (a UTF-8 byte-order mark dropped); what stops reading is a DataError."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            yield f
    except UnicodeDecodeError as e:
        raise DataError(f"Labels file {str(path)!r} is not UTF-8 text ({e.reason} at byte "
                        f"{e.start} of a block); save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"Labels file {str(path)!r} cannot be read ({e.strerror or e}); check "
                        "its permissions") from None


def _format(path: Path) -> str | None:
    ext = path.suffix.lower()
    return ext if ext in (*_DELIMITERS, ".jsonl") else None


def _columns(path: Path) -> list[str]:
    """The header's columns (JSONL: the keys of the first object)."""
    with _reading(path) as f:
        if _format(path) == ".jsonl":
            for line in f:
                try:
                    obj = json.loads(line) if line.strip() else None
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    return [str(k) for k in obj]
            return []
        try:
            header = next(csv.reader(f, delimiter=_DELIMITERS[path.suffix.lower()]), [])
        except csv.Error:
            return []
        return [h.strip() for h in header]


def _table(f: TextIO, spec: LabelsSpec, delimiter: str) -> Iterator[tuple[int, Row | str]]:
    """(line, row or why it is malformed) of each non-blank CSV/TSV row after the header."""
    reader = csv.reader(f, delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    at_path, at_label = header.index(spec.path_column), header.index(spec.label_column)
    while True:
        line = reader.line_num + 1  # a quoted field may span lines: the row's first
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield line, f"malformed row ({e})"
            continue
        if not any(x.strip() for x in fields):
            continue  # a blank line is no row
        if len(fields) != len(header):
            n = len(fields)
            yield line, f"malformed row ({n} field{'s' * (n != 1)}, the header has {len(header)})"
            continue
        yield line, Row(line, fields[at_path].strip(), fields[at_label].strip())


def _jsonl(f: TextIO, spec: LabelsSpec) -> Iterator[tuple[int, Row | str]]:
    """(line, row or why it is malformed) of each non-blank JSONL line."""
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            yield line, f"invalid JSON ({getattr(e, 'msg', e)})"
            continue
        if not isinstance(obj, dict):
            yield line, f"not a JSON object ({type(obj).__name__})"
            continue
        lacks = [k for k in (spec.path_column, spec.label_column) if k not in obj]
        if lacks:
            yield line, "malformed row (no " + " and no ".join(map(repr, lacks)) + " key)"
            continue
        path, label = _text(obj[spec.path_column]), _text(obj[spec.label_column])
        if path is None or label is None:
            bad = spec.path_column if path is None else spec.label_column
            yield line, f"{bad!r} must be text or a number, not {type(obj[bad]).__name__}"
            continue
        yield line, Row(line, path, label)


def _text(v: Any) -> str | None:
    """A JSON value as text: strings stripped, numbers as written, null as ""; else None."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
