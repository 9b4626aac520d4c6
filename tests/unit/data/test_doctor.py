"""The data doctor: exact and near copies within a class, across classes, across the split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snugtune.cli import main
from snugtune.data import Sample, scan_folder
from snugtune.data.doctor import DataDoctor, examine


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)  # blocks: survives re-encoding
    return Image.fromarray(smooth).resize((64, 64), Image.Resampling.NEAREST)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    for i in range(6):
        _picture(i).save(root / "cat" / f"{i}.png")
        _picture(100 + i).save(root / "dog" / f"{i}.png")
    shutil.copy(root / "cat" / "0.png", root / "cat" / "0_copy.png")  # exact, one class
    shutil.copy(root / "cat" / "1.png", root / "dog" / "cat_1.png")  # exact, two classes
    _picture(2).save(root / "cat" / "2_again.jpg", quality=95)  # the same picture, re-encoded
    return root


def _split(scan, val_names):
    samples = scan.samples
    val = tuple(s for s in samples if Path(s.path).name in val_names)
    return tuple(s for s in samples if s not in val), val


def test_copies_are_grouped_by_what_they_break(messy: Path):
    scan = scan_folder(messy, workers=1)
    train, val = _split(scan, {"0_copy.png"})
    found = examine(scan.classes, train, val, scan.fingerprints)
    by_problem = {p: [{Path(f[0]).name for f in g.files} for g in found.of(p)]
                  for p in ("conflicting labels", "leakage", "duplicates")}
    assert by_problem["conflicting labels"] == [{"1.png", "cat_1.png"}]
    assert by_problem["leakage"] == [{"0.png", "0_copy.png"}]  # one side in validation
    assert by_problem["duplicates"] == [{"2.png", "2_again.jpg"}]
    assert found.of("duplicates")[0].kind == "near" and found.of("leakage")[0].kind == "exact"
    assert found.counts()["leakage"] == {"groups": 1, "extra": 1}
    assert found.images == len(scan.samples)
    assert DataDoctor.from_dict(json.loads(json.dumps(found.to_dict()))) == found


def test_different_pictures_are_not_copies(tmp_path: Path):
    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            _picture(1000 + 100 * ord(c) + i).save(root / c / f"{i}.png")
    scan = scan_folder(root, workers=1)
    assert examine(scan.classes, scan.samples, (), scan.fingerprints).groups == ()


def test_files_without_fingerprints_are_left_out():
    found = examine(("a",), (Sample("/x.png", 0),), (), {})
    assert found.images == 0 and found.groups == ()


def test_doctor_command(messy: Path, capsys):
    assert main(["doctor", str(messy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["doctor"]["counts"]["conflicting labels"]["groups"] == 1
    assert main(["doctor", str(messy)]) == 0
    text = capsys.readouterr().out
    assert "conflicting labels" in text and "cat_1.png" in text
