"""``snugtune evaluate RUN [DATA] [--json]``."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class precision/recall/F1, confusion matrix")
    p.add_argument("run", help="a finished run folder")
    p.add_argument("data", nargs="?", help="class-folder tree (default: the run's validation split)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gpu-memory", metavar="SIZE",
                   help="memory budget, e.g. 2GiB (batches are halved to fit it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.errors import ConfigError
    from snugtune.train import evaluate_run
    from snugtune.units import parse_bytes

    try:
        budget = parse_bytes(a.gpu_memory) if a.gpu_memory else None
    except ValueError as e:
        raise ConfigError(f"--gpu-memory: {e}") from None
    report = evaluate_run(a.run, a.data, device=a.device, batch_size=a.batch_size, gpu_memory=budget)
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
