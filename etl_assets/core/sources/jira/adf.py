"""Atlassian Document Format (ADF) to plain text, for embedding and search.

Jira Cloud v3 returns rich text (issue descriptions, comments) as ADF: a JSON tree of
``{"type": ..., "attrs": {...}, "content": [...]}`` nodes. Embedding models and search
indexes want readable plain text instead, so :func:`adf_to_text` flattens the tree into
lines that keep the document's shape (paragraphs, list markers, table rows) and drops
formatting that carries no meaning as text (bold, colours, layout attributes).

The input comes from a remote API and we sync many sites, so the converter is deliberately
forgiving: malformed or unexpected nodes degrade to "the text of their children" and the
function never raises for JSON-like input. Recursion is bounded by ``max_depth`` (and a
hard cap), with an iterative fallback, so a hostile or corrupt document cannot trigger a
``RecursionError`` or run forever.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["adf_to_markdown", "adf_to_text"]

DEFAULT_MAX_DEPTH = 64
# The renderer is recursive and each ADF level costs a few Python frames; capping the
# depth keeps us far below the interpreter's recursion limit even when called from a deep
# stack. Real ADF is rarely deeper than ~15 levels, so this loses nothing in practice.
HARD_MAX_DEPTH = 128
# Bounds total work: parsed JSON is always a tree, but Python callers can hand us
# shared or cyclic structures whose unfolded size is exponential in depth. Jira caps a
# rich-text field at 32,767 characters, far fewer nodes than this.
MAX_NODES = 250_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)

# Node types that live inside a paragraph-like line. In a container that mixes inline and
# block children (listItem, taskItem, unknown nodes) consecutive inline children are
# joined into one line rather than each becoming a separate block.
_INLINE_TYPES = frozenset(
    {
        "text",
        "hardBreak",
        "mention",
        "emoji",
        "inlineCard",
        "status",
        "date",
        "placeholder",
        "inlineExtension",
        "mediaInline",
    }
)

# Inline nodes rendered from attributes rather than typed text; they get a separating
# space when the editor placed them flush against neighbouring text.
_ATOM_TYPES = frozenset(
    {
        "mention",
        "inlineCard",
        "status",
        "date",
        "placeholder",
        "inlineExtension",
        "mediaInline",
    }
)

_PANEL_LABELS = {
    "info": "Info",
    "note": "Note",
    "tip": "Tip",
    "warning": "Warning",
    "error": "Error",
    "success": "Success",
}

# Attribute names under which media nodes may carry a human-readable name.
_MEDIA_NAME_ATTRS = ("alt", "filename", "fileName", "__fileName", "name")


def adf_to_markdown(doc: object, *, max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """Like :func:`adf_to_text`, but the structure is spelled the way Markdown does.

    Headings become ``#`` lines, code blocks are fenced with their language, table rows are
    ``| a | b |`` lines (a header row is followed by ``| --- |``), links are ``[text](url)``.
    Chunking (``embeddings.base.split_counted``) prefers to cut at these lines' ends, so a
    table row or a code line is not split when a boundary is near. Same guarantees as
    :func:`adf_to_text`: never raises for JSON-like input, bounded depth and work.
    """
    return adf_to_text(doc, max_depth=max_depth, markdown=True)


def adf_to_text(doc: object, *, max_depth: int = DEFAULT_MAX_DEPTH, markdown: bool = False) -> str:
    """Convert an ADF document (or node, list of nodes, or plain string) to plain text.

    Accepts a whole ``{"type": "doc", ...}`` document, any single node dict, a list of
    nodes, a plain string (Jira v2 descriptions; only normalized as below) or ``None``.
    Anything else yields ``""``. Never raises for JSON-like input; nodes deeper than ``max_depth``
    (capped at :data:`HARD_MAX_DEPTH`) are skipped.

    The result has trailing spaces removed from each line, runs of three or more newlines
    collapsed to a blank line, and is stripped.
    """
    if doc is None:
        return ""
    if isinstance(doc, str):
        return _normalize(doc)
    if not isinstance(doc, (dict, list)):
        return ""

    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        max_depth = DEFAULT_MAX_DEPTH
    max_depth = max(0, min(max_depth, HARD_MAX_DEPTH))

    renderer = _MarkdownRenderer(max_depth) if markdown else _Renderer(max_depth)
    try:
        if isinstance(doc, list):
            text = renderer.blocks(doc, 0)
        else:
            text = renderer.node(doc, 0)
    except Exception:
        # Should not happen, but the contract is "never raise": fall back to a flat,
        # iterative text extraction so the issue is still searchable.
        logger.warning("ADF rendering failed; falling back to flat text", exc_info=True)
        text = _flat_text(doc, max_depth)
    if renderer.truncated:
        logger.warning(
            "ADF document exceeded max_depth=%d or %d nodes; deeper content was skipped",
            max_depth,
            MAX_NODES,
        )
    return _normalize(text)


def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_SPACE.sub("", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def _attrs(node: dict[Any, Any]) -> dict[Any, Any]:
    attrs = node.get("attrs")
    return attrs if isinstance(attrs, dict) else {}


def _children(node: dict[Any, Any]) -> list[Any]:
    content = node.get("content")
    if isinstance(content, list):
        return content
    if isinstance(content, dict):  # malformed but unambiguous: a single child
        return [content]
    return []


def _str_attr(attrs: dict[Any, Any], *names: str) -> str:
    """The first of ``names`` whose value is a non-blank string, else ``""``."""
    for name in names:
        value = attrs.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _type_of(value: object) -> str | None:
    """A node's ``type`` if it is a string. Other values (even unhashable lists) -> None,
    so set lookups on the result are always safe."""
    if isinstance(value, dict):
        node_type = value.get("type")
        if isinstance(node_type, str):
            return node_type
    return None


def _is_inline(child: object) -> bool:
    # Bare strings in a content list are treated as text; anything that is not a dict
    # (numbers, None, nested lists) is handled as a block so it never glues onto a line.
    if isinstance(child, str):
        return True
    return _type_of(child) in _INLINE_TYPES


def _prefix_lines(text: str, first: str, rest: str) -> str:
    """Prefix the first line with ``first`` and later non-empty lines with ``rest``."""
    lines = text.split("\n")
    out = [first + lines[0]]
    out.extend(rest + line if line.strip() else line for line in lines[1:])
    return "\n".join(out)


def _format_date(value: object) -> str:
    """ADF ``date.attrs.timestamp`` is epoch milliseconds (usually a string) -> UTC date."""
    if isinstance(value, bool):
        return ""
    try:
        if isinstance(value, str):
            value = value.strip()
            millis: float = int(value) if value.lstrip("-").isdigit() else float(value)
        elif isinstance(value, (int, float)):
            millis = value
        else:
            return ""
        return (_EPOCH + timedelta(milliseconds=millis)).date().isoformat()
    except (ValueError, OverflowError, TypeError):
        return ""


class _Renderer:
    """One conversion: holds the depth limit and the node budget."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.budget = MAX_NODES
        self.truncated = False
        self._handlers: dict[str, Callable[[dict[Any, Any], int], str]] = {
            "doc": self._container,
            "paragraph": self._line,
            "heading": self._line,
            "caption": self._line,
            "text": self._text,
            "hardBreak": lambda node, depth: "\n",
            "bulletList": self._bullet_list,
            "orderedList": self._ordered_list,
            "listItem": self._list_item,
            "taskList": self._bullet_list,
            "taskItem": self._list_item,
            "decisionList": self._bullet_list,
            "decisionItem": self._list_item,
            "codeBlock": self._code_block,
            "blockquote": self._blockquote,
            "rule": lambda node, depth: "---",
            "panel": self._panel,
            "expand": self._expand,
            "nestedExpand": self._expand,
            "table": self._table,
            "tableRow": self._table_row,
            "tableHeader": self._table_cell,
            "tableCell": self._table_cell,
            "mention": self._mention,
            "emoji": self._emoji,
            "inlineCard": self._card,
            "blockCard": self._card,
            "embedCard": self._card,
            "status": lambda node, depth: _str_attr(_attrs(node), "text"),
            "date": lambda node, depth: _format_date(_attrs(node).get("timestamp")),
            "media": self._media,
            "mediaInline": self._media,
            "mediaSingle": self._container,
            "mediaGroup": self._container,
            "placeholder": lambda node, depth: _str_attr(_attrs(node), "text"),
            "extension": self._extension,
            "bodiedExtension": self._extension,
            "inlineExtension": self._extension,
        }

    # --- dispatch -------------------------------------------------------------------

    def node(self, node: object, depth: int) -> str:
        """Render any child value: a node dict, a bare string, or a nested list."""
        if depth > self.max_depth or self.budget <= 0:
            self.truncated = True
            return ""
        self.budget -= 1
        if isinstance(node, str):
            return node
        if isinstance(node, list):
            return self.blocks(node, depth + 1)
        if not isinstance(node, dict):
            return ""
        node_type = _type_of(node)
        handler = self._handlers.get(node_type) if node_type else None
        return (handler or self._unknown)(node, depth)

    def inline(self, children: list[Any], depth: int) -> str:
        """Children of a line-like node, concatenated as they appear."""
        out: list[str] = []
        prev_atom = False
        for child in children:
            piece = self.node(child, depth + 1)
            if not piece:
                continue
            atom = _type_of(child) in _ATOM_TYPES
            # Editors often put a card or mention flush against a word ("Seehttps://...");
            # a space keeps both tokens intact for search.
            glued = out and not out[-1][-1:].isspace() and not piece[:1].isspace()
            if glued and (atom or prev_atom):
                out.append(" ")
            out.append(piece)
            prev_atom = atom
        return "".join(out)

    def blocks(self, children: list[Any], depth: int, sep: str = "\n\n") -> str:
        """Children of a container: block children become separate blocks joined by
        ``sep``; runs of inline children are joined into one line first."""
        parts: list[str] = []
        run: list[Any] = []

        def flush() -> None:
            line = self.inline(run, depth).strip()
            if line:
                parts.append(line)
            run.clear()

        for child in children:
            if _is_inline(child):
                run.append(child)
                continue
            flush()
            # Strip only newlines so a code block's first-line indentation survives.
            block = self.node(child, depth + 1).strip("\n")
            if block.strip():
                parts.append(block)
        flush()
        return sep.join(parts)

    # --- block nodes ------------------------------------------------------------------

    def _container(self, node: dict[Any, Any], depth: int) -> str:
        return self.blocks(_children(node), depth)

    def _line(self, node: dict[Any, Any], depth: int) -> str:
        return self.inline(_children(node), depth).strip()

    def _unknown(self, node: dict[Any, Any], depth: int) -> str:
        # Forward compatibility: Atlassian adds node types over time. Keep whatever text
        # the node carries rather than dropping it or failing.
        text = node.get("text")
        own = text if isinstance(text, str) else ""
        inner = self.blocks(_children(node), depth)
        return f"{own}\n{inner}" if own and inner else own or inner

    def _list(self, node: dict[Any, Any], depth: int, marker: Callable[[int], str]) -> str:
        """Shared list layout. ``marker(i)`` gives the prefix of the i-th item.

        Items get a hanging indent so wrapped lines and nested lists sit under the item
        text. Non-item children (e.g. a taskList nested directly in a taskList, which
        Confluence emits) are indented as a nested level.
        """
        lines: list[str] = []
        index = 0
        for child in _children(node):
            text = self.node(child, depth + 1).strip("\n")
            if not text.strip():
                continue
            child_type = _type_of(child)
            if child_type == "listItem":
                prefix = marker(index)
                index += 1
            elif child_type == "taskItem":
                prefix = "[x] " if _attrs(child).get("state") == "DONE" else "[ ] "
            elif child_type == "decisionItem":
                # A long label would make a deep hanging indent; two spaces read better.
                lines.append(_prefix_lines(text.lstrip(), "Decision: ", "  "))
                continue
            else:
                lines.append(_prefix_lines(text, "  ", "  "))
                continue
            lines.append(_prefix_lines(text.lstrip(), prefix, " " * len(prefix)))
        return "\n".join(lines)

    def _ordered_list(self, node: dict[Any, Any], depth: int) -> str:
        start = _attrs(node).get("order", 1)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 10**6:
            start = 1
        return self._list(node, depth, lambda i: f"{start + i}. ")

    def _bullet_list(self, node: dict[Any, Any], depth: int) -> str:
        return self._list(node, depth, lambda i: "- ")

    def _list_item(self, node: dict[Any, Any], depth: int) -> str:
        # Tight lists: an item's paragraph and its nested list go on consecutive lines.
        return self.blocks(_children(node), depth, sep="\n")

    def _code_block(self, node: dict[Any, Any], depth: int) -> str:
        # Verbatim: no stripping of indentation, only the surrounding newlines.
        return self.inline(_children(node), depth).strip("\n")

    def _blockquote(self, node: dict[Any, Any], depth: int) -> str:
        text = self.blocks(_children(node), depth)
        return "\n".join(f"> {line}" if line.strip() else "" for line in text.split("\n"))

    def _panel(self, node: dict[Any, Any], depth: int) -> str:
        text = self.blocks(_children(node), depth)
        panel_type = _str_attr(_attrs(node), "panelType").strip()
        label = _PANEL_LABELS.get(panel_type.lower(), panel_type.capitalize() or "Info")
        return f"{label}: {text}" if text else ""

    def _expand(self, node: dict[Any, Any], depth: int) -> str:
        title = _str_attr(_attrs(node), "title").strip()
        text = self.blocks(_children(node), depth)
        return "\n".join(part for part in (title, text) if part)

    def _table(self, node: dict[Any, Any], depth: int) -> str:
        return self.blocks(_children(node), depth, sep="\n")

    def _table_row(self, node: dict[Any, Any], depth: int) -> str:
        cells = [self.node(child, depth + 1) for child in _children(node)]
        row = " | ".join(cells)
        return row if row.replace("|", "").strip() else ""

    def _table_cell(self, node: dict[Any, Any], depth: int) -> str:
        # A row must stay on one line, so a cell's paragraphs, lists or code are flattened.
        text = self.blocks(_children(node), depth)
        return " ".join(line.strip() for line in text.split("\n") if line.strip())

    def _extension(self, node: dict[Any, Any], depth: int) -> str:
        # Macros: keep any body text. The extension key is an identifier
        # ("com.atlassian...") and would only add noise to embeddings, so it is dropped.
        inner = self.blocks(_children(node), depth)
        return inner or _str_attr(_attrs(node), "text")

    # --- inline nodes -----------------------------------------------------------------

    def _text(self, node: dict[Any, Any], depth: int) -> str:
        text = node.get("text")
        if not isinstance(text, str):
            return ""
        marks = node.get("marks")
        if isinstance(marks, list):
            for mark in marks:
                if isinstance(mark, dict) and mark.get("type") == "link":
                    href = _str_attr(_attrs(mark), "href").strip()
                    # Keep the URL searchable, but not twice for bare-URL links.
                    if href and href != text.strip():
                        return f"{text} ({href})"
        return text

    def _mention(self, node: dict[Any, Any], depth: int) -> str:
        attrs = _attrs(node)
        name = _str_attr(attrs, "text", "id").strip()
        if not name:
            return ""
        return name if name.startswith("@") else f"@{name}"

    def _emoji(self, node: dict[Any, Any], depth: int) -> str:
        return _str_attr(_attrs(node), "text", "shortName")

    def _card(self, node: dict[Any, Any], depth: int) -> str:
        attrs = _attrs(node)
        url = _str_attr(attrs, "url")
        if not url and isinstance(attrs.get("data"), dict):
            # Cards may carry JSON-LD ``data`` instead of a URL.
            url = _str_attr(attrs["data"], "url", "name")
        return url

    def _media(self, node: dict[Any, Any], depth: int) -> str:
        return _str_attr(_attrs(node), *_MEDIA_NAME_ATTRS)


class _MarkdownRenderer(_Renderer):
    """The plain renderer with Markdown's spelling of headings, code, tables and links."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(max_depth)
        self._handlers.update(
            {
                "heading": self._heading,
                "codeBlock": self._fenced_code,
                "table": self._md_table,
                "tableRow": self._md_row,
            }
        )

    def _heading(self, node: dict[Any, Any], depth: int) -> str:
        text = self.inline(_children(node), depth).strip()
        level = _attrs(node).get("level", 1)
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 6:
            level = 1
        return f"{'#' * level} {text}" if text else ""

    def _fenced_code(self, node: dict[Any, Any], depth: int) -> str:
        code = self.inline(_children(node), depth).strip("\n")
        if not code.strip():
            return ""
        language = _str_attr(_attrs(node), "language").strip()
        language = language if language.isascii() and language.replace("-", "").replace("+", "").isalnum() else ""
        fence = "````" if "```" in code else "```"
        return f"{fence}{language}\n{code}\n{fence}"

    def _md_table(self, node: dict[Any, Any], depth: int) -> str:
        lines: list[str] = []
        for i, child in enumerate(_children(node)):
            row = self.node(child, depth + 1).strip("\n")
            if not row.strip():
                continue
            lines.append(row)
            cells = _children(child) if isinstance(child, dict) else []
            if i == 0 and cells and all(_type_of(c) == "tableHeader" for c in cells):
                lines.append("| " + " | ".join("---" for _ in cells) + " |")
        return "\n".join(lines)

    def _md_row(self, node: dict[Any, Any], depth: int) -> str:
        cells = [self.node(child, depth + 1).replace("|", "\\|") for child in _children(node)]
        if not "".join(cells).strip():
            return ""
        return "| " + " | ".join(cells) + " |"

    def _text(self, node: dict[Any, Any], depth: int) -> str:
        text = node.get("text")
        if not isinstance(text, str):
            return ""
        marks = node.get("marks")
        for mark in marks if isinstance(marks, list) else []:
            if isinstance(mark, dict) and mark.get("type") == "link":
                href = _str_attr(_attrs(mark), "href").strip()
                if href and href != text.strip():
                    return f"[{text}]({href})"
        return text


def _flat_text(doc: object, max_depth: int) -> str:
    """Last-resort extraction: every ``text`` string, with newlines between blocks.

    Iterative (explicit stack) so it cannot hit the recursion limit.
    """
    pieces: list[str] = []
    stack: list[tuple[object, int]] = [(doc, 0)]
    visited = 0
    while stack and visited < MAX_NODES:
        item, depth = stack.pop()
        visited += 1
        if depth > max_depth:
            continue
        if isinstance(item, str):
            pieces.append(item)
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in reversed(item))
        elif isinstance(item, dict):
            if _type_of(item) not in _INLINE_TYPES:
                pieces.append("\n")
            text = item.get("text")
            if isinstance(text, str):
                pieces.append(text)
            stack.extend((child, depth + 1) for child in reversed(_children(item)))
    return "".join(pieces)
