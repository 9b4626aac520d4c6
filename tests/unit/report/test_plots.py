"""Plots write non-empty PNG files, also from partial data."""

from __future__ import annotations

from pathlib import Path

from snugtune.report import (
    classification_report,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_memory,
)
from snugtune.results import PhaseResult
from snugtune.units import GIB, MIB

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_learning_curves_with_phases_and_gaps(tmp_path: Path) -> None:
    rows = [
        {
            "phase": "head" if e <= 3 else "finetune",
            "global_epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 0.5 + e / 20,
            "lr": 1e-3 / e,
        }
        for e in range(1, 7)
    ]
    for e, row in enumerate(rows):
        if e != 2:
            row["val_accuracy"] = 0.55 + e / 20  # one epoch without validation
    out = plot_learning_curves(rows, tmp_path / "sub" / "learning_curves.png")
    assert out == tmp_path / "sub" / "learning_curves.png"
    assert _is_png(out)


def test_learning_curves_without_rows(tmp_path: Path) -> None:
    assert _is_png(plot_learning_curves([], tmp_path / "empty.png"))


def test_confusion_matrix_small_and_large(tmp_path: Path) -> None:
    small = classification_report([0, 1, 1], [0, 1, 0], ["cat", "dog"])
    assert _is_png(plot_confusion_matrix(small, tmp_path / "small.png"))
    assert _is_png(plot_confusion_matrix(small, tmp_path / "counts.png", normalize=False))
    n = 50
    y_true = [i % n for i in range(400)]
    y_pred = [(t + (i % 7 == 0)) % n for i, t in enumerate(y_true)]
    large = classification_report(y_true, y_pred, [f"class_{i:02d}_long_name" for i in range(n)])
    assert _is_png(plot_confusion_matrix(large, tmp_path / "large.png"))


def test_memory_with_missing_measurement(tmp_path: Path) -> None:
    phases = [
        PhaseResult(name="head", predicted_peak_bytes=900 * MIB, measured_peak_bytes=850 * MIB),
        PhaseResult(name="finetune", predicted_peak_bytes=3 * GIB, measured_peak_bytes=None),
    ]
    assert _is_png(plot_memory(phases, tmp_path / "memory.png", budget_bytes=4 * GIB))
    assert _is_png(plot_memory([], tmp_path / "none.png"))
