"""Every number in ``benchmarks/README.md``'s tables is in the committed JSON the table cites.

A table cites the last ``results/NAME.json`` (or ``NAME.py`` script with a committed
``results/NAME.json``) in the 40 lines before it. A number shown with d decimals matches a
JSON number (anywhere in the file, or inside one of its strings) that rounds to it, as is, as a
percentage, or in MiB, GiB or GB; flags in backticks and commit ids are not figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
SCALES = (1.0, 100.0, 1 / 2**20, 1 / 2**30, 1 / 1e9)


def _numbers(obj: object) -> Iterator[float]:
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, str):
        yield from (float(m.group().replace(",", "")) for m in NUMBER.finditer(obj))


def _found(token: str, values: list[float]) -> bool:
    text = token.replace(",", "")
    x, decimals = float(text), len(text.partition(".")[2])
    return any(abs(round(v * s, decimals) - x) < 1e-9 for v in values for s in SCALES)


def _tables(lines: list[str]) -> Iterator[tuple[int, str | None, list[str]]]:
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1]):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            before = "\n".join(lines[max(0, i - 40) : i])
            cited = re.findall(r"results/([a-z_]+)\.json", before) or [
                n for n in re.findall(r"`([a-z_]+)\.py`", before)
                if (BENCH / "results" / f"{n}.json").exists()]
            yield i + 1, cited[-1] if cited else None, lines[i + 2 : end]
            i = end
        else:
            i += 1


def test_every_figure_in_the_benchmark_tables_is_in_its_json() -> None:
    lines = (BENCH / "README.md").read_text().splitlines()
    checked, missing = 0, []
    for line, cited, rows in _tables(lines):
        if cited is None:  # the index of scripts and targets: no measured figures
            continue
        values = list(_numbers(json.loads((BENCH / "results" / f"{cited}.json").read_text())))
        for row in rows:
            cells = re.sub(r"`[^`]*`|commit [0-9a-f]{7}", "", row)
            for m in NUMBER.finditer(cells):
                checked += 1
                if not _found(m.group(), values):
                    missing.append(f"README.md:{line} ({cited}.json): {m.group()}")
    assert checked > 200 and not missing, missing
