"""The report's data doctor section: problems counted, files named under the data folder, the
validation images of highest loss in order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from snugtune.data.doctor import DataDoctor, DuplicateGroup
from snugtune.report.doctor import doctor_section, hardest_images
from snugtune.report.document import Image, Table, render_markdown
from snugtune.rundir import RunDir


def test_hardest_images_are_those_with_the_lowest_probability_for_their_label() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    labels = np.array([0, 0, 1, 1])
    hard = hardest_images(["a", "b", "c", "d"], labels, probs, ["cat", "dog"], k=2)
    assert [h.path for h in hard] == ["b", "c"]  # p(label) 0.2, then 0.4
    assert (hard[0].label, hard[0].predicted) == ("cat", "dog")
    assert abs(hard[0].loss - -np.log(0.2)) < 1e-9


def test_the_section_counts_each_problem_and_names_files_under_the_data_folder(
        tmp_path: Path) -> None:
    root = tmp_path / "data"
    leak = DuplicateGroup("exact", ((str(root / "cat" / "1.png"), "cat", "train"),
                                    (str(root / "cat" / "2.png"), "cat", "val")))
    clash = DuplicateGroup("near", ((str(root / "cat" / "3.png"), "cat", "train"),
                                    (str(root / "dog" / "3.jpg"), "dog", "train"),
                                    ("/elsewhere/4.png", "dog", "val")))
    doctor = DataDoctor(images=10, groups=(leak, clash))
    hard = hardest_images([str(root / "dog" / "9.png")], np.array([1]), np.array([[0.7, 0.3]]),
                          ["cat", "dog"])
    run = RunDir(tmp_path / "run")
    blocks = doctor_section(doctor, hard, run, str(root))
    text = render_markdown(blocks)
    assert "| conflicting labels | 1 | 2 |" in text and "| leakage | 1 | 1 |" in text
    assert "| duplicates | 0 | 0 |" in text
    assert "cat/1.png (cat, train); cat/2.png (cat, val)" in text.replace("\\", "/")
    assert "/elsewhere/4.png (dog, val)" in text  # outside the data folder: kept whole
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[-1].rows == ((os.path.join("dog", "9.png"), "dog", "cat", "0.300"),)
    assert not any(isinstance(b, Image) for b in blocks)  # no grid drawn in this run folder


def test_nothing_to_say_gives_no_section(tmp_path: Path) -> None:
    assert doctor_section(None, (), RunDir(tmp_path / "run")) == []
