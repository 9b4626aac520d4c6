"""``snugtune plan DATA --model M --gpu-memory 4GiB``: what will run, and why it fits."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="plan micro-batch, precision and checkpointing within a memory budget",
        description="Scan DATA, then choose per training phase the fastest configuration "
                    "whose predicted peak memory fits --gpu-memory.")
    p.add_argument("data", help="image folder: DATA/<class>/*.jpg")
    p.add_argument("--model", help="timm or torchvision name (default tf_efficientnet_lite0)")
    p.add_argument("--gpu-memory", metavar="SIZE", help="memory budget, e.g. 4GiB")
    p.add_argument("--res", "--resolution", type=int, dest="resolution",
                   help="input size in px (default: from the backbone and the images)")
    p.add_argument("--batch-size", type=int, help="effective batch size (default 32)")
    p.add_argument("--device", choices=["cuda", "cpu"], help="device to plan for (default cuda)")
    p.add_argument("--gpu", metavar="PROFILE", help="GPU profile (default generic)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--micro-batch", type=int, help="force a micro-batch (predict only)")
    p.add_argument("--config", metavar="YAML", help="settings file; flags override it")
    p.add_argument("--out", metavar="DIR", help="also write DIR/plan.json")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.config import build_config
    from snugtune.train.planning import plan_folder

    names = ("model", "gpu_memory", "resolution", "batch_size", "gpu", "precision", "micro_batch")
    overrides = {n: getattr(a, n) for n in names}
    overrides.update(data=a.data, device=a.device)
    plan = plan_folder(build_config(a.config, overrides), device=a.device)
    if a.out:
        plan.save(a.out)
    if a.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    _render(plan)
    return 0


def _render(plan: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from snugtune.plan import Plan
    from snugtune.units import format_bytes

    assert isinstance(plan, Plan)
    budget = format_bytes(plan.budget_bytes) if plan.budget_bytes else "no budget"
    table = Table(title=f"{plan.model} at {plan.resolution} px, {plan.num_classes} classes, "
                        f"{plan.num_train} training images, batch {plan.batch_size}, "
                        f"{plan.device} ({plan.gpu}), {budget}")
    for col in ("phase", "trainable", "micro x acc", "precision", "ckpt blocks", "NHWC",
                "feat. cache", "peak", "budget", "limited by"):
        table.add_column(col, justify="right" if col in ("peak", "budget") else "left")
    for p in plan.phases:
        table.add_row(
            p.phase, p.trainable, f"{p.micro_batch} x {p.accumulation}", p.precision,
            ",".join(map(str, p.checkpointing)) or "-", "yes" if p.channels_last else "no",
            "yes" if p.feature_cache else "no", format_bytes(p.predicted_peak_bytes),
            f"{100 * p.utilisation:.0f}%" if p.utilisation is not None else "-", p.limited_by,
        )
    Console().print(table)
