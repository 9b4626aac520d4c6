"""Tables for people (rich), narrow enough for an 80-column terminal.

A plan is shown transposed (one row per setting, one column per phase), so it fits however
many settings it has; headers are short words that are never cut.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from snugtune.data import ScanResult
from snugtune.data.doctor import PROBLEMS, DataDoctor
from snugtune.memory import DeviceInfo, MemoryReport
from snugtune.planner import Plan
from snugtune.recipe import Entrant
from snugtune.report import ClassificationReport, split_note
from snugtune.store import CacheUsage, StoreUsage
from snugtune.units import format_bytes

__all__ = ["cache", "calibration", "doctor", "evaluation", "memory", "plan"]

_EXAMPLES = 5  # groups of copies shown per problem

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


def _console() -> Console:
    return Console(highlight=False)


def doctor(found: DataDoctor, scan: ScanResult, console: Console | None = None) -> None:
    """Copies per problem with a few examples, then the files that cannot be used."""
    console = console or _console()
    counts = found.counts()
    source = f" (labels from {scan.labels_file})" if scan.labels_file else ""
    console.print(f"{scan.root}: {found.images:,} images in {len(scan.classes)} classes{source}, "
                  f"{len(scan.skipped):,} files skipped", soft_wrap=True)
    table = Table()
    table.add_column("problem")
    table.add_column("groups", justify="right")
    table.add_column("extra copies", justify="right")
    for problem in PROBLEMS:
        table.add_row(problem, f"{counts[problem]['groups']:,}", f"{counts[problem]['extra']:,}")
    console.print(table)
    for problem in PROBLEMS:
        groups = found.of(problem)
        if groups:
            console.print(f"{problem} (first {min(_EXAMPLES, len(groups))} of {len(groups):,}):")
        for g in groups[:_EXAMPLES]:
            console.print(f"  {g.kind}: " + ", ".join(f"{p} ({c}, {s})" for p, c, s in g.files),
                          soft_wrap=True)
    console.print(split_note(found), soft_wrap=True)
    for reason, n in scan.reason_counts()["skipped"].items():
        console.print(f"skipped: {n:,} {reason}")


def cache(usage: CacheUsage, console: Console | None = None) -> None:
    """Where the cache is, its parts' sizes, then each store."""
    console = console or _console()
    b = usage.bytes
    console.print(f"{usage.path}: {format_bytes(usage.total_bytes)} (data index "
                  f"{format_bytes(b.get('index', 0))} for {usage.files:,} files checked; decoded "
                  f"images {format_bytes(b.get('images', 0))}; features "
                  f"{format_bytes(b.get('features', 0))})", soft_wrap=True)
    if not usage.stores:
        return
    table = Table()
    for name, right in (("kind", False), ("store", False), ("records", True), ("size", True),
                        ("last used", False), ("holds", False)):
        table.add_column(name, justify="right" if right else "left")
    for s in usage.stores:
        table.add_row(s.kind, s.key[:12], f"{s.records:,}", format_bytes(s.bytes),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(s.used)), _holds(s))
    console.print(table)
    console.print("snugtune cache --clear deletes it all (made again when needed)")


def _holds(s: StoreUsage) -> str:
    spec = s.spec
    if s.kind == "images":
        return f"images, sides at most {spec.get('side')} px"
    return f"{spec.get('backbone')} at {spec.get('resolution')} px, {spec.get('compute')}"


def plan(p: Plan, console: Console | None = None) -> None:
    """The plan: what it was made for, then each phase's settings side by side."""
    console = console or _console()
    budget = format_bytes(p.budget_bytes) if p.budget_bytes else "no budget"
    console.print(f"{p.model} at {p.resolution} px, {p.num_classes} classes, {p.num_train} "
                  f"training images, batch {p.batch_size}, {p.device} ({p.gpu}), {budget}")
    table = Table(show_header=True)
    table.add_column("setting", no_wrap=True)
    for ph in p.phases:
        table.add_column(ph.phase, overflow="fold")
    rows = {
        "trains": [ph.trainable for ph in p.phases],
        "micro-batch": [f"{ph.micro_batch} x {ph.accumulation}" for ph in p.phases],
        "precision": [ph.precision for ph in p.phases],
        "checkpointed": [",".join(map(str, ph.checkpointing)) or "-" for ph in p.phases],
        "channels-last": ["yes" if ph.channels_last else "no" for ph in p.phases],
        "feature cache": ["yes" if ph.feature_cache else "no" for ph in p.phases],
        "peak": [format_bytes(ph.predicted_peak_bytes) for ph in p.phases],
        "of budget": [f"{100 * ph.utilisation:.0f}%" if ph.utilisation is not None else "-"
                      for ph in p.phases],
        "limited by": [ph.limited_by for ph in p.phases],
    }
    for name, values in rows.items():
        table.add_row(name, *values)
    console.print(table)


def candidates(entrants: Sequence[Entrant], console: Console | None = None) -> None:
    """``plan --model auto``: each candidate, whether it fits and why not, its peak and speed."""
    console = console or _console()
    table = Table(title="--model auto: the candidates")
    for col, right in (("backbone", False), ("ImageNet top-1", True), ("res", True),
                       ("fine-tunes", False), ("predicted peak", True), ("images/s here", True),
                       ("dropped because", False)):
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for e in entrants:
        table.add_row(e.name, f"{e.top1:.1f}" if e.top1 is not None else "-",
                      str(e.resolution or "-"), e.trainable or "-",
                      format_bytes(e.predicted_peak_bytes) if e.predicted_peak_bytes else "-",
                      f"{e.images_per_s:.0f}" if e.images_per_s else "-", e.dropped or "")
    console.print(table)


def memory(r: MemoryReport, console: Console | None = None) -> None:
    """A step's predicted peak by term, then the layers holding the most activations."""
    console = console or _console()
    console.print(f"{r.model}, batch {r.batch}, {r.res} px, {r.precision}, {r.optimizer}, "
                  f"trains {r.trainable}, on {r.device}" + (f" ({r.gpu})" if r.device == "cuda" else ""))
    table = Table()
    table.add_column("term")
    table.add_column("at the peak", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    total = r.predicted_peak_bytes
    for key, label in _TERMS:
        value = r.breakdown.get(key, 0)
        if value:
            table.add_row(label, format_bytes(value), f"{100 * value / max(1, total):.1f}%")
    table.add_row("predicted peak", format_bytes(total), "100.0%", style="bold")
    console.print(table)
    console.print(f"peak during {r.peak_phase}; tensors alone {format_bytes(r.tensor_peak_bytes)}, "
                  f"evaluation step {format_bytes(r.eval_peak_bytes)}")
    if r.device == "cuda":
        console.print(f"runs in {format_bytes(r.needed_bytes)} or more (capped, the allocator "
                      "frees its cache before it fails)" + _verdict(r))
    if r.top_layers:
        top = Table(title="layers holding the most activations at the peak")
        top.add_column("module", overflow="fold")
        top.add_column("bytes", justify="right", no_wrap=True)
        for module, nbytes in r.top_layers[:8]:
            top.add_row(module, format_bytes(nbytes))
        console.print(top)


def _verdict(r: MemoryReport) -> str:
    if r.gpu_memory_bytes is None:
        return ""
    room, need = r.gpu_memory_bytes, r.needed_bytes
    if need <= room:
        return f"; fits {r.gpu} ({format_bytes(room)}) with {format_bytes(room - need)} to spare"
    return f"; does not fit {r.gpu} ({format_bytes(room)}): {format_bytes(need - room)} short"


def evaluation(report: ClassificationReport, console: Console | None = None) -> None:
    """Accuracy, macro F1, then precision, recall, F1 and support per class."""
    console = console or _console()
    console.print(f"accuracy {report.accuracy:.4f}, macro F1 {report.macro_f1():.4f} on "
                  f"{report.num_samples} images")
    table = Table()
    table.add_column("class", overflow="fold")
    for col in ("precision", "recall", "F1", "support"):
        table.add_column(col, justify="right", no_wrap=True)
    for m in report.per_class:
        table.add_row(m.name, f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}", str(m.support))
    console.print(table)


def calibration(name: str, info: DeviceInfo, console: Console | None = None) -> None:
    """A card's measured figures."""
    console = console or _console()
    table = Table(title=f"{info.name} (cuda:{info.index}) as {name}")
    table.add_column("measured")
    table.add_column("value", justify="right", no_wrap=True)
    for label, value in (
        ("total memory (as PyTorch reports it)", format_bytes(info.total_bytes)),
        ("free", format_bytes(info.free_bytes)),
        ("context and kernels (outside PyTorch)", format_bytes(info.context_bytes)),
        ("compute capability", f"{info.compute_capability[0]}.{info.compute_capability[1]}"),
        ("bf16 tensor cores", "yes" if info.bf16 else "no"),
        ("torch / CUDA", f"{info.torch} / {info.cuda}"),
        ("module loading", info.module_loading),
        ("this process's usage from", info.reading or ("NVML" if info.nvml else "the card's used memory")),
    ):
        table.add_row(label, value)
    console.print(table)
