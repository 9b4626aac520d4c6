"""Accuracy, per-class precision/recall/F1 and the confusion matrix, with numpy only.

Definitions follow scikit-learn's ``classification_report`` with ``zero_division=0``:
precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R), each 0.0 where the
denominator is 0 (a class never predicted has precision 0.0; a class absent from ``y_true``
has recall 0.0). Macro F1 is the unweighted mean over *all* given classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClassMetrics", "ClassificationReport", "classification_report"]


@dataclass(frozen=True)
class ClassMetrics:
    """Scores of one class; ``support`` is its number of true samples."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationReport:
    """Evaluation of predictions against labels.

    Attributes:
        accuracy: Fraction of samples predicted correctly (0.0 for no samples).
        per_class: One :class:`ClassMetrics` per class, in ``classes`` order.
        confusion: Counts, ``confusion[true][predicted]``.
        classes: Class names; index ``i`` is label ``i``.
    """

    accuracy: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]
    classes: tuple[str, ...]

    @property
    def num_samples(self) -> int:
        """Total number of evaluated samples."""
        return sum(sum(row) for row in self.confusion)

    def macro_f1(self) -> float:
        """Unweighted mean F1 over all classes."""
        if not self.per_class:
            return 0.0
        return float(np.mean([c.f1 for c in self.per_class]))

    def weighted_f1(self) -> float:
        """Support-weighted mean F1 (0.0 with no samples)."""
        total = sum(c.support for c in self.per_class)
        if total == 0:
            return 0.0
        return sum(c.f1 * c.support for c in self.per_class) / total

    def to_dict(self) -> dict[str, object]:
        """JSON-safe dict; :meth:`from_dict` reads it back."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1(),
            "weighted_f1": self.weighted_f1(),
            "num_samples": self.num_samples,
            "classes": list(self.classes),
            "per_class": [
                {
                    "name": c.name,
                    "precision": c.precision,
                    "recall": c.recall,
                    "f1": c.f1,
                    "support": c.support,
                }
                for c in self.per_class
            ],
            "confusion_matrix": [list(row) for row in self.confusion],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ClassificationReport:
        """Rebuild a report from :meth:`to_dict` output (e.g. a saved ``evaluation.json``)."""
        per_class = tuple(
            ClassMetrics(
                name=str(c["name"]),
                precision=float(c["precision"]),
                recall=float(c["recall"]),
                f1=float(c["f1"]),
                support=int(c["support"]),
            )
            for c in data["per_class"]  # type: ignore[attr-defined]
        )
        confusion = tuple(
            tuple(int(v) for v in row)
            for row in data["confusion_matrix"]  # type: ignore[attr-defined]
        )
        return cls(
            accuracy=float(data["accuracy"]),  # type: ignore[arg-type]
            per_class=per_class,
            confusion=confusion,
            classes=tuple(str(c) for c in data["classes"]),  # type: ignore[attr-defined]
        )


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]
) -> ClassificationReport:
    """Score predictions ``y_pred`` against labels ``y_true``.

    Args:
        y_true: True label per sample, each in ``range(len(classes))``.
        y_pred: Predicted label per sample, same length.
        classes: Class names, indexed by label.

    Returns:
        The report; zero denominators give 0.0 rather than NaN or a warning.

    Raises:
        ValueError: lengths differ, there are no classes, or a label is out of range.
    """
    n = len(classes)
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    _check_labels(true, pred, n)
    # (n, n) counts: flat index true * n + pred, counted in one pass.
    confusion = np.bincount(true * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)  # (n,) true samples per class
    predicted = confusion.sum(axis=0)  # (n,) predictions per class
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    accuracy = float(tp.sum() / true.size) if true.size else 0.0
    per_class = tuple(
        ClassMetrics(str(name), float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    )
    return ClassificationReport(
        accuracy=accuracy,
        per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        classes=tuple(str(c) for c in classes),
    )


def _check_labels(true: np.ndarray, pred: np.ndarray, n: int) -> None:
    if n == 0:
        raise ValueError("classification_report needs at least one class name")
    if true.shape != pred.shape:
        raise ValueError(
            f"y_true has {true.size} labels but y_pred has {pred.size}; pass one of each per sample"
        )
    for name, labels in (("y_true", true), ("y_pred", pred)):
        bad = labels[(labels < 0) | (labels >= n)]
        if bad.size:
            raise ValueError(
                f"{name} contains label {int(bad[0])} outside 0..{n - 1} "
                f"({n} classes); check that the class list matches the model"
            )


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with 0.0 where ``den == 0``."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out
