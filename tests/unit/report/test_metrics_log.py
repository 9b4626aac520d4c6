"""MetricsLog: append, reload, new columns, truncate, TensorBoard events."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from snugtune.report import MetricsLog


def _row(global_epoch: int, **extra: object) -> dict[str, object]:
    return {
        "phase": "head",
        "epoch": global_epoch,
        "global_epoch": global_epoch,
        "train_loss": 1.0 / global_epoch,
        "val_accuracy": 0.5 + 0.1 * global_epoch,
        "lr": 1e-3,
        **extra,
    }


def _scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(tb_dir))
    acc.Reload()
    return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]


def test_append_and_reload_keeps_types(tmp_path: Path) -> None:
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.append(_row(1, stopped=False))
        log.append(_row(2, stopped=True))
    assert not (tmp_path / "tensorboard").exists()
    reloaded = MetricsLog(tmp_path, tensorboard=False)
    assert reloaded.rows == [_row(1, stopped=False), _row(2, stopped=True)]
    assert isinstance(reloaded.rows[0]["epoch"], int)
    assert json.loads((tmp_path / "metrics.json").read_text())[1]["stopped"] is True


def test_new_key_rewrites_header(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    log.append(_row(1))
    log.append(_row(2, val_loss=0.25, phase="finetune"))
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[-1] == "val_loss"
    with (tmp_path / "metrics.csv").open(newline="") as f:
        raw = list(csv.DictReader(f))
    assert raw[0]["val_loss"] == "" and raw[1]["val_loss"] == "0.25"
    rows = MetricsLog(tmp_path, tensorboard=False).rows
    assert "val_loss" not in rows[0]
    assert rows[1]["val_loss"] == 0.25 and rows[1]["phase"] == "finetune"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_truncate_then_resume(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    for e in (1, 2, 3):
        log.append(_row(e))
    log.truncate(1)
    log.truncate(5)  # more than there are: no-op
    assert len(log) == 1
    log.close()
    resumed = MetricsLog(tmp_path, tensorboard=False)
    assert resumed.rows == [_row(1)]
    resumed.append(_row(2))
    assert [r["global_epoch"] for r in MetricsLog(tmp_path, tensorboard=False).rows] == [1, 2]
    with pytest.raises(ValueError, match="keep must be >= 0"):
        resumed.truncate(-1)


def test_values_are_converted_and_bad_calls_rejected(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    log.append({"global_epoch": np.int64(1), "val_loss": np.float32(0.5), "nan": float("nan")})
    rows = MetricsLog(tmp_path, tensorboard=False).rows
    assert rows[0]["global_epoch"] == 1 and rows[0]["val_loss"] == 0.5
    assert np.isnan(rows[0]["nan"])
    with pytest.raises(ValueError, match="empty row"):
        log.append({"x": None})
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.append(_row(2))


def test_phase_names_stay_text(tmp_path: Path) -> None:
    MetricsLog(tmp_path, tensorboard=False).append({"phase": "2", "global_epoch": 1})
    assert MetricsLog(tmp_path, tensorboard=False).rows[0]["phase"] == "2"


def test_tensorboard_scalars_survive_truncate_and_resume(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    for e in (1, 2, 3):
        log.append(_row(e))
    log.truncate(1)  # steps 2, 3 are hidden from now on
    log.close()
    resumed = MetricsLog(tmp_path)
    resumed.append(_row(2, train_loss=9.0))
    resumed.close()
    assert _scalars(tmp_path / "tensorboard", "loss/train") == [(1, 1.0), (2, 9.0)]
    assert _scalars(tmp_path / "tensorboard", "accuracy/val")[0] == (1, 0.6)


def test_a_resumed_event_file_is_read_after_the_first_whatever_its_counter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event files are read in name order; two of one second from one process differ only by
    tensorboard's writer counter, whose 9 sorts after its 10. A resumed file must still be
    read last (this failed whenever the suite's earlier writers left the counter at 9)."""
    efw = pytest.importorskip("tensorboard.summary.writer.event_file_writer")
    monkeypatch.setattr(efw, "_global_uid", efw.AtomicCounter(9))
    test_tensorboard_scalars_survive_truncate_and_resume(tmp_path)
