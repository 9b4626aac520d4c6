"""The run's data as the recipe's setup prepares it: a resumed run keeps the labels it started
with (its saved split), and refuses classes that changed since."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from snugtune.config import TrainConfig
from snugtune.data import make_image_folder
from snugtune.errors import DataError
from snugtune.recipe.setup import prepare_data
from snugtune.rundir import RunDir
from snugtune.store import DataIndex


def _flat(tmp_path: Path) -> tuple[Path, Path]:
    """A flat folder of 2 x 4 images and its ``id,label`` file."""
    made = make_image_folder(tmp_path / "made", classes=2, per_class=4, size=16)
    root, rows = tmp_path / "train", ["id,label"]
    root.mkdir()
    for c in (0, 1):
        for i in range(4):
            (made / f"class_{c}" / f"img_{i}.png").rename(root / f"{c}_{i}.png")
            rows.append(f"{c}_{i},{'cat' if c == 0 else 'dog'}")
    shutil.rmtree(made)
    labels = tmp_path / "train.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def test_a_resumed_run_keeps_its_labels_and_refuses_changed_classes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, labels = _flat(tmp_path)
    cfg = TrainConfig(data=str(root), labels=str(labels), path_column="id", val_split=0.25)
    run = RunDir(tmp_path / "run")
    run.start(cfg)
    with DataIndex.at() as index:
        first = prepare_data(cfg, run, index)
        assert first.classes == ("cat", "dog")
        assert json.loads(run.scan.read_text())["labels_file"] == str(labels)
        labels.write_text(labels.read_text().replace("0_0,cat", "0_0,dog"))
        with caplog.at_level(logging.WARNING, logger="snugtune.recipe"):
            again = prepare_data(cfg, run, index)  # as on --resume: the split is saved
        assert [(s.path, s.label) for s in again.train + again.val] == [
            (s.path, s.label) for s in first.train + first.val]
        assert "changed since the run started" in caplog.text
        labels.write_text(labels.read_text().replace(",dog", ",wolf"))
        with pytest.raises(DataError) as err:
            prepare_data(cfg, run, index)
    assert "['cat', 'dog'] -> ['cat', 'wolf']" in str(err.value)
    assert "start a new run with another --out" in str(err.value)
