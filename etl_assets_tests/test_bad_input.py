"""Payloads nobody expected: one bad record is quarantined with its reason and raw payload,
the rest of its batch proceeds, and nothing a parser returns can make the database refuse
the table's transaction.

* Through the graph: a site serving records with a missing id, wrong types, nulls where
  strings belong, absurdly long strings, deeply nested and unknown ADF, and invalid
  unicode (lone surrogates, bytes that are not UTF-8) — counts in metadata, a failed
  warning-severity check, the good rows and points exact.
* Property-based (hypothesis): the four parsers on arbitrary JSON and on Jira-shaped
  records with hostile values never raise anything but ``RecordError``, and what they
  return fits its columns (UTF-8 encodable, no NUL, within each ``String(n)``); the ADF
  converter returns a string for trees with surrogates and NULs (``test_adf.py`` covers
  the rest of its input space); ``build_table`` on batches mixing random records with good
  ones never fails, and accounts for every record.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, String, create_engine, select

from etl_assets.core.catalogue import BY_NAME
from etl_assets.core.records import RawPage, RecordError
from etl_assets.core.sources.jira.adf import adf_to_text
from etl_assets.core.sources.jira.parsers import parse_issue, parse_project, parse_status, parse_wit
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.store import ops, schema
from etl_assets.core.store.db import make_engine
from etl_assets.fakes.loopback import Request, Response
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize

# About the database itself: every backend runs it, even when the test matrix is split (conftest.py).
pytestmark = pytest.mark.both_backends

PARSERS = {"projects": parse_project, "wits": parse_wit, "statuses": parse_status, "issues": parse_issue}

# -- what parsers may return ----------------------------------------------------------------------


def _db_safe(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN and Infinity are not JSON: PostgreSQL refuses them
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, list):
        return all(_db_safe(v) for v in value)
    return True


def assert_row_fits(entity: str, row: dict[str, Any]) -> None:
    """Every value is of its column's kind and size: the database cannot refuse it."""
    table = BY_NAME[entity].table
    for column, value in row.items():
        col = table.c[column]
        assert _db_safe(value), (column, value)
        if value is None:
            assert col.nullable, column
        elif isinstance(col.type, String):
            assert isinstance(value, str), (column, value)
            if col.type.length is not None:
                assert len(value) <= col.type.length, (column, len(value), col.type.length)
        elif isinstance(col.type, JSON) and column in ("labels", "components", "topics", "assignees"):
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), (column, value)
        elif isinstance(col.type, JSON):  # a document (access facts, links, custom fields): JSON all through
            assert isinstance(value, dict | list), (column, value)
            json.dumps(value, allow_nan=False)
        elif column in ("created", "updated"):
            assert isinstance(value, datetime) and value.tzinfo is not None
    json.dumps(ops.row_hash(row))  # what the table step hashes must serialise


# -- hostile values ---------------------------------------------------------------------------------

_HOSTILE_STRINGS = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d\ude00", "\u202eevil", "\ufeff", "\n\t", "null"]
)
_SIZED = st.sampled_from([31, 32, 33, 63, 64, 65, 999, 1000, 1001, 2000, 2001, 200_001]).map(lambda n: "k" * n)
_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
    _HOSTILE_STRINGS,
    _SIZED,
)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | _TEXT
_JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(_TEXT, c, max_size=3), max_leaves=12)


def _deep_adf(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": "the bottom"}
    for i in range(levels):
        node = {"type": ("paragraph", "blockquote", "listItem", "bulletList")[i % 4], "content": [node]}
    return {"type": "doc", "version": 1, "content": [node]}


_ADF_TEXT = st.builds(lambda t: {"type": "text", "text": t}, _TEXT)
_ADF = st.one_of(
    st.recursive(
        _ADF_TEXT,
        lambda c: st.fixed_dictionaries(
            {
                "type": st.sampled_from(["doc", "paragraph", "heading", "codeBlock", "table", "tableCell", "mystery"]),
                "content": st.lists(c, max_size=3),
            },
            optional={"attrs": _JSON},
        ),
        max_leaves=8,
    ),
    st.integers(min_value=1, max_value=400).map(_deep_adf),
    _JSON,
)
_ID = st.one_of(st.integers(min_value=-5, max_value=10**20).map(str), st.integers(), _TEXT, _JSON)
_STAMP = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.000+0000")),
    st.sampled_from(["2026-03-04T10:15:30.000+0100", "2026-03-04T10:15:30Z", "2026-13-45T99:99:99.000+0000"]),
    _JSON,
)


def _ref(*keys: str) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={k: _ID if k == "id" else _TEXT for k in keys}) | _JSON


def _record(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(required, optional=optional)


_RECORDS = {
    "projects": _record(
        {"id": _ID},
        {
            "key": _TEXT,
            "name": _TEXT,
            "description": _TEXT | _ADF,
            "projectTypeKey": _TEXT,
            "style": _TEXT,
            "simplified": _JSON,
            "projectCategory": _ref("name"),
            "lead": _ref("displayName"),
            "url": _TEXT,
            "avatarUrls": _ref("48x48", "32x32"),
        },
    ),
    "wits": _record(
        {"id": _ID},
        {
            "name": _TEXT,
            "description": _TEXT | _ADF,
            "hierarchyLevel": _JSON,
            "subtask": _JSON,
            "iconUrl": _TEXT,
            "scope": st.fixed_dictionaries({"type": _TEXT, "project": _ref("id")}),
        },
    ),
    "statuses": _record(
        {"id": _ID},
        {
            "name": _TEXT,
            "description": _TEXT,
            "statusCategory": _ref("key", "name"),
            "scope": st.fixed_dictionaries({"type": _TEXT, "project": _ref("id")}),
        },
    ),
    "issues": _record(
        {"id": _ID, "key": _TEXT},
        {
            "fields": st.fixed_dictionaries(
                {"summary": _TEXT, "updated": _STAMP},
                optional={
                    "description": _ADF,
                    "created": _STAMP,
                    "project": _ref("id", "key"),
                    "issuetype": _ref("id", "name"),
                    "status": st.fixed_dictionaries({"id": _ID, "name": _TEXT, "statusCategory": _ref("key")}),
                    "priority": _ref("name"),
                    "labels": st.lists(_TEXT, max_size=4) | _JSON,
                    "components": st.lists(_ref("name"), max_size=3),
                    "assignee": _ref("displayName"),
                    "reporter": _ref("displayName"),
                    "resolution": _ref("name"),
                    "parent": _ref("key"),
                },
            )
            | _JSON
        },
    ),
}

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_reject(entity: str, record: Any) -> dict[str, Any] | None:
    try:
        row = PARSERS[entity](record)
    except RecordError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert exc.external_id is None or (isinstance(exc.external_id, str) and len(exc.external_id) <= 64)
        return None
    assert_row_fits(entity, row)
    return row


@pytest.mark.parametrize("entity", list(PARSERS))
@PROPERTY
@given(data=st.data())
def test_parsers_on_any_json_return_a_fitting_row_or_a_record_error(entity, data):
    _parse_or_reject(entity, data.draw(_JSON))


@pytest.mark.parametrize("entity", list(PARSERS))
@PROPERTY
@given(data=st.data())
def test_parsers_on_hostile_jira_shaped_records_return_a_fitting_row_or_a_record_error(entity, data):
    _parse_or_reject(entity, data.draw(_RECORDS[entity]))


@PROPERTY
@given(_ADF, st.integers(min_value=-1, max_value=100))
def test_adf_with_surrogates_nul_and_control_characters_is_always_text(tree, max_depth):
    assert isinstance(adf_to_text(tree, max_depth=max_depth), str)


def test_deeply_nested_records_are_refused_with_a_reason_not_a_recursion_error():
    record = {
        "id": "1",
        "key": "P-1",
        "fields": {"summary": "s", "updated": "2026-03-04T10:15:30.000+0000", "description": _deep_adf(600)},
    }
    with pytest.raises(RecordError) as err:
        parse_issue(record)
    assert "nest" in err.value.reason and err.value.external_id == "1"
    shallow = dict(record, fields={**record["fields"], "description": _deep_adf(40)})
    assert "the bottom" in parse_issue(shallow)["description"]


# -- build_table on hostile batches -------------------------------------------------------------------

_tenant_ids = (f"prop{n}" for n in itertools.count())


def _good(entity: str, n: int) -> dict[str, Any]:
    ident = str(900_000 + n)
    if entity == "issues":
        return {
            "id": ident,
            "key": f"GOOD-{n}",
            "fields": {"summary": f"good {n}", "updated": "2026-03-04T10:15:30.000+0000"},
        }
    if entity == "projects":
        return {"id": ident, "key": f"G{n}", "name": f"good {n}"}
    return {"id": ident, "name": f"good {n}"}


def _body(entity: str, records: list[Any]) -> str:
    if entity == "issues":
        return json.dumps({"issues": records, "isLast": True})
    if entity == "projects":
        return json.dumps({"values": records, "isLast": True, "total": len(records)})
    return json.dumps(records)


@pytest.fixture
def engine(tmp_path, backend, request):
    from etl_assets_tests.pg import database_url_for_test

    engine = make_engine(database_url_for_test(tmp_path, backend, request.node.name))
    yield engine
    engine.dispose()


@pytest.mark.parametrize("entity", list(PARSERS))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_table_build_quarantines_what_it_cannot_store_and_keeps_the_rest(engine, entity, data):
    spec = BY_NAME[entity]
    hostile = data.draw(st.lists(_RECORDS[entity] | _JSON, min_size=1, max_size=4))
    good = [_good(entity, n) for n in range(3)]
    tenant = next(_tenant_ids)
    records = [*hostile, *good]  # good ones last: an id they share with a hostile record is theirs
    page = RawPage("GET", spec.endpoint, {}, 200, _body(entity, records), datetime.now(UTC))
    ops.land_raw(engine, spec, tenant, [page], kind="full")
    result = ops.build_table(engine, spec, tenant)  # must not raise, whatever the hostile records are
    with engine.connect() as conn:
        live = {
            r.external_id
            for r in conn.execute(
                select(spec.table.c.external_id).where(
                    spec.table.c.tenant_id == tenant, spec.table.c.deleted_at.is_(None)
                )
            )
        }
        rejected = conn.execute(
            select(schema.rejected_records).where(schema.rejected_records.c.tenant_id == tenant)
        ).all()
    assert {g["id"] for g in good} <= live
    assert result.fetched == len(records)
    # Every record with an id became a row or a quarantined record naming that id (the
    # newest record of an id is the one that counts; an id no column can hold is not named);
    # one without an id is quarantined too.
    quarantined = {r.external_id for r in rejected}
    as_stored = spec.records(json.loads(page.body))  # e.g. an escaped surrogate pair decodes to one character
    keyed = [r for r in as_stored if ops._record_key(r) is not None]
    for key in {ops._record_key(r) for r in keyed}:
        assert key in live or key[:64] in quarantined or (not _db_safe(key) and None in quarantined), key
    assert len(rejected) == result.rejected >= len(records) - len(keyed)
    for r in rejected:
        assert r.entity == entity and r.reason and r.payload and r.batch_id is not None


# -- quarantine through the graph ---------------------------------------------------------------------

SURROGATE, NOT_UTF8 = "@@SURROGATE@@", "@@NOT-UTF8@@"
PATH_ENTITY = {
    "/rest/api/3/project/search": "projects",
    "/rest/api/3/issuetype": "wits",
    "/rest/api/3/status": "statuses",
    "/rest/api/3/search/jql": "issues",
}


def _inject(server, extra: dict[str, list[dict[str, Any]]]):
    """Serve ``extra`` records after the site's own on the first page of each listing, and let
    any record carry a lone surrogate escape or bytes that are not UTF-8 on the wire. (The
    records go on the wire, not into the site: the fake's JQL engine would refuse them.)"""
    original = server.handler

    def handler(req: Request) -> Response:
        response = original(req)
        entity = PATH_ENTITY.get(req.path)
        body = response.body
        if response.status == 200 and entity and extra.get(entity):
            data = json.loads(body)
            if entity == "issues":
                ask = json.loads(req.body or b"{}")
                if not ask.get("nextPageToken") and ask.get("fields") != ["id"]:
                    data["issues"].extend(extra[entity])
            elif entity == "projects":
                if req.query.get("startAt", "0") == "0":
                    data["values"].extend(extra[entity])
            else:
                data.extend(extra[entity])
            body = json.dumps(data, ensure_ascii=False).encode()
        body = body.replace(SURROGATE.encode(), b"\\ud800").replace(NOT_UTF8.encode(), b"\xff\xfe")
        return Response(response.status, response.headers, body)

    server.handler = handler
    return lambda: setattr(server, "handler", original)


def _bad_records(site) -> dict[str, list[tuple[dict[str, Any], str | None, str]]]:
    """(record, its Jira id as quarantined or None, a fragment of the reason) per entity."""
    project, wit, status, issue = site.projects[0], site.issue_types[0], site.statuses[0], site.issues[0]

    def clone_issue(ident: str, key: str, **fields: Any) -> dict[str, Any]:
        # Without the original's comments: Jira comment ids are unique per site, and a copy carrying
        # them would move them to itself (and take them along when it disappears).
        no_comments = {"comment": {"comments": [], "maxResults": 0, "total": 0, "startAt": 0}}
        return {**issue, "id": ident, "key": key, "fields": {**issue["fields"], **no_comments, **fields}}

    return {
        "projects": [
            ({k: v for k, v in project.items() if k != "id"} | {"key": "NOID"}, None, "missing or invalid 'id'"),
            ({**project, "id": "880001", "key": "WRONGTYPE", "name": ["a", "list"]}, "880001", "'name'"),
            ({**project, "id": "8" * 500, "key": "LONGID"}, "8" * 64, "characters long"),
        ],
        "wits": [({**wit, "id": "880002", "name": None}, "880002", "'name'")],
        "statuses": [({**status, "id": True, "name": "Boolean id"}, None, "missing or invalid 'id'")],
        "issues": [
            (clone_issue("880003", "BAD-1", summary=None), "880003", "'summary'"),
            (clone_issue("880004", "BAD-2", updated=1741083330), "880004", "'updated'"),
            ({**issue, "id": "880005", "key": "BAD-3", "fields": "not an object"}, "880005", "'fields'"),
            (clone_issue("880006", "K" * 300), "880006", "'key'"),
            (clone_issue("880007", "BAD-5", description=_deep_adf(280)), "880007", "nest"),
        ],
    }


def _odd_but_good(site) -> list[dict[str, Any]]:
    """Records that look wrong but carry everything a row needs: they must be kept, cleaned."""
    issue = site.issues[1]

    def clone(ident: str, key: str, **fields: Any) -> dict[str, Any]:
        # Without the original's comments: Jira comment ids are unique per site, and a copy carrying
        # them would move them to itself (and take them along when it disappears).
        no_comments = {"comment": {"comments": [], "maxResults": 0, "total": 0, "startAt": 0}}
        return {**issue, "id": ident, "key": key, "fields": {**issue["fields"], **no_comments, **fields}}

    unknown_adf = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "mysteryMacro",
                "attrs": {"x": 1},
                "content": [{"type": "text", "text": "kept from the unknown node"}],
            },
            {"type": "paragraph", "content": [{"type": "text", "text": f"lone {SURROGATE} surrogate in ADF\u0000"}]},
        ],
    }
    return [
        clone("880101", "ODD-1", summary="s" * 50_000, description="d " * 400_000),
        clone("880102", "ODD-2", summary=f"lone {SURROGATE} surrogate", description=unknown_adf),
        clone("880103", "ODD-3", summary=f"bytes {NOT_UTF8} that are not UTF-8", labels=["ok", f"x{SURROGATE}"]),
        clone("880104", "ODD-4", description=_deep_adf(90)),
    ]


def test_bad_records_are_quarantined_and_the_rest_of_the_batch_proceeds(env):
    tenant = env.tenants["1"]
    bad = _bad_records(tenant.site)
    odd = _odd_but_good(tenant.site)
    extra = {entity: [r for r, _, _ in records] for entity, records in bad.items()}
    extra["issues"] += odd
    restore = _inject(tenant.server, extra)
    try:
        result = materialize(env, "1")
    finally:
        restore()
    assert result.success, failure_texts(result)

    engine = create_engine(env.database_url)
    with engine.connect() as conn:
        rejected = [dict(r._mapping) for r in conn.execute(select(schema.rejected_records))]
        rows = {r.external_id: r for r in conn.execute(select(ISSUES.table).where(ISSUES.table.c.tenant_id == "1"))}
    engine.dispose()
    assert {r["tenant_id"] for r in rejected} == {"1"}
    for entity, records in bad.items():
        mine = [r for r in rejected if r["entity"] == entity]
        assert len(mine) == len(records), (entity, [r["reason"] for r in mine])
        for record, ext, reason in records:
            match = [r for r in mine if r["external_id"] == ext and reason in r["reason"]]
            assert match, (entity, ext, reason, [(r["external_id"], r["reason"]) for r in mine])
            assert json.loads(match[0]["payload"]) == record, "the raw payload is kept as Jira sent it"
        meta = result.asset_materializations_for_node(f"tables__{entity}_table")[0].metadata
        assert meta["rejected"].value == len(records)

    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    for entity in bad:
        check = checks[(f"{entity}_table", "no_rejected_records")]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["rejected"].value == len(bad[entity])
        assert checks[(f"{entity}_table", "no_duplicate_ids")].passed

    # The odd records were kept, cleaned to what their columns can hold.
    assert len(rows["880101"].summary) == 2000 and len(rows["880101"].description) <= 200_000
    assert rows["880102"].summary == "lone ? surrogate" and "kept from the unknown node" in rows["880102"].description
    assert "surrogate in ADF" in rows["880102"].description and "\x00" not in rows["880102"].description
    assert "\ufffd" in rows["880103"].summary and "x?" in rows["880103"].labels
    assert rows["880104"].description is None or "the bottom" not in rows["880104"].description
    skip = {"issues": {o["id"] for o in odd}}  # on the wire only, so not in the site: compared above
    assert_converged(env, "1", skip=skip)

    # The source stops sending them: one more run (reconciling issues, whose deletions an
    # incremental sync cannot see) converges exactly, and this run rejects nothing.
    result = env.materialize(
        "1",
        raise_on_error=False,
        run_config={"ops": {"jira__raw__raw_jira_issues": {"config": {"reconcile": True}}}},
    )
    assert result.success, failure_texts(result)
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.check_name == "no_rejected_records")
    assert_converged(env, "1")
