"""write_report with full, minimal and hostile inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from snugtune.report import classification_report
from snugtune.report import write_report as write_typed_report
from snugtune.results import RunSummary
from snugtune.units import GIB, MIB


def write_report(run_dir: Path, summary: dict[str, object], **kw: object) -> Path:
    """The report of a summary as ``summary.json`` holds it (missing and junk values too)."""
    return write_typed_report(run_dir, RunSummary.from_dict(summary), **kw)  # type: ignore[arg-type]

FULL_SUMMARY = {
    "backbone": "tf_efficientnet_lite0",
    "data": "data/flowers",
    "classes": ["daisy", "rose", "tulip"],
    "num_train": 1200,
    "num_val": 300,
    "resolution": 224,
    "device": "cuda:0",
    "best_val_accuracy": 0.9321,
    "best_val_loss": 0.2113,
    "total_seconds": 754.2,
    "phases": [
        {
            "name": "head",
            "epochs_run": 5,
            "epochs_planned": 5,
            "stopped_early": False,
            "best_epoch": 5,
            "best_val_accuracy": 0.91,
            "seconds": 80.5,
            "images_per_s": 950.0,
            "micro_batch": 64,
            "accumulation": 1,
            "precision": "bf16",
            "predicted_peak_bytes": 900 * MIB,
            "measured_peak_bytes": 870 * MIB,
            "feature_cache": {"used": True, "hits": 1200, "misses": 0},
        },
        {
            "name": "finetune",
            "epochs_run": 7,
            "epochs_planned": 20,
            "stopped_early": True,
            "best_epoch": 4,
            "best_val_accuracy": 0.9321,
            "seconds": 673.7,
            "images_per_s": 120.0,
            "micro_batch": 16,
            "accumulation": 4,
            "precision": "bf16",
            "predicted_peak_bytes": int(3.4 * GIB),
            "measured_peak_bytes": int(3.3 * GIB),
            "oom_recoveries": 1,
        },
    ],
}
ROWS = [
    {"phase": "head", "global_epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.7}
]
PLAN = {
    "budget_bytes": 4 * GIB,
    "device": {"name": "cuda:0", "context_bytes": 300 * MIB},
    "phases": [
        {
            "name": "head",
            "micro_batch": 64,
            "precision": "bf16",
            "checkpointing": [],
            "predicted_peak_bytes": 900 * MIB,
        }
    ],
}


def _read(run_dir: Path) -> tuple[str, str]:
    return (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()


def test_full_report(tmp_path: Path) -> None:
    for name in ("learning_curves.png", "confusion_matrix.png", "memory.png"):
        (tmp_path / name).write_bytes(b"\x89PNG fake")
    (tmp_path / "tensorboard").mkdir()
    evaluation = classification_report([0, 1, 2, 2], [0, 1, 1, 2], ["daisy", "rose", "tulip"])
    issues = {
        "skipped": [{"path": "data/rose/empty.jpg", "reason": "zero bytes"}],
        "converted": [{"path": "data/tulip/cmyk.jpg", "reason": "CMYK converted to RGB"}],
    }
    path = write_report(
        tmp_path, FULL_SUMMARY, rows=ROWS, evaluation=evaluation, data_issues=issues, plan=PLAN
    )
    assert path == tmp_path / "report.md"
    md, page = _read(tmp_path)
    assert md.startswith("# snugtune run: tf_efficientnet_lite0 on data/flowers")
    assert "**Best validation accuracy: 93.21% (validation loss 0.2113)**" in md
    for section in (
        "## Training phases",
        "## Learning curves",
        "## Per-class results",
        "## Memory: predicted vs measured",
        "## Data issues",
        "## Plan",
        "## Using the model",
    ):
        assert section in md
    assert "| finetune | 7 / 20 | yes | 4 | 93.21% | 11 min 14 s | 120 | " in md
    assert "| head | 64 | 1 | 64 | bf16 | 900.00 MiB | 870.00 MiB | 97% | 0 |" in md
    assert "OOM recoveries" in md and "used=yes, hits=1,200, misses=0" in md
    assert "head trained on cached features" in md and "| head | 5 / 5 | no | 5 | 91.00% | 1 min 20 s | 950 |" in md
    assert "![Loss and accuracy" in md and "(learning_curves.png)" in md
    assert "| tulip | 1.000 | 0.500 | 0.667 | 2 |" in md
    assert "tulip predicted as rose: 1 (50.0% of tulip)" in md
    assert "data/rose/empty.jpg | zero bytes" in md and "CMYK converted to RGB" in md
    assert "| budget_bytes | 4.00 GiB |" in md and "| device.context_bytes | 300.00 MiB |" in md
    assert f"snugtune evaluate {tmp_path} path/to/test_images/" in md
    assert "snugtune export" in md and "--top-k 3" in md and "tensorboard --logdir" in md
    assert '<img src="confusion_matrix.png"' in page and '<img src="memory.png"' in page
    assert "<style>" in page and "<h2>Per-class results</h2>" in page
    assert '<td class="num">93.21%</td>' in page


@pytest.mark.parametrize(
    "summary", [{"best_val_accuracy": 0.5, "classes": ["a", "b"]}, {}, {"phases": "junk"}]
)
def test_minimal_summaries_do_not_crash(tmp_path: Path, summary: dict[str, object]) -> None:
    write_report(tmp_path, summary, rows=[])
    md, page = _read(tmp_path)
    assert md.startswith(f"# snugtune run: {tmp_path.name}")
    assert "No phase information was recorded." in md and "## Using the model" in md
    assert "## Learning curves" not in md and "## Plan" not in md
    assert "<h1>" in page


def test_partial_phase_entries(tmp_path: Path) -> None:
    summary = {"best_val_accuracy": 0.8, "phases": [{"name": "head"}, {}]}
    write_report(tmp_path, summary, rows=ROWS, data_issues={"skipped": [], "converted": []})
    md, _ = _read(tmp_path)
    assert "| head | — | — |" in md and "| phase 2 |" in md
    assert "No problem files" in md and "1 epoch logged in metrics.csv." in md


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    issues = {"skipped": [{"path": "d/a|b_<script>*.jpg", "reason": "not an\nimage"}]}
    write_report(tmp_path, {"backbone": "<b>x</b>"}, rows=[], data_issues=issues)
    md, page = _read(tmp_path)
    table_row = next(line for line in md.splitlines() if "script" in line)
    assert table_row.count(" | ") == 1  # the pipe in the file name did not add a column
    assert "not an image" in table_row
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>x</b>" not in page


def test_long_issue_lists_are_capped(tmp_path: Path) -> None:
    issues = {"skipped": [{"path": f"f{i}.jpg", "reason": "truncated"} for i in range(250)]}
    write_report(tmp_path, {}, rows=[], data_issues=issues)
    md, _ = _read(tmp_path)
    assert "Skipped (250)" in md and "… and 50 more not listed here." in md
    assert "f199.jpg" in md and "f200.jpg" not in md


def test_issue_paths_relative_to_data_root(tmp_path: Path) -> None:
    issues = {
        "skipped": [
            {"path": "/d/flowers/rose/x.jpg", "reason": "truncated JPEG"},
            {"path": Path("/elsewhere/y.png"), "reason": "broken symlink"},
        ]
    }
    write_report(tmp_path, {"data": "/d/flowers"}, rows=[], data_issues=issues)
    md, _ = _read(tmp_path)
    assert "Paths are relative to /d/flowers." in md
    assert "| rose/x.jpg | truncated JPEG |" in md and "| /elsewhere/y.png | broken symlink |" in md
