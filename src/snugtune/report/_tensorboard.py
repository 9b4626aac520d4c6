"""Scalar TensorBoard event logging without importing torch or TensorFlow.

Uses the ``tensorboard`` package's own event-file writer and protobufs (importing torch's
``SummaryWriter`` is slow, in a timing that no committed JSON records, and is not needed for
scalars). A resumed run writes a ``SessionLog.START`` event at the resume step, which tells
TensorBoard to hide every event of an earlier file at that step or later — the same mechanism
as torch's ``purge_step``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ScalarWriter", "scalar_tag"]

logger = logging.getLogger(__name__)


def scalar_tag(key: str) -> str:
    """Group metrics for TensorBoard: ``train_loss`` -> ``loss/train``, ``lr`` -> ``lr``."""
    for split in ("train", "val"):
        prefix = f"{split}_"
        if key.startswith(prefix) and len(key) > len(prefix):
            return f"{key[len(prefix) :]}/{split}"
    return key


def _later_than_every_file(logdir: Path) -> None:
    """Wait until this second is later than every event file's in ``logdir``.

    TensorBoard reads a folder's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<counter>``: two files of one second from one
    process sort by a counter whose digits may grow (``...9`` after ``...10``), which put a
    resumed run's file before the one it hides. A later second sorts it last (a wait only
    when a run resumes within the second its last file was created).
    """
    seconds = [int(part) for f in logdir.glob("events.out.tfevents.*")
               if (part := f.name.split(".")[3]).isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


class ScalarWriter:
    """Writes scalar summaries to an event file in ``logdir``; one file per process start."""

    def __init__(self, logdir: Path, writer: Any, protos: tuple[Any, Any]) -> None:
        self.logdir = logdir
        self._writer = writer
        self._event_pb2, self._summary_pb2 = protos

    @classmethod
    def open(cls, logdir: Path, *, purge_step: int | None = None) -> ScalarWriter | None:
        """Open a writer, or return ``None`` (with a warning) if TensorBoard is unusable.

        Args:
            logdir: Directory of the event files (created if missing).
            purge_step: If given, TensorBoard hides earlier events at this step or later.
        """
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            _later_than_every_file(Path(logdir))
            writer = EventFileWriter(str(logdir), flush_secs=5)
        except Exception as exc:  # a broken optional dependency must not stop training
            logger.warning("TensorBoard logging disabled (%s: %s)", type(exc).__name__, exc)
            return None
        self = cls(Path(logdir), writer, (event_pb2, summary_pb2))
        if purge_step is not None:
            self.purge_from(purge_step)
        return self

    def purge_from(self, step: int) -> None:
        """Hide events of earlier sessions at ``step`` or later (after a resume or truncate)."""
        session_log = self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START)
        self._add(self._event_pb2.Event(wall_time=time.time(), step=step, session_log=session_log))
        self.flush()

    def add_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Log ``values`` (already tagged) at ``step`` in one event."""
        if not values:
            return
        summary = self._summary_pb2.Summary(
            value=[
                self._summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
                for tag, v in values.items()
            ]
        )
        self._add(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        """Block until every event so far is on disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()

    def _add(self, event: Any) -> None:
        self._writer.add_event(event)
