"""The entity catalogue: everything that differs between projects, wits, statuses and issues.

Raw, table and vector assets are built from these specs by one factory each, so adding
an entity (or a source) means adding a spec here, not copying assets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table

from etl_assets.core.jira import parsers
from etl_assets.core.jira.client import JiraClient, RawPage
from etl_assets.core.jira.jql import search_pages, tenant_jql
from etl_assets.core.store import schema
from etl_assets.core.tenants import Tenant


@dataclass(frozen=True)
class FetchRequest:
    tenant: Tenant
    since: datetime | None = None  # incremental entities: fetch only what changed since
    ids_only: bool = False  # a cheap listing of live ids, for reconciliation
    page_size: int = 50


@dataclass(frozen=True)
class EntitySpec:
    name: str  # table name and the last part of the collection name
    title: str  # for docstrings and the UI
    endpoint: str
    table: Table
    parse: Callable[[object], dict[str, Any]]
    fetch: Callable[[JiraClient, FetchRequest], Iterator[RawPage]]
    records: Callable[[Any], list[Any]]  # the Jira objects inside one response body
    text: Callable[[Mapping[str, Any]], str]  # what we embed
    payload: Callable[[Mapping[str, Any]], dict[str, Any]]  # display/filter fields on each point
    references: tuple[tuple[str, str], ...] = ()  # (column, referenced entity) by (tenant, Jira id)
    payload_indexes: Mapping[str, str] = field(default_factory=dict)  # payload field -> Qdrant schema
    incremental: bool = False  # fetched by watermark; deletions found by reconciliation
    # When one Jira object arrives twice (overlapping incremental windows), the newer version wins.
    version: Callable[[Any], Any] | None = None


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
    name="projects",
    title="Jira projects",
    endpoint="GET /rest/api/3/project/search",
    table=schema.projects,
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
    name="wits",
    title="Jira work item types",
    endpoint="GET /rest/api/3/issuetype",
    table=schema.wits,
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
    name="statuses",
    title="Jira statuses",
    endpoint="GET /rest/api/3/status",
    table=schema.statuses,
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
    name="issues",
    title="Jira issues (work items)",
    endpoint="POST /rest/api/3/search/jql",
    table=schema.issues,
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
    version=lambda record: (
        parsers.parse_jira_datetime((record.get("fields") or {}).get("updated"))
        if isinstance(record, dict) and isinstance(record.get("fields"), dict)
        else None
    ),
)

CATALOGUE: tuple[EntitySpec, ...] = (PROJECTS, WITS, STATUSES, ISSUES)
BY_NAME: dict[str, EntitySpec] = {spec.name: spec for spec in CATALOGUE}


def entity(name: str) -> EntitySpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(BY_NAME)}") from None
