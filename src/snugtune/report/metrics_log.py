"""Per-epoch metrics: ``metrics.csv`` + ``metrics.json`` + TensorBoard, surviving resume.

Every :meth:`MetricsLog.append` rewrites the whole CSV (and its JSON twin) atomically. An
epoch log is at most a few hundred short rows, so the rewrite costs microseconds, and in
exchange a crash at any moment leaves a complete file with a consistent header — also when a
row brings a column no earlier row had.

Values read back from the CSV are typed again: ``"3"`` -> 3, ``"0.25"`` -> 0.25,
``"True"`` -> True, an empty cell -> the key is absent. ``None`` and a missing key are the same.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from snugtune.report._tensorboard import ScalarWriter, scalar_tag
from snugtune.rundir import RunDir, write_json, write_text

__all__ = ["MetricsLog"]

logger = logging.getLogger(__name__)

Scalar = bool | int | float | str | None
_INT_RE = re.compile(r"^[+-]?\d+$")
# Columns that are always text, even when a value looks like a number (a phase named "2").
_TEXT_KEYS = frozenset({"phase"})
# Counters that are not worth a TensorBoard chart of their own.
_NOT_PLOTTED = frozenset({"epoch", "global_epoch"})


class MetricsLog:
    """Append-only per-epoch metrics in ``run_dir``; reopening continues where it stopped.

    Example:
        >>> log = MetricsLog(run_dir)
        >>> log.append({"phase": "head", "epoch": 1, "global_epoch": 1, "val_loss": 0.4})
        >>> log.close()

    The TensorBoard step of a row is its ``global_epoch`` when that is an integer, otherwise
    its 1-based row number. Metrics ``train_x``/``val_x`` are charted as ``x/train``/``x/val``.
    """

    def __init__(self, run: RunDir | Path, *, tensorboard: bool = True) -> None:
        """Open the log, reading the rows of an existing ``metrics.csv``.

        Args:
            run: Run folder; created if missing.
            tensorboard: Also write TensorBoard events to ``RUN/tensorboard/``.
        """
        self.run = run if isinstance(run, RunDir) else RunDir(run)
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run.metrics_csv
        self.json_path = self.run.metrics_json
        self._fields, self._rows = _read_csv(self.csv_path)
        self._closed = False
        self._tb: ScalarWriter | None = None
        if tensorboard:
            # On resume, hide TensorBoard events written after the last row that reached
            # the CSV (the CSV is written first, so it is the source of truth).
            purge = self._next_step() if self._rows or self._has_events() else None
            self._tb = ScalarWriter.open(self.run.tensorboard, purge_step=purge)
        if self._rows:
            logger.info("Resuming metrics log %s with %d rows", self.csv_path, len(self._rows))

    @property
    def rows(self) -> list[dict[str, object]]:
        """A copy of every row so far, oldest first."""
        return [dict(row) for row in self._rows]

    @property
    def fieldnames(self) -> list[str]:
        """CSV columns in order of first appearance."""
        return list(self._fields)

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: Mapping[str, object]) -> None:
        """Add one epoch's metrics and flush CSV, JSON and TensorBoard to disk.

        Args:
            row: Metric name -> value (numbers, strings, bools; numpy scalars are converted).
                New names add a column; earlier rows leave it empty.

        Raises:
            ValueError: the log is closed or ``row`` is empty.
        """
        self._check_open()
        clean = {str(k): _to_scalar(v) for k, v in row.items()}
        clean = {k: v for k, v in clean.items() if v is not None}
        if not clean:
            raise ValueError("MetricsLog.append got an empty row; pass at least one metric")
        new_keys = [k for k in clean if k not in self._fields]
        if new_keys and self._rows:
            logger.debug("metrics.csv gains columns %s; rewriting header", new_keys)
        self._fields.extend(new_keys)
        self._rows.append(clean)
        self._write_files()
        if self._tb is not None:
            self._tb.add_scalars(self._step(len(self._rows) - 1), _tb_values(clean))
            self._tb.flush()

    def truncate(self, keep: int) -> None:
        """Keep only the first ``keep`` rows (resume from a checkpoint older than the log).

        Args:
            keep: Number of rows to keep, ``0 <= keep``; more than there are is a no-op.
        """
        self._check_open()
        if keep < 0:
            raise ValueError(f"MetricsLog.truncate(keep={keep}): keep must be >= 0")
        if keep >= len(self._rows):
            return
        purge_step = self._step(keep)
        logger.info("Truncating %s from %d to %d rows", self.csv_path, len(self._rows), keep)
        del self._rows[keep:]
        self._write_files()
        if self._tb is not None:
            self._tb.purge_from(purge_step)

    def close(self) -> None:
        """Close the TensorBoard writer; calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"MetricsLog for {self.run.path} is closed")

    def _step(self, index: int) -> int:
        value = self._rows[index].get("global_epoch")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return index + 1

    def _next_step(self) -> int:
        return self._step(len(self._rows) - 1) + 1 if self._rows else 0

    def _has_events(self) -> bool:
        return any(self.run.tensorboard.glob("events.out.tfevents.*"))

    def _write_files(self) -> None:
        write_text(self.csv_path, _format_csv(self._fields, self._rows))
        write_json(self.json_path, self._rows)


def _to_scalar(value: object) -> Scalar:
    """Reduce a metric value to a CSV-safe scalar (numpy/torch scalars via ``.item()``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _to_scalar(item())
        except (TypeError, ValueError):  # not a one-element array
            pass
    return str(value)


def _tb_values(row: Mapping[str, Scalar]) -> dict[str, float]:
    return {
        scalar_tag(k): float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in _NOT_PLOTTED
    }


def _format_csv(fields: list[str], rows: list[dict[str, Scalar]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Scalar]]]:
    """Read ``metrics.csv`` back into typed rows; a missing file is an empty log."""
    if not path.exists():
        return [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [
            {k: _parse_cell(k, v) for k, v in raw.items() if k is not None and v not in ("", None)}
            for raw in reader
        ]
    return fields, [row for row in rows if row]


def _parse_cell(key: str, text: str) -> Scalar:
    if key in _TEXT_KEYS:
        return text
    if text in ("True", "False"):
        return text == "True"
    if _INT_RE.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return text
    # "nan"/"inf" parse as floats on purpose: a diverged loss is a number, not text.
    return value if math.isfinite(value) or text.lower().lstrip("+-") in ("nan", "inf") else text
