"""Byte sizes: parsed from people ("4GiB", "512MB", "8g"), kept as int bytes, formatted back."""

from __future__ import annotations

import re

__all__ = ["GIB", "KIB", "MIB", "format_bytes", "parse_bytes"]

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
