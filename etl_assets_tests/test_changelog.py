"""History digest, links, attachments and comment parsing: what an issue's document is made of."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from etl_assets.core.records import FetchRequest
from etl_assets.core.sources.jira import parsers
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.sample import generate_sample_site, sample_transport
from etl_assets.core.sources.jira.sample.documents import (
    EMBEDDED_HISTORIES,
    LONG_CHANGELOG_CHURN,
    add_comments,
    lengthen_changelog,
)
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import COMMENTS_OF_ISSUES, ISSUES
from etl_assets.core.tenants import Tenant
from etl_assets.fakes.loopback import Response
from etl_assets_tests.test_graph import table_rows


def change(when: str, field: str, before: str | None, after: str | None, who: str | None = "Ana") -> dict:
    return {
        "id": when,
        "author": {"displayName": who} if who else {},
        "created": when,
        "items": [{"field": field, "fromString": before, "toString": after}],
    }


CHANGELOG = {
    "histories": [
        change("2026-02-03T09:00:00.000+0000", "status", "Done", "In Progress"),
        change("2026-01-05T09:00:00.000+0000", "status", "To Do", "In Progress"),
        change("2026-01-04T09:00:00.000+0000", "assignee", None, "Bo", who=None),
        change("2026-01-20T09:00:00.000+0000", "status", "In Progress", "Done"),
        change("2026-01-20T09:00:00.000+0000", "resolution", None, "Fixed"),
        change("2026-01-21T09:00:00.000+0000", "labels", "", "hotfix"),
    ]
}


def test_digest_keeps_transitions_assignments_resolutions_in_order():
    digest = parsers.history_digest(CHANGELOG)
    assert digest is not None
    assert digest.split("\n") == [
        "2026-01-04: Assignee none → Bo by a former user",
        "2026-01-05: Status To Do → In Progress by Ana",
        "2026-01-20: Status In Progress → Done by Ana",
        "2026-01-20: Resolution none → Fixed by Ana",
        "2026-02-03: Status Done → In Progress (reopened) by Ana",
    ]
    assert "labels" not in digest.lower()
    fields = {"statuscategorychangedate": "2025-12-01T00:00:00.000+0000"}
    assert parsers.status_changed_at(fields, CHANGELOG) == datetime(2026, 2, 3, 9, tzinfo=UTC)
    assert parsers.status_changed_at(fields, None) == datetime(2025, 12, 1, tzinfo=UTC)


def test_digest_of_garbage_is_none_and_long_histories_are_capped():
    for bad in (None, [], {"histories": "x"}, {"histories": [1, {"created": "nope"}, {"items": None}]}):
        assert parsers.history_digest(bad) is None
    many = {
        "histories": [
            change(f"2026-01-01T{h:02d}:{m:02d}:00.000+0000", "status", "A", "B") for h in range(3) for m in range(30)
        ]
    }
    lines = parsers.history_digest(many).split("\n")
    assert len(lines) == parsers.MAX_HISTORY_LINES + 1 and lines[0] == "(40 earlier changes)"


def test_issue_row_text_and_payload_carry_history_links_and_attachments():
    record = {
        "id": "1",
        "key": "PAY-1",
        "changelog": CHANGELOG,
        "fields": {
            "summary": "Payments double charged",
            "updated": "2026-02-03T09:00:00.000+0000",
            "resolutiondate": "2026-01-20T09:00:00.000+0000",
            "parent": {"key": "PAY-9", "fields": {"issuetype": {"hierarchyLevel": 1}}},
            "subtasks": [{"key": "PAY-2"}, {"nokey": True}],
            "issuelinks": [
                {
                    "type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
                    "outwardIssue": {"key": "PAY-3"},
                },
                {
                    "type": {"name": "Duplicate", "inward": "is duplicated by", "outward": "duplicates"},
                    "inwardIssue": {"key": "PAY-4"},
                },
                {"type": {}, "inwardIssue": {}},
                "junk",
            ],
            "attachment": [{"filename": "trace.har", "mimeType": "application/json"}, {"id": "no name"}],
            "comment": {"comments": [], "total": 0},
        },
    }
    row = ISSUES.parse(record)
    assert row["links"] == [
        {"relation": "epic", "key": "PAY-9"},
        {"relation": "sub-task", "key": "PAY-2"},
        {"relation": "blocks", "key": "PAY-3"},
        {"relation": "is duplicated by", "key": "PAY-4"},
    ]
    text = ISSUES.text(row)
    for line in ("Epic: PAY-9", "Sub-task: PAY-2", "Blocks: PAY-3", "Is duplicated by: PAY-4"):
        assert line in text.split("\n")
    assert "Attachments: trace.har (application/json)" in text
    assert "History:\n2026-01-04: Assignee none → Bo" in text and "(reopened)" in text
    payload = ISSUES.payload(row)
    assert payload["parent_key"] == "PAY-9" and payload["subtask_keys"] == ["PAY-2"]
    assert payload["linked_keys"] == ["PAY-3", "PAY-4"]
    assert payload["resolved_at"] == "2026-01-20T09:00:00+00:00"
    assert payload["status_changed_at"] == "2026-02-03T09:00:00+00:00"


def test_comment_outcomes_for_bad_input():
    # A deleted author: no account, no name — the comment stays, attributed to a former user.
    row = parsers.parse_comment({"id": "5", "author": {"active": False}, "created": "2026-01-01T00:00:00.000+0000"})
    assert row["author"] == parsers.DELETED_AUTHOR and row["author_account_id"] is None
    # A 2 MB comment: kept, cut at MAX_TEXT with a note saying so.
    huge = {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "x" * 2_000_000}]}]}
    row = parsers.parse_comment({"id": "6", "body": huge})
    assert row["body"].startswith("x" * 1000) and "the text was 2000000 characters long" in row["body"]
    assert len(row["body"]) <= parsers.MAX_TEXT
    # Visibility: the restriction is spelled out.
    row = parsers.parse_comment({"id": "7", "visibility": {"type": "group", "value": "jira-admins"}})
    assert row["visibility"] == "group:jira-admins"


def test_expanded_changelog_costs_no_extra_request_and_capped_comments_are_paged():
    """Requests per 100 issues: the search pages, plus one comment page per 100 comments past
    the embedded ones (and one field listing per sync). The changelog rides along in the search
    response."""
    site = generate_sample_site(n_projects=6, n_issues=100)
    add_comments(site, site.issues[0]["key"], [f"c{n}" for n in range(250)], bump=False)
    tenant = Tenant("acme", "Acme", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T")})
    with httpx.Client(base_url=site.base_url, transport=sample_transport(site)) as http:
        client = JiraClient(http, "acme", site.base_url)
        pages = list(ISSUES.fetch(client, FetchRequest(tenant, page_size=100)))
    kinds = [p.path for p in pages]
    assert kinds.count("/rest/api/3/search/jql") == 1
    comment_pages = [p for p in pages if p.path.endswith("/comment")]
    issue0 = site.issues[0]
    total = len(issue0["fields"]["comment"]["comments"])
    counts = [len(i["fields"]["comment"]["comments"]) for i in site.issues]
    assert sorted(n for n in counts if n > 20) == [120, total]  # the sample's long thread, and ours
    assert len(comment_pages) == sum(-(-(n - 20) // 100) for n in counts if n > 20) == 1 + 3
    # The site's field listing comes first (once per sync: which fields are user/group pickers).
    assert kinds[0] == "/rest/api/3/field" and kinds.count("/rest/api/3/field") == 1
    issues = json.loads(next(p for p in pages if p.path == "/rest/api/3/search/jql").body)["issues"]
    assert all("changelog" in i for i in issues)
    found = COMMENTS_OF_ISSUES.extract(
        next(i for i in issues if i["id"] == issue0["id"]),
        [
            c
            for p in comment_pages
            if p.path == f"/rest/api/3/issue/{issue0['id']}/comment"
            for c in p.json()["comments"]
        ],
    )
    assert found.complete and len({c["id"] for c in found.records}) == total


def long_changelog_issue(site):
    """The sample issue whose changelog is longer than the search embeds."""
    return next(i for i in site.issues if i["changelog"]["total"] > EMBEDDED_HISTORIES)


def test_long_changelog_is_paged_and_its_digest_covers_the_late_transitions():
    site = generate_sample_site(n_projects=6, n_issues=100)
    issue = long_changelog_issue(site)
    total = issue["changelog"]["total"]
    tenant = Tenant("acme", "Acme", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T")})
    with httpx.Client(base_url=site.base_url, transport=sample_transport(site)) as http:
        client = JiraClient(http, "acme", site.base_url)
        pages = list(ISSUES.fetch(client, FetchRequest(tenant, page_size=100)))
    paged = [p for p in pages if p.path.endswith("/changelog")]
    # Only the long changelog is paged, once (28 histories fit a page of 100), by issue id.
    assert [p.path for p in paged] == [f"/rest/api/3/issue/{issue['id']}/changelog"]
    assert paged[0].params == {"startAt": 0, "maxResults": 100}
    search = next(p for p in pages if p.path == "/rest/api/3/search/jql")
    record = next(i for i in json.loads(search.body)["issues"] if i["id"] == issue["id"])
    assert len(record["changelog"]["histories"]) == EMBEDDED_HISTORIES < total == record["changelog"]["total"]

    part = ISSUES.parts[0]
    found = part.page(paged[0].path, paged[0].json())
    assert found is not None and found[0] == issue["id"]
    whole, note = part.merge(record, found[1])
    assert note is None and len(whole["changelog"]["histories"]) == total
    digest = ISSUES.parse(whole)["history"]
    truncated = ISSUES.parse(record)["history"]
    # The late transitions (the status path to Done and the resolution) come only from paging.
    resolution = issue["fields"]["resolution"]["name"]
    for late in (f"→ {issue['fields']['status']['name']} by", f"Resolution none → {resolution}"):
        assert late in digest and late not in truncated, (late, truncated)
    assert digest.count("Assignee") == truncated.count("Assignee") + 1 + LONG_CHANGELOG_CHURN - EMBEDDED_HISTORIES

    # A page failing before everything arrived: what arrived is kept, the issue says why.
    partial, note = part.merge(record, [])
    assert partial["changelog"]["histories"] == record["changelog"]["histories"]
    assert note == f"{EMBEDDED_HISTORIES} of {total} changelog entries arrived"
    # An issue whose changelog is whole is left as it is.
    short = next(i for i in json.loads(search.body)["issues"] if i["id"] != issue["id"])
    assert part.merge(short, []) == (short, None)
    # Paged histories for a record without a changelog of its own: merged, never an exception.
    bare = {k: v for k, v in record.items() if k != "changelog"}
    merged, note = part.merge(bare, found[1])
    assert note is None and len(merged["changelog"]["histories"]) == total


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_changelog_page_404_keeps_the_issue_marked_and_the_next_run_converges(env):
    site = env.tenants["1"].site
    server = env.tenants["1"].server
    issue = next(i for i in site.issues if i["fields"].get("resolution") and len(i["changelog"]["histories"]) >= 3)
    lengthen_changelog(site, issue)
    path = f"/rest/api/3/issue/{issue['id']}/changelog"
    original = server.handler
    calls = {"n": 0}

    def gone(req):
        if req.path == path:
            calls["n"] += 1
            return Response.json({"errorMessages": ["Issue does not exist or you do not have permission"]}, status=404)
        return original(req)

    server.handler = gone
    try:
        result = env.materialize("1")
    finally:
        server.handler = original
    assert result.success, "one issue's changelog page must not sink the others"
    assert calls["n"] == 1, "a 404 is not retried"
    rows = {r["key"]: r for r in table_rows(env, ISSUES, "1")}
    assert len(rows) == len(site.issues), "the issue is kept, and every other issue"
    row = rows[issue["key"]]
    assert (
        row["history_incomplete"] == f"{EMBEDDED_HISTORIES} of {issue['changelog']['total']} changelog entries arrived"
    )
    assert "Resolution none →" not in (row["history"] or "")
    assert all(r["history_incomplete"] is None for k, r in rows.items() if k != issue["key"])
    table_meta = result.asset_materializations_for_node("tables__issues_table")[0].metadata
    assert table_meta["issues_with_history_incomplete"].value == 1

    # Next run (incremental): the watermark was held below that issue, so it is fetched again.
    result = env.materialize("1")
    assert result.success
    row = next(r for r in table_rows(env, ISSUES, "1") if r["key"] == issue["key"])
    assert row["history_incomplete"] is None
    assert f"Resolution none → {issue['fields']['resolution']['name']}" in row["history"]
