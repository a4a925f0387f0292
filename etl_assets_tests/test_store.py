"""The table step on its own: one transaction over pending batches, dedupe, deletion marks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from etl_assets.core.records import RawPage
from etl_assets.core.sources.jira import tables
from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS
from etl_assets.core.store import ops, schema
from etl_assets.core.store.db import make_engine


def page(body) -> RawPage:
    return RawPage("GET", "/x", {}, 200, json.dumps(body), datetime.now(UTC))


def issue(n: int, updated: str, summary: str = "s") -> dict:
    return {"id": str(n), "key": f"P-{n}", "fields": {"summary": summary, "updated": updated}}


def test_overlapping_windows_keep_the_newest_version(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    newer = issue(1, "2026-03-04T10:16:00.000+0000", "newer")
    older = issue(1, "2026-03-04T10:15:00.000+0000", "older")
    ops.land_raw(engine, ISSUES, "t", [page({"issues": [newer]})], kind="incremental")
    ops.land_raw(
        engine, ISSUES, "t", [page({"issues": [older, issue(2, "2026-03-04T09:00:00.000+0000")]})], kind="incremental"
    )
    result = ops.build_table(engine, ISSUES, "t")
    assert result.inserted == 2 and result.fetched == 3
    with engine.connect() as conn:
        summaries = {
            r.external_id: r.summary for r in conn.execute(select(tables.issues.c.external_id, tables.issues.c.summary))
        }
    assert summaries == {"1": "newer", "2": "s"}
    assert result.watermark == datetime(2026, 3, 4, 10, 16, tzinfo=UTC)
    engine.dispose()


def test_full_listing_marks_vanished_rows_and_brings_back_returning_ones(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")

    def listing(*ids):
        return [page({"values": [{"id": i, "key": f"K{i}", "name": f"n{i}"} for i in ids], "isLast": True})]

    ops.land_raw(engine, PROJECTS, "t", listing("1", "2", "3"), kind="full")
    assert ops.build_table(engine, PROJECTS, "t").inserted == 3
    ops.land_raw(engine, PROJECTS, "t", listing("1", "3"), kind="full")
    second = ops.build_table(engine, PROJECTS, "t")
    assert (second.deleted, second.unchanged, second.live_rows) == (1, 2, 2)
    ops.land_raw(engine, PROJECTS, "t", listing("1", "2", "3"), kind="full")
    third = ops.build_table(engine, PROJECTS, "t")
    assert (third.undeleted, third.deleted, third.live_rows) == (1, 0, 3)
    # Nothing pending: a re-run changes nothing and reports no batches.
    assert ops.build_table(engine, PROJECTS, "t").batches == 0
    engine.dispose()


def test_other_tenants_rows_are_untouched(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    body = {"values": [{"id": "1", "key": "K", "name": "n"}], "isLast": True}
    ops.land_raw(engine, PROJECTS, "a", [page(body)], kind="full")
    ops.land_raw(engine, PROJECTS, "b", [page(body)], kind="full")
    ops.build_table(engine, PROJECTS, "a")
    assert ops.count_rows(engine, PROJECTS, "b") == 0, "tenant b's batch is still pending, not consumed by a"
    ops.build_table(engine, PROJECTS, "b")
    ops.land_raw(engine, PROJECTS, "a", [page({"values": [], "isLast": True})], kind="full")
    assert ops.build_table(engine, PROJECTS, "a").deleted == 1
    assert ops.count_rows(engine, PROJECTS, "b") == 1
    engine.dispose()


def test_surrogate_keys_are_64_bit(tmp_path, backend):
    """An upsert that updates still draws from PostgreSQL's sequence: the keys must be BIGINT."""
    from sqlalchemy import inspect

    from etl_assets_tests.pg import database_url_for_test

    engine = make_engine(database_url_for_test(tmp_path, backend, f"bigint-{backend}"))
    schema.metadata.create_all(engine)
    columns = {
        t: {c["name"]: c["type"] for c in inspect(engine).get_columns(t)}
        for t in ("issues", "raw_batches", "raw_jira_pages", "rejected_records")
    }
    for table, types in columns.items():
        wanted = "BIGINT" if backend == "postgres" else "INTEGER"
        assert str(types["id"]) == wanted, (table, types["id"])
    assert str(columns["raw_jira_pages"]["batch_id"]) == ("BIGINT" if backend == "postgres" else "INTEGER")
    engine.dispose()


def test_non_finite_numbers_are_quarantined_naming_the_jira_id_and_the_batch_commits(tmp_path, backend):
    """NaN and Infinity are read by Python's json but are not JSON: PostgreSQL refused the ``data``
    column and the whole issues transaction failed. Each such record is quarantined instead."""
    from etl_assets_tests.pg import database_url_for_test

    engine = make_engine(database_url_for_test(tmp_path, backend, f"nonfinite-{backend}"))
    stamp = "2026-03-04T10:15:30.000+0000"
    # Written by hand: the literals are what a broken gateway would put on the wire.
    body = (
        '{"isLast": true, "issues": ['
        f'{{"id": "10001", "key": "P-1", "parent": Infinity, "fields": {{"summary": "a", "updated": "{stamp}"}}}},'
        f'{{"id": "10002", "key": "P-2", "fields": {{"summary": "b", "updated": "{stamp}", "customfield_1": NaN}}}},'
        f'{{"id": "10003", "key": "P-3", "fields": {{"summary": "c", "updated": "{stamp}", "labels": [-Infinity]}}}},'
        f'{{"id": "10004", "key": "P-4", "fields": {{"summary": "good", "updated": "{stamp}", "score": 1.5}}}},'
        f'{{"id": "10005", "key": "P-5", "fields": {{"summary": "good too", "updated": "{stamp}"}}}}'
        "]}"
    )
    ops.land_raw(engine, ISSUES, "t", [RawPage("POST", "/x", {}, 200, body, datetime.now(UTC))], kind="incremental")
    result = ops.build_table(engine, ISSUES, "t")  # used to raise on PostgreSQL: Token "Infinity" is invalid
    assert (result.fetched, result.inserted, result.rejected) == (5, 2, 3)
    with engine.connect() as conn:
        rows = {r.external_id: r.data for r in conn.execute(select(tables.issues.c.external_id, tables.issues.c.data))}
        rejected = {r.external_id: r for r in conn.execute(select(schema.rejected_records)) if r.tenant_id == "t"}
    engine.dispose()
    assert set(rows) == {"10004", "10005"} and rows["10004"]["fields"]["score"] == 1.5
    where = {"10001": ("'parent'", "Infinity"), "10002": ("'fields.customfield_1'", "NaN")}
    where["10003"] = ("'fields.labels[0]'", "-Infinity")
    assert set(rejected) == set(where)
    for ext, (path, literal) in where.items():
        reason = rejected[ext].reason
        assert reason.startswith(f"issue {ext}: ") and path in reason and f"is {literal}," in reason, reason
        assert literal in rejected[ext].payload, "the payload keeps what was sent"
