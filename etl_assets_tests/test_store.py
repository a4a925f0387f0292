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
