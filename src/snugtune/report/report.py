"""``write_report``: the run report as ``report.md`` and ``report.html`` in the run folder.

Both files render the same block list (see :mod:`snugtune.report.document`); plots are linked
by relative path, so the run folder can be moved or zipped and the report still shows them.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from snugtune.data.doctor import DataDoctor
from snugtune.report._format import fmt_bytes, fmt_float, fmt_percent, fmt_value
from snugtune.report.classification import ClassificationReport
from snugtune.report.doctor import HardImage, doctor_section
from snugtune.report.document import (
    Block,
    Bullets,
    Code,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from snugtune.report.sections import (
    evaluation_section,
    learning_curves_section,
    memory_section,
    overview_section,
    phases_section,
    race_section,
    report_title,
)
from snugtune.results import RunSummary
from snugtune.rundir import RunDir, to_jsonable, write_text

__all__ = ["write_report"]

logger = logging.getLogger(__name__)
_MAX_ISSUE_ROWS = 200
_MAX_FILES = 40
_MAX_PLAN_COLUMNS = 14


def write_report(
    run: RunDir | Path,
    summary: RunSummary,
    *,
    rows: Sequence[Mapping[str, object]],
    evaluation: ClassificationReport | None = None,
    data_issues: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
    plan: Mapping[str, object] | None = None,
    doctor: DataDoctor | None = None,
    hardest: Sequence[HardImage] = (),
) -> Path:
    """Write ``RUN/report.md`` and ``RUN/report.html``.

    Plots are included when ``learning_curves.png``, ``confusion_matrix.png`` or
    ``memory.png`` exist in the run folder (draw them first with :mod:`snugtune.report.plots`).

    Args:
        run: Run folder; the report links files in it relatively.
        summary: the run's summary; what it did not record renders as a dash.
        rows: Per-epoch metrics rows, as logged by :class:`~snugtune.report.MetricsLog`.
        evaluation: Validation/test evaluation for the per-class table.
        data_issues: ``{"skipped": [{"path", "reason"}], "converted": [...]}``.
        plan: The training plan (as its JSON dict) for the plan table.
        doctor: duplicates, leakage and conflicting labels found in the data.
        hardest: the validation images of highest loss (drawn in ``hardest_val.png``).

    Returns:
        Path of ``report.md``.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        *overview_section(summary, run, created),
        *race_section(summary),
        *phases_section(summary),
        *_epochs_paragraph(rows, run),
        *learning_curves_section(run),
        *evaluation_section(evaluation, run),
        *memory_section(summary, run),
        *doctor_section(doctor, hardest, run, summary.data),
        *data_issues_section(data_issues, summary.data),
        *plan_section(plan),
        *usage_section(run),
        *files_section(run),
    ]
    write_text(run.report_md, render_markdown(blocks))
    write_text(run.report_html, render_html(blocks, report_title(summary, run)))
    logger.info("Wrote report %s (and %s)", run.report_md, run.report_html.name)
    return run.report_md


def data_issues_section(
    data_issues: Mapping[str, Sequence[Mapping[str, str]]] | None, data_root: object = None
) -> list[Block]:
    """Files skipped or converted during the scan, each with its reason.

    Paths under ``data_root`` (the dataset folder) are shown relative to it.
    """
    blocks: list[Block] = [Heading("Data issues")]
    if data_issues is None:
        return [*blocks, Paragraph("No data-issue list was recorded for this run.")]
    kinds = {str(k): list(v or ()) for k, v in data_issues.items()}
    counts = ", ".join(f"{len(v):,} {k}" for k, v in kinds.items())
    if not any(kinds.values()):
        return [*blocks, Paragraph("No problem files: every image was read as it was.")]
    root = f" Paths are relative to {data_root}." if data_root else ""
    blocks.append(Paragraph(f"Files with problems: {counts}.{root}"))
    for kind, entries in kinds.items():
        if entries:
            blocks += _issue_table(kind, [_relative(e, data_root) for e in entries])
    return blocks


def _relative(entry: Mapping[str, object], data_root: object) -> Mapping[str, object]:
    """``entry`` with its ``path`` made relative to ``data_root`` where it lies below it."""
    path = entry.get("path")
    if not data_root or not isinstance(path, str | os.PathLike):
        return entry
    try:
        relative = Path(path).relative_to(Path(str(data_root)))
    except ValueError:
        return entry
    return {**entry, "path": str(relative)}


def _issue_table(kind: str, entries: list[Mapping[str, object]]) -> list[Block]:
    keys = ["path", "reason"]
    for entry in entries:
        keys += [k for k in entry if k not in keys]
    shown = entries[:_MAX_ISSUE_ROWS]
    rows = tuple(tuple(fmt_value(k, e.get(k), 200) for k in keys) for e in shown)
    blocks: list[Block] = [
        Heading(f"{kind.replace('_', ' ').capitalize()} ({len(entries):,})", level=3),
        Table(tuple(_label(k) for k in keys), rows),
    ]
    if len(entries) > len(shown):
        blocks.append(Paragraph(f"… and {len(entries) - len(shown):,} more not listed here."))
    return blocks


def plan_section(plan: Mapping[str, object] | None) -> list[Block]:
    """The plan: settings as key/value rows, per-phase choices as one table."""
    if not plan:
        return []
    data = to_jsonable(plan)
    if not isinstance(data, dict):
        return []
    blocks: list[Block] = [Heading("Plan")]
    phases = data.pop("phases", None)
    flat = _flatten(data)
    if flat:
        rows = tuple((k, fmt_value(k.rsplit(".", 1)[-1], v)) for k, v in flat.items())
        blocks.append(Table(("Setting", "Value"), rows))
    if isinstance(phases, list) and phases:
        blocks.append(_plan_phase_table([p for p in phases if isinstance(p, dict)]))
    return blocks


def _plan_phase_table(phases: list[dict[str, object]]) -> Table:
    flat = [_flatten(p) for p in phases]
    keys: list[str] = []
    for p in flat:
        keys += [k for k in p if k not in keys]
    keys = keys[:_MAX_PLAN_COLUMNS]
    rows = tuple(tuple(fmt_value(k.rsplit(".", 1)[-1], p.get(k), 40) for k in keys) for p in flat)
    right = tuple(all(isinstance(p.get(k), int | float) for p in flat) for k in keys)
    return Table(tuple(_label(k) for k in keys), rows, right)


def _label(key: str) -> str:
    """``"micro_batch"`` -> ``"Micro batch"``, ``"device.name"`` -> ``"Device name"``."""
    text = key.replace("_", " ").replace(".", " ")
    return text[:1].upper() + text[1:]


def _flatten(data: Mapping[str, object], prefix: str = "", depth: int = 2) -> dict[str, object]:
    """Nested dicts to dotted keys, ``depth`` levels deep; deeper values stay as they are."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and depth > 1:
            out.update(_flatten(value, f"{name}.", depth - 1))
        else:
            out[name] = value
    return out


def usage_section(run: RunDir) -> list[Block]:
    """Commands that use the trained model, with this run's path filled in."""
    path = shlex.quote(str(run.path))
    commands = [
        f"snugtune evaluate {path} path/to/test_images/",
        f"snugtune predict  {path} image1.jpg image2.jpg --top-k 3",
        f"snugtune export   {path} --format onnx",
        f"snugtune export   {path} --format timm   # a folder timm loads: "
        "timm.create_model('local-dir:DIR', pretrained=True)",
    ]
    if run.tensorboard.is_dir():
        commands.append(f"tensorboard --logdir {shlex.quote(str(run.tensorboard))}")
    return [
        Heading("Using the model"),
        Paragraph(
            "Evaluate on held-out images (a class-folder tree), classify images, or export "
            "the model for deployment (ONNX, torch.export, safetensors) or for timm and the "
            "Hugging Face Hub (timm backbones); the model card in the run folder holds the classes "
            "and preprocessing."
        ),
        Code("\n".join(commands), "bash"),
    ]


def files_section(run: RunDir) -> list[Block]:
    """The files in the run folder, with sizes."""
    if not run.path.is_dir():
        return []
    files = sorted(
        p
        for p in run.path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p not in (run.report_md, run.report_html)
    )
    if not files:
        return []
    items = tuple(f"{p.name} ({fmt_bytes(p.stat().st_size)})" for p in files[:_MAX_FILES])
    if len(files) > _MAX_FILES:
        items += (f"… and {len(files) - _MAX_FILES} more",)
    return [Heading("Files in this run"), Bullets(items)]


def _epochs_paragraph(rows: Sequence[Mapping[str, object]], run: RunDir) -> list[Block]:
    if not rows:
        return [Paragraph("No epochs were logged.")]
    where = "metrics.csv and TensorBoard" if run.tensorboard.is_dir() else "metrics.csv"
    last = rows[-1]
    shown = (
        ("train loss", "train_loss", fmt_float),
        ("val loss", "val_loss", fmt_float),
        ("val accuracy", "val_accuracy", fmt_percent),
    )
    final = ", ".join(
        f"{label} {fmt(last[key])}" for label, key, fmt in shown if last.get(key) is not None
    )
    text = f"{len(rows):,} epoch{'' if len(rows) == 1 else 's'} logged in {where}."
    return [Paragraph(f"{text} Last epoch: {final}." if final else text)]
