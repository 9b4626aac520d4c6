"""``snugtune memory MODEL --batch B --res R [...]``: explain one configuration's memory."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "render_breakdown"]

_TERMS = (
    ("parameters", "parameters (weights, buffers)"),
    ("gradients", "gradients"),
    ("optimizer_state", "optimizer state"),
    ("activations", "activations saved for backward"),
    ("temporaries", "temporaries"),
    ("autocast_copies", "autocast weight copies"),
    ("input", "input batch"),
    ("workspace", "cuBLAS/cuDNN/oneDNN workspace"),
    ("allocator_reserve", "caching-allocator reserve"),
    ("cuda_context", "CUDA context"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory", help="predict a training step's peak memory, by term",
        description="Simulate two training steps and an eval step of MODEL on fake tensors "
                    "(no GPU needed) and explain the predicted peak memory.")
    p.add_argument("model", help="timm or torchvision model name")
    p.add_argument("--batch", type=int, required=True, help="micro-batch size")
    p.add_argument("--res", type=int, required=True, help="input resolution in px")
    p.add_argument("--classes", type=int, default=1000, help="output classes (default 1000)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw")
    p.add_argument("--trainable", default="all", help="all (default), head or top:N")
    p.add_argument("--checkpointing", action="store_true", help="checkpoint every block")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--gpu", default="generic", metavar="PROFILE",
                   help="GPU profile: generic, a100-40gb, h100-80gb, t4-16gb, rtx2070-8gb")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.errors import ConfigError
    from snugtune.memory import estimate_memory

    if a.batch < 1 or a.res < 16:
        raise ConfigError("--batch must be >= 1 and --res >= 16; e.g. --batch 32 --res 224")
    report = estimate_memory(
        a.model, batch=a.batch, res=a.res, classes=a.classes, precision=a.precision,
        optimizer=a.optimizer, trainable=a.trainable, checkpointing=a.checkpointing,
        channels_last=a.channels_last, device=a.device, gpu=a.gpu,
    )
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    title = (f"{report.model}  batch {report.batch}  {report.res} px  {report.precision}  "
             f"{report.optimizer}  trainable {report.trainable}  on {report.device}"
             + (f" ({report.gpu})" if report.device == "cuda" else ""))
    render_breakdown(title, report.breakdown, report.predicted_peak_bytes, report.to_dict())
    return 0


def render_breakdown(title: str, breakdown: dict[str, int], total: int, extra: dict[str, Any]) -> None:
    """Print a breakdown table (and the top layers when ``extra`` has them) with rich."""
    from rich.console import Console
    from rich.table import Table

    from snugtune.units import format_bytes

    table = Table(title=title)
    table.add_column("term")
    table.add_column("bytes at the peak", justify="right")
    table.add_column("share", justify="right")
    for key, label in _TERMS:
        value = breakdown.get(key, 0)
        if value:
            table.add_row(label, format_bytes(value), f"{100 * value / max(1, total):.1f}%")
    table.add_row("predicted peak", format_bytes(total), "100.0%", style="bold")
    console = Console()
    console.print(table)
    if extra.get("peak_phase"):
        console.print(f"peak during {extra['peak_phase']}; tensors alone "
                      f"{format_bytes(extra.get('tensor_peak_bytes', 0))}, eval step "
                      f"{format_bytes(extra.get('eval_peak_bytes', 0))}")
    layers = extra.get("top_layers") or []
    if layers:
        top = Table(title="layers holding the most activations at the peak")
        top.add_column("module")
        top.add_column("bytes", justify="right")
        for item in layers[:8]:
            top.add_row(item["module"], format_bytes(item["bytes"]))
        console.print(top)
