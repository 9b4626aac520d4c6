"""The sections of the run report, each a function from run data to document blocks.

Every builder tolerates missing values (a crashed run, an older summary layout): a value that
was not recorded renders as an em dash and a section with nothing to show is left out or says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
from snugtune.results import CacheInfo, PhaseResult, RunSummary
from snugtune.rundir import RunDir

__all__ = [
    "evaluation_section",
    "learning_curves_section",
    "memory_section",
    "overview_section",
    "phases_section",
    "race_section",
    "report_title",
]

_MAX_CLASS_NAMES = 12


def report_title(summary: RunSummary, run: RunDir) -> str:
    """``"snugtune run: <backbone> on <data>"``, with what of that is known."""
    backbone, data = summary.backbone, summary.data
    if backbone and data:
        return f"snugtune run: {backbone} on {data}"
    if backbone or data:
        return f"snugtune run: {backbone or data}"
    return f"snugtune run: {run.path.name}"


def overview_section(summary: RunSummary, run: RunDir, created: str) -> list[Block]:
    """Title, the headline best validation accuracy, and the facts of the run."""
    best = summary.best_val_accuracy
    headline = f"Best validation accuracy: {fmt_percent(best)}"
    if as_number(summary.best_val_loss) is not None:
        headline += f" (validation loss {fmt_float(summary.best_val_loss)})"
    if as_number(best) is None:
        headline = "Best validation accuracy: not recorded"
    facts = [
        _classes_fact(summary.classes),
        f"Images: {fmt_int(summary.num_train)} train, {fmt_int(summary.num_val)} validation",
        f"Resolution: {_resolution(summary.resolution)}",
        f"Device: {summary.device or MISSING}",
        *_flips_fact(summary.flip_check),
        *_decoded_fact(summary.decoded_images),
        f"Total time: {fmt_seconds(summary.total_seconds)}" + (
            f" (time budget {fmt_seconds(summary.time_budget)}{_time_plan(summary)})"
            if summary.time_budget else ""),
        f"Run folder: {run.path}",
        f"Report written: {created}",
    ]
    return [
        Heading(report_title(summary, run), level=1),
        Paragraph(headline, strong=True),
        Bullets(tuple(facts)),
    ]


def _flips_fact(check: Mapping[str, Any] | None) -> list[str]:
    if not check:
        return []
    return [f"Horizontal flips: {'kept' if check.get('flips') else 'turned off'} (the classes' "
            f"average images: median asymmetry {fmt_float(check.get('asymmetry'))}, flips kept "
            f"up to {fmt_float(check.get('max_asymmetry'))})"]


def _decoded_fact(images: Mapping[str, Any] | None) -> list[str]:
    if not images:
        return ["Decoded images: none stored (the files were decoded where read)"]
    return [f"Decoded images: {fmt_bytes(images.get('bytes'))}, sides at most "
            f"{fmt_int(images.get('side'))} px, in `{images.get('path')}` "
            f"({fmt_int(images.get('added'))} decoded by this run in "
            f"{fmt_seconds(images.get('fill_seconds'))}; the others were there already)"]


def phases_section(summary: RunSummary) -> list[Block]:
    """One row per training phase: epochs, early stop, best epoch, time, throughput."""
    phases = summary.phases
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
    with_cache = any(p.feature_cache for p in phases)
    if with_cache:
        header.append("Feature cache")
    rows = []
    for i, p in enumerate(phases):
        row = [
            _phase_name(p, i),
            _epochs(p),
            fmt_bool(p.stopped_early),
            fmt_int(p.best_epoch),
            fmt_percent(p.best_val_accuracy),
            fmt_seconds(p.seconds) + _predicted(p, (summary.time_plan or {}).get(p.name)),
            fmt_int(p.images_per_s),
        ]
        if with_cache:
            row.append(_feature_cache(p.feature_cache))
        rows.append(tuple(row))
    right = (False, True, False, True, True, True, True, False)
    return [*blocks, Table(tuple(header), tuple(rows), right[: len(header)])]


def race_section(summary: RunSummary) -> list[Block]:
    """``--model auto``: each candidate (dropped and why, or its rungs), the winner and why."""
    race = summary.race
    if not race:
        return []
    rows = []
    for e in race.get("entrants") or ():
        rungs = e.get("rungs") or ()
        last = rungs[-1] if rungs else None
        rows.append((
            f"{e.get('name')} (chosen)" if e.get("name") == race.get("winner") else str(e.get("name")),
            fmt_float(e.get("top1"), 3),
            fmt_int(e.get("images_per_s")),
            fmt_bytes(e.get("predicted_peak_bytes")),
            " / ".join(f"{fmt_percent(r[1])} on {fmt_int(r[0])}" for r in rungs) or MISSING,
            fmt_seconds(sum(r[2] for r in rungs)) if last else MISSING,
            str(e.get("dropped") or ""),
        ))
    header = ("Backbone", "ImageNet top-1", "Images/s", "Predicted peak",
              "Head accuracy (validation) per rung", "Race time", "Dropped because")
    text = (f"Chosen: {race.get('winner')}, {race.get('reason')}. The race took "
            f"{fmt_seconds(race.get('seconds'))}" + (
                f" (its share of the time: {fmt_seconds(race.get('budget_seconds'))})"
                if race.get("budget_seconds") else "") +
            f"; validation on {fmt_int(race.get('val_images'))} images.")
    return [Heading("Backbone race"), Paragraph(text),
            Table(header, tuple(rows), (False, True, True, True, False, True, False))]


def _time_plan(summary: RunSummary) -> str:
    """The budget's plan before training, as said in the log."""
    plan = summary.time_plan or {}
    return "; planned: " + ", ".join(f"{k} {fmt_seconds(v)}" for k, v in plan.items()) if plan else ""


def _predicted(p: PhaseResult, planned: float | None) -> str:
    """What the time budget planned up front and predicted from the phase's first steps."""
    said = ([f"planned {fmt_seconds(planned)}"] if planned is not None else []) + (
        [f"predicted {fmt_seconds(p.predicted_seconds)}"] if p.predicted_seconds is not None else [])
    return f" ({', '.join(said)})" if said else ""


def learning_curves_section(run: RunDir) -> list[Block]:
    """The learning-curve plot, if it was drawn."""
    if not run.learning_curves.is_file():
        return []
    return [
        Heading("Learning curves"),
        Image(run.learning_curves.name, "Loss and accuracy per epoch, train and validation"),
    ]


def evaluation_section(evaluation: ClassificationReport | None, run: RunDir) -> list[Block]:
    """Accuracy, per-class precision/recall/F1, confusion plot and most confused pairs."""
    has_plot = run.confusion_matrix.is_file()
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
        blocks.append(Image(run.confusion_matrix.name, "Confusion matrix, rows true class, columns predicted"))
    if evaluation is not None:
        blocks += _confused_pairs(evaluation)
    return blocks


def memory_section(summary: RunSummary, run: RunDir) -> list[Block]:
    """Per phase: micro-batch, accumulation, precision, predicted vs measured peak, OOMs."""
    phases = summary.phases
    has_plot = run.memory_plot.is_file()
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
        header.append("OOM recoveries")
        rows = [tuple(_memory_row(p, i)) for i, p in enumerate(phases)]
        right = (False, True, True, True, False, True, True, True, True)
        blocks.append(Table(tuple(header), tuple(rows), right[: len(header)]))
        cached = [_phase_name(p, i) for i, p in enumerate(phases)
                  if p.feature_cache is not None and p.feature_cache.used]
        if cached:
            blocks.append(Paragraph(
                f"{', '.join(cached)} trained on cached features: the phase held the weights and "
                "a batch of features, while its prediction is for training on images (what runs "
                "with --no-feature-cache), so the measured peak is lower."))
    if has_plot:
        blocks.append(Image(run.memory_plot.name, "Predicted and measured peak memory per phase"))
    return blocks


# ---------------------------------------------------------------- helpers


def _phase_name(phase: PhaseResult, index: int) -> str:
    return phase.name or f"phase {index + 1}"


def _epochs(phase: PhaseResult) -> str:
    run, planned = fmt_int(phase.epochs_run), phase.epochs_planned
    return run if planned is None else f"{run} / {fmt_int(planned)}"


def _feature_cache(cache: CacheInfo | None) -> str:
    if cache is None:
        return MISSING
    items = [f"{k}={fmt_value(k, v, 24)}" for k, v in cache.to_dict().items()]
    return ", ".join(items[:4])


def _memory_row(phase: PhaseResult, index: int) -> list[str]:
    micro, accum = phase.micro_batch, phase.accumulation
    effective = fmt_int(micro * accum) if micro is not None and accum is not None else MISSING
    predicted = phase.predicted_peak_bytes
    measured = phase.measured_process_bytes or phase.measured_peak_bytes  # CUDA: whole process
    ratio = f"{measured / predicted:.0%}" if predicted and measured is not None else MISSING
    return [
        _phase_name(phase, index),
        fmt_int(micro),
        fmt_int(accum),
        effective,
        phase.precision or MISSING,
        fmt_bytes(predicted),
        fmt_bytes(measured),
        ratio,
        fmt_int(phase.oom_recoveries),
    ]


def _classes_fact(classes: Sequence[str]) -> str:
    if not classes:
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
