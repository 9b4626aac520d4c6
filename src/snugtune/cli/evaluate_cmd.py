"""``snugtune evaluate RUN [DATA] [--json]``."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from snugtune.cli._args import add_inference_args, budget_bytes

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class precision/recall/F1, confusion matrix")
    p.add_argument("run", help="a finished run folder")
    p.add_argument("data", nargs="?", help="class-folder tree (default: the run's validation split)")
    add_inference_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.train import evaluate_run

    report = evaluate_run(a.run, a.data, device=a.device, batch_size=a.batch_size,
                          gpu_memory=budget_bytes(a.gpu_memory))
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    table = Table(title=f"accuracy {report.accuracy:.4f}  macro F1 {report.macro_f1():.4f}")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for m in report.per_class:
        table.add_row(m.name, f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}", str(m.support))
    Console().print(table)
    return 0
