"""Markdown/HTML rendering of report blocks."""

from __future__ import annotations

import pytest

from snugtune.report.document import (
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Table,
    md_escape,
    render_html,
    render_markdown,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tf_efficientnet_lite0", "tf_efficientnet_lite0"),
        ("_private_ a*b", "\\_private\\_ a\\*b"),
        ("a|b <c> [d]", "a\\|b \\<c\\> \\[d\\]"),
        ("# not a heading", "\\# not a heading"),
        ("- not a list", "\\- not a list"),
        ("12. not a list", "12\\. not a list"),
        ("1.5 GiB", "1.5 GiB"),
        ("two\nlines", "two lines"),
    ],
)
def test_md_escape(text: str, expected: str) -> None:
    assert md_escape(text) == expected


def test_same_blocks_render_to_both_formats() -> None:
    blocks = [
        Heading("Title", 1),
        Paragraph("Headline", strong=True),
        Bullets(("one", "two")),
        Table(("Name", "Value"), (("x", "1"), ("y", "2")), (False, True)),
        Image("plot.png", "a plot"),
        Code("snugtune predict run img.jpg", "bash"),
    ]
    md = render_markdown(blocks)
    assert md.splitlines()[:3] == ["# Title", "", "**Headline**"]
    assert "| Name | Value |\n|---|---:|\n| x | 1 |" in md
    assert "![a plot](plot.png)" in md and "```bash\nsnugtune predict run img.jpg\n```" in md
    page = render_html(blocks, "Title & more")
    assert "<title>Title &amp; more</title>" in page
    assert '<td class="num">1</td>' in page and '<img src="plot.png" alt="a plot">' in page
    assert "<li>two</li>" in page and "<pre><code>snugtune predict" in page
