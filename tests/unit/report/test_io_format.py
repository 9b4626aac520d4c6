"""Atomic writes and value formatting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from snugtune.report._format import fmt_percent, fmt_seconds, fmt_value
from snugtune.report._io import atomic_write, atomic_write_json, atomic_write_text, to_jsonable
from snugtune.units import MIB


def test_atomic_write_replaces_and_keeps_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"ok": 1})

    def fail(f: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_to_jsonable() -> None:
    data = {1: (np.float32(0.5), Path("x")), "s": {3, 1}, "n": float("inf"), "a": np.arange(2)}
    assert to_jsonable(data) == {"1": [0.5, "x"], "s": [1, 3], "n": None, "a": [0, 1]}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("predicted_peak_bytes", 900 * MIB, "900.00 MiB"),
        ("seconds", 3725, "1 h 02 min"),
        ("checkpointing", [], "none"),
        ("blocks", [1, 2, 3], "1, 2, 3"),
        ("x", None, "—"),
        ("flag", True, "yes"),
        ("lr", 0.000123456, "0.0001235"),
        ("n", 12345, "12,345"),
    ],
)
def test_fmt_value(key: str, value: object, expected: str) -> None:
    assert fmt_value(key, value) == expected


def test_fmt_helpers_tolerate_junk() -> None:
    assert fmt_percent("n/a") == "—" and fmt_percent(float("nan")) == "—"
    assert fmt_seconds(12.34) == "12.3 s" and fmt_seconds(125) == "2 min 05 s"
