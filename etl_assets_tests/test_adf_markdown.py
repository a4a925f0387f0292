"""ADF to Markdown-like text: headings, lists, tables row by row, code, panels, mentions, links, cards."""

from __future__ import annotations

from etl_assets.core.sources.jira.adf import adf_to_markdown, adf_to_text


def t(text: str, **extra) -> dict:
    return {"type": "text", "text": text, **extra}


def p(*content) -> dict:
    return {"type": "paragraph", "content": list(content)}


def cell(kind: str, text: str) -> dict:
    return {"type": kind, "content": [p(t(text))]}


DOC = {
    "type": "doc",
    "version": 1,
    "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [t("Runbook")]},
        {"type": "panel", "attrs": {"panelType": "warning"}, "content": [p(t("Page the on-call first."))]},
        {
            "type": "bulletList",
            "content": [
                {"type": "listItem", "content": [p(t("drain"))]},
                {"type": "listItem", "content": [p(t("restart"))]},
            ],
        },
        {
            "type": "table",
            "content": [
                {"type": "tableRow", "content": [cell("tableHeader", "Step"), cell("tableHeader", "Command")]},
                {"type": "tableRow", "content": [cell("tableCell", "Drain"), cell("tableCell", "lb drain a|b")]},
            ],
        },
        {"type": "codeBlock", "attrs": {"language": "bash"}, "content": [t("curl -fsS https://x/healthz\necho ok")]},
        p(
            t("See "),
            t("the guide", marks=[{"type": "link", "attrs": {"href": "https://docs.example/guide"}}]),
            t(", ask "),
            {"type": "mention", "attrs": {"id": "557058:1", "text": "@Ana Silva"}},
            t(" or open"),
            {"type": "inlineCard", "attrs": {"url": "https://sample.atlassian.net/browse/PAY-3"}},
        ),
    ],
}


def test_structure_survives_as_markdown():
    md = adf_to_markdown(DOC)
    lines = md.split("\n")
    assert "## Runbook" in lines
    assert "Warning: Page the on-call first." in lines
    assert "- drain" in lines and "- restart" in lines
    # A table, row by row, header separated; a pipe inside a cell is escaped.
    i = lines.index("| Step | Command |")
    assert lines[i + 1] == "| --- | --- |"
    assert lines[i + 2] == "| Drain | lb drain a\\|b |"
    # The code block is fenced with its language, its lines intact.
    j = lines.index("```bash")
    assert lines[j + 1 : j + 4] == ["curl -fsS https://x/healthz", "echo ok", "```"]
    assert "[the guide](https://docs.example/guide)" in md
    assert "@Ana Silva" in md and "https://sample.atlassian.net/browse/PAY-3" in md


def test_plain_text_rendering_is_unchanged():
    text = adf_to_text(DOC)
    assert "## Runbook" not in text and "Runbook" in text
    assert "Step | Command" in text and "```" not in text
    assert "the guide (https://docs.example/guide)" in text


def test_code_containing_a_fence_gets_a_longer_fence_and_odd_languages_are_dropped():
    md = adf_to_markdown({"type": "codeBlock", "attrs": {"language": "x; rm -rf"}, "content": [t("```\ninner\n```")]})
    assert md.startswith("````\n") and md.endswith("\n````")


def test_nested_200_deep_is_cut_never_raises():
    node: dict = t("deepest")
    for _ in range(200):
        node = {"type": "blockquote", "content": [node]}
    md = adf_to_markdown({"type": "doc", "content": [p(t("top")), node]})
    assert md.startswith("top") and "deepest" not in md


def test_unknown_and_malformed_nodes_degrade_to_text():
    md = adf_to_markdown(
        {
            "type": "doc",
            "content": [
                {"type": "futureNode", "content": [p(t("kept"))]},
                {"type": "heading", "attrs": {"level": "x"}, "content": [t("Title")]},
                {"type": "table", "content": [{"type": "tableRow", "content": "nonsense"}]},
                7,
                None,
            ],
        }
    )
    assert "kept" in md and "# Title" in md


def test_chunks_end_at_line_ends_when_one_is_near():
    from etl_assets.core.embeddings.base import cut_points
    from etl_assets.core.embeddings.tokens import cl100k

    # Cuts move back to a line end in the window's last fifth, never past the limit.
    assert cut_points(25, 10, lambda i: i in (8, 17)) == [9, 18, 25]
    assert cut_points(25, 10, lambda i: i == 3) == [10, 20, 25]  # too far back: cut at the limit
    assert cut_points(5, 10, lambda i: True) == [5]

    rows = "\n".join(f"| step {n} | run the migration batch number {n} on host-{n} |" for n in range(60))
    table = adf_to_markdown(
        {
            "type": "table",
            "content": [
                {
                    "type": "tableRow",
                    "content": [cell("tableCell", f"step {n}"), cell("tableCell", f"host-{n} batch {n}")],
                }
                for n in range(60)
            ],
        }
    )
    enc = cl100k()
    for text in (rows, table):
        tokens = enc.encode(text)

        def ends_line(i: int, tokens: list[int] = tokens) -> bool:
            return enc.decode_single_token_bytes(tokens[i]).endswith(b"\n")

        # A row is under 20 tokens, so the last fifth of a 100-token window always holds a row end.
        cuts = cut_points(len(tokens), 100, ends_line)
        starts = [0, *cuts[:-1]]
        pieces = [enc.decode(tokens[a:b]) for a, b in zip(starts, cuts, strict=True)]
        assert len(pieces) > 3 and all(b - a <= 100 for a, b in zip(starts, cuts, strict=True))
        assert "".join(pieces) == text
        # Every piece but the last ends a table row: no row is split across two chunks.
        assert all(p.endswith("|\n") for p in pieces[:-1]), pieces[:2]
