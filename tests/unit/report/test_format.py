"""Formatting of report values for people."""

from __future__ import annotations

import pytest

from snugtune.report._format import fmt_percent, fmt_seconds, fmt_value
from snugtune.units import MIB


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
