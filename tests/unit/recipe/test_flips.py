"""Horizontal flips are decided from the data: off when the classes have a handedness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from snugtune.data import Sample
from snugtune.recipe.flips import MAX_ASYMMETRY, check_flips


def _class(tmp_path: Path, label: int, column: int, either_way: bool) -> list[Sample]:
    """Eight images of a bright bar at ``column`` (mirrored in every other image when the
    class's objects face either way)."""
    out = []
    for i in range(8):
        a = np.zeros((32, 32), np.uint8)
        col = 32 - 4 - column if either_way and i % 2 else column
        a[4 + label * 10: 14 + label * 10, col:col + 4] = 255
        path = tmp_path / f"{label}_{i}.png"
        Image.fromarray(a).save(path)
        out.append(Sample(str(path), label))
    return out


def test_classes_with_a_handedness_turn_flips_off(tmp_path: Path):
    samples = _class(tmp_path, 0, 2, False) + _class(tmp_path, 1, 20, False)
    check = check_flips(samples, ("a", "b"))
    assert not check.flips and check.asymmetry > MAX_ASYMMETRY
    assert set(check.per_class) == {"a", "b"}


def test_classes_facing_either_way_keep_flips(tmp_path: Path):
    samples = _class(tmp_path, 0, 2, True) + _class(tmp_path, 1, 20, True)
    check = check_flips(samples, ("a", "b"))
    assert check.flips and check.asymmetry < 0.05
    assert check.to_dict()["max_asymmetry"] == MAX_ASYMMETRY


def test_unreadable_files_are_left_out(tmp_path: Path):
    samples = _class(tmp_path, 0, 2, True) + [Sample(str(tmp_path / "gone.png"), 0)]
    assert check_flips(samples, ("a",)).flips
