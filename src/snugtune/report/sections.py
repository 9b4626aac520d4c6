"""The sections of the run report, each a function from run data to document blocks.

Every builder tolerates missing keys (a crashed run, an older summary layout): a missing value
renders as an em dash and a section with nothing to show is left out or says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from snugtune.report._format import (
    MISSING,
    as_number,
    fmt_bool,
    fmt_bytes,
    fmt_float,
    fmt_int,
    fmt_percent,
    fmt_seconds,
    fmt_value,
)
from snugtune.report.classification import ClassificationReport
from snugtune.report.document import Block, Bullets, Heading, Image, Paragraph, Table

__all__ = [
    "CONFUSION_PNG",
    "LEARNING_CURVES_PNG",
    "MEMORY_PNG",
    "evaluation_section",
    "learning_curves_section",
    "memory_section",
    "overview_section",
    "phases_section",
    "report_title",
]

LEARNING_CURVES_PNG = "learning_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
MEMORY_PNG = "memory.png"
_MAX_CLASS_NAMES = 12


def report_title(summary: Mapping[str, object], run_dir: Path) -> str:
    """``"snugtune run: <backbone> on <data>"``, with what of that is known."""
    backbone = summary.get("backbone")
    data = summary.get("data")
    if backbone and data:
        return f"snugtune run: {backbone} on {data}"
    if backbone or data:
        return f"snugtune run: {backbone or data}"
    return f"snugtune run: {run_dir.name}"


def overview_section(summary: Mapping[str, object], run_dir: Path, created: str) -> list[Block]:
    """Title, the headline best validation accuracy, and the facts of the run."""
    best = summary.get("best_val_accuracy")
    headline = f"Best validation accuracy: {fmt_percent(best)}"
    if as_number(summary.get("best_val_loss")) is not None:
        headline += f" (validation loss {fmt_float(summary['best_val_loss'])})"
    if as_number(best) is None:
        headline = "Best validation accuracy: not recorded"
    facts = [
        _classes_fact(summary.get("classes")),
        f"Images: {fmt_int(summary.get('num_train'))} train, "
        f"{fmt_int(summary.get('num_val'))} validation",
        f"Resolution: {_resolution(summary.get('resolution'))}",
        f"Device: {summary.get('device') or MISSING}",
        f"Total time: {fmt_seconds(summary.get('total_seconds'))}",
        f"Run folder: {run_dir}",
        f"Report written: {created}",
    ]
    return [
        Heading(report_title(summary, run_dir), level=1),
        Paragraph(headline, strong=True),
        Bullets(tuple(facts)),
    ]


def phases_section(summary: Mapping[str, object]) -> list[Block]:
    """One row per training phase: epochs, early stop, best epoch, time, throughput."""
    phases = _phases(summary)
    blocks: list[Block] = [Heading("Training phases")]
    if not phases:
        return [*blocks, Paragraph("No phase information was recorded.")]
    header = [
        "Phase",
        "Epochs",
        "Stopped early",
        "Best epoch",
        "Best val accuracy",
        "Wall time",
        "Images/s",
    ]
    with_cache = any(p.get("feature_cache") for p in phases)
    if with_cache:
        header.append("Feature cache")
    rows = []
    for i, p in enumerate(phases):
        row = [
            _phase_name(p, i),
            _epochs(p),
            fmt_bool(p.get("stopped_early")),
            fmt_int(p.get("best_epoch")),
            fmt_percent(p.get("best_val_accuracy")),
            fmt_seconds(p.get("seconds")),
            fmt_int(p.get("images_per_s")),
        ]
        if with_cache:
            row.append(_feature_cache(p.get("feature_cache")))
        rows.append(tuple(row))
    right = (False, True, False, True, True, True, True, False)
    return [*blocks, Table(tuple(header), tuple(rows), right[: len(header)])]


def learning_curves_section(run_dir: Path) -> list[Block]:
    """The learning-curve plot, if it was drawn."""
    if not (run_dir / LEARNING_CURVES_PNG).is_file():
        return []
    return [
        Heading("Learning curves"),
        Image(LEARNING_CURVES_PNG, "Loss and accuracy per epoch, train and validation"),
    ]


def evaluation_section(evaluation: ClassificationReport | None, run_dir: Path) -> list[Block]:
    """Accuracy, per-class precision/recall/F1, confusion plot and most confused pairs."""
    has_plot = (run_dir / CONFUSION_PNG).is_file()
    if evaluation is None and not has_plot:
        return []
    blocks: list[Block] = [Heading("Per-class results")]
    if evaluation is not None:
        blocks.append(
            Paragraph(
                f"Accuracy {fmt_percent(evaluation.accuracy)} on "
                f"{fmt_int(evaluation.num_samples)} images; macro F1 "
                f"{evaluation.macro_f1():.3f}, weighted F1 {evaluation.weighted_f1():.3f}."
            )
        )
        rows = tuple(
            (c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", f"{c.support:,}")
            for c in evaluation.per_class
        )
        blocks.append(
            Table(
                ("Class", "Precision", "Recall", "F1", "Support"),
                rows,
                (False, True, True, True, True),
            )
        )
    if has_plot:
        blocks.append(Image(CONFUSION_PNG, "Confusion matrix, rows true class, columns predicted"))
    if evaluation is not None:
        blocks += _confused_pairs(evaluation)
    return blocks


def memory_section(summary: Mapping[str, object], run_dir: Path) -> list[Block]:
    """Per phase: micro-batch, accumulation, precision, predicted vs measured peak, OOMs."""
    phases = _phases(summary)
    has_plot = (run_dir / MEMORY_PNG).is_file()
    if not phases and not has_plot:
        return []
    blocks: list[Block] = [Heading("Memory: predicted vs measured")]
    if phases:
        header = [
            "Phase",
            "Micro-batch",
            "Accumulation",
            "Effective batch",
            "Precision",
            "Predicted peak",
            "Measured peak",
            "Measured / predicted",
        ]
        with_oom = any("oom_recoveries" in p for p in phases)
        if with_oom:
            header.append("OOM recoveries")
        rows = [tuple(_memory_row(p, i, with_oom)) for i, p in enumerate(phases)]
        right = (False, True, True, True, False, True, True, True, True)
        blocks.append(Table(tuple(header), tuple(rows), right[: len(header)]))
        cached = [_phase_name(p, i) for i, p in enumerate(phases) if _cache_used(p)]
        if cached:
            blocks.append(Paragraph(
                f"{', '.join(cached)} trained on cached features: the phase held the weights and "
                "a batch of features, while its prediction is for training on images (what runs "
                "with --no-feature-cache), so the measured peak is lower."))
    if has_plot:
        blocks.append(Image(MEMORY_PNG, "Predicted and measured peak memory per phase"))
    return blocks


# ---------------------------------------------------------------- helpers


def _phases(summary: Mapping[str, object]) -> list[Mapping[str, object]]:
    phases = summary.get("phases")
    if not isinstance(phases, Sequence) or isinstance(phases, str):
        return []
    return [p for p in phases if isinstance(p, Mapping)]


def _phase_name(phase: Mapping[str, object], index: int) -> str:
    return str(phase.get("name") or phase.get("phase") or f"phase {index + 1}")


def _epochs(phase: Mapping[str, object]) -> str:
    run, planned = fmt_int(phase.get("epochs_run")), phase.get("epochs_planned")
    return run if as_number(planned) is None else f"{run} / {fmt_int(planned)}"


def _cache_used(phase: Mapping[str, object]) -> bool:
    cache = phase.get("feature_cache")
    return isinstance(cache, Mapping) and cache.get("used") is True


def _feature_cache(cache: object) -> str:
    if isinstance(cache, Mapping):
        items = [
            f"{k}={fmt_value(str(k), v, 24)}"
            for k, v in cache.items()
            if not isinstance(v, Mapping | list)
        ]
        return ", ".join(items[:4]) or "yes"
    if cache is None:
        return MISSING
    return fmt_value("feature_cache", cache) if cache else "no"


def _memory_row(phase: Mapping[str, object], index: int, with_oom: bool) -> list[str]:
    micro, accum = as_number(phase.get("micro_batch")), as_number(phase.get("accumulation"))
    effective = fmt_int(micro * accum) if micro is not None and accum is not None else MISSING
    predicted = as_number(phase.get("predicted_peak_bytes"))
    measured = as_number(phase.get("measured_peak_bytes"))
    ratio = f"{measured / predicted:.0%}" if predicted and measured is not None else MISSING
    row = [
        _phase_name(phase, index),
        fmt_int(micro),
        fmt_int(accum),
        effective,
        str(phase.get("precision") or MISSING),
        fmt_bytes(predicted),
        fmt_bytes(measured),
        ratio,
    ]
    if with_oom:
        row.append(fmt_int(phase.get("oom_recoveries", 0)))
    return row


def _classes_fact(classes: object) -> str:
    if not isinstance(classes, Sequence) or isinstance(classes, str) or not classes:
        return f"Classes: {MISSING}"
    names = [str(c) for c in classes]
    shown = ", ".join(names[:_MAX_CLASS_NAMES])
    more = f", … (+{len(names) - _MAX_CLASS_NAMES} more)" if len(names) > _MAX_CLASS_NAMES else ""
    return f"Classes: {len(names)} ({shown}{more})"


def _resolution(value: object) -> str:
    x = as_number(value)
    return MISSING if x is None else f"{int(x)} px"


def _confused_pairs(evaluation: ClassificationReport, top: int = 5) -> list[Block]:
    """The ``top`` largest off-diagonal cells, e.g. ``cat -> dog: 12 (8.0% of cat)``."""
    cells = [
        (count, i, j)
        for i, row in enumerate(evaluation.confusion)
        for j, count in enumerate(row)
        if i != j and count > 0
    ]
    if not cells:
        return []
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    names, support = evaluation.classes, [sum(r) for r in evaluation.confusion]
    items = tuple(
        f"{names[i]} predicted as {names[j]}: {count:,} ({count / support[i]:.1%} of {names[i]})"
        for count, i, j in cells[:top]
    )
    return [
        Paragraph("Most frequent confusions (true class predicted as another):"),
        Bullets(items),
    ]
