"""A finished run in a notebook: its summary, its curves and its report, as HTML and Markdown.

Jupyter shows the value of a cell by its ``_repr_mimebundle_``; a
:class:`~snugtune.recipe.TrainResult` hands itself to :func:`notebook_bundle`::

    text/html       the accuracy, the run's facts, one row per phase (its plan, time and peak
                    memory), the learning curves, then the report (report.html) folded below
    text/markdown   the same summary, with the plots and the report named by their paths

:func:`report_html` is the report alone, to show it unfolded (``IPython.display.HTML``).

A notebook's page cannot load files from the run folder (its server serves only its own
folder), so the HTML embeds each PNG as a base64 ``data:`` URI; the Markdown, which
converters such as ``nbconvert --to markdown`` keep, links the files instead. A partial run (a
crash, a rank other than 0) still renders: what was not recorded is a dash or left out.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Protocol

from snugtune.report._format import (
    MISSING,
    as_number,
    fmt_bytes,
    fmt_float,
    fmt_int,
    fmt_percent,
    fmt_seconds,
    fmt_value,
)
from snugtune.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from snugtune.report.sections import report_title
from snugtune.results import PhaseResult, RunSummary
from snugtune.rundir import RunDir

__all__ = ["NotebookRun", "notebook_bundle", "report_html", "run_html", "run_markdown",
           "summary_blocks"]

_MAX_CLASS_NAMES = 12
_IMG_SRC = re.compile(r'<img src="([^"]*)"')
_CURVES_ALT = "Loss and accuracy per epoch, train and validation"

# How an image reaches the page: its source (a data URI, a path), or None to leave it out.
ImageSource = Callable[[Path], str | None]


class NotebookRun(Protocol):
    """What a notebook shows: a run folder and its summary (a ``TrainResult`` is one)."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def summary(self) -> RunSummary: ...


def notebook_bundle(result: NotebookRun, include: Container[str] | None = None,
                    exclude: Container[str] | None = None) -> dict[str, str]:
    """``_repr_mimebundle_``: the run as ``text/html`` and ``text/markdown``, those of them
    that ``include`` names (all when it is empty) and ``exclude`` does not (IPython's
    protocol; it adds ``text/plain`` itself)."""
    renderers: dict[str, Callable[[RunDir, RunSummary], str]] = {
        "text/html": run_html, "text/markdown": run_markdown}
    run = RunDir(result.run_dir)
    return {mime: render(run, result.summary) for mime, render in renderers.items()
            if (not include or mime in include) and not (exclude and mime in exclude)}


def run_html(run: RunDir | Path, summary: RunSummary) -> str:
    """The summary with the learning curves embedded, then ``report.html`` folded below it."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    page = render_html(summary_blocks(run, summary, _data_uri), report_title(summary, run))
    return f'<div class="snugtune-run">\n{_body(page)}\n{_folded_report(run)}\n</div>'


def run_markdown(run: RunDir | Path, summary: RunSummary) -> str:
    """The summary, the learning curves linked by path, and where the report is."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if run.report_md.is_file():
        where = Paragraph(f"Report: {run.report_md} (and {run.report_html.name} beside it)")
    else:
        where = Paragraph(f"No report was written in {run.path}.")
    return render_markdown([*summary_blocks(run, summary, _file_path), where])


def summary_blocks(run: RunDir, summary: RunSummary, image: ImageSource) -> list[Block]:
    """Title, accuracy, facts, the phases and their plan, the learning curves (by ``image``)."""
    blocks: list[Block] = [
        Heading(report_title(summary, run), level=3),
        Paragraph(_headline(summary), strong=True),
        Bullets(_facts(summary, run)),
    ]
    if summary.phases:
        blocks.append(_phase_table(summary.phases))
    src = image(run.learning_curves) if run.learning_curves.is_file() else None
    if src:
        blocks.append(Image(src, _CURVES_ALT))
    return blocks


def _headline(summary: RunSummary) -> str:
    final, best = summary.final_val_accuracy, summary.best_val_accuracy
    if as_number(final) is None and as_number(best) is None:
        return "Validation accuracy: not recorded"
    text = f"Final validation accuracy {fmt_percent(final)}, best {fmt_percent(best)}"
    if as_number(summary.best_val_loss) is not None:
        text += f" (validation loss {fmt_float(summary.best_val_loss)})"
    return text


def _facts(summary: RunSummary, run: RunDir) -> tuple[str, ...]:
    names = [str(c) for c in summary.classes]
    more = f", … (+{len(names) - _MAX_CLASS_NAMES} more)" if len(names) > _MAX_CLASS_NAMES else ""
    classes = f"{len(names)} ({', '.join(names[:_MAX_CLASS_NAMES])}{more})" if names else MISSING
    budget = f" (time budget {fmt_seconds(summary.time_budget)})" if summary.time_budget else ""
    resolution = as_number(summary.resolution)
    return (
        f"Backbone: {summary.backbone or MISSING} at "
        f"{MISSING if resolution is None else int(resolution)} px on {summary.device or MISSING}",
        f"Classes: {classes}",
        f"Images: {fmt_int(summary.num_train)} train, {fmt_int(summary.num_val)} validation, "
        f"from {summary.data or MISSING}",
        f"Total time: {fmt_seconds(summary.total_seconds)}{budget}",
        f"Peak memory: {_peak(summary.phases)}",
        f"Run folder: {run.path}",
    )


def _peak(phases: Sequence[PhaseResult]) -> str:
    """The highest measured peak over the phases, and the plan's."""
    measured = [p.measured_peak_bytes for p in phases if p.measured_peak_bytes is not None]
    planned = [p.predicted_peak_bytes for p in phases if p.predicted_peak_bytes is not None]
    text = f"{fmt_bytes(max(measured)) if measured else MISSING} measured"
    return text + (f", {fmt_bytes(max(planned))} planned" if planned else "")


def _phase_table(phases: Sequence[PhaseResult]) -> Table:
    """One row per phase: what it trained and how well, and its plan (micro-batch, precision,
    checkpointed blocks, peak memory)."""
    header = ("Phase", "Trains", "Epochs", "Best val accuracy", "Time", "Images/s",
              "Micro-batch × steps", "Precision", "Checkpointing", "Peak memory", "Planned peak")
    rows = tuple((
        p.name or MISSING,
        p.trainable or MISSING,
        f"{fmt_int(p.epochs_run)} of {fmt_int(p.epochs_planned)}"
        + (" (stopped early)" if p.stopped_early else ""),
        fmt_percent(p.best_val_accuracy),
        fmt_seconds(p.seconds),
        fmt_int(p.images_per_s),
        f"{fmt_int(p.micro_batch)} × {fmt_int(p.accumulation)}",
        p.precision or MISSING,
        fmt_value("checkpointing", list(p.checkpointing)),
        fmt_bytes(p.measured_peak_bytes),
        fmt_bytes(p.predicted_peak_bytes),
    ) for p in phases)
    right = (False, False, True, True, True, True, True, False, False, True, True)
    return Table(header, rows, right)


def report_html(run: RunDir | Path) -> str:
    """``report.html`` for a notebook: its body (its page's CSS left out) with its images
    embedded; a sentence when the run wrote no report."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    path = run.report_html
    if not path.is_file():
        return f"<p>No report was written in {html.escape(str(run.path))}.</p>"
    try:
        body = _body(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return f"<p>{html.escape(f'The report {path} could not be read ({e}).')}</p>"
    return _IMG_SRC.sub(lambda m: _embedded(run, m), body)


def _folded_report(run: RunDir) -> str:
    """The report under a link to its file, folded (a click unfolds it)."""
    if not run.report_html.is_file():
        return report_html(run)
    link = (f'<a href="{html.escape(run.report_html.absolute().as_uri())}" target="_blank">'
            f"<code>{html.escape(str(run.report_html))}</code></a>")
    return f"<details>\n<summary>The full report: {link}</summary>\n{report_html(run)}\n</details>"


def _embedded(run: RunDir, match: re.Match[str]) -> str:
    """An ``<img src="NAME"`` of a file in the run folder, with the file as a data URI."""
    name = html.unescape(match.group(1))
    if Path(name).name != name or not (run.path / name).is_file():
        return match.group(0)  # not a file of the run folder: left as the report has it
    src = _data_uri(run.path / name)
    return f'<img src="{src}"' if src else match.group(0)


def _body(page: str) -> str:
    """The inside of a standalone page's ``<body>`` (its ``<head>`` and CSS left out)."""
    if "<body>" not in page:
        return page
    return page.partition("<body>")[2].rpartition("</body>")[0].strip()


def _data_uri(path: Path) -> str | None:
    """The file as a base64 ``data:`` URI (None when it cannot be read)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _file_path(path: Path) -> str:
    """The file's absolute path, for a Markdown link."""
    return str(path.absolute())
