"""The run folder: every file's name, the one atomic writer, and how each file is read back.

::

    RUN/
      config.yaml            resolved settings                     write_config / read_config
      scan.json              what the scan found (record of the run) scan
      split.json             the train/validation file lists       write_split / read_split
      plan.json              the memory plan of every phase        write_json / read_json
      race.json              --model auto: the backbones raced     write_json / read_json
      metrics.csv, .json     one row per epoch                     (report.MetricsLog)
      tensorboard/           the same rows as event files          (report.MetricsLog)
      summary.json           the finished run                      write_summary
      model.safetensors      trained weights                       weights
      model_card.json        what the model is and how to feed it  (report.card)
      learning_curves.png, confusion_matrix.png, memory.png        (report.plots)
      hardest_val.png        the validation images of highest loss (report.plots)
      report.md, report.html                                       (report)
      checkpoints/           last.pt, prev.pt                      (recipe.checkpoint)
      export/                model.onnx, model.pt2, ... + cards    (export)
      .lock                  held by the one process training here

Every file is written by :func:`atomic_write`: into a staging folder beside the target, flushed
to disk, then renamed into place, so a reader (or a resumed run after ``kill -9``) sees the old
file or the new one, never half of one; a full disk leaves the old file and raises
``DiskFullError``. The staging folder lets a writer produce companion files too (an ONNX
model's external weights), published together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from snugtune.config import TrainConfig, build_config, config_to_dict
from snugtune.errors import CheckpointError, DiskFullError
from snugtune.results import RunSummary
from snugtune.units import format_bytes

__all__ = [
    "RunDir",
    "atomic_write",
    "card_path_for",
    "file_sha256",
    "fsync",
    "remove_stale_temps",
    "to_jsonable",
    "write_bytes",
    "write_json",
    "write_text",
]

_TMP_MARK = ".tmp-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _read_umask() -> int:
    mask = os.umask(0o022)  # os.umask can only be read by setting it; once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def fsync(path: Path) -> None:
    """Flush a file or a folder (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it wraps is ENOSPC/EDQUOT (``torch.save`` re-raises a
    failed write as a RuntimeError with the OSError only as its ``__context__``)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """The one writer: ``write(tmp)`` fills a file that then replaces ``path`` atomically.

    ``tmp`` has ``path``'s name inside a staging folder beside it; files the writer puts next
    to ``tmp`` (an ONNX model's ``.data``) are published with it. Whatever interrupts the
    write, the staging folder is removed and ``path`` is as it was.

    Raises:
        DiskFullError: the disk is full (``path`` is left untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name.lstrip('.')}{_TMP_MARK}{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging / path.name)
        for f in sorted(staging.iterdir()):  # the companions first, the target last
            fsync(f)
            os.chmod(f, 0o666 & ~_UMASK)  # writers may create 0600 files
        for f in sorted(staging.iterdir(), key=lambda f: f.name == path.name):
            os.replace(f, path.parent / f.name)
        fsync(path.parent)
    except BaseException as e:
        if _disk_full(e):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(path, free, format_bytes(free)) from e
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """UTF-8 ``text`` to ``path``, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: object, *, indent: int | None = 2) -> Path:
    """``obj`` as strict JSON (NaN and inf become null), atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False,
                      separators=None if indent else (",", ":"))
    return write_text(path, text + "\n")


def remove_stale_temps(folder: Path) -> None:
    """Delete staging folders that killed writers of other processes left in ``folder``;
    they can be as big as a checkpoint and would fill the disk over many interruptions."""
    mine = f"{_TMP_MARK}{os.getpid()}"
    for p in folder.glob(f".*{_TMP_MARK}*"):
        if p.name.endswith(mine):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def to_jsonable(obj: object) -> object:
    """``obj`` as plain JSON types: dataclasses and ``to_dict()`` objects expanded, tuples and
    sets as lists, paths as strings, numpy/torch values as numbers, non-finite floats as None."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, type):
        return to_jsonable(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy and torch, without importing them
        return to_jsonable(obj.tolist())
    return str(obj)


def card_path_for(model_path: str | Path) -> Path:
    """The model card beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (hashing releases the GIL)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunDir:
    """One run folder: the path of each file it holds, and reading and writing them.

    Args:
        path: the folder (``--out``); it need not exist yet.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.scan = self.path / "scan.json"
        self.split = self.path / "split.json"
        self.plan = self.path / "plan.json"
        self.race = self.path / "race.json"
        self.metrics_csv = self.path / "metrics.csv"
        self.metrics_json = self.path / "metrics.json"
        self.tensorboard = self.path / "tensorboard"
        self.summary = self.path / "summary.json"
        self.weights = self.path / "model.safetensors"
        self.card = self.path / "model_card.json"
        self.learning_curves = self.path / "learning_curves.png"
        self.confusion_matrix = self.path / "confusion_matrix.png"
        self.memory_plot = self.path / "memory.png"
        self.hardest_val = self.path / "hardest_val.png"
        self.report_md = self.path / "report.md"
        self.report_html = self.path / "report.html"
        self.checkpoints = self.path / "checkpoints"
        self.exports = self.path / "export"
        self.lock_file = self.path / ".lock"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def holds_run(self) -> bool:
        """Whether a run trained here already (it has a checkpoint or a summary)."""
        return (self.checkpoints / "last.pt").exists() or self.summary.exists()

    def start(self, cfg: TrainConfig) -> None:
        """Begin a run here: write the resolved config, and drop what a run that died before
        its first checkpoint left (its scan record, split and plan were made for other
        settings)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (self.scan, self.split, self.plan, self.race):
            stale.unlink(missing_ok=True)
        write_text(self.config, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    def read_config(self) -> TrainConfig:
        """The run's saved settings.

        Raises:
            CheckpointError: this is not a run folder.
        """
        if not self.config.exists():
            raise CheckpointError(f"{self.path} is not a snugtune run (no config.yaml); "
                                  "check the path")
        return build_config(self.config)

    def write_split(self, train: Sequence[tuple[str, int]], val: Sequence[tuple[str, int]]) -> None:
        """The split, once: a resumed run and ``evaluate`` see the same images."""
        if not self.split.exists():
            write_json(self.split, {"train": [list(s) for s in train],
                                    "val": [list(s) for s in val]}, indent=None)

    def read_split(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]] | None:
        """(train, val) as (path, label) pairs, or None before the split was made."""
        data = self.read_json(self.split)
        if data is None:
            return None
        return [(str(p), int(k)) for p, k in data["train"]], [(str(p), int(k)) for p, k in data["val"]]

    def write_summary(self, summary: RunSummary) -> None:
        """``summary.json``: the finished run."""
        write_json(self.summary, summary.to_dict())

    @staticmethod
    def read_json(path: Path) -> Any:
        """A JSON file's content, or None when it does not exist."""
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def export_path(self, name: str) -> Path:
        """Default file of an export (``model.onnx``, ``model.pt2``, ...)."""
        return self.exports / name

    @contextlib.contextmanager
    def lock(self, *, enabled: bool = True) -> Iterator[None]:
        """Hold the folder's lock while the block runs: one process trains into a run folder.

        An exclusive, non-blocking ``flock`` on ``.lock`` (rank 0 only under torchrun: the
        other ranks share its folder). The kernel drops it when its process ends, however it
        ends (SIGKILL included), so a killed run resumes without clean-up. Where ``fcntl`` is
        missing (Windows) there is no lock.

        Raises:
            CheckpointError: another live process holds it (its pid is named).
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            enabled = False
        if not enabled:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise CheckpointError(
                    f"{self.path} is in use by another snugtune process (pid {holder}); wait for "
                    "it to finish (or stop it), or train into another --out") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock
