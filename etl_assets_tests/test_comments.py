"""Comments: fetched with their issues (paged past the embedded ones), committed in the issues
transaction, embedded as points of their own; edits re-embed only the edited comment, deletions
remove points after the commit, restricted comments are indexed with an access list that
keeps them from everyone outside their audience."""

from __future__ import annotations

import pytest

from etl_assets.core.sources.jira.sample.documents import (
    EMBEDDED_COMMENTS,
    RESTRICTED_FACT,
    add_comments,
    delete_comment,
    edit_comment,
)
from etl_assets.core.sources.jira.specs import COMMENTS, ISSUES
from etl_assets.fakes.loopback import Response
from etl_assets_tests.test_graph import all_points, table_rows

ISSUE_AND_COMMENTS = "key:jira/raw/raw_jira_issues or key:tables/issues_table or key:vectors/comments_vectors"


def meta(result, node):
    return result.asset_materializations_for_node(node)[0].metadata


def comment_points(env, tenant_id="1"):
    return all_points(env).get(f"client_{tenant_id}_comments", [])


def site_comments(site):
    return {c["id"]: (i, c) for i in site.issues for c in i["fields"]["comment"]["comments"]}


def quiet_issue(site):
    """An issue without comments, sub-tasks or a parent: a clean place to add comments."""
    return next(i for i in site.issues if not i["fields"]["comment"]["comments"] and not i["fields"].get("parent"))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_250_comments_all_indexed_then_edit_and_delete_converge(env):
    site = env.tenants["1"].site
    issue = quiet_issue(site)
    add_comments(site, issue["key"], [f"Observation {n}: retry storm number {n} on the queue" for n in range(250)])
    result = env.materialize("1")
    assert result.success

    rows = table_rows(env, COMMENTS, "1")
    expected = {cid for cid, (_, c) in site_comments(site).items()}
    assert {r["external_id"] for r in rows} == expected
    mine = [r for r in rows if r["issue_key"] == issue["key"]]
    assert len(mine) == 250, "every comment past the embedded ones was paged in"
    table_meta = meta(result, "tables__issues_table")
    assert table_meta["comments_live"].value == len(expected)
    assert table_meta["issues_with_incomplete_comments"].value == 0
    restricted = {r["external_id"] for r in rows if r["visibility"]}
    assert restricted

    points = comment_points(env)
    indexed = {p.payload["external_id"] for p in points}
    # Restricted comments are indexed too: their access list (the permission stage ran in the same
    # materialization) keeps them from everyone outside their role or group.
    assert indexed == expected
    assert sum(1 for p in points if p.payload["key"] == issue["key"]) == 250
    secret = [p for p in points if RESTRICTED_FACT[:40] in (p.payload.get("text") or "")]
    assert secret and {p.payload["external_id"] for p in secret} <= restricted
    assert all(isinstance(p.payload.get("access"), list) and "public" not in p.payload["access"] for p in secret)
    one = next(p for p in points if p.payload["key"] == issue["key"])
    assert one.payload["author"] and one.payload["created"] and one.payload["issue_id"] == issue["id"]

    # No change: nothing embedded at all.
    env.embeddings.reset_counters()
    assert env.materialize("1").success
    assert env.embeddings.inputs == 0 and env.embeddings.requests == 0

    # One comment edited: exactly its chunk is embedded again (the issue's own text is unchanged
    # apart from nothing: its updated moved, which is not part of its text).
    target = site_comments(site)
    edited_id = next(cid for cid, (i, _) in target.items() if i["key"] == issue["key"])
    edit_comment(site, issue["key"], edited_id, "Observation rewritten: the broker ran out of file handles")
    env.embeddings.reset_counters()
    assert env.materialize("1").success
    log = env.embeddings.input_log
    assert len(log) == 1 and "file handles" in log[0], log

    # One comment deleted: marked deleted in the table, its point gone after the commit.
    doomed_id = next(
        cid for cid, (i, _) in site_comments(site).items() if i["key"] == issue["key"] and cid != edited_id
    )
    delete_comment(site, issue["key"], doomed_id)
    env.embeddings.reset_counters()
    result = env.materialize("1")
    assert result.success
    assert env.embeddings.inputs == 0
    assert meta(result, "tables__issues_table")["comments_deleted"].value == 1
    assert doomed_id in {r["external_id"] for r in table_rows(env, COMMENTS, "1", live=False)}
    assert doomed_id not in {p.payload["external_id"] for p in comment_points(env)}
    assert sum(1 for p in comment_points(env) if p.payload["key"] == issue["key"]) == 249


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_comment_page_failing_mid_way_keeps_the_rest_and_the_next_run_converges(env):
    site = env.tenants["1"].site
    server = env.tenants["1"].server
    issue = quiet_issue(site)
    add_comments(site, issue["key"], [f"note {n}" for n in range(230)])
    # Embedded: 20; pages from 20 (100), 120 (100), 220 (10). The second page fails for good.
    path = f"/rest/api/3/issue/{issue['id']}/comment"
    calls = {"n": 0}
    original = server.handler

    def failing(req):
        if req.path == path:
            calls["n"] += 1
            if calls["n"] == 2:
                return Response.json({"errorMessages": ["Issue does not exist"]}, status=404)
        return original(req)

    server.handler = failing
    try:
        result = env.materialize("1")
    finally:
        server.handler = original
    assert result.success, "one issue's comment page must not sink the others"
    rows = [r for r in table_rows(env, COMMENTS, "1") if r["issue_key"] == issue["key"]]
    assert len(rows) == EMBEDDED_COMMENTS + 100, "the pages before the failure are kept"
    issue_row = next(r for r in table_rows(env, ISSUES, "1") if r["key"] == issue["key"])
    assert issue_row["comments_incomplete"] == f"{EMBEDDED_COMMENTS + 100} of 230 comments arrived"
    others = [r for r in table_rows(env, COMMENTS, "1") if r["issue_key"] != issue["key"]]
    assert len(others) == len(site_comments(site)) - 230

    # Next run (incremental): the watermark was held below that issue, so it is fetched again.
    result = env.materialize("1")
    assert result.success
    rows = [r for r in table_rows(env, COMMENTS, "1") if r["issue_key"] == issue["key"]]
    assert len(rows) == 230
    issue_row = next(r for r in table_rows(env, ISSUES, "1") if r["key"] == issue["key"])
    assert issue_row["comments_incomplete"] is None
    assert sum(1 for p in comment_points(env) if p.payload["key"] == issue["key"]) == 230


def _doc(text: str, depth: int = 1) -> dict:
    node: dict = {"type": "paragraph", "content": [{"type": "text", "text": text}]}
    for _ in range(depth - 1):
        node = {"type": "blockquote", "content": [node]}
    return {"type": "doc", "version": 1, "content": [node]}


def test_bad_comments_each_get_their_own_outcome_and_nothing_else_is_lost(tmp_path):
    """A 2 MB comment, ADF nested 200 deep, a deleted author, a broken comment: the issue and its
    other comments are committed; each bad one is kept cut, quarantined, or attributed."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import select

    from etl_assets.core.records import RawPage
    from etl_assets.core.sources.jira import parsers
    from etl_assets.core.store import ops, schema
    from etl_assets.core.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'etl.db'}")
    comments = [
        {
            "id": "1",
            "author": {"accountId": "a1", "displayName": "Ana"},
            "body": _doc("fine"),
            "created": "2026-01-01T00:00:00.000+0000",
        },
        {"id": "2", "author": {"accountId": "a1", "displayName": "Ana"}, "body": _doc("x" * 2_000_000)},
        {"id": "3", "author": {"accountId": "a1", "displayName": "Ana"}, "body": _doc("deep", depth=200)},
        {"id": "4", "author": {"active": False}, "body": _doc("left the company")},
        {"id": None, "body": _doc("no id")},
    ]
    issue = {
        "id": "100",
        "key": "PAY-1",
        "fields": {
            "summary": "s",
            "updated": "2026-01-02T00:00:00.000+0000",
            "comment": {"comments": comments, "total": 5, "maxResults": 5, "startAt": 0},
        },
    }
    body = json.dumps({"issues": [issue], "isLast": True})
    ops.land_raw(
        engine, ISSUES, "t", [RawPage("POST", "/rest/api/3/search/jql", {}, 200, body, datetime.now(UTC))], kind="full"
    )
    result = ops.build_table(engine, ISSUES, "t")
    assert result.inserted == 1, result.rejected_reasons
    assert result.children["comments_inserted"] == 3 and result.children["comments_rejected"] == 2
    rows = {r.external_id: r for r in engine.connect().execute(select(COMMENTS.table))}
    assert set(rows) == {"1", "2", "4"}
    assert "the text was 2000000 characters long" in rows["2"].body and len(rows["2"].body) <= parsers.MAX_TEXT
    assert rows["4"].author == parsers.DELETED_AUTHOR and rows["4"].author_account_id is None
    reasons = sorted(result.rejected_reasons)
    assert reasons[0].startswith("issue PAY-1: comment: missing or invalid 'id'")
    assert reasons[1] == f"issue PAY-1: comment: the record nests more than {parsers.MAX_NESTING} levels deep"
    r = schema.rejected_records
    quarantined = engine.connect().execute(select(r.c.entity, r.c.external_id)).all()
    assert sorted(quarantined, key=str) == sorted([("comments", "3"), ("comments", None)], key=str)
    # The issue row says the list was complete (the rejected ones arrived; they are quarantined).
    issue_row = (
        engine.connect().execute(select(ISSUES.table.c.comments_incomplete, ISSUES.table.c.comments_total)).one()
    )
    assert issue_row == (None, 5)
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_comment_hit_shows_its_issue_and_the_passage_with_author_and_date(env):
    import asyncio

    from etl_assets.core.edge_client import EdgeQdrantClient
    from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
    from etl_assets.core.search import IssueFilters, Principal, SearchService
    from etl_assets.core.store.db import make_engine

    assert env.materialize("1").success
    site = env.tenants["1"].site
    # The fake embedder maps equal texts to equal vectors: ask with a comment point's exact text.
    point = next(p for p in comment_points(env) if p.payload["chunks"] == 1)
    issue = site.issue(point.payload["key"])
    settings = EmbeddingSettings(
        provider="openai", api_key="sk-test-embeddings-secret", base_url=env.embeddings.url, dimensions=64
    )

    async def go():
        engine = make_engine(env.database_url, create=False)
        client = EdgeQdrantClient(env.qdrant_path)  # the folder the graph wrote (QDRANT_ENGINE's default)
        try:
            async with open_embedder(settings) as embedder:
                service = SearchService(client, embedder, engine, env.registry)
                me = Principal("alice", frozenset({"1"}), unrestricted=True)
                found = await service.search_issues(me, point.payload["text"], limit=5)
                done_only = await service.search_issues(
                    me, point.payload["text"], filters=IssueFilters(status_category="done"), limit=50
                )
                return found, done_only
        finally:
            await client.close()
            engine.dispose()

    env.embeddings.reset_counters()
    found, done_only = asyncio.run(go())
    # One embedding request per search, though the first ranks the issues and the comments.
    assert env.embeddings.requests == 2 and env.embeddings.inputs == 2
    top = found.hits[0]
    assert top.key == issue["key"] and top.summary == issue["fields"]["summary"]
    assert top.comment_author == point.payload["author"] and top.comment_created == point.payload["created"]
    assert top.passage.startswith(f"Comment on {issue['key']}")
    assert top.score > 0.999
    assert len({h.key for h in found.hits}) == len(found.hits), "one hit per issue"
    # A status filter leaves comments out (their points do not carry the issue's status).
    assert all(h.comment_author is None for h in done_only.hits)
