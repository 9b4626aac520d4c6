"""Run reporting: per-epoch metrics, evaluation scores, plots, the model card and the report.

Everything a finished (or crashed) run leaves for people to read::

    run_dir/
      metrics.csv, metrics.json   per-epoch rows            MetricsLog
      tensorboard/                the same as event files   MetricsLog
      learning_curves.png         loss/accuracy per epoch   plot_learning_curves
      confusion_matrix.png        evaluation heat map       plot_confusion_matrix
      memory.png                  predicted vs measured     plot_memory
      hardest_val.png             highest-loss val images   plot_images
      model_card.json             backbone, classes, preprocessing, metrics, versions
      report.md, report.html      all of the above          write_report

In a notebook, a run shows its summary, curves and report (``notebook_bundle``, the
``_repr_mimebundle_`` of :class:`~snugtune.recipe.TrainResult`).

Every file's name is the run folder's (:class:`snugtune.rundir.RunDir`), and every file is
written by its one atomic writer. matplotlib and tensorboard are imported only when a plot or
event file is first written.
"""

from __future__ import annotations

from snugtune.report.card import read_model_card, write_model_card
from snugtune.report.classification import (
    ClassificationReport,
    ClassMetrics,
    classification_report,
)
from snugtune.report.doctor import HardImage, hardest_images, split_note
from snugtune.report.metrics_log import MetricsLog
from snugtune.report.notebook import notebook_bundle, report_html, run_html, run_markdown
from snugtune.report.plots import (
    plot_confusion_matrix,
    plot_images,
    plot_learning_curves,
    plot_memory,
)
from snugtune.report.report import write_report

__all__ = [
    "ClassMetrics",
    "ClassificationReport",
    "HardImage",
    "MetricsLog",
    "classification_report",
    "hardest_images",
    "split_note",
    "notebook_bundle",
    "plot_confusion_matrix",
    "plot_images",
    "plot_learning_curves",
    "plot_memory",
    "read_model_card",
    "report_html",
    "run_html",
    "run_markdown",
    "write_model_card",
    "write_report",
]
