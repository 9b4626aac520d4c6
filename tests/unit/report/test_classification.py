"""classification_report against hand-computed values and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from snugtune.report import ClassificationReport, ClassMetrics, classification_report

# a: 3 samples, b: 2, c: 3 — c is never predicted.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 0, 0, 1, 1]


def test_hand_computed_values() -> None:
    rep = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert rep.confusion == ((2, 1, 0), (1, 1, 0), (1, 2, 0))
    assert rep.accuracy == pytest.approx(3 / 8)
    a, b, c = rep.per_class
    assert a == ClassMetrics(
        "a", pytest.approx(2 / 4), pytest.approx(2 / 3), pytest.approx(4 / 7), 3
    )
    assert (b.precision, b.recall, b.f1, b.support) == pytest.approx((1 / 4, 1 / 2, 1 / 3, 2))
    # Never predicted: zero division gives 0.0, not NaN.
    assert (c.precision, c.recall, c.f1, c.support) == (0.0, 0.0, 0.0, 3)
    assert rep.macro_f1() == pytest.approx((4 / 7 + 1 / 3 + 0) / 3)
    assert rep.weighted_f1() == pytest.approx((4 / 7 * 3 + 1 / 3 * 2) / 8)
    assert rep.num_samples == 8


def test_class_absent_from_labels_and_predictions() -> None:
    rep = classification_report([0, 1], [0, 1], ["x", "y", "z"])
    assert rep.accuracy == 1.0
    assert rep.per_class[2] == ClassMetrics("z", 0.0, 0.0, 0.0, 0)
    assert rep.confusion[2] == (0, 0, 0)


def test_matches_scikit_learn_on_random_labels() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 4, 300))  # 4 never predicted
    rep = classification_report(y_true, y_pred, list("abcde"))
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=range(5), zero_division=0
    )
    assert [c.precision for c in rep.per_class] == pytest.approx(p)
    assert [c.recall for c in rep.per_class] == pytest.approx(r)
    assert [c.f1 for c in rep.per_class] == pytest.approx(f)
    assert [c.support for c in rep.per_class] == list(s)
    assert (
        np.array(rep.confusion).tolist()
        == metrics.confusion_matrix(y_true, y_pred, labels=range(5)).tolist()
    )
    assert rep.macro_f1() == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro"))


def test_to_dict_is_json_and_round_trips() -> None:
    rep = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    data = json.loads(json.dumps(rep.to_dict()))
    assert {"accuracy", "per_class", "confusion_matrix", "classes", "macro_f1"} <= data.keys()
    assert data["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 2, 0]]
    assert data["macro_f1"] == pytest.approx(rep.macro_f1())
    assert ClassificationReport.from_dict(data) == rep


def test_empty_input_gives_zeros() -> None:
    rep = classification_report([], [], ["a", "b"])
    assert rep.accuracy == 0.0
    assert rep.macro_f1() == 0.0
    assert rep.confusion == ((0, 0), (0, 0))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "classes", "match"),
    [
        ([0, 1], [0], ["a", "b"], "2 labels but y_pred has 1"),
        ([0, 2], [0, 1], ["a", "b"], "y_true contains label 2 outside 0..1"),
        ([0, 1], [0, -1], ["a", "b"], "y_pred contains label -1"),
        ([], [], [], "at least one class"),
    ],
)
def test_bad_input_says_what_is_wrong(y_true, y_pred, classes, match) -> None:
    with pytest.raises(ValueError, match=match):
        classification_report(y_true, y_pred, classes)
