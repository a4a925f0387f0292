"""Comments: fetched with their issues (paged past the embedded ones), committed in the issues
transaction, embedded as points of their own; edits re-embed only the edited comment, deletions
remove points after the commit, restricted comments stay out of the index."""

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
    restricted = [r for r in rows if r["visibility"]]
    assert restricted and table_meta["comments_not_indexed"].value == len(restricted)

    points = comment_points(env)
    indexed = {p.payload["external_id"] for p in points}
    assert indexed == expected - {r["external_id"] for r in restricted}
    assert sum(1 for p in points if p.payload["key"] == issue["key"]) == 250
    assert not any(RESTRICTED_FACT[:40] in (p.payload.get("text") or "") for p in points)
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


@pytest.mark.slow
def test_local_model_finds_issues_by_what_only_their_comments_say():
    """Comment-only queries of the sample site, recall@5 with the local model (HF_HUB_OFFLINE=1)."""
    import asyncio

    from etl_assets.core.embeddings.local_provider import LocalEmbedder
    from etl_assets.core.evaluation import evaluate_documents
    from etl_assets.core.sources.jira.sample import generate_sample_site
    from etl_assets.core.sources.jira.sample.documents import document_queries

    site = generate_sample_site()
    queries = document_queries(site)
    assert len(queries) >= 8
    # The facts are in no issue's own text: only the comments can answer.
    for fact, keys in site.comment_facts.items():
        for key in keys:
            assert fact[:40] not in ISSUES.text(ISSUES.parse(site.issue(key)))
    report = asyncio.run(evaluate_documents(ISSUES, site.issues, queries, LocalEmbedder(), k=5))
    assert report.recall_at_k >= 0.8, report.as_dict()
