"""A run in a notebook: the HTML and Markdown a TrainResult shows, for full and partial runs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from PIL import Image

from snugtune.recipe import TrainResult
from snugtune.report import (
    notebook_bundle,
    report_html,
    run_html,
    run_markdown,
    write_report,
)
from snugtune.results import PhaseResult, RunSummary
from snugtune.rundir import RunDir
from snugtune.units import MIB

SUMMARY = RunSummary(
    backbone="timm:test_resnet", data="data/shapes", classes=("circle", "square", "<b>tri</b>"),
    num_train=30, num_val=6, resolution=32, device="cpu", best_val_accuracy=0.8333,
    best_val_loss=0.41, final_val_accuracy=0.6667, total_seconds=12.5,
    phases=(
        PhaseResult(name="head", trainable="head", epochs_planned=2, epochs_run=2,
                    best_val_accuracy=0.5, seconds=1.5, images_per_s=900.0, micro_batch=8,
                    accumulation=1, precision="fp32", predicted_peak_bytes=3 * MIB,
                    measured_peak_bytes=2 * MIB),
        PhaseResult(name="finetune", trainable="top:2", epochs_planned=4, epochs_run=3,
                    stopped_early=True, best_val_accuracy=0.8333, seconds=9.0,
                    images_per_s=120.0, micro_batch=4, accumulation=2, precision="bf16",
                    checkpointing=(1, 2), predicted_peak_bytes=7 * MIB,
                    measured_peak_bytes=6 * MIB),
    ),
)


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    """A finished run's folder: learning curves, a confusion matrix and the report."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(run.learning_curves)
    Image.new("RGB", (3, 3), (30, 30, 200)).save(run.confusion_matrix)
    write_report(run, SUMMARY, rows=[{"train_loss": 0.5, "val_accuracy": 0.6667}])
    return run


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def test_the_html_shows_the_summary_the_plan_and_peak_memory(run: RunDir) -> None:
    page = run_html(run, SUMMARY)
    assert "Final validation accuracy 66.67%, best 83.33%" in page
    assert "timm:test_resnet at 32 px on cpu" in page and "Total time: 12.5 s" in page
    assert "Peak memory: 6.00 MiB measured, 7.00 MiB planned" in page
    assert "<td>finetune</td><td>top:2</td>" in page and "3 of 4 (stopped early)" in page
    assert "4 × 2" in page and "bf16" in page and "1, 2" in page  # the finetune phase's plan
    assert "&lt;b&gt;tri&lt;/b&gt;" in page and "<b>tri</b>" not in page  # text is escaped
    assert "<style>" not in page and "<html" not in page  # a fragment, not a page


def test_the_html_embeds_the_curves_and_folds_the_report_with_its_images(run: RunDir) -> None:
    page = run_html(run.path, SUMMARY)
    summary, _, report = page.partition("<details>")
    assert _uri(run.learning_curves) in summary  # the curves, shown without the report
    assert report and run.report_html.absolute().as_uri() in report
    assert "Training phases" in report and "Best validation accuracy: 83.33%" in report
    assert _uri(run.confusion_matrix) in report and _uri(run.learning_curves) in report
    assert 'src="learning_curves.png"' not in report  # a notebook could not load it


def test_the_report_alone_is_its_body_with_its_images_embedded(run: RunDir) -> None:
    body = report_html(run.path)
    assert body.startswith("<h1>") and body.endswith("</ul>")  # no page around it, no CSS
    assert _uri(run.confusion_matrix) in body and 'src="confusion_matrix.png"' not in body
    assert body in run_html(run, SUMMARY)


def test_an_image_outside_the_run_folder_is_left_as_the_report_links_it(run: RunDir) -> None:
    page = run.report_html.read_text(encoding="utf-8")
    page = page.replace("</body>", '<p><img src="../elsewhere.png" alt="x"></p>\n'
                                   '<p><img src="missing.png" alt="y"></p>\n</body>')
    run.report_html.write_text(page, encoding="utf-8")
    (run.path.parent / "elsewhere.png").write_bytes(run.learning_curves.read_bytes())
    body = report_html(run)
    assert 'src="../elsewhere.png"' in body and 'src="missing.png"' in body


def test_the_markdown_shows_the_summary_and_names_the_plots_and_the_report(run: RunDir) -> None:
    text = run_markdown(run, SUMMARY)
    assert "**Final validation accuracy 66.67%, best 83.33% (validation loss 0.41)**" in text
    assert "| finetune | top:2 | 3 of 4 (stopped early) | 83.33% |" in text
    assert f"]({run.learning_curves.absolute()})" in text
    assert f"Report: {run.report_md}" in text
    assert "base64" not in text


def test_a_train_result_is_shown_by_its_mimebundle(run: RunDir) -> None:
    result = TrainResult(run.path, SUMMARY)
    bundle = result._repr_mimebundle_()
    assert bundle == notebook_bundle(result)
    assert bundle == {"text/html": run_html(run, SUMMARY),
                      "text/markdown": run_markdown(run, SUMMARY)}
    assert list(result._repr_mimebundle_(include={"text/markdown"})) == ["text/markdown"]
    assert list(result._repr_mimebundle_(exclude={"text/markdown"})) == ["text/html"]


def test_ipython_displays_a_train_result_as_html_markdown_and_text(run: RunDir) -> None:
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(TrainResult(run.path, SUMMARY))
    assert set(data) >= {"text/html", "text/markdown", "text/plain"}
    assert "Final validation accuracy 66.67%" in data["text/html"]
    assert data["text/plain"].startswith("TrainResult(")


def test_a_partial_run_renders_dashes_and_says_there_is_no_report(tmp_path: Path) -> None:
    """A crashed run, or a folder that is gone: nothing recorded, nothing raises."""
    for folder in (tmp_path, tmp_path / "gone"):
        bundle = notebook_bundle(TrainResult(folder, RunSummary()))
        assert "Validation accuracy: not recorded" in bundle["text/html"]
        assert f"No report was written in {folder}" in bundle["text/html"]
        assert "<details>" not in bundle["text/html"] and "<img" not in bundle["text/html"]
        assert "Peak memory: — measured" in bundle["text/markdown"]
        assert f"No report was written in {folder}" in bundle["text/markdown"]
