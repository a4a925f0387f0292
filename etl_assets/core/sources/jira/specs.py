"""Jira's entity specs: projects, work item types, statuses and issues.

What differs between them (endpoint, parser, table, the text we embed, the payload) is
described here once; the raw, table and vector assets are built from these by one factory
each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from etl_assets.core.records import EntitySpec, FetchRequest, RawPage
from etl_assets.core.sources.jira import parsers, tables
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.jql import newest_change, search_pages, tenant_jql


def _join(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


def _line(label: str, value: Any) -> str | None:
    if value in (None, "", []):
        return None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return f"{label}: {value}"


def _values(data: Any) -> list[Any]:
    # /project/search answers a PageBean; older servers (and the v2 captures) a bare list.
    if isinstance(data, dict):
        values = data.get("values")
        return values if isinstance(values, list) else []
    return data if isinstance(data, list) else []


def _listing(data: Any) -> list[Any]:
    return data if isinstance(data, list) else []


def _issues(data: Any) -> list[Any]:
    if isinstance(data, dict) and isinstance(data.get("issues"), list):
        return data["issues"]
    return []


def _fetch_projects(client: JiraClient, req: FetchRequest) -> Iterator[RawPage]:
    yield from client.offset_pages(
        "/rest/api/3/project/search",
        params={"expand": "description,lead,issueTypes,url", "orderBy": "key"},
        page_size=req.page_size,
    )


def _fetch_list(path: str) -> Callable[[JiraClient, FetchRequest], Iterator[RawPage]]:
    def fetch(client: JiraClient, req: FetchRequest) -> Iterator[RawPage]:
        yield client.request("GET", path)

    return fetch


def _fetch_issues(client: JiraClient, req: FetchRequest) -> Iterator[RawPage]:
    if req.ids_only:
        yield from search_pages(client, tenant_jql(req.tenant, order="ORDER BY key ASC"), fields=["id"], page_size=1000)
        return
    yield from search_pages(client, tenant_jql(req.tenant, since=req.since), page_size=min(req.page_size, 100))


PROJECTS = EntitySpec(
    source="jira",
    name="projects",
    item="project",
    title="Jira projects",
    endpoint="GET /rest/api/3/project/search",
    table=tables.projects,
    parse=parsers.parse_project,
    fetch=_fetch_projects,
    records=_values,
    text=lambda r: _join(
        f"Project {r['name']} ({r['key']})",
        _line("Category", r.get("category")),
        _line("Type", " ".join(v for v in (r.get("management"), r.get("project_type")) if v)),
        _line("Lead", r.get("lead")),
        r.get("description"),
    ),
    payload=lambda r: {
        "key": r["key"],
        "name": r["name"],
        "category": r.get("category"),
        "project_type": r.get("project_type"),
        "management": r.get("management"),
        "url": r.get("url"),
    },
    payload_indexes={"key": "keyword"},
)

WITS = EntitySpec(
    source="jira",
    name="wits",
    item="work item type",
    title="Jira work item types",
    endpoint="GET /rest/api/3/issuetype",
    table=tables.wits,
    parse=parsers.parse_wit,
    fetch=_fetch_list("/rest/api/3/issuetype"),
    records=_listing,
    text=lambda r: _join(
        f"Work item type {r['name']}",
        _line("Hierarchy level", r.get("hierarchy_level")),
        "Sub-task type" if r.get("subtask") else None,
        _line("Team-managed, project", r.get("scope_project_id")),
        r.get("description"),
    ),
    payload=lambda r: {
        "name": r["name"],
        "hierarchy_level": r.get("hierarchy_level"),
        "subtask": r.get("subtask"),
        "scope_project_id": r.get("scope_project_id"),
    },
)

STATUSES = EntitySpec(
    source="jira",
    name="statuses",
    item="status",
    title="Jira statuses",
    endpoint="GET /rest/api/3/status",
    table=tables.statuses,
    parse=parsers.parse_status,
    fetch=_fetch_list("/rest/api/3/status"),
    records=_listing,
    text=lambda r: _join(
        f"Status {r['name']}",
        _line("Category", r.get("category_name") or r.get("category_key")),
        r.get("description"),
    ),
    payload=lambda r: {
        "name": r["name"],
        "status_category": r.get("category_key"),
        "scope_project_id": r.get("scope_project_id"),
    },
    payload_indexes={"status_category": "keyword"},
)

ISSUES = EntitySpec(
    source="jira",
    name="issues",
    item="issue",
    title="Jira issues (work items)",
    endpoint="POST /rest/api/3/search/jql",
    table=tables.issues,
    parse=parsers.parse_issue,
    fetch=_fetch_issues,
    records=_issues,
    text=lambda r: _join(
        f"{r['key']}: {r['summary']}",
        _line("Project", r.get("project_key")),
        _line("Type", r.get("wit_name")),
        _line("Status", r.get("status_name")),
        _line("Priority", r.get("priority")),
        _line("Labels", r.get("labels")),
        _line("Components", r.get("components")),
        "",
        r.get("description"),
    ),
    payload=lambda r: {
        "key": r["key"],
        "summary": r["summary"],
        "project_key": r.get("project_key"),
        "type": r.get("wit_name"),
        "status": r.get("status_name"),
        "status_category": r.get("status_category"),
        "priority": r.get("priority"),
        "labels": list(r.get("labels") or []),
        "updated": r["updated"].isoformat() if isinstance(r.get("updated"), datetime) else r.get("updated"),
    },
    references=(
        ("project_external_id", "projects"),
        ("wit_external_id", "wits"),
        ("status_external_id", "statuses"),
    ),
    payload_indexes={
        "key": "keyword",
        "project_key": "keyword",
        "type": "keyword",
        "status": "keyword",
        "status_category": "keyword",
        "priority": "keyword",
        "labels": "keyword",
        "updated": "datetime",
    },
    incremental=True,
    newest_change=newest_change,
    version=lambda record: (
        parsers.parse_jira_datetime((record.get("fields") or {}).get("updated"))
        if isinstance(record, dict) and isinstance(record.get("fields"), dict)
        else None
    ),
)

SPECS: tuple[EntitySpec, ...] = (PROJECTS, WITS, STATUSES, ISSUES)
