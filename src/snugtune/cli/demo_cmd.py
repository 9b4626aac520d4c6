"""``snugtune demo``: write Animal-MNIST as class folders and train the default backbone on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snugtune.cli.train_cmd import add_config_flags, config_from_args

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on the bundled Animal-MNIST data, offline")
    p.add_argument("--data-dir", default="demo_data/animal_mnist", help="where to write the images")
    p.add_argument("--per-class", type=int, default=None, help="images per class (default all 1,000)")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--fresh", action="store_true", help="delete an existing demo run first")
    add_config_flags(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    import shutil

    from snugtune.data import write_animal_mnist
    from snugtune.train import train

    data = write_animal_mnist(a.data_dir, per_class=a.per_class)
    out = Path(a.out)
    if out.exists() and (a.fresh or not (out / "summary.json").exists()):
        shutil.rmtree(out)  # a half-finished demo is restarted rather than resumed
    elif (out / "summary.json").exists():
        print(f"{out} already holds a finished demo run; pass --fresh to train again")
        print(f"report: {out / 'report.md'}")
        return 0
    result = train(config_from_args(a, str(data), str(out)))
    acc = result.best_val_accuracy or 0.0
    print(f"demo: {len(result.classes)} classes, best val accuracy {acc:.4f}, "
          f"{result.summary['total_seconds']:.0f} s", file=sys.stdout)
    print(f"report: {result.report_path}")
    return 0
