"""Bounded JQL for a tenant's issues, and the fetches that use it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

from etl_assets.core.jira.client import JiraClient, RawPage
from etl_assets.core.tenants import Tenant

SEARCH_PATH = "/rest/api/3/search/jql"
ISSUE_FIELDS = (
    "summary", "description", "issuetype", "status", "project", "priority", "labels",
    "components", "assignee", "reporter", "created", "updated", "resolution", "parent",
)  # fmt: skip
_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tenant_jql(tenant: Tenant, *, since: datetime | None = None, order: str = "ORDER BY updated ASC") -> str:
    """The tenant's JQL: its project restriction and extra clause, optionally ``updated >= since``.

    JQL compares ``updated`` at minute granularity in the calling user's time zone, so
    ``since`` should already include the overlap; we format it to the minute, rounded down.
    """
    clauses: list[str] = []
    if tenant.jira.projects:
        bad = [p for p in tenant.jira.projects if not _PROJECT_KEY.match(p)]
        if bad:
            raise ValueError(f"tenant {tenant.id!r}: invalid project key(s) in registry: {', '.join(bad)}")
        clauses.append(f"project in ({', '.join(_quote(p) for p in tenant.jira.projects)})")
    if tenant.jira.jql:
        clauses.append(f"({tenant.jira.jql})")
    if since is not None:
        clauses.append(f"updated >= {_quote(since.strftime('%Y-%m-%d %H:%M'))}")
    # Jira rejects an unbounded search/jql query; 'created is not EMPTY' bounds it to all issues.
    where = " AND ".join(clauses) or "created IS NOT EMPTY"
    return f"{where} {order}".strip()


def search_pages(
    client: JiraClient, jql: str, *, fields: tuple[str, ...] | list[str] = ISSUE_FIELDS, page_size: int = 100
) -> Iterator[RawPage]:
    body = {"jql": jql, "fields": list(fields), "maxResults": page_size}
    return client.token_pages(SEARCH_PATH, body)


def changed_since(since: datetime, overlap: timedelta) -> datetime:
    return since - overlap
