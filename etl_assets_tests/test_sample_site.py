"""The generated sample Jira site and its in-process REST v3 handler.

Everything goes through a real ``httpx.Client`` on :func:`sample_transport`, the way the
sync's client reads a site. The shape checks at the end compare our objects with the
Jira Cloud v3 spec (schemas and examples) and real captures in the shared corpus; they
skip when the corpus is absent.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import etl_assets
from etl_assets.core.sources.jira import sample
from etl_assets.core.sources.jira.parsers import parse_jira_datetime
from etl_assets.core.sources.jira.sample import (
    JiraSite,
    JiraSiteHandler,
    format_jira_timestamp,
    generate_sample_site,
    labelled_queries,
    sample_transport,
)
from etl_assets_tests.corpus import load_corpus_json

SEARCH = "/rest/api/3/search/jql"
PROJECT_SEARCH = "/rest/api/3/project/search"
ALL_ISSUES = "created IS NOT EMPTY ORDER BY key ASC"


@pytest.fixture(scope="module")
def site() -> JiraSite:
    return generate_sample_site()


@pytest.fixture
def fresh_site() -> JiraSite:
    return generate_sample_site()


def _client(site: JiraSite, **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=sample_transport(site, **kwargs), base_url=site.base_url)


@pytest.fixture
def client(site: JiraSite) -> httpx.Client:
    with _client(site) as c:
        yield c


def search_all(
    client: httpx.Client, jql: str, *, fields: Any = ("id",), page_size: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow nextPageToken to the end; returns (issues, pages)."""
    body: dict[str, Any] = {"jql": jql, "fields": list(fields) if not isinstance(fields, str) else fields}
    if page_size is not None:
        body["maxResults"] = page_size
    issues: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    for _ in range(1000):
        response = client.post(SEARCH, json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        issues += page["issues"]
        if page["isLast"]:
            return issues, pages
        body["nextPageToken"] = page["nextPageToken"]
    raise AssertionError("search/jql paging did not end")


def adf_text(node: Any) -> str:
    parts: list[str] = []

    def walk(n: Any) -> None:
        if isinstance(n, dict):
            if n.get("type") == "text":
                parts.append(n["text"])
            for child in n.get("content") or []:
                walk(child)

    walk(node)
    return " ".join(parts)


def minute_floor(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


# --------------------------------------------------------------------------------------
# /project/search
# --------------------------------------------------------------------------------------


def test_project_search_pages_through_every_project(site: JiraSite, client: httpx.Client) -> None:
    keys: list[str] = []
    pages = []
    response = client.get(PROJECT_SEARCH, params={"maxResults": 10})
    while True:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        page = response.json()
        pages.append(page)
        assert page["total"] == 36
        assert page["maxResults"] == 10
        assert page["startAt"] == 10 * (len(pages) - 1)
        assert page["self"].startswith(f"{site.base_url}{PROJECT_SEARCH}?startAt={page['startAt']}&maxResults=10")
        keys += [p["key"] for p in page["values"]]
        if page["isLast"]:
            assert "nextPage" not in page
            break
        assert page["nextPage"].startswith(site.base_url)
        response = client.get(page["nextPage"].removeprefix(site.base_url))
    assert len(pages) == 4
    assert [len(p["values"]) for p in pages] == [10, 10, 10, 6]
    assert [p["isLast"] for p in pages] == [False, False, False, True]
    assert len(keys) == len(set(keys)) == 36
    assert keys == sorted(keys)  # orderBy defaults to key
    assert set(keys) == {p["key"] for p in site.projects}


def test_project_search_default_page_size_and_cap(site: JiraSite, client: httpx.Client) -> None:
    page = client.get(PROJECT_SEARCH).json()
    assert (page["maxResults"], page["startAt"], page["total"], page["isLast"]) == (50, 0, 36, True)
    assert "nextPage" not in page and len(page["values"]) == 36
    assert client.get(PROJECT_SEARCH, params={"maxResults": 500}).json()["maxResults"] == 100
    with _client(site, page_size_cap=8) as small:
        capped = small.get(PROJECT_SEARCH, params={"maxResults": 50}).json()
    assert capped["maxResults"] == 8 and len(capped["values"]) == 8 and capped["isLast"] is False
    past_end = client.get(PROJECT_SEARCH, params={"startAt": 40}).json()
    assert past_end["values"] == [] and past_end["isLast"] is True
    by_name = client.get(PROJECT_SEARCH, params={"orderBy": "-name"}).json()["values"]
    names = [p["name"].strip().lower() for p in by_name]
    assert names == sorted(names, reverse=True)
    assert client.get(PROJECT_SEARCH, params={"maxResults": "x"}).status_code == 400


def test_project_search_expand(client: httpx.Client) -> None:
    plain = client.get(PROJECT_SEARCH).json()["values"]
    for project in plain:
        assert not {"description", "lead", "issueTypes", "url", "insight"} & set(project)
    expanded = client.get(PROJECT_SEARCH, params={"expand": "description,lead,issueTypes"}).json()["values"]
    for project in expanded:
        assert isinstance(project["description"], str)
        assert {"accountId", "displayName", "active"} <= set(project["lead"])
        assert project["issueTypes"], project["key"]
        assert "url" not in project and "insight" not in project
    with_url = client.get(PROJECT_SEARCH, params={"expand": "url,insight"}).json()["values"]
    assert 1 <= sum("url" in p for p in with_url) < len(with_url)
    insight = {p["key"]: p["insight"] for p in with_url}
    assert sum(i["totalIssueCount"] for i in insight.values()) == 300
    assert any(i["totalIssueCount"] == 0 and "lastIssueUpdateTime" not in i for i in insight.values())


def test_projects_are_realistic(site: JiraSite) -> None:
    projects = site.projects
    assert len(projects) == 36
    keys = [p["key"] for p in projects]
    assert len(set(keys)) == 36
    assert all(re.fullmatch(r"[A-Z][A-Z0-9]{1,9}", k) for k in keys)
    assert all(p["id"].isdigit() and int(p["id"]) >= 10000 for p in projects)
    assert len({p["id"] for p in projects}) == 36
    names = " ".join(p["name"] for p in projects)
    for needle in ("Zahlungsverkehr – Übersicht", "日本語サポート", "Café Opérations", "Поддержка", "🚀"):
        assert needle in names
    assert {p["projectTypeKey"] for p in projects} == {"software", "business", "service_desk"}
    assert {p["style"] for p in projects} == {"classic", "next-gen"}
    assert all(p["simplified"] == (p["style"] == "next-gen") for p in projects)
    with_category = [p for p in projects if "projectCategory" in p]
    assert 0 < len(with_category) < len(projects)
    assert all({"id", "name", "description", "self"} <= set(p["projectCategory"]) for p in with_category)
    assert any(p["description"] == "" for p in projects) and any(p["description"] for p in projects)
    assert all(set(p["avatarUrls"]) == {"16x16", "24x24", "32x32", "48x48"} for p in projects)
    assert all(p["self"] == f"{site.base_url}/rest/api/3/project/{p['id']}" for p in projects)


# --------------------------------------------------------------------------------------
# /issuetype and /status
# --------------------------------------------------------------------------------------


def test_issue_types_include_global_and_team_managed(site: JiraSite, client: httpx.Client) -> None:
    types = client.get("/rest/api/3/issuetype").json()
    assert types == site.issue_types
    assert len({t["id"] for t in types}) == len(types)
    global_types = {t["name"]: t for t in types if "scope" not in t}
    assert global_types["Epic"]["hierarchyLevel"] == 1
    assert global_types["Sub-task"]["hierarchyLevel"] == -1 and global_types["Sub-task"]["subtask"] is True
    for name in ("Story", "Task", "Bug"):
        assert global_types[name]["hierarchyLevel"] == 0 and global_types[name]["subtask"] is False
    team_pids = {p["id"] for p in site.projects if p["style"] == "next-gen"}
    scoped = [t for t in types if "scope" in t]
    assert scoped
    assert {t["scope"]["project"]["id"] for t in scoped} == team_pids
    assert all(t["scope"]["type"] == "PROJECT" and t.get("entityId") for t in scoped)
    assert any("untranslatedName" in t for t in types) and any("untranslatedName" not in t for t in types)
    for t in types:
        assert {"id", "name", "description", "iconUrl", "self", "avatarId", "hierarchyLevel", "subtask"} <= set(t)
    ids = {t["id"] for t in types}
    for project in site.projects:
        assert {t["id"] for t in project["issueTypes"]} <= ids
        if project["style"] == "next-gen":
            assert all(t["scope"]["project"]["id"] == project["id"] for t in project["issueTypes"])


def test_statuses_cover_three_categories(site: JiraSite, client: httpx.Client) -> None:
    statuses = client.get("/rest/api/3/status").json()
    assert statuses == site.statuses
    categories = {
        (
            s["statusCategory"]["key"],
            s["statusCategory"]["id"],
            s["statusCategory"]["colorName"],
            s["statusCategory"]["name"],
        )
        for s in statuses
    }
    assert categories == {
        ("new", 2, "blue-gray", "To Do"),
        ("indeterminate", 4, "yellow", "In Progress"),
        ("done", 3, "green", "Done"),
    }
    names = {s["name"] for s in statuses}
    expected = {"To Do", "Backlog", "Selected for Development", "In Progress", "In Review", "Blocked", "Done"}
    assert expected | {"Won't Do", "Erledigt", "完了"} <= names
    team_pids = {p["id"] for p in site.projects if p["style"] == "next-gen"}
    scoped = [s for s in statuses if "scope" in s]
    assert {s["scope"]["project"]["id"] for s in scoped} == team_pids
    assert any("untranslatedName" in s for s in statuses) and any("untranslatedName" not in s for s in statuses)
    for s in statuses:
        assert {"id", "name", "description", "iconUrl", "self", "statusCategory"} <= set(s)
        assert set(s["statusCategory"]) == {"id", "key", "colorName", "name", "self"}


# --------------------------------------------------------------------------------------
# /search/jql
# --------------------------------------------------------------------------------------


def test_search_pages_return_every_issue_exactly_once(site: JiraSite, client: httpx.Client) -> None:
    issues, pages = search_all(client, ALL_ISSUES, page_size=37)
    assert len(pages) == 9
    assert [p["isLast"] for p in pages] == [False] * 8 + [True]
    assert all("nextPageToken" in p for p in pages[:-1]) and "nextPageToken" not in pages[-1]
    assert len({p["nextPageToken"] for p in pages[:-1]}) == 8
    ids = [i["id"] for i in issues]
    assert len(ids) == len(set(ids)) == 300
    assert set(ids) == {i["id"] for i in site.issues}
    by_key = [(i["key"].rsplit("-", 1)[0], int(i["key"].rsplit("-", 1)[1])) for i in issues]
    assert by_key == sorted(by_key)
    # A different page size over full fields gives the same set, 100 at most per page.
    full, full_pages = search_all(client, "created IS NOT EMPTY ORDER BY updated ASC", fields=["*all"], page_size=7)
    assert len(full_pages) == 43 and len(full) == 300
    stamps = [parse_jira_datetime(i["fields"]["updated"]) for i in full]
    assert stamps == sorted(stamps)


def test_search_default_and_capped_page_sizes(client: httpx.Client) -> None:
    default = client.post(SEARCH, json={"jql": ALL_ISSUES}).json()
    assert len(default["issues"]) == 50 and default["isLast"] is False
    assert default["issues"][0]["fields"] == {}  # fields defaults to id
    ids_only = client.post(SEARCH, json={"jql": ALL_ISSUES, "fields": ["id"], "maxResults": 5000}).json()
    assert len(ids_only["issues"]) == 300 and ids_only["isLast"] is True and "nextPageToken" not in ids_only
    heavy = client.post(SEARCH, json={"jql": ALL_ISSUES, "fields": ["summary"], "maxResults": 1000}).json()
    assert len(heavy["issues"]) == 100 and heavy["isLast"] is False
    assert client.post(SEARCH, json={"jql": ALL_ISSUES, "maxResults": 0}).status_code == 400


def test_search_fields_filtering(site: JiraSite, client: httpx.Client) -> None:
    page = client.post(SEARCH, json={"jql": ALL_ISSUES, "fields": ["id"], "maxResults": 3}).json()
    for issue in page["issues"]:
        assert issue["fields"] == {}
        assert issue["self"] == f"{site.base_url}/rest/api/3/issue/{issue['id']}"
        assert re.fullmatch(r"[A-Z][A-Z0-9]+-\d+", issue["key"])
    page = client.post(SEARCH, json={"jql": ALL_ISSUES, "fields": ["summary", "status"], "maxResults": 3}).json()
    assert all(set(i["fields"]) == {"summary", "status"} for i in page["issues"])
    page = client.post(SEARCH, json={"jql": ALL_ISSUES, "fields": "*all", "maxResults": 3}).json()
    stored = {i["key"]: i for i in site.issues}
    assert all(i["fields"] == stored[i["key"]]["fields"] for i in page["issues"])
    page = client.post(SEARCH, json={"jql": ALL_ISSUES, "fields": ["*all", "-description"], "maxResults": 3}).json()
    assert all("description" not in i["fields"] and "summary" in i["fields"] for i in page["issues"])
    got = client.get(SEARCH, params={"jql": ALL_ISSUES, "fields": "summary,labels", "maxResults": 4}).json()
    assert len(got["issues"]) == 4 and all(set(i["fields"]) == {"summary", "labels"} for i in got["issues"])
    again = client.get(SEARCH, params={"jql": ALL_ISSUES, "nextPageToken": got["nextPageToken"], "maxResults": 4})
    assert {i["key"] for i in again.json()["issues"]}.isdisjoint({i["key"] for i in got["issues"]})


def test_jql_updated_filter_at_minute_granularity(site: JiraSite, client: httpx.Client) -> None:
    stamps = sorted(parse_jira_datetime(i["fields"]["updated"]) for i in site.issues)
    cutoff = minute_floor(stamps[len(stamps) // 2])
    expected = {i["key"] for i in site.issues if parse_jira_datetime(i["fields"]["updated"]) >= cutoff}
    assert 100 < len(expected) < 200
    jql = f'updated >= "{cutoff:%Y-%m-%d %H:%M}" ORDER BY updated ASC'
    issues, _ = search_all(client, jql, fields=["updated"], page_size=25)
    assert {i["key"] for i in issues} == expected
    got = [parse_jira_datetime(i["fields"]["updated"]) for i in issues]
    assert got == sorted(got) and got[0] >= cutoff
    slash, _ = search_all(client, f'updated >= "{cutoff:%Y/%m/%d %H:%M}"')
    assert {i["key"] for i in slash} == expected
    day = cutoff.replace(hour=0, minute=0)
    before, _ = search_all(client, f"updated < {day:%Y-%m-%d}")
    assert {i["key"] for i in before} == {
        i["key"] for i in site.issues if parse_jira_datetime(i["fields"]["updated"]) < day
    }


def test_jql_project_filters(site: JiraSite, client: httpx.Client) -> None:
    pay, zv = site.project("PAY"), site.project("ZV")
    wanted = {pay["id"], zv["id"]}
    expected = {i["key"] for i in site.issues if i["fields"]["project"]["id"] in wanted}
    assert expected
    issues, _ = search_all(client, 'project in (PAY, "zv") ORDER BY updated DESC, key ASC', fields=["project"])
    assert {i["key"] for i in issues} == expected
    assert all(i["fields"]["project"]["key"] in ("PAY", "ZV") for i in issues)
    single, _ = search_all(client, f"project = {pay['id']}")
    assert {i["key"] for i in single} == {k for k in expected if k.startswith("PAY-")}
    by_name, _ = search_all(client, 'project = "Zahlungsverkehr – Übersicht"')
    assert {i["key"] for i in by_name} == {k for k in expected if k.startswith("ZV-")}
    cutoff = minute_floor(max(parse_jira_datetime(i["fields"]["updated"]) for i in site.issues) - timedelta(days=40))
    both, _ = search_all(client, f'(project in (PAY, ZV)) AND updated >= "{cutoff:%Y-%m-%d %H:%M}"', fields=["updated"])
    assert {i["key"] for i in both} == {
        i["key"] for i in site.issues if i["key"] in expected and parse_jira_datetime(i["fields"]["updated"]) >= cutoff
    }
    excluded, _ = search_all(client, "project not in (PAY, ZV)")
    assert len(excluded) == 300 - len(expected)


@pytest.mark.parametrize(
    ("jql", "needle"),
    [
        ("project in (PAY", "Expecting ')' before the end of the query"),
        ("project = PAY AND", "Expecting a field name before the end of the query"),
        ("project PAY", "Expecting operator but got 'PAY'"),
        ('summary = "unterminated', "has not been completed"),
        ("project = AND", "You must surround 'AND' in quotation marks"),
        ("nosuchfield = 1", "Field 'nosuchfield' does not exist"),
        ("assignee = someone", "Searching by field 'assignee' is not supported"),
        ("project = NOPE", "The value 'NOPE' does not exist for the field 'project'"),
        ('updated >= "yesterday-ish"', "Date value 'yesterday-ish' for field 'updated' is invalid"),
        ("project = PAY ORDER BY summary", "Not able to sort using field 'summary'"),
        ("project > PAY", "The operator '>' is not supported by the 'project' field"),
        ("ORDER BY updated ASC", "Unbounded JQL queries are not allowed here"),
        ("", "Unbounded JQL queries are not allowed here"),
        ("key = PAY-99999", "An issue with key 'PAY-99999' does not exist"),
        ("project = PAY PAY", "Expecting either 'OR' or 'AND' but got 'PAY'"),
    ],
)
def test_bad_jql_is_a_400_naming_the_problem(client: httpx.Client, jql: str, needle: str) -> None:
    for response in (
        client.post(SEARCH, json={"jql": jql, "fields": ["id"]}),
        client.get(SEARCH, params={"jql": jql}),
    ):
        assert response.status_code == 400
        body = response.json()
        assert body["errors"] == {}
        assert len(body["errorMessages"]) == 1 and needle in body["errorMessages"][0], body


def test_search_rejects_bad_bodies_and_foreign_tokens(client: httpx.Client) -> None:
    bad_json = client.post(SEARCH, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "Invalid request payload" in bad_json.json()["errorMessages"][0]
    unknown = client.post(SEARCH, json={"jql": ALL_ISSUES, "startAt": 50})
    assert unknown.status_code == 400
    first = client.post(SEARCH, json={"jql": ALL_ISSUES, "maxResults": 10}).json()
    foreign = client.post(SEARCH, json={"jql": "project = PAY", "nextPageToken": first["nextPageToken"]})
    assert foreign.status_code == 400 and "token" in foreign.json()["errorMessages"][0]
    garbage = client.post(SEARCH, json={"jql": ALL_ISSUES, "nextPageToken": "!!nope"})
    assert garbage.status_code == 400


def test_more_jql(site: JiraSite, client: httpx.Client) -> None:
    done, _ = search_all(client, "statusCategory = done", fields=["status", "resolution"])
    assert done and all(i["fields"]["status"]["statusCategory"]["key"] == "done" for i in done)
    assert all(i["fields"]["resolution"] is not None for i in done)
    bugs, _ = search_all(client, "issuetype = Bug AND NOT project = PAY", fields=["issuetype", "project"])
    assert bugs and all(i["fields"]["issuetype"]["name"] == "Bug" for i in bugs)
    assert all(i["fields"]["project"]["key"] != "PAY" for i in bugs)
    unassigned, _ = search_all(client, "assignee IS EMPTY OR key = PAY-1", fields=["assignee"])
    assert sum(i["fields"]["assignee"] is None for i in unassigned) == sum(
        i["fields"]["assignee"] is None for i in site.issues
    )
    keys, _ = search_all(client, "key in (PAY-1, pay-2) OR id = " + site.issues[0]["id"])
    assert {i["key"] for i in keys} == {"PAY-1", "PAY-2", site.issues[0]["key"]}
    count = client.post("/rest/api/3/search/approximate-count", json={"jql": "project = PAY"}).json()
    assert count == {"count": sum(1 for i in site.issues if i["key"].startswith("PAY-"))}


def test_approximate_count_counts_the_live_issues_the_jql_matches(fresh_site: JiraSite) -> None:
    count_path = "/rest/api/3/search/approximate-count"
    with _client(fresh_site) as c:

        def count(jql: str) -> int:
            return c.post(count_path, json={"jql": jql}).json()["count"]

        pay = [i for i in fresh_site.issues if i["key"].startswith("PAY-")]
        assert count("project = PAY") == len(pay) and count("created IS NOT EMPTY") == len(fresh_site.issues)
        gone = fresh_site.delete_issue(pay[0]["key"])
        assert count("project = PAY") == len(pay) - len(gone)
        assert count("created IS NOT EMPTY ORDER BY key ASC") == len(fresh_site.issues)
        refused = c.post(count_path, json={"jql": "project = PAY", "maxResults": 1})  # JQLCountRequestBean: jql only
        assert refused.status_code == 400
        assert c.post(count_path, json={"jql": ""}).status_code == 400  # unbounded, as on Jira Cloud


def test_relative_dates_use_the_handler_clock(site: JiraSite) -> None:
    latest = max(parse_jira_datetime(i["fields"]["updated"]) for i in site.issues)
    handler = JiraSiteHandler(site, clock=lambda: latest + timedelta(minutes=3))
    status, headers, body = handler.handle("POST", SEARCH, {}, json.dumps({"jql": "updated >= -5m"}).encode())
    assert status == 200 and headers["content-type"].startswith("application/json")
    keys = {i["key"] for i in json.loads(body)["issues"]}
    assert keys == {
        i["key"]
        for i in site.issues
        if parse_jira_datetime(i["fields"]["updated"]) >= minute_floor(latest - timedelta(minutes=2))
    }
    assert keys


def test_old_search_endpoint_is_gone(client: httpx.Client) -> None:
    for response in (
        client.get("/rest/api/3/search", params={"jql": "project = PAY"}),
        client.post("/rest/api/3/search", json={"jql": "project = PAY"}),
        client.get("/rest/api/2/search"),
    ):
        assert response.status_code == 410
        message = response.json()["errorMessages"][0]
        assert "/rest/api/3/search/jql" in message and "CHANGE-2046" in message


def test_unknown_paths_are_404_and_every_request_is_logged(fresh_site: JiraSite) -> None:
    with _client(fresh_site) as c:
        missing = c.get("/rest/api/3/nothing/here")
        assert missing.status_code == 404 and missing.json()["errorMessages"]
        assert c.get("/rest/api/3/issue/NOPE-1").status_code == 404
        assert c.delete("/rest/api/3/issuetype").status_code == 405
        c.get(PROJECT_SEARCH, params={"maxResults": 5})
        c.post(SEARCH, json={"jql": ALL_ISSUES})
    assert fresh_site.requests == [
        ("GET", "/rest/api/3/nothing/here"),
        ("GET", "/rest/api/3/issue/NOPE-1"),
        ("DELETE", "/rest/api/3/issuetype"),
        ("GET", PROJECT_SEARCH),
        ("POST", SEARCH),
    ]


def test_single_issue_and_project(site: JiraSite, client: httpx.Client) -> None:
    issue = site.issues[10]
    got = client.get(f"/rest/api/3/issue/{issue['key']}").json()
    assert got["fields"] == issue["fields"]
    narrow = client.get(f"/rest/api/3/issue/{issue['id']}", params={"fields": "summary"}).json()
    assert narrow["fields"] == {"summary": issue["fields"]["summary"]}
    project = client.get("/rest/api/3/project/PAY").json()
    assert project["key"] == "PAY" and "lead" in project and "issueTypes" in project
    assert client.get("/rest/api/3/project/NOPE").status_code == 404


# --------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------


def test_generation_is_deterministic(site: JiraSite) -> None:
    again = generate_sample_site()
    assert json.dumps(again.issues) == json.dumps(site.issues)
    assert again.projects == site.projects and again.statuses == site.statuses
    assert again.issue_types == site.issue_types and again.topics == site.topics
    other = generate_sample_site(seed=8)
    assert [i["fields"]["summary"] for i in other.issues] != [i["fields"]["summary"] for i in site.issues]
    assert other.topics != site.topics
    shifted = generate_sample_site(id_offset=5000)
    assert {p["id"] for p in shifted.projects}.isdisjoint({p["id"] for p in site.projects})
    assert {i["id"] for i in shifted.issues}.isdisjoint({i["id"] for i in site.issues})
    assert min(int(i["id"]) for i in shifted.issues) == 15000
    assert min(int(i["id"]) for i in site.issues) == 10000


def test_issues_reference_what_exists(site: JiraSite) -> None:
    projects = {p["id"]: p for p in site.projects}
    types = {t["id"]: t for t in site.issue_types}
    statuses = {s["id"]: s for s in site.statuses}
    issues = {i["id"]: i for i in site.issues}
    assert len(site.issues) == 300 and len({i["key"] for i in site.issues}) == 300
    for issue in site.issues:
        f = issue["fields"]
        project = projects[f["project"]["id"]]
        assert issue["key"].startswith(project["key"] + "-")
        assert f["project"]["key"] == project["key"] and f["project"]["name"] == project["name"]
        assert issue["self"] == f"{site.base_url}/rest/api/3/issue/{issue['id']}"
        itype, status = types[f["issuetype"]["id"]], statuses[f["status"]["id"]]
        assert f["issuetype"]["id"] in {t["id"] for t in project["issueTypes"]}
        assert f["issuetype"]["hierarchyLevel"] == itype["hierarchyLevel"]
        if project["style"] == "next-gen":
            assert status["scope"]["project"]["id"] == project["id"]
        else:
            assert "scope" not in status and "scope" not in itype
        assert f["status"]["statusCategory"]["key"] == status["statusCategory"]["key"]
        assert parse_jira_datetime(f["updated"]) >= parse_jira_datetime(f["created"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", f["created"])
        assert (f["resolution"] is not None) == (f["status"]["statusCategory"]["key"] == "done")
        assert f["priority"]["name"] in ("Highest", "High", "Medium", "Low", "Lowest")
        assert f["reporter"]["accountId"] and isinstance(f["labels"], list)
        assert all({"id", "name"} <= set(c) for c in f["components"])
        if f["description"] is not None:
            assert f["description"]["type"] == "doc" and f["description"]["version"] == 1
            assert f["description"]["content"]
        if itype["hierarchyLevel"] == -1:
            parent = issues[f["parent"]["id"]]
            assert f["parent"]["key"] == parent["key"]
            assert parent["fields"]["project"]["id"] == project["id"]
            assert issue["key"] in {s["key"] for s in parent["fields"]["subtasks"]}
    created = [parse_jira_datetime(i["fields"]["created"]) for i in site.issues]
    assert max(created) - min(created) > timedelta(days=150)
    assert any(i["fields"]["assignee"] is None for i in site.issues)
    assert any(i["fields"].get("parent") and i["fields"]["issuetype"]["hierarchyLevel"] == 0 for i in site.issues)


def test_descriptions_use_rich_adf_and_several_languages(site: JiraSite) -> None:
    node_types: Counter[str] = Counter()

    def walk(n: Any) -> None:
        if isinstance(n, dict):
            node_types[n.get("type", "")] += 1
            for mark in n.get("marks") or []:
                node_types["mark:" + mark["type"]] += 1
            for child in n.get("content") or []:
                walk(child)

    for issue in site.issues:
        walk(issue["fields"]["description"])
    for kind in (
        "paragraph",
        "heading",
        "bulletList",
        "orderedList",
        "codeBlock",
        "table",
        "mention",
        "emoji",
        "inlineCard",
        "mark:link",
        "status",
        "date",
    ):
        assert node_types[kind] > 0, kind
    langs = Counter(site.languages.values())
    assert set(langs) == {"en", "de", "fr", "es", "ja"}
    assert langs["en"] > 200 and all(langs[x] >= 3 for x in ("de", "fr", "es", "ja"))
    ja = [i for i in site.issues if site.languages[i["key"]] == "ja"]
    assert all(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", i["fields"]["summary"]) for i in ja)


def test_long_issues_exist(site: JiraSite) -> None:
    assert len(site.long_issue_keys) >= 5
    for key in site.long_issue_keys:
        words = len(adf_text(site.issue(key)["fields"]["description"]).split())
        assert 3000 <= words <= 6000, (key, words)
    others = [
        len(adf_text(i["fields"]["description"]).split()) for i in site.issues if i["key"] not in site.long_issue_keys
    ]
    assert max(others) < 1000


def test_labelled_queries_reference_existing_keys(site: JiraSite) -> None:
    queries = labelled_queries(site)
    assert 15 <= len(queries) <= 25
    keys = {i["key"] for i in site.issues}
    texts = [q for q, _ in queries]
    assert len(set(texts)) == len(texts)
    summaries = {i["fields"]["summary"].lower() for i in site.issues}
    for query, relevant in queries:
        assert len(relevant) >= 3 and set(relevant) <= keys
        assert len({site.topics[k] for k in relevant}) == 1  # one topic per query
        assert query.lower() not in summaries
    assert any(re.search(r"[äöüß]", q) for q in texts)  # a German query
    assert any("facture" in q for q in texts)  # a French one
    assert sample.SAMPLE_QUERIES == queries
    multilingual = [r for _, r in queries if len({site.languages[k] for k in r}) > 1]
    assert multilingual
    # the topic is private to the site: it appears in no issue field
    topic_ids = set(site.topics.values())
    assert not any(t in json.dumps(i["fields"]) for i in site.issues[:50] for t in topic_ids)


def test_small_and_empty_sites() -> None:
    empty = generate_sample_site(n_issues=0)
    assert empty.issues == [] and labelled_queries(empty) == [] and empty.long_issue_keys == []
    with _client(empty) as c:
        page = c.post(SEARCH, json={"jql": "created IS NOT EMPTY"}).json()
        assert page == {"issues": [], "isLast": True}
        assert c.get(PROJECT_SEARCH).json()["total"] == 36
    small = generate_sample_site(seed=3, n_projects=4, n_issues=25, base_url="https://tiny.atlassian.net/")
    assert small.base_url == "https://tiny.atlassian.net"
    assert len(small.projects) == 4 and len(small.issues) == 25
    assert {i["fields"]["project"]["id"] for i in small.issues} <= {p["id"] for p in small.projects}
    assert all(i["self"].startswith("https://tiny.atlassian.net/rest/api/3/issue/") for i in small.issues)
    many = generate_sample_site(n_projects=60, n_issues=50)
    assert len({p["key"] for p in many.projects}) == 60
    with pytest.raises(ValueError):
        generate_sample_site(n_projects=0, n_issues=5)


# --------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------


def test_corpus_covers_every_language_the_site_writes(site: JiraSite) -> None:
    topics = sample.corpus.topics()
    assert len(topics) == 34 and len({t.id for t in topics}) == 34
    languages = {lang for t in topics for lang in t.texts}
    assert languages == {"en", "de", "fr", "es", "ja"} == set(site.languages.values())
    phrases = sample.corpus.phrases()
    assert languages <= set(phrases.generic) and languages <= set(phrases.headings)
    assert {topic for _, topic in sample.corpus.query_topics()} <= {t.id for t in topics}


def test_corpus_files_are_package_data() -> None:
    # A data file the package-data globs miss would be absent from a wheel install.
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["etl_assets"]
    root = Path(etl_assets.__file__).parent
    files = [p.relative_to(root).as_posix() for p in (root / "core/sources/jira/sample/data").iterdir()]
    assert {"core/sources/jira/sample/data/topics.json"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)


_EN = {"summaries": ["s"], "sentences": ["s"]}


@pytest.mark.parametrize(
    ("topics", "needle"),
    [
        ([{"id": "t", "labels": ["x"], "texts": {"de": _EN}}], "topic 't' has no English texts"),
        ([{"id": "t", "labels": ["x"], "texts": {"en": {**_EN, "summaries": []}}}], "t/en/summaries"),
        ([{"id": "t", "labels": [], "texts": {"en": _EN}}], "t/labels"),
        ([{"id": "t", "labels": ["x"], "texts": {"en": _EN}}] * 2, "unique"),
    ],
)
def test_corpus_refuses_malformed_topics(monkeypatch: pytest.MonkeyPatch, topics: list, needle: str) -> None:
    monkeypatch.setattr(sample.corpus, "_load", lambda name: topics)
    sample.corpus.topics.cache_clear()
    try:
        with pytest.raises(ValueError, match=re.escape(needle)):
            sample.corpus.topics()
    finally:
        sample.corpus.topics.cache_clear()  # the next caller reads the real files again


# --------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------


def test_touch_issue_is_found_by_an_incremental_query(fresh_site: JiraSite) -> None:
    before = fresh_site.latest_updated()
    key = fresh_site.issues[3]["key"]
    fresh_site.touch_issue(key, summary="Renamed summary", description="New text.\n\nSecond paragraph.")
    issue = fresh_site.issue(key)
    assert parse_jira_datetime(issue["fields"]["updated"]) > before
    assert issue["fields"]["summary"] == "Renamed summary"
    assert [adf_text(p) for p in issue["fields"]["description"]["content"]] == ["New text.", "Second paragraph."]
    with _client(fresh_site) as c:
        found, _ = search_all(c, f'updated >= "{before + timedelta(seconds=1):%Y-%m-%d %H:%M}"', fields=["summary"])
    assert any(i["key"] == key for i in found)
    stamp = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    fresh_site.touch_issue(key, updated=stamp)
    assert fresh_site.issue(key)["fields"]["updated"] == format_jira_timestamp(stamp)


def test_delete_issue_and_project(fresh_site: JiraSite) -> None:
    parent = next(i for i in fresh_site.issues if i["fields"]["subtasks"])
    children = {s["key"] for s in parent["fields"]["subtasks"]}
    deleted = fresh_site.delete_issue(parent["key"])
    assert set(deleted) == {parent["key"], *children}
    with _client(fresh_site) as c:
        remaining, _ = search_all(c, ALL_ISSUES)
        assert len(remaining) == 300 - len(deleted)
        assert c.post(SEARCH, json={"jql": f"key = {parent['key']}"}).status_code == 400

        team = next(
            p
            for p in fresh_site.projects
            if p["style"] == "next-gen" and any(i["fields"]["project"]["id"] == p["id"] for i in fresh_site.issues)
        )
        gone = fresh_site.delete_project(team["id"])
        assert gone
        assert team["key"] not in {p["key"] for p in c.get(PROJECT_SEARCH).json()["values"]}
        assert c.get(PROJECT_SEARCH).json()["total"] == 35
        assert not any(
            t.get("scope", {}).get("project", {}).get("id") == team["id"] for t in c.get("/rest/api/3/issuetype").json()
        )
        assert not any(
            s.get("scope", {}).get("project", {}).get("id") == team["id"] for s in c.get("/rest/api/3/status").json()
        )
        after, _ = search_all(c, ALL_ISSUES)
        assert len(after) == 300 - len(deleted) - len(gone)
        bad = c.post(SEARCH, json={"jql": f"project = {team['key']}"})
        assert bad.status_code == 400 and team["key"] in bad.json()["errorMessages"][0]
    assert not set(gone) & set(fresh_site.topics)


def test_add_and_rename(fresh_site: JiraSite) -> None:
    new = fresh_site.add_issue("PAY", summary="Brand new issue", description="Body", topic="csv-export-truncated")
    assert new["key"] == f"PAY-{sum(1 for i in fresh_site.issues if i['key'].startswith('PAY-'))}"
    assert int(new["id"]) == 10300
    assert fresh_site.topics[new["key"]] == "csv-export-truncated"
    assert new["fields"]["updated"] == max(i["fields"]["updated"] for i in fresh_site.issues)
    fresh_site.rename_project("PAY", "Payments – Neu")
    assert all(
        i["fields"]["project"]["name"] == "Payments – Neu" for i in fresh_site.issues if i["key"].startswith("PAY-")
    )


# --------------------------------------------------------------------------------------
# Shapes against the Jira Cloud v3 spec and real captures (skip without the corpus)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_schemas() -> dict[str, Any]:
    return load_corpus_json("jira-platform-swagger-v3.v3.json")["components"]["schemas"]


def schema_props(schemas: dict[str, Any], name: str) -> set[str]:
    """Property names of a schema, following ``allOf`` references."""
    schema = schemas[name]
    props = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        ref = part.get("$ref", "")
        if ref:
            props |= schema_props(schemas, ref.rsplit("/", 1)[1])
    return props


def keys_of(objs: list[dict[str, Any]]) -> set[str]:
    return {k for o in objs for k in o}


def test_page_bean_and_search_keys_match_the_spec(site: JiraSite, client: httpx.Client, spec_schemas: dict) -> None:
    example = load_corpus_json("atlassian-spec-examples", "project_search.200.json")
    ours = client.get(PROJECT_SEARCH, params={"maxResults": 2}).json()
    assert set(example) <= set(ours), set(example) - set(ours)
    assert set(ours) <= schema_props(spec_schemas, "PageBeanProject")

    example = load_corpus_json("atlassian-spec-examples", "search_jql_post.200.json")
    last = client.post(SEARCH, json={"jql": ALL_ISSUES, "maxResults": 5000}).json()
    assert set(example) <= set(last), set(example) - set(last)
    middle = client.post(SEARCH, json={"jql": ALL_ISSUES, "maxResults": 5}).json()
    allowed = schema_props(spec_schemas, "SearchAndReconcileResults")
    assert set(middle) <= allowed and set(last) <= allowed and "nextPageToken" in middle
    example_issue_keys = keys_of(example["issues"])
    issue_keys = keys_of(middle["issues"])
    assert {"id", "key", "self", "fields"} <= issue_keys <= schema_props(spec_schemas, "IssueBean") | example_issue_keys


def test_object_keys_are_known_to_jira(site: JiraSite, spec_schemas: dict) -> None:
    # untranslatedName is served by Jira Cloud but absent from the spec's schemas: the
    # real captures in the corpus (airbyte statuses, public-jira-dataset issue types) show it.
    real_statuses = load_corpus_json("airbyte-source-jira", "workflow_statuses.json")
    real_types = load_corpus_json("public-jira-dataset", "jira_issuetype_information.json")
    real_type_keys = {k for per_site in real_types.values() for t in per_site.values() for k in t}
    real_projects = load_corpus_json("airbyte-source-jira", "projects.json")["values"]

    project_example = load_corpus_json("atlassian-spec-examples", "project_search.200.json")["values"]
    allowed = schema_props(spec_schemas, "Project") | keys_of(project_example) | keys_of(real_projects)
    assert keys_of(site.projects) <= allowed, keys_of(site.projects) - allowed
    categories = [p["projectCategory"] for p in site.projects if "projectCategory" in p]
    assert keys_of(categories) <= schema_props(spec_schemas, "ProjectCategory")
    assert keys_of([p["lead"] for p in site.projects]) <= schema_props(spec_schemas, "User")
    assert keys_of([p["avatarUrls"] for p in site.projects]) <= schema_props(spec_schemas, "AvatarUrlsBean")

    type_example = load_corpus_json("atlassian-spec-examples", "issuetype.200.json")
    allowed = schema_props(spec_schemas, "IssueTypeDetails") | keys_of(type_example) | real_type_keys
    assert keys_of(site.issue_types) <= allowed, keys_of(site.issue_types) - allowed
    scoped = [t["scope"] for t in site.issue_types + site.statuses if "scope" in t]
    assert keys_of(scoped) <= schema_props(spec_schemas, "Scope")
    # what the spec example shows for a scoped type, ours has too
    example_scoped = [t for t in type_example if "scope" in t]
    assert keys_of(example_scoped) <= keys_of([t for t in site.issue_types if "scope" in t])

    status_example = load_corpus_json("atlassian-spec-examples", "status.200.json")
    allowed = schema_props(spec_schemas, "StatusDetails") | keys_of(status_example) | keys_of(real_statuses)
    assert keys_of(site.statuses) <= allowed, keys_of(site.statuses) - allowed
    assert keys_of(status_example) <= keys_of(site.statuses)
    category_keys = keys_of([s["statusCategory"] for s in site.statuses])
    assert category_keys <= schema_props(spec_schemas, "StatusCategory")
    assert keys_of([s["statusCategory"] for s in real_statuses]) <= category_keys

    real_issue = load_corpus_json("airbyte-source-jira", "issues.json")["issues"][0]["fields"]
    users = [i["fields"]["reporter"] for i in site.issues] + [
        i["fields"]["assignee"] for i in site.issues if i["fields"]["assignee"]
    ]
    assert keys_of(users) <= schema_props(spec_schemas, "UserDetails")
    # The standard fields we serve are ones a real v3 Cloud issue carries, with the same JSON types.
    ours = site.issues[0]["fields"]
    shared = set(ours) & set(real_issue)
    assert {"summary", "description", "issuetype", "status", "project", "priority", "labels", "created"} <= shared
    for name in shared:
        if ours[name] is not None and real_issue[name] is not None:
            assert type(ours[name]) is type(real_issue[name]), name


# --------------------------------------------------------------------------------------
# The requests the sync sends, validated against the Jira Cloud v3 OpenAPI spec
# --------------------------------------------------------------------------------------


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        items = schema.get("items") or {}
        return isinstance(value, list) and all(_type_ok(v, items) for v in value)
    return True


def spec_problems(spec: dict[str, Any], method: str, path: str, query: dict[str, str], body: Any) -> list[str]:
    """What about one request the OpenAPI spec does not allow (empty: valid)."""
    template = next(
        (t for t in spec["paths"] if re.match("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t)) + "$", path)),
        None,
    )
    if template is None:
        return [f"{method} {path}: no such path in the spec"]
    item = spec["paths"][template]
    op = item.get(method.lower())
    if op is None:
        return [f"{method} {template}: method not in the spec"]
    problems = []
    params = {p["name"]: p for p in [*item.get("parameters", []), *op.get("parameters", [])] if p.get("in") == "query"}
    for name, raw in query.items():
        declared = params.get(name)
        if declared is None:
            problems.append(f"{method} {template}: query parameter {name!r} is not declared")
            continue
        schema = _resolve(spec, declared.get("schema") or {})
        value: Any = raw
        if schema.get("type") == "integer":
            value = int(raw) if raw.lstrip("-").isdigit() else raw
        if not _type_ok(value, schema):
            problems.append(f"{method} {template}: query {name}={raw!r} does not fit {schema}")
    if body is not None:
        content = (op.get("requestBody") or {}).get("content") or {}
        if "application/json" not in content:
            return [*problems, f"{method} {template}: takes no JSON body"]
        schema = _resolve(spec, content["application/json"]["schema"])
        props = schema.get("properties") or {}
        for key, value in body.items():
            if key not in props:
                if schema.get("additionalProperties") is False:
                    problems.append(f"{method} {template}: body key {key!r} is not in the schema")
                continue
            if not _type_ok(value, _resolve(spec, props[key])):
                problems.append(f"{method} {template}: body {key}={value!r} does not fit the schema")
        for key in schema.get("required") or []:
            if key not in body:
                problems.append(f"{method} {template}: required body key {key!r} missing")
    return problems


def test_every_request_of_a_sync_validates_against_the_openapi_spec(spec_schemas: dict) -> None:
    """The fetches of every entity (with comments paged and the changelog expanded), the id
    listing and the change probe: each request's path, method, query and JSON body are what the
    spec declares (and the spec check itself refuses what it should)."""
    from etl_assets.core.catalogue import CATALOGUE
    from etl_assets.core.records import FetchRequest
    from etl_assets.core.sources.jira.client import JiraClient
    from etl_assets.core.sources.jira.jql import approximate_count, newest_change
    from etl_assets.core.sources.jira.sample.documents import add_comments, lengthen_changelog
    from etl_assets.core.sources.jira.source import JiraSiteConfig
    from etl_assets.core.tenants import Tenant

    spec = load_corpus_json("jira-platform-swagger-v3.v3.json")
    site = generate_sample_site(n_projects=6, n_issues=40)
    add_comments(site, site.issues[0]["key"], [f"c{n}" for n in range(150)])
    lengthen_changelog(site, site.issues[1])  # a changelog longer than the search embeds
    inner = sample_transport(site)
    sent: list[tuple[str, str, dict[str, str], Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.path, dict(request.url.params), body))
        return inner.handle_request(request)

    tenant = Tenant("acme", "Acme", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T")})
    with httpx.Client(base_url=site.base_url, transport=httpx.MockTransport(record)) as http:
        client = JiraClient(http, "acme", site.base_url)
        for entity in CATALOGUE:
            for _ in entity.fetch(client, FetchRequest(tenant)):
                pass
        for _ in CATALOGUE[3].fetch(client, FetchRequest(tenant, ids_only=True)):
            pass
        # an incremental fetch: the API user's zone from /myself, then the search from the watermark
        for _ in CATALOGUE[3].fetch(client, FetchRequest(tenant, since=datetime(2026, 1, 1, tzinfo=UTC))):
            pass
        newest_change(client, tenant, datetime(2026, 1, 1, tzinfo=UTC))
        # the prompt-deletion trigger: its request, and an answer the spec's JQLCountResultsBean describes
        assert approximate_count(client, tenant) == len(site.issues)
    kinds = {(m, re.sub(r"/issue/[^/]+/", "/issue/{id}/", p)) for m, p, _, _ in sent}
    assert ("POST", "/rest/api/3/search/approximate-count") in kinds
    assert ("GET", "/rest/api/3/myself") in kinds
    assert ("GET", "/rest/api/3/issue/{id}/comment") in kinds, "comments were paged"
    assert ("GET", "/rest/api/3/issue/{id}/changelog") in kinds, "the long changelog was paged"
    assert any(b and b.get("expand") == "changelog" for _, _, _, b in sent), "the changelog was expanded"
    problems = [p for m, path, q, b in sent for p in spec_problems(spec, m, path, q, b)]
    assert problems == []
    # The check can fail: an unknown body key, a wrong enum value, an undeclared parameter.
    assert spec_problems(spec, "POST", SEARCH, {}, {"jql": "x", "bogus": 1})
    assert spec_problems(spec, "GET", "/rest/api/3/issue/1/comment", {"orderBy": "updated"}, None)
    assert spec_problems(spec, "GET", "/rest/api/3/issue/1/comment", {"pageSize": "5"}, None)
    assert spec_problems(spec, "GET", "/rest/api/3/issue/1/changelog", {"orderBy": "created"}, None)
    assert spec_problems(spec, "POST", "/rest/api/3/issue/1/changelog", {}, None)
    # The sample's changelog page has the keys of Jira's PageBeanChangelog (and no others).
    page = httpx.Client(base_url=site.base_url, transport=inner).get(
        f"/rest/api/3/issue/{site.issues[1]['id']}/changelog", params={"startAt": 0, "maxResults": 5}
    )
    assert {"values", "total", "startAt", "maxResults", "isLast", "nextPage"} <= set(page.json())
    assert set(page.json()) <= schema_props(spec_schemas, "PageBeanChangelog")
