"""Byte sizes and durations: parsed from people ("4GiB", "512MB", "8g"; "10m", "1h30m",
"90s"), kept as int bytes and float seconds, formatted back."""

from __future__ import annotations

import re

__all__ = ["GIB", "KIB", "MIB", "format_bytes", "format_duration", "parse_bytes",
           "parse_duration"]

KIB = 1024
MIB = 1024**2
GIB = 1024**3

_UNITS = {
    "": 1,
    "b": 1,
    "k": KIB,
    "kb": 1000,
    "kib": KIB,
    "m": MIB,
    "mb": 1000**2,
    "mib": MIB,
    "g": GIB,
    "gb": 1000**3,
    "gib": GIB,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int | float) -> int:
    """Parse ``"4GiB"``, ``"4 GB"``, ``"4g"``, ``"512MiB"`` or a plain number of bytes.

    Raises:
        ValueError: the text is not a size; the message shows accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size; use e.g. 4GiB, 512MiB or 8g")
    if isinstance(text, int | float):
        value, unit = float(text), ""
    else:
        m = _SIZE_RE.match(text)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{text!r} is not a size; use e.g. 4GiB, 512MiB or 8g")
        value, unit = float(m.group(1)), m.group(2).lower()
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive size; use e.g. 4GiB")
    return int(value * _UNITS[unit])


def format_bytes(n: int | float, digits: int = 2) -> str:
    """Format bytes for people in binary units: ``format_bytes(3 * 2**30) == '3.00 GiB'``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{sign}{n / size:.{digits}f} {unit}"
    return f"{sign}{int(n)} B"


_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)\s*(h|m|s)", re.IGNORECASE)
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | int | float) -> float:
    """Parse ``"10m"``, ``"1h30m"``, ``"90s"``, ``"2.5m"`` or a plain number of seconds.

    Raises:
        ValueError: the text is not a duration; the message shows accepted forms.
    """
    bad = f"{text!r} is not a duration; use e.g. 10m, 90s or 1h30m"
    if isinstance(text, bool):
        raise ValueError(bad)
    if isinstance(text, int | float):
        seconds = float(text)
    elif not isinstance(text, str):
        raise ValueError(bad)
    else:
        compact = text.replace(" ", "")
        parts = _DURATION_RE.findall(compact)
        if compact.replace(".", "", 1).isdigit():
            seconds = float(compact)
        elif parts and "".join(n + u for n, u in parts).lower() == compact.lower():
            seconds = sum(float(n) * _SECONDS[u.lower()] for n, u in parts)
        else:
            raise ValueError(bad)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration; use e.g. 10m")
    return seconds


def format_duration(seconds: float) -> str:
    """``format_duration(125) == '2m05s'``; under a minute with one decimal: ``'9.5s'``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
