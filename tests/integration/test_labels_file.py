"""End to end through the CLI with labels from a file: a Kaggle-style ``id,label`` CSV over a flat
folder, and a Hugging Face imagefolder whose ``metadata.csv`` is found without a flag; bad rows
are reported with their lines, and a resumed run keeps its labels."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from snugtune.cli import main
from snugtune.rundir import RunDir

from .conftest import FAST

NAMES = ("red", "green", "blue")  # the labels: not the generated folders' names


def _kaggle(tiny_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``train/<id>.png`` (no class folders) and ``train.csv`` of ``id,label`` without
    extensions, with one bad row of each kind at a known line and one image with no row."""
    flat, rows = tmp_path / "train", ["id,label"]
    flat.mkdir()
    for c, folder in enumerate(sorted(tiny_data.iterdir())):
        for j, image in enumerate(sorted(folder.iterdir())):
            shutil.copy(image, flat / f"{c:02x}{j:02x}.png")
            rows.append(f"{c:02x}{j:02x},{NAMES[c] if (c, j) != (0, 1) else ''}")  # line 3: empty
    rows += ["ffff,red",     # line 38: no such file
             "0002,green",   # line 39: 0002 is red on line 4: conflicting labels
             "0003,red",     # line 40: a duplicate of line 5
             "0004,red,x"]   # line 41: malformed
    shutil.copy(flat / "0000.png", flat / "unlisted.png")
    labels = tmp_path / "train.csv"
    labels.write_text("\n".join(rows) + "\n")
    return flat, labels


def test_a_kaggle_csv_over_a_flat_folder_trains_reports_its_bad_rows_and_resumes(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
        caplog: pytest.LogCaptureFixture) -> None:
    flat, labels = _kaggle(tiny_data, tmp_path)
    run = tmp_path / "run"
    args = ["train", str(flat), "--labels", str(labels), "--path-column", "id", "--out", str(run),
            *FAST, "--epochs", "1"]

    import snugtune.recipe.finetune as recipe

    original = recipe.run_epoch

    def crash_in_finetuning(*a, **k):  # the head phase checkpointed, then a "crash"
        if k["phase"].name == "finetune":
            raise RuntimeError("simulated crash")
        return original(*a, **k)

    monkeypatch.setattr(recipe, "run_epoch", crash_in_finetuning)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["--debug", *args])
    monkeypatch.setattr(recipe, "run_epoch", original)
    split = RunDir(run).split.read_text()
    labels.write_text(labels.read_text().replace("0005,red", "0005,green"))  # ignored on resume
    assert main(["train", "--resume", str(run)]) == 0
    assert RunDir(run).split.read_text() == split

    summary = json.loads(RunDir(run).summary.read_text())
    assert summary["classes"] == sorted(NAMES)
    assert json.loads(RunDir(run).card.read_text())["classes"] == sorted(NAMES)
    scan = json.loads(RunDir(run).scan.read_text())
    assert scan["labels_file"] == str(labels)
    assert sum(scan["class_counts"].values()) == 34  # 36, less 0001 (empty) and 0002 (conflict)
    reasons = {Path(i["path"]).name: i["reason"] for i in scan["skipped"]
               if not i["path"].endswith("train.csv")}
    assert reasons == {
        "ffff": "train.csv line 38: no such file",
        "0001.png": "train.csv line 3: empty label",
        "0002.png": "conflicting labels: train.csv lines 4 (red), 39 (green): not used",
        "unlisted.png": "no row in train.csv: not used"}
    about_the_file = [i["reason"] for i in scan["skipped"] if i["path"] == str(labels)]
    assert about_the_file == [
        "train.csv line 40: duplicate row of line 5 (0003.png, red): used once",
        "train.csv line 41: malformed row (3 fields, the header has 2)"]
    report = RunDir(run).report_md.read_text()
    assert ("| 0002.png | conflicting labels: train.csv lines 4 (red), 39 (green): not used |"
            in report)
    assert "train.csv line 41: malformed row" in report

    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="snugtune.infer"):
        assert main(["evaluate", str(run), "--json"]) == 0  # the run's split, by its labels
    assert "without the data index" not in caplog.text  # the folder was scanned, not bypassed
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["classes"] == sorted(NAMES)
    assert len(evaluation["per_class"]) == 3
    assert main(["doctor", str(flat), "--labels", str(labels), "--path-column", "id"]) == 0
    out = capsys.readouterr().out
    assert f"(labels from {labels})" in out and "skipped: 1 train.csv line 3: empty label" in out


def test_an_imagefolder_metadata_csv_is_found_without_the_flag(
        tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    rows = ["file_name,label,caption"]
    for c, folder in enumerate(sorted(data.iterdir())):
        rows += [f"{folder.name}/{image.name},{NAMES[c]},a shape"
                 for image in sorted(folder.iterdir())]
    rows.append("class_0/img_0.png")  # line 38: one field of three
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), *FAST, "--epochs", "1"]) == 0
    assert json.loads(RunDir(run).summary.read_text())["classes"] == sorted(NAMES)
    scan = json.loads(RunDir(run).scan.read_text())
    assert scan["labels_file"] == str(data / "metadata.csv")
    assert scan["class_counts"] == {"blue": 12, "green": 12, "red": 12}
    assert scan["skipped"] == [{"path": str(data / "metadata.csv"), "reason":
                                "metadata.csv line 38: malformed row (1 field, the header has 3)"}]
    assert "metadata.csv line 38" in RunDir(run).report_md.read_text()
