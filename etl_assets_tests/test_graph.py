"""The asset graph end to end against loopback fakes: rows, points, ordering, idempotence."""

from __future__ import annotations

import asyncio
from collections import Counter

import dagster as dg
import pytest
from sqlalchemy import create_engine, select, text

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.sources.jira import tables
from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS, STATUSES, WITS
from etl_assets.core.store import schema
from etl_assets.core.vectorstore import point_id
from etl_assets.fakes.github_server import expected_rows

FULL_LISTINGS = (PROJECTS, WITS, STATUSES)


def github_counts(site) -> dict[str, int]:
    return {s.name: len(expected_rows(site, s.name)) for s in CATALOGUE if s.source == "github"}


def site_counts(site) -> dict[str, int]:
    return {
        "projects": len(site.projects),
        "wits": len(site.issue_types),
        "statuses": len(site.statuses),
        "issues": len(site.issues),
        "comments": sum(len(i["fields"]["comment"]["comments"]) for i in site.issues),
    }


def table_rows(env, spec, tenant_id, *, live=True):
    engine = create_engine(env.database_url)
    t = spec.table
    cond = t.c.deleted_at.is_(None) if live else t.c.deleted_at.is_not(None)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.tenant_id == tenant_id, cond))]
    engine.dispose()
    return rows


def all_points(env) -> dict[str, list]:
    async def go():
        client = EdgeQdrantClient(env.qdrant_path)  # the folder the graph wrote (QDRANT_ENGINE's default)
        try:
            out = {}
            for c in (await client.get_collections()).collections:
                points, offset = [], None
                while True:
                    page, offset = await client.scroll(
                        c.name, limit=500, offset=offset, with_payload=True, with_vectors=True
                    )
                    points += page
                    if offset is None:
                        break
                out[c.name] = points
            return out
        finally:
            await client.close()

    return asyncio.run(go())


def test_whole_graph_for_two_tenants(env):
    for tenant_id in ("1", "2"):
        result = env.materialize(tenant_id)
        assert result.success
    points = all_points(env)
    assert sorted(points) == sorted(f"client_{t}_{s.name}" for t in ("1", "2") for s in CATALOGUE)
    for tenant_id, tenant in env.tenants.items():
        expected = site_counts(tenant.site) | github_counts(tenant.github)
        for spec in CATALOGUE:
            rows = table_rows(env, spec, tenant_id)
            assert len(rows) == expected[spec.name], (tenant_id, spec.name)
            coll = points[f"client_{tenant_id}_{spec.name}"]
            assert {p.payload["external_id"] for p in coll} == {r["external_id"] for r in rows}
            assert all(p.payload["tenant_id"] == tenant_id for p in coll), "a point of another tenant leaked in"
            assert all(p.payload["entity"] == spec.name for p in coll)
            for p in coll:
                assert p.id == point_id(tenant_id, spec.name, p.payload["external_id"], p.payload["chunk"])
                assert len(p.vector["dense"]) == 64 and p.vector["bm25"].indices
                assert p.payload["embedding_model"] == "text-embedding-3-small"
                assert len(p.payload["content_hash"]) == 64
    p = next(iter(points["client_1_projects"]))
    assert {"key", "name", "category", "external_id", "content_hash"} <= set(p.payload)
    issue = next(iter(points["client_1_issues"]))
    assert {
        "key",
        "summary",
        "project_key",
        "type",
        "status",
        "status_category",
        "priority",
        "labels",
        "updated",
    } <= set(issue.payload)


def test_second_materialization_changes_nothing(env):
    env.materialize("1")
    first = {name: sorted(str(p.id) for p in pts) for name, pts in all_points(env).items()}
    requests_after_first = env.embeddings.requests
    assert requests_after_first > 0
    result = env.materialize("1")
    second = {name: sorted(str(p.id) for p in pts) for name, pts in all_points(env).items()}
    assert second == first
    for ids in second.values():
        assert len(ids) == len(set(ids))
    assert env.embeddings.requests == requests_after_first, "unchanged rows must not be embedded again"
    for spec in CATALOGUE:
        if spec.parent is not None:  # children: counted by their parent's table step
            meta = result.asset_materializations_for_node(f"tables__{spec.parent}_table")[0].metadata
            assert meta[f"{spec.name}_inserted"].value == 0 and meta[f"{spec.name}_updated"].value == 0
            continue
        meta = result.asset_materializations_for_node(f"tables__{spec.name}_table")[0].metadata
        assert meta["inserted"].value == 0 and meta["updated"].value == 0


def test_vector_step_sees_every_committed_row(env):
    result = env.materialize("1")
    for spec in CATALOGUE:
        vec_meta = result.asset_materializations_for_node(f"vectors__{spec.name}_vectors")[0].metadata
        if spec.parent is not None:  # committed by the parent's table step (restricted ones too)
            table_meta = result.asset_materializations_for_node(f"tables__{spec.parent}_table")[0].metadata
            assert vec_meta["rows_live"].value == table_meta[f"{spec.name}_live"].value > 0
            assert vec_meta["points_upserted"].value >= vec_meta["rows_live"].value
            continue
        table_meta = result.asset_materializations_for_node(f"tables__{spec.name}_table")[0].metadata
        assert vec_meta["rows_live"].value == table_meta["live_rows"].value > 0
        assert vec_meta["points_upserted"].value >= vec_meta["rows_live"].value


def _install_failing_trigger(url: str, table: str, external_id: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN NEW.external_id = '{external_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            )
        else:
            conn.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION refuse_{table}() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.external_id = '{external_id}' THEN RAISE EXCEPTION 'injected failure'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW "
                    f"EXECUTE FUNCTION refuse_{table}()"
                )
            )
    engine.dispose()


def test_failed_table_transaction_leaves_nothing_and_blocks_vectors(env):
    site = env.tenants["1"].site
    env.materialize("1", "key:tables/projects_table+ or key:jira/raw/raw_jira_projects")
    before = {r["external_id"]: r["name"] for r in table_rows(env, PROJECTS, "1")}
    # Jira renames one project and adds another; the database refuses the new one mid-transaction.
    renamed = site.projects[0]
    renamed["name"] = "Renamed in Jira"
    added = dict(site.projects[1], id="99999", key="NEWP", name="Brand new")
    site.projects.append(added)
    _install_failing_trigger(env.database_url, "projects", "99999")
    embeddings_before = env.embeddings.requests
    result = env.materialize("1", "key:jira/raw/raw_jira_projects+", raise_on_error=False)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE}
    assert failed == {"tables__projects_table"}
    after = {r["external_id"]: r["name"] for r in table_rows(env, PROJECTS, "1")}
    assert after == before, "the rename was in the failed transaction and must not be visible"
    assert "99999" not in after
    ran = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert "vectors__projects_vectors" not in ran
    assert env.embeddings.requests == embeddings_before
    # The pending raw batch is still there: once the fault clears, a run converges.
    engine = create_engine(env.database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_projects" + ("" if engine.dialect.name == "sqlite" else " ON projects")))
    engine.dispose()
    assert env.materialize("1", "key:tables/projects_table+").success
    after = {r["external_id"]: r["name"] for r in table_rows(env, PROJECTS, "1")}
    assert after[renamed["id"]] == "Renamed in Jira" and "99999" in after
    names = {p.payload["name"] for p in all_points(env)["client_1_projects"]}
    assert {"Renamed in Jira", "Brand new"} <= names


def test_vanished_objects_are_marked_deleted_and_lose_their_points(env):
    env.materialize("1")
    site = env.tenants["1"].site
    gone_project = site.projects.pop()
    gone_status = next(s for s in site.statuses if not any(i["fields"]["status"]["id"] == s["id"] for i in site.issues))
    site.statuses.remove(gone_status)
    result = env.materialize("1")
    assert result.success
    deleted = {r["external_id"] for r in table_rows(env, PROJECTS, "1", live=False)}
    assert deleted == {gone_project["id"]}
    assert gone_status["id"] in {r["external_id"] for r in table_rows(env, STATUSES, "1", live=False)}
    points = all_points(env)
    assert gone_project["id"] not in {p.payload["external_id"] for p in points["client_1_projects"]}
    assert gone_status["id"] not in {p.payload["external_id"] for p in points["client_1_statuses"]}
    meta = result.asset_materializations_for_node("vectors__projects_vectors")[0].metadata
    assert meta["points_deleted"].value >= 1


def test_checks_run_and_pass(env):
    result = env.materialize("1")
    evaluations = result.get_asset_check_evaluations()
    names = Counter(e.check_name for e in evaluations)
    # Every entity has a table step with its checks except a child (comments: committed by its parent's).
    tables = sum(1 for s in CATALOGUE if s.parent is None)
    assert names["no_duplicate_ids"] == tables and names["points_match_live_rows"] == len(CATALOGUE)
    assert names["references_resolve"] == 1
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert failed == []


@pytest.mark.parametrize("table", [tables.projects])
def test_raw_pages_are_landed_unchanged(env, table):
    env.materialize("1", "key:jira/raw/raw_jira_projects")
    engine = create_engine(env.database_url)
    with engine.connect() as conn:
        rows = list(conn.execute(select(schema.raw_jira_pages).where(schema.raw_jira_pages.c.entity == "projects")))
    engine.dispose()
    assert len(rows) >= 1
    import hashlib
    import json

    listed = [v["id"] for r in rows for v in json.loads(r.body)["values"]]
    assert sorted(listed) == sorted(p["id"] for p in env.tenants["1"].site.projects)
    assert all(hashlib.sha256(r.body.encode()).hexdigest() == r.content_hash for r in rows)
    assert all(r.tenant_id == "1" and r.fetched_at is not None for r in rows)


@pytest.mark.sites(n_projects=60)
def test_projects_paging_over_several_pages(env):
    result = env.materialize("1", "key:jira/raw/raw_jira_projects")
    meta = result.asset_materializations_for_node("jira__raw__raw_jira_projects")[0].metadata
    assert meta["pages"].value >= 2
    assert meta["records"].value == 60
    _ = ISSUES
