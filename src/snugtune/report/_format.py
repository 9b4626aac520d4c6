"""Formatting of report values for people; every function accepts anything and never raises.

A missing or unusable value renders as an em dash, so a report built from a partial summary
(a crashed run, an older run folder) still renders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from snugtune.units import format_bytes

__all__ = [
    "MISSING",
    "as_number",
    "fmt_bool",
    "fmt_bytes",
    "fmt_float",
    "fmt_int",
    "fmt_percent",
    "fmt_seconds",
    "fmt_value",
]

MISSING = "—"


def as_number(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` for missing, text, bools and NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_percent(value: object, digits: int = 2) -> str:
    """A fraction in [0, 1] as ``"97.25%"``."""
    x = as_number(value)
    return MISSING if x is None else f"{x * 100:.{digits}f}%"


def fmt_float(value: object, digits: int = 4) -> str:
    """A float with ``digits`` significant digits."""
    x = as_number(value)
    return MISSING if x is None else f"{x:.{digits}g}"


def fmt_int(value: object) -> str:
    """An integer with thousands separators."""
    x = as_number(value)
    return MISSING if x is None else f"{int(round(x)):,}"


def fmt_bool(value: object) -> str:
    """``"yes"``/``"no"``."""
    return MISSING if not isinstance(value, bool) else ("yes" if value else "no")


def fmt_bytes(value: object) -> str:
    """Bytes in binary units via :func:`snugtune.units.format_bytes`."""
    x = as_number(value)
    return MISSING if x is None else format_bytes(x)


def fmt_seconds(value: object) -> str:
    """A duration: ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``."""
    x = as_number(value)
    if x is None or x < 0:
        return MISSING
    if x < 60:
        return f"{x:.1f} s"
    minutes, seconds = divmod(int(round(x)), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def fmt_value(key: str, value: object, max_chars: int = 80) -> str:
    """Format a value of unknown kind, guided by its key (``*_bytes``, ``*_seconds``)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return fmt_bool(value)
    if isinstance(value, int | float):
        if key.endswith("_bytes") or key == "bytes":
            return fmt_bytes(value)
        if key.endswith("seconds"):
            return fmt_seconds(value)
        return f"{value:,}" if isinstance(value, int) else fmt_float(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        text = ", ".join(str(v) for v in value) if value else "none"
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    else:
        text = str(value)  # paths, enums, anything else
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
