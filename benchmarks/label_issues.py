"""Finding mislabelled validation images: the report's highest-loss ranking against cleanlab.

A trained run's validation split (``--run``, e.g. ``runs/demo`` after ``make demo``) is
predicted once; then, for each noise rate and seed, a known set of validation labels is
flipped to another class at random, and both methods look for them in the same probabilities:

* **highest loss** (what the report's ``hardest_val.png`` shows): images ranked by the
  probability the model gives their (noisy) label, lowest first; scored at the 16 the report
  shows and at as many as cleanlab flags;
* **cleanlab** ``filter.find_label_issues`` (confident learning: per-class thresholds, so it
  also says *how many* labels look wrong), ranked by self-confidence.

Precision and recall against the flipped set; on the unflipped labels, how many cleanlab flags
and how many of its first 16 the report shows too. The labels the model trained on are clean:
this measures finding wrong labels among the validation images, not training on noisy ones.

Needs cleanlab, which snugtune does not depend on (``pip install cleanlab``).

Usage: ``python benchmarks/label_issues.py --run runs/demo --out benchmarks/results/label_issues.json``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from cleanlab.filter import find_label_issues

from _machine import emit, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune.data import Sample
from snugtune.infer.run import load_run, predict_samples
from snugtune.report.doctor import HARDEST
from snugtune.rundir import RunDir


def validation_probabilities(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) probabilities and (N,) labels of the run's validation split."""
    model, card = load_run(run)
    split = json.loads(RunDir(run).split.read_text())
    val = [Sample(path=p, label=k) for p, k in split["val"]]
    probs, labels = predict_samples(model, val, card["preprocessing"])
    p = probs.numpy().astype(np.float64)
    return p / p.sum(1, keepdims=True), labels.numpy()


def scores(found: np.ndarray, truth: set[int]) -> dict[str, float]:
    hit = len(set(found.tolist()) & truth)
    return {"n": len(found), "precision": round(hit / max(1, len(found)), 3),
            "recall": round(hit / max(1, len(truth)), 3)}


def one_trial(probs: np.ndarray, labels: np.ndarray, rate: float, seed: int) -> dict[str, Any]:
    n, c = probs.shape
    rng = np.random.default_rng(seed)
    flipped = rng.choice(n, round(rate * n), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, c, len(flipped))) % c  # another class
    truth = set(flipped.tolist())
    t0 = time.perf_counter()
    cl = find_label_issues(noisy, probs, return_indices_ranked_by="self_confidence")
    seconds = time.perf_counter() - t0
    by_loss = np.argsort(probs[np.arange(n), noisy], kind="stable")  # highest loss first
    return {"rate": rate, "seed": seed, "flipped": len(truth), "cleanlab_seconds": round(seconds, 3),
            "cleanlab": scores(cl, truth), "cleanlab_first_16": scores(cl[:HARDEST], truth),
            "highest_loss_16": scores(by_loss[:HARDEST], truth),
            "highest_loss_as_many_as_cleanlab": scores(by_loss[:len(cl)], truth)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a trained run folder")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--rates", type=float, nargs="*", default=[0.02, 0.05])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args(argv)
    probs, labels = validation_probabilities(args.run)
    n = len(labels)
    clean = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    hardest = set(np.argsort(probs[np.arange(n), labels], kind="stable")[:HARDEST].tolist())
    trials = [one_trial(probs, labels, r, s) for r in args.rates for s in range(args.seeds)]
    summary = {}
    for rate in args.rates:
        rows = [t for t in trials if t["rate"] == rate]
        summary[str(rate)] = {
            f"{method}_{key}": round(statistics.median(t[method][key] for t in rows), 3)
            for method in ("cleanlab", "highest_loss_as_many_as_cleanlab", "highest_loss_16")
            for key in ("n", "precision", "recall")}
    emit({"benchmark": "label_issues", "machine": machine(), "run": str(args.run),
          "validation_images": n, "accuracy": round(float((probs.argmax(1) == labels).mean()), 4),
          "unflipped": {"cleanlab_flagged": len(clean),
                        "of_its_first_16_in_the_report": len(set(clean[:HARDEST].tolist()) & hardest)},
          "summary_medians": summary, "trials": trials}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
