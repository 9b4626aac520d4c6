"""Plots write PNG files, also from partial data, and draw the values they are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from snugtune.report import (
    classification_report,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_memory,
    plots,
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


# What each plot draws, read back from its figure (the PNG checks above only prove a file).


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the plots save, kept for inspection."""
    kept: list[Figure] = []
    save = plots._save

    def keep(fig: Figure, path: Path) -> Path:
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _lines(ax: Axes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {str(line.get_label()): (np.asarray(line.get_xdata(), dtype=float),
                                    np.asarray(line.get_ydata(), dtype=float))
            for line in ax.get_lines()}


def test_learning_curves_draw_the_logged_values(tmp_path: Path, figures: list[Figure]) -> None:
    rows = [{"phase": "head" if e <= 2 else "finetune", "global_epoch": e, "train_loss": 1 / e,
             "val_loss": 2 / e, "train_accuracy": e / 10, "val_accuracy": e / 8, "lr": 10.0 ** -e}
            for e in range(1, 5)]
    del rows[1]["val_loss"]  # epoch 2 without validation: a gap, not a zero
    plot_learning_curves(rows, tmp_path / "curves.png")
    loss, accuracy, lr = figures[0].axes[:3]
    x, train = _lines(loss)["train"]
    assert list(x) == [1, 2, 3, 4] and np.allclose(train, [1, 1 / 2, 1 / 3, 1 / 4])
    val = _lines(loss)["val"][1]
    assert np.isnan(val[1]) and np.allclose(val[[0, 2, 3]], [2, 2 / 3, 2 / 4])
    assert np.allclose(_lines(accuracy)["val"][1], [1 / 8, 2 / 8, 3 / 8, 4 / 8])
    star = [line for line in accuracy.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [4]  # the best validation epoch
    assert np.allclose(_lines(lr)["lr"][1], [0.1, 0.01, 0.001, 0.0001])
    assert lr.get_yscale() == "log"
    assert {t.get_text() for t in loss.texts} == {"head", "finetune"}  # the phases, named


def test_confusion_matrix_draws_recall_per_true_class(tmp_path: Path,
                                                      figures: list[Figure]) -> None:
    report = classification_report([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1], ["cat", "dog"])
    plot_confusion_matrix(report, tmp_path / "cm.png")
    plot_confusion_matrix(report, tmp_path / "counts.png", normalize=False)
    normalised, counts = (np.asarray(f.axes[0].get_images()[0].get_array()) for f in figures)
    assert np.allclose(normalised, [[0.75, 0.25], [0.0, 1.0]])  # rows: true class
    assert np.array_equal(counts, [[3, 1], [0, 2]])
    assert [t.get_text() for t in figures[0].axes[0].get_xticklabels()] == ["cat", "dog"]
    assert "accuracy 83.3%" in figures[0].axes[0].get_title()


def test_memory_bars_are_the_peaks_and_the_budget(tmp_path: Path, figures: list[Figure]) -> None:
    phases = [PhaseResult(name="head", predicted_peak_bytes=1 * GIB, measured_peak_bytes=GIB // 2),
              PhaseResult(name="finetune", predicted_peak_bytes=3 * GIB)]
    plot_memory(phases, tmp_path / "memory.png", budget_bytes=4 * GIB)
    ax = figures[0].axes[0]
    heights = [round(p.get_height(), 3) for p in ax.patches]
    assert heights == [1.0, 3.0, 0.5, 0.0]  # predicted, then measured (missing: 0, labelled)
    texts = [t.get_text() for t in ax.texts]
    assert "not measured" in texts and any("budget 4" in t for t in texts)
    budget = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(budget) == 1 and list(budget[0].get_ydata()) == [4.0, 4.0]
    assert "measured = 50% of predicted" in ax.get_xticklabels()[0].get_text()
