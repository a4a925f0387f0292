"""Tests for ADF -> plain text: hand-written node cases, the shared real corpus, and
property-based robustness (the converter must never raise on JSON-like input)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl_assets.core.sources.jira import adf
from etl_assets.core.sources.jira.adf import adf_to_text
from etl_assets_tests.corpus import corpus_dir, corpus_path, load_corpus_json

# --- builders for small hand-written documents ------------------------------------------


def doc(*content: Any) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": list(content)}


def text(value: str, *marks: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = list(marks)
    return node


def para(*content: Any) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(content)}


def node(type_: str, *content: Any, **attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if attrs:
        out["attrs"] = attrs
    if content:
        out["content"] = list(content)
    return out


def item(*content: Any) -> dict[str, Any]:
    return node("listItem", *content)


# --- input kinds ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 0, 3.5, True, False, object(), b"bytes", (1, 2)])
def test_non_adf_values_give_empty_string(value: object) -> None:
    assert adf_to_text(value) == ""


def test_plain_string_is_returned_stripped() -> None:
    assert adf_to_text("  Jira v2 description\n") == "Jira v2 description"


def test_plain_string_is_normalized_like_adf_output() -> None:
    assert adf_to_text("a  \r\nb\n\n\n\nc") == "a\nb\n\nc"


def test_empty_document_and_empty_containers() -> None:
    assert adf_to_text(doc()) == ""
    assert adf_to_text({}) == ""
    assert adf_to_text([]) == ""
    assert adf_to_text(doc(para(), para(text("   ")))) == ""


def test_single_node_and_list_of_nodes() -> None:
    assert adf_to_text(para(text("just a node"))) == "just a node"
    assert adf_to_text([para(text("one")), para(text("two"))]) == "one\n\ntwo"
    assert adf_to_text(text("bare text node")) == "bare text node"


# --- block nodes ----------------------------------------------------------------------


def test_paragraphs_are_separated_by_a_blank_line() -> None:
    result = adf_to_text(doc(para(text("first "), text("line")), para(text("second"))))
    assert result == "first line\n\nsecond"


def test_heading_is_its_own_line() -> None:
    result = adf_to_text(doc(node("heading", text("Title"), level=2), para(text("Body"))))
    assert result == "Title\n\nBody"


def test_hard_break_is_a_newline() -> None:
    result = adf_to_text(doc(para(text("above"), node("hardBreak"), text("below"))))
    assert result == "above\nbelow"


def test_bullet_list() -> None:
    result = adf_to_text(doc(node("bulletList", item(para(text("a"))), item(para(text("b"))))))
    assert result == "- a\n- b"


def test_ordered_list_numbers_from_order_attr() -> None:
    ordered = node("orderedList", item(para(text("x"))), item(para(text("y"))), order=3)
    assert adf_to_text(doc(ordered)) == "3. x\n4. y"


def test_nested_lists_are_indented() -> None:
    inner = node("bulletList", item(para(text("inner"))))
    deeper = node("orderedList", item(para(text("deepest"))))
    outer = node(
        "bulletList",
        item(para(text("outer")), node("bulletList", item(para(text("mid")), deeper))),
        item(para(text("second")), inner),
    )
    assert adf_to_text(doc(outer)) == ("- outer\n  - mid\n    1. deepest\n- second\n  - inner")


def test_task_list_states_and_nesting() -> None:
    tasks = node(
        "taskList",
        node("taskItem", text("done thing"), state="DONE"),
        node("taskList", node("taskItem", text("nested todo"), state="TODO")),
        node("taskItem", text("todo thing"), state="TODO"),
    )
    assert adf_to_text(doc(tasks)) == "[x] done thing\n  [ ] nested todo\n[ ] todo thing"


def test_decision_list() -> None:
    decisions = node(
        "decisionList",
        node("decisionItem", text("Use Postgres"), state="DECIDED"),
        node("decisionItem", text("Ship Friday"), state="DECIDED"),
    )
    assert adf_to_text(doc(decisions)) == "Decision: Use Postgres\nDecision: Ship Friday"


def test_code_block_keeps_code_verbatim() -> None:
    code = "def f(x):\n    if x:\n\n        return 1\n"
    result = adf_to_text(doc(para(text("Before")), node("codeBlock", text(code))))
    assert result == "Before\n\ndef f(x):\n    if x:\n\n        return 1"


def test_code_block_first_line_indentation_survives() -> None:
    result = adf_to_text(doc(node("codeBlock", text("    indented\n  less"))))
    assert result == "indented\n  less"  # the whole result is stripped, inner lines not
    nested = adf_to_text(doc(para(text("x")), node("codeBlock", text("    indented"))))
    assert nested == "x\n\n    indented"


def test_blockquote_lines_are_prefixed() -> None:
    quote = node("blockquote", para(text("quoted")), para(text("more")))
    assert adf_to_text(doc(quote)) == "> quoted\n\n> more"


def test_rule() -> None:
    assert adf_to_text(doc(para(text("a")), node("rule"), para(text("b")))) == ("a\n\n---\n\nb")


@pytest.mark.parametrize(
    ("panel_type", "label"),
    [("info", "Info"), ("note", "Note"), ("warning", "Warning"), ("error", "Error")],
)
def test_panel_is_prefixed_with_its_type(panel_type: str, label: str) -> None:
    panel = node("panel", para(text("careful")), panelType=panel_type)
    assert adf_to_text(doc(panel)) == f"{label}: careful"


def test_panel_without_type_defaults_to_info() -> None:
    assert adf_to_text(doc(node("panel", para(text("hi"))))) == "Info: hi"


def test_expand_title_then_content() -> None:
    inner = node("nestedExpand", para(text("inner body")), title="Inner")
    expand = node("expand", para(text("body")), inner, title="Details")
    assert adf_to_text(doc(expand)) == "Details\nbody\n\nInner\ninner body"


def test_table_rows_are_cells_joined_by_pipes() -> None:
    def cell(kind: str, value: str) -> dict[str, Any]:
        return node(kind, para(text(value)))

    table = node(
        "table",
        node("tableRow", cell("tableHeader", "a"), cell("tableHeader", "b")),
        node("tableRow", cell("tableCell", "1"), cell("tableCell", "2")),
    )
    assert adf_to_text(doc(table)) == "a | b\n1 | 2"


def test_table_cell_with_several_blocks_stays_on_one_line() -> None:
    busy = node(
        "tableCell",
        para(text("first")),
        node("bulletList", item(para(text("x")))),
        node("codeBlock", text("a\nb")),
    )
    table = node("table", node("tableRow", busy, node("tableCell", para(text("z")))))
    assert adf_to_text(doc(table)) == "first - x a b | z"


def test_media_uses_alt_then_filename_else_nothing() -> None:
    single = node("mediaSingle", node("media", alt="diagram.png", id="1", type="file"))
    group = node("mediaGroup", node("media", id="2", type="file"))
    named = node("mediaSingle", node("media", filename="spec.pdf"))
    assert adf_to_text(doc(single, group, named)) == "diagram.png\n\nspec.pdf"


def test_media_caption() -> None:
    single = node(
        "mediaSingle",
        node("media", type="external", url="https://x/img.png"),
        node("caption", text("A caption")),
    )
    assert adf_to_text(doc(single)) == "A caption"


def test_extension_keeps_body_text_and_drops_bare_macros() -> None:
    bodied = node("bodiedExtension", para(text("macro body")), extensionKey="details")
    bare = node("extension", extensionKey="toc", extensionType="com.atlassian.macro")
    inline = para(text("x "), node("inlineExtension", extensionKey="jira"), text(" y"))
    assert adf_to_text(doc(bodied, bare, inline)) == "macro body\n\nx  y"


# --- inline nodes ---------------------------------------------------------------------


def test_mention_uses_text_with_at_sign() -> None:
    mention = node("mention", id="abc123", text="@Jane Doe")
    assert adf_to_text(doc(para(text("ping "), mention))) == "ping @Jane Doe"


def test_mention_adds_at_sign_and_falls_back_to_id() -> None:
    assert adf_to_text(para(node("mention", id="1", text="Jane Doe"))) == "@Jane Doe"
    assert adf_to_text(para(node("mention", id="5b10ac8d82e05b22cc7d4ef5"))) == ("@5b10ac8d82e05b22cc7d4ef5")
    assert adf_to_text(para(node("mention"))) == ""


def test_emoji_text_then_short_name() -> None:
    with_text = node("emoji", shortName=":smile:", text="\U0001f604")
    without_text = node("emoji", shortName=":custom-party:", id="x")
    result = adf_to_text(para(with_text, text(" and "), without_text))
    assert result == "\U0001f604 and :custom-party:"


@pytest.mark.parametrize("card", ["inlineCard", "blockCard", "embedCard"])
def test_cards_render_their_url(card: str) -> None:
    assert adf_to_text(doc(node(card, url="https://example.com/x"))) == ("https://example.com/x")


def test_inline_card_glued_to_a_word_gets_a_space() -> None:
    result = adf_to_text(para(text("See"), node("inlineCard", url="https://e.com")))
    assert result == "See https://e.com"


def test_link_mark_appends_href_only_when_different() -> None:
    link = {"type": "link", "attrs": {"href": "https://example.com/docs"}}
    result = adf_to_text(para(text("the docs", link, {"type": "strong"}), text(".")))
    assert result == "the docs (https://example.com/docs)."
    bare = {"type": "link", "attrs": {"href": "https://example.com"}}
    assert adf_to_text(para(text("https://example.com", bare))) == "https://example.com"


def test_other_marks_are_ignored() -> None:
    marks = [{"type": "strong"}, {"type": "em"}, {"type": "textColor", "attrs": {}}]
    assert adf_to_text(para(text("plain", *marks))) == "plain"


def test_status_node() -> None:
    status = node("status", text="IN PROGRESS", color="blue")
    assert adf_to_text(para(text("State:"), status)) == "State: IN PROGRESS"


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("1582152559000", "2020-02-19"),
        (1582152559000, "2020-02-19"),
        ("0", "1970-01-01"),
        ("not a number", ""),
        ("1e400", ""),
        (None, ""),
    ],
)
def test_date_node_is_iso_utc_date(timestamp: object, expected: str) -> None:
    assert adf_to_text(para(node("date", timestamp=timestamp))) == expected


def test_placeholder_text() -> None:
    assert adf_to_text(para(node("placeholder", text="Type here"))) == "Type here"


def test_unknown_nodes_keep_their_text() -> None:
    future = {
        "type": "someFutureBlock",
        "attrs": {"x": 1},
        "content": [para(text("kept")), {"type": "sparkle", "text": "also kept"}],
    }
    assert adf_to_text(doc(future)) == "kept\n\nalso kept"
    assert adf_to_text({"text": "no type at all"}) == "no type at all"


def test_malformed_fields_are_tolerated() -> None:
    weird = [
        {"type": "paragraph", "content": "not a list"},
        {"type": "paragraph", "content": {"type": "text", "text": "single child dict"}},
        {"type": "text", "text": 42},
        {"type": "mention", "attrs": ["not", "a", "dict"]},
        {"type": "orderedList", "attrs": {"order": "7"}, "content": [item(text("n"))]},
        {"type": "text", "text": "x", "marks": "bogus"},
        {"type": 5, "content": [text("numeric type")]},
        None,
        17,
        "bare string child",
    ]
    result = adf_to_text(doc(*weird))
    assert result == ("single child dict\n\n1. n\n\nx\n\nnumeric type\n\nbare string child")


def test_output_normalization() -> None:
    result = adf_to_text(doc(para(text("a   "), node("hardBreak"), text("b")), para()))
    assert result == "a\nb"
    many = adf_to_text(doc(node("codeBlock", text("x\n\n\n\n\ny"))))
    assert many == "x\n\ny"


# --- depth and size limits ------------------------------------------------------------


def _nested(depth: int, leaf: Any, wrapper: str = "paragraph") -> Any:
    """``depth`` levels of ``wrapper`` nodes around ``leaf``, built without recursion."""
    current = leaf
    for _ in range(depth):
        current = {"type": wrapper, "content": [current]}
    return current


def test_very_deep_nesting_returns_str_without_recursion_error() -> None:
    deep = _nested(10_000, text("bottom"))
    result = adf_to_text(deep)
    assert isinstance(result, str)
    assert result == ""  # the text sits far below max_depth


def test_very_deep_nesting_with_huge_max_depth_is_capped() -> None:
    deep = _nested(10_000, text("bottom"), wrapper="blockquote")
    assert isinstance(adf_to_text(deep, max_depth=10**9), str)


def test_deeply_nested_python_lists() -> None:
    deep: Any = ["x"]
    for _ in range(10_000):
        deep = [deep]
    assert adf_to_text(deep) == ""
    assert adf_to_text(doc(deep)) == ""


def test_content_within_max_depth_is_kept_and_beyond_it_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shallow = doc(_nested(20, text("shallow"), wrapper="unknownWrapper"))
    assert adf_to_text(shallow) == "shallow"
    with caplog.at_level(logging.WARNING, logger=adf.__name__):
        assert adf_to_text(shallow, max_depth=10) == ""
    assert "max_depth=10" in caplog.text


def test_mixed_deep_nesting_at_the_hard_cap_renders_without_fallback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrappers = ["bulletList", "listItem", "table", "tableRow", "tableCell", "panel"]
    current: Any = text("deep text")
    for i in range(adf.HARD_MAX_DEPTH - 1):
        current = node(wrappers[i % len(wrappers)], current)
    with caplog.at_level(logging.WARNING, logger=adf.__name__):
        result = adf_to_text(doc(current), max_depth=adf.HARD_MAX_DEPTH)
    assert "deep text" in result
    assert "falling back" not in caplog.text


def test_cyclic_structure_terminates() -> None:
    cyclic: dict[str, Any] = {"type": "doc", "content": []}
    cyclic["content"].extend([cyclic, text("loop"), cyclic])
    result = adf_to_text(cyclic)
    assert isinstance(result, str)
    assert "loop" in result


def test_internal_failure_falls_back_to_flat_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object) -> str:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(adf._Renderer, "_table_row", boom)
    table = node("table", node("tableRow", node("tableCell", para(text("cell")))))
    with caplog.at_level(logging.WARNING, logger=adf.__name__):
        result = adf_to_text(doc(para(text("intro")), table))
    assert "intro" in result
    assert "cell" in result
    assert "falling back" in caplog.text


# --- the shared corpus of real ADF documents --------------------------------------------


def _text_node_values(value: Any) -> list[str]:
    """Every ``text`` of a ``text`` node reachable through ``content`` (iterative)."""
    found: list[str] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            if current.get("type") == "text" and isinstance(current.get("text"), str):
                found.append(current["text"])
            stack.append(current.get("content"))
    return found


_ATTR_FRAGMENTS = {
    "mention": ("text",),
    "status": ("text",),
    "inlineCard": ("url",),
    "blockCard": ("url",),
    "embedCard": ("url",),
    "expand": ("title",),
    "nestedExpand": ("title",),
    "media": ("alt",),
}


def _attr_fragments(value: Any) -> list[str]:
    """Attribute values the converter promises to render (mention names, URLs...)."""
    found: list[str] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            attrs = current.get("attrs") or {}
            for name in _ATTR_FRAGMENTS.get(current.get("type"), ()):
                if isinstance(attrs.get(name), str) and attrs[name].strip():
                    found.append(attrs[name].strip())
            stack.append(current.get("content"))
    return found


def _assert_all_text_survives(document: Any, result: str) -> None:
    assert isinstance(result, str)
    expected_lines = [
        line.strip() for value in _text_node_values(document) for line in value.splitlines() if line.strip()
    ]
    expected = expected_lines + _attr_fragments(document)
    if expected:
        assert result, "document has text but the conversion is empty"
    missing = [fragment for fragment in expected if fragment not in result]
    assert not missing, f"text lost in conversion: {missing[:10]}"


_SAMPLES_DIR = corpus_dir() / "adf-samples"
_SAMPLE_NAMES = sorted(p.name for p in _SAMPLES_DIR.glob("*.json"))


def test_adf_samples_folder_is_present() -> None:
    folder = corpus_path("adf-samples")  # skips with a reason when the corpus is absent
    assert sorted(p.name for p in folder.glob("*.json")) == _SAMPLE_NAMES
    assert len(_SAMPLE_NAMES) >= 30


@pytest.mark.parametrize("name", _SAMPLE_NAMES)
def test_adf_sample_text_survives(name: str) -> None:
    document = load_corpus_json("adf-samples", name)
    _assert_all_text_survives(document, adf_to_text(document))


def test_jira_cli_document_text_survives() -> None:
    document = load_corpus_json("jira-cli", "adf_md.json")
    _assert_all_text_survives(document, adf_to_text(document))


def test_jira_cli_document_layout() -> None:
    result = adf_to_text(load_corpus_json("jira-cli", "adf_md.json"))
    lines = result.splitlines()
    assert "Table Header 1 | Table Header 2 | Table Header 3" in lines
    assert "Table row 1 column 1 | Table row 1 column 2 | Table row 1 column 3" in lines
    assert "@Person A" in lines
    assert "Info: Panel paragraph" in lines
    assert "Link (https://ankit.pl)" in lines
    assert "- Prefix: Unordered list item 1\n  - Next\n    - Another" in result
    assert "3. Ordered list item 3\n   1. nested\n      1. second level" in result
    assert 'func main() {\n\tfmt.Println("Hello, World!")\n}' in result


def test_sample_table_rows() -> None:
    result = adf_to_text(load_corpus_json("adf-samples", "node_table.json"))
    assert result.startswith("id | name\n1 | alice\n2 | bob\n")
    assert "col 1 second line | col 2 second line" in result.splitlines()


def test_sample_date_and_mention_and_emoji() -> None:
    date = adf_to_text(load_corpus_json("adf-samples", "node_date.json"))
    assert date == "this is a date: 2026-01-01"  # timestamp 1767225600000
    assert adf_to_text(load_corpus_json("adf-samples", "node_mention.json")) == "@machu"
    emoji = adf_to_text(load_corpus_json("adf-samples", "node_emoji.json"))
    assert emoji == "this is an emoji: \u2699\ufe0f"


def test_sample_task_list_nesting() -> None:
    result = adf_to_text(load_corpus_json("adf-samples", "node_task_list.json"))
    assert result.splitlines()[:3] == [
        "[x] item 1",
        "  [x] item 1.1",
        "    [x] item 1.1.1",
    ]


def test_sample_code_block_keeps_lines() -> None:
    result = adf_to_text(load_corpus_json("adf-samples", "node_code_block.json"))
    assert result == "def add_two(a, b):\n    return a + b"


# --- property-based robustness --------------------------------------------------------

_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)

_KNOWN_TYPES = sorted(
    {
        "doc",
        "paragraph",
        "heading",
        "text",
        "hardBreak",
        "bulletList",
        "orderedList",
        "listItem",
        "taskList",
        "taskItem",
        "decisionList",
        "decisionItem",
        "codeBlock",
        "blockquote",
        "rule",
        "panel",
        "expand",
        "nestedExpand",
        "table",
        "tableRow",
        "tableHeader",
        "tableCell",
        "mention",
        "emoji",
        "inlineCard",
        "blockCard",
        "embedCard",
        "status",
        "date",
        "media",
        "mediaSingle",
        "mediaGroup",
        "mediaInline",
        "placeholder",
        "extension",
        "bodiedExtension",
        "inlineExtension",
        "caption",
    }
)
_ATTR_NAMES = [
    "text",
    "url",
    "id",
    "state",
    "timestamp",
    "order",
    "panelType",
    "title",
    "shortName",
    "alt",
    "filename",
    "href",
    "level",
    "extensionKey",
    "data",
]

_node_types = st.sampled_from([*_KNOWN_TYPES, "unknownThing", "", "Paragraph"]) | (st.text(max_size=12) | _json_scalars)
_attrs = st.dictionaries(st.sampled_from(_ATTR_NAMES) | st.text(max_size=6), _json_values, max_size=4) | _json_values
_marks = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["link", "strong", "code", "em"]) | _json_scalars},
        optional={"attrs": st.fixed_dictionaries({"href": _json_scalars}) | _json_values},
    )
    | _json_values,
    max_size=3,
)


def _adf_nodes(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"type": _node_types},
        optional={
            "attrs": _attrs,
            "content": st.lists(children, max_size=4) | children | _json_values,
            "text": st.text(max_size=20) | _json_scalars,
            "marks": _marks,
        },
    )


_adf_trees = st.recursive(
    st.builds(lambda s: {"type": "text", "text": s}, st.text(max_size=20)) | _json_scalars,
    _adf_nodes,
    max_leaves=30,
)


class _FallbackDetector(logging.Handler):
    """Records whether the converter needed its last-resort fallback.

    "Never raises" alone would be satisfied by the fallback hiding a renderer bug, so
    the properties also require that the main renderer handled the input itself.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.fell_back = False

    def emit(self, record: logging.LogRecord) -> None:
        if "falling back" in record.getMessage():
            self.fell_back = True


def _convert_checked(value: Any, **kwargs: Any) -> str:
    detector = _FallbackDetector()
    adf.logger.addHandler(detector)
    try:
        result = adf_to_text(value, **kwargs)
    finally:
        adf.logger.removeHandler(detector)
    assert not detector.fell_back, "renderer raised internally; fallback was used"
    assert isinstance(result, str)
    return result


_PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY_SETTINGS
@given(_json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    _convert_checked(value)


@_PROPERTY_SETTINGS
@given(_adf_trees, st.integers(min_value=-5, max_value=200))
def test_adf_shaped_trees_never_raise(tree: Any, max_depth: int) -> None:
    _convert_checked(tree, max_depth=max_depth)
    _convert_checked({"type": "doc", "content": [tree]})
    _convert_checked([tree, tree])


@_PROPERTY_SETTINGS
@given(_adf_trees)
def test_output_is_normalized(tree: Any) -> None:
    result = _convert_checked(tree)
    assert result == result.strip()
    assert "\n\n\n" not in result
    assert all(line == line.rstrip() for line in result.splitlines())


_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)


@_PROPERTY_SETTINGS
@given(st.lists(st.lists(_words, min_size=1, max_size=5), min_size=1, max_size=5))
def test_well_formed_paragraph_words_all_survive(paragraphs: list[list[str]]) -> None:
    document = doc(*(para(*(text(w + " ") for w in words)) for words in paragraphs))
    result = adf_to_text(document)
    assert result.split("\n\n") == [" ".join(words) for words in paragraphs]
