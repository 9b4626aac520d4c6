"""PNG plots of a run: learning curves, confusion matrix, predicted vs measured memory.

Figures are built with ``matplotlib.figure.Figure`` directly (Agg canvas, no ``pyplot``): no
global state, no backend switch in the caller's process, safe in threads and headless.
matplotlib is imported on first use, so importing :mod:`snugtune.report` stays cheap for the
training loop. Every function returns the path it wrote (atomically).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from snugtune.report.classification import ClassificationReport
from snugtune.results import PhaseResult
from snugtune.rundir import write_bytes
from snugtune.units import GIB, MIB, format_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_confusion_matrix", "plot_images", "plot_learning_curves", "plot_lr_find",
           "plot_memory"]

logger = logging.getLogger(__name__)

_TRAIN_COLOR = "#1f77b4"
_VAL_COLOR = "#ff7f0e"
_PHASE_SHADES = ("#f2f2f2", "#e3ecf7")
_DPI = 110


def plot_learning_curves(rows: Sequence[Mapping[str, object]], path: Path) -> Path:
    """Plot loss, accuracy (train and val) and, if logged, the learning rate per global epoch.

    Args:
        rows: Metrics rows as logged by :class:`~snugtune.report.MetricsLog`; missing or
            ``None`` values leave gaps. Contiguous rows of one ``phase`` are shaded and named.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    x = _epochs(rows)
    panels = [("Loss", "loss"), ("Accuracy", "accuracy")]
    if any(_number(r.get("lr")) is not None for r in rows):
        panels.append(("Learning rate", "lr"))
    fig = _new_figure(4.6 * len(panels) + 1.0, 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, key) in zip(axes, panels, strict=True):
        _shade_phases(ax, rows, x)
        if key == "lr":
            _plot_series(ax, x, _column(rows, "lr"), "lr", "#2ca02c")
            if np.nanmin(_column(rows, "lr"), initial=np.inf) > 0:
                ax.set_yscale("log")
        else:
            _plot_series(ax, x, _column(rows, f"train_{key}"), "train", _TRAIN_COLOR)
            _plot_series(ax, x, _column(rows, f"val_{key}"), "val", _VAL_COLOR)
        if key == "accuracy":
            _format_accuracy_axis(ax, rows, x)
        ax.set_title(title)
        ax.set_xlabel("global epoch")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    if not rows:
        axes[0].text(0.5, 0.5, "no epochs logged", ha="center", transform=axes[0].transAxes)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    report: ClassificationReport, path: Path, *, normalize: bool = True
) -> Path:
    """Plot the confusion matrix as a heat map (rows true class, columns predicted).

    Cell values are written in the cells up to 30 classes; font sizes and the figure size
    scale with the number of classes so that 2 to ~50 classes stay readable.

    Args:
        report: Evaluation to draw.
        path: PNG file to write.
        normalize: Divide each row by its support (recall on the diagonal); else raw counts.

    Returns:
        ``path``.
    """
    counts = np.asarray(report.confusion, dtype=np.float64).reshape(len(report.classes), -1)
    n = counts.shape[0]
    if normalize:
        support = counts.sum(axis=1, keepdims=True)
        matrix = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    else:
        matrix = counts
    side = float(np.clip(3.0 + 0.3 * n, 4.5, 18.0))
    fig = _new_figure(side + 1.2, side)
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(float(matrix.max(initial=0.0)), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if not normalize:
        from matplotlib.ticker import MaxNLocator

        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    if n <= 30:
        _annotate_cells(ax, matrix, normalize, vmax)
    _class_ticks(ax, report.classes, side)
    how = "normalized by true class" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({how}) — accuracy {report.accuracy:.1%}")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.tight_layout()
    return _save(fig, path)


def plot_memory(
    phases: Sequence[PhaseResult], path: Path, *, budget_bytes: int | None = None
) -> Path:
    """Bar chart of predicted vs measured peak device memory per phase.

    Args:
        phases: the phases' results; a missing measurement is drawn as "not measured".
        path: PNG file to write.
        budget_bytes: Memory budget to draw as a line; defaults to the largest
            ``budget_bytes`` of ``phases``, if any.

    Returns:
        ``path``.
    """
    names = [p.name or f"phase {i + 1}" for i, p in enumerate(phases)]
    predicted = [_number(p.predicted_peak_bytes) for p in phases]
    measured = [_number(p.measured_process_bytes or p.measured_peak_bytes) for p in phases]
    if budget_bytes is None:
        budgets = [p.budget_bytes for p in phases if p.budget_bytes is not None]
        budget_bytes = max(budgets) if budgets else None
    known = [v for v in (*predicted, *measured, budget_bytes) if v is not None]
    unit, scale = ("GiB", GIB) if max(known, default=0) >= GIB else ("MiB", MIB)
    fig = _new_figure(max(5.0, 1.6 * len(phases) + 3.0), 4.4)
    ax = fig.subplots()
    x = np.arange(len(phases))
    width = 0.38
    _memory_bars(ax, x - width / 2, predicted, scale, width, "predicted", "#8c8cd9")
    _memory_bars(ax, x + width / 2, measured, scale, width, "measured", "#e07b39")
    if budget_bytes is not None:
        _budget_line(ax, budget_bytes, scale)
    ax.set_xticks(x, [_memory_label(*t) for t in zip(names, predicted, measured, strict=True)])
    ax.set_xlim(-0.7, max(len(phases), 1) - 0.3)
    ax.set_ylabel(f"peak device memory ({unit})")
    ax.set_title("Peak memory per phase: predicted vs measured")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, max(known, default=scale) / scale * 1.18)
    if phases:
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no phases", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- helpers


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], marks: Mapping[str, float],
                 path: Path) -> Path:
    """The learning-rate range test: smoothed loss against the learning rate (log scale), with
    ``marks`` (name -> learning rate) drawn as vertical lines."""
    fig = _new_figure(6.0, 4.0)
    ax = fig.subplots()
    ax.plot(lrs, losses, color=_TRAIN_COLOR, linewidth=1.5)
    ax.set_xscale("log")
    for (name, lr), color in zip(marks.items(), ("#2ca02c", "#d62728", "#7f7f7f"), strict=False):
        ax.axvline(lr, color=color, linestyle="--", linewidth=1, label=f"{name}: {lr:.2g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("Learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_images(images: Sequence[tuple[str, str]], path: Path, *, columns: int = 4,
                thumb_px: int = 96) -> Path:
    """A grid of thumbnails, each titled (``images``: (file, title)); unreadable files are
    drawn as an empty cell titled so."""
    from PIL import Image as PILImage

    rows = max(1, math.ceil(len(images) / columns))
    inch = thumb_px / _DPI + 0.45
    fig = _new_figure(columns * inch, rows * (inch + 0.25))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, item in zip(axes, list(images) + [("", "")] * (len(axes) - len(images)), strict=True):
        ax.set_axis_off()
        file, title = item
        if not file:
            continue
        try:
            with PILImage.open(file) as im:
                im.thumbnail((thumb_px, thumb_px))
                ax.imshow(np.asarray(im.convert("RGB")))
        except OSError:
            title += "\n(unreadable)"
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=_DPI)


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    write_bytes(path, buf.getvalue())
    logger.debug("Wrote plot %s", path)
    return Path(path)


def _number(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _column(rows: Sequence[Mapping[str, object]], key: str) -> np.ndarray:
    """(N,) floats with NaN where a row lacks ``key`` (matplotlib breaks the line there)."""
    values = [_number(r.get(key)) for r in rows]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _epochs(rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """(N,) x positions: ``global_epoch`` where logged, else the 1-based row number."""
    return np.array(
        [
            g if (g := _number(r.get("global_epoch"))) is not None else i + 1
            for i, r in enumerate(rows)
        ],
        dtype=np.float64,
    )


def _plot_series(ax: Axes, x: np.ndarray, y: np.ndarray, label: str, color: str) -> None:
    if np.all(np.isnan(y)):
        return
    marker = "o" if len(y) <= 60 else None
    ax.plot(x, y, label=label, color=color, marker=marker, markersize=3, linewidth=1.6)


def _shade_phases(ax: Axes, rows: Sequence[Mapping[str, object]], x: np.ndarray) -> None:
    """Shade each contiguous run of one phase and write its name at the top."""
    spans: list[tuple[str, float, float]] = []
    for i, row in enumerate(rows):
        phase = str(row.get("phase", "") or "")
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], x[i])
        else:
            spans.append((phase, x[i], x[i]))
    if len(spans) == 1 and not spans[0][0]:
        return
    transform = ax.get_xaxis_transform()  # x in data units, y in axes fraction
    for k, (phase, start, end) in enumerate(spans):
        ax.axvspan(start - 0.5, end + 0.5, color=_PHASE_SHADES[k % 2], zorder=0, linewidth=0)
        ax.text(
            (start + end) / 2,
            0.98,
            phase,
            transform=transform,
            ha="center",
            va="top",
            fontsize=8,
            color="#555555",
        )


def _format_accuracy_axis(ax: Axes, rows: Sequence[Mapping[str, object]], x: np.ndarray) -> None:
    """Percent ticks, and a star on the best validation accuracy."""
    from matplotlib.ticker import PercentFormatter

    val = _column(rows, "val_accuracy")
    known = np.concatenate([val, _column(rows, "train_accuracy")])
    known = known[~np.isnan(known)]
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=100.0 if known.max(initial=0) > 1 else 1.0))
    if np.any(~np.isnan(val)):
        best = int(np.nanargmax(val))
        ax.plot(
            x[best],
            val[best],
            marker="*",
            markersize=12,
            color=_VAL_COLOR,
            linestyle="",
            markeredgecolor="black",
            label=f"best val (epoch {x[best]:g})",
        )


def _annotate_cells(ax: Axes, matrix: np.ndarray, normalize: bool, vmax: float) -> None:
    n = matrix.shape[0]
    size = float(np.clip(11 - n / 3, 5, 10))
    for (i, j), value in np.ndenumerate(matrix):
        if value == 0 and i != j:
            continue  # empty off-diagonal cells stay blank: the errors stand out
        text = f"{value:.2f}" if normalize else f"{int(value)}"
        text = "<.01" if text == "0.00" else text
        color = "white" if value > 0.55 * vmax else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)


def _class_ticks(ax: Axes, classes: Sequence[str], side_in: float) -> None:
    n = len(classes)
    labels = [c if len(c) <= 20 else c[:19] + "…" for c in classes]
    cell_pt = side_in * 0.8 * 72 / max(n, 1)  # ~80% of the figure side is the matrix
    size = float(np.clip(0.42 * cell_pt, 5, 10))
    ticks = np.arange(n)
    ax.set_xticks(
        ticks,
        labels,
        fontsize=size,
        rotation=45 if n > 4 else 0,
        ha="right" if n > 4 else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(ticks, labels, fontsize=size)


def _memory_bars(
    ax: Axes,
    x: np.ndarray,
    values: list[float | None],
    scale: float,
    width: float,
    label: str,
    color: str,
) -> None:
    heights = [0.0 if v is None else v / scale for v in values]
    bars = ax.bar(x, heights, width, label=label, color=color)
    for bar, value in zip(bars, values, strict=True):
        text = "not measured" if value is None else format_bytes(value)
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            text,
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=0 if len(values) <= 4 else 90,
        )


def _budget_line(ax: Axes, budget_bytes: float, scale: float) -> None:
    y = budget_bytes / scale
    ax.axhline(y, color="#c0392b", linestyle="--", linewidth=1.2)
    label = f" budget {format_bytes(budget_bytes)}"
    ax.text(-0.5, y, label, va="bottom", ha="left", fontsize=8, color="#c0392b")


def _memory_label(name: str, predicted: float | None, measured: float | None) -> str:
    if predicted and measured is not None:
        return f"{name}\nmeasured = {measured / predicted:.0%} of predicted"
    return name
