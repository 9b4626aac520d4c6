"""A tiny document model rendered to Markdown and to standalone HTML.

The run report is built once as a list of blocks and rendered twice, so ``report.md`` and
``report.html`` always say the same thing. All text is plain text: the renderers escape it
(Markdown punctuation, HTML entities), so file names such as ``a_b*|c.jpg`` come out intact.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Block",
    "Bullets",
    "Code",
    "Heading",
    "Image",
    "Paragraph",
    "Table",
    "render_html",
    "render_markdown",
]


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the document title."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Plain text; ``strong`` renders it in bold."""

    text: str
    strong: bool = False


@dataclass(frozen=True)
class Bullets:
    """An unordered list of plain-text items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """Rows of plain-text cells under a header; ``align_right`` marks numeric columns."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align_right: tuple[bool, ...] = ()


@dataclass(frozen=True)
class Image:
    """An image linked by a path relative to the document."""

    src: str
    alt: str


@dataclass(frozen=True)
class Code:
    """A preformatted block (shell commands)."""

    text: str
    language: str = ""


Block = Heading | Paragraph | Bullets | Table | Image | Code

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")
_MD_LINE_START = re.compile(r"^(\d*)([#+\-]|(?<=\d)\.)(?=\s|$)")


def md_escape(text: str) -> str:
    """Escape Markdown punctuation and fold newlines so ``text`` stays literal in a line.

    Underscores inside words (``tf_efficientnet_lite0``) are left alone: CommonMark never
    reads them as emphasis, and the raw Markdown stays readable.
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))
    # A leading "#", "-", "+" or "1." would start a heading or a list.
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def render_markdown(blocks: Sequence[Block]) -> str:
    """Render ``blocks`` as GitHub-flavoured Markdown."""
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + md_escape(block.text)
    if isinstance(block, Paragraph):
        text = md_escape(block.text)
        return f"**{text}**" if block.strong else text
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_escape(item)}" for item in block.items)
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Image):
        return f"![{md_escape(block.alt)}]({block.src.replace(' ', '%20')})"
    fence = "````" if "```" in block.text else "```"
    return f"{fence}{block.language}\n{block.text}\n{fence}"


def _md_table(table: Table) -> str:
    right = _alignment(table)
    lines = [
        "| " + " | ".join(md_escape(h) for h in table.header) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _alignment(table: Table) -> tuple[bool, ...]:
    return tuple(table.align_right) + (False,) * (len(table.header) - len(table.align_right))


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .35em .7em; text-align: left; vertical-align: top; }
th { background: #f5f7fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
pre { background: #f5f7fa; padding: .8em 1em; overflow-x: auto; border-radius: 4px; }
p.strong { font-size: 1.25em; font-weight: 600; }
""".strip()


def render_html(blocks: Sequence[Block], title: str) -> str:
    """Render ``blocks`` as one standalone HTML page with inline CSS."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return (
            f'<p class="strong">{e(block.text)}</p>' if block.strong else f"<p>{e(block.text)}</p>"
        )
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{e(i)}</li>" for i in block.items) + "\n</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        return f'<p><img src="{e(block.src)}" alt="{e(block.alt)}"></p>'
    return f"<pre><code>{e(block.text)}</code></pre>"


def _html_table(table: Table) -> str:
    right = _alignment(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>' if r else f"<td>{html.escape(c)}</td>"
            for c, r in zip(row, right, strict=False)
        )
        rows.append(f"<tr>{cells}</tr>")
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )
