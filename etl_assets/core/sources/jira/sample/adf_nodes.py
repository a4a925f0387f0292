"""Builders for the Atlassian Document Format (ADF) nodes the sample site writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def text_node(value: str, marks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = marks
    return node


def paragraph(*inline: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(inline)}


def heading(level: int, value: str) -> dict[str, Any]:
    return {"type": "heading", "attrs": {"level": level}, "content": [text_node(value)]}


def list_block(kind: str, items: Iterable[str]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": kind,
        "content": [{"type": "listItem", "content": [paragraph(text_node(i))]} for i in items],
    }
    if kind == "orderedList":
        node["attrs"] = {"order": 1}
    return node


def code_block(language: str, value: str) -> dict[str, Any]:
    return {"type": "codeBlock", "attrs": {"language": language}, "content": [text_node(value)]}


def doc(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": content}


def paragraphs_doc(text: str) -> dict[str, Any]:
    """A plain string as an ADF doc, one paragraph per blank-line separated block."""
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return doc([paragraph(text_node(b)) for b in blocks])
