"""Bounded JQL for a tenant's issues, and the fetches that use it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from etl_assets.core.records import RawPage
from etl_assets.core.sources.jira.client import JiraClient, JiraError
from etl_assets.core.sources.jira.parsers import parse_jira_datetime
from etl_assets.core.tenants import Tenant

log = logging.getLogger(__name__)

SEARCH_PATH = "/rest/api/3/search/jql"
COUNT_PATH = "/rest/api/3/search/approximate-count"
ISSUE_FIELDS = (
    "summary",
    "description",
    "issuetype",
    "status",
    "project",
    "priority",
    "labels",
    "components",
    "assignee",
    "reporter",
    "created",
    "updated",
    "resolution",
    "resolutiondate",
    "statuscategorychangedate",
    "parent",
    "subtasks",
    "issuelinks",
    "attachment",
    "comment",
)
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


def _explain(exc: JiraError, jql: str) -> JiraError:
    hint = ""
    if exc.status == 410:
        hint = " (410 Gone: this Jira no longer serves the old search API; search/jql is required)"
    elif exc.status == 400:
        hint = " (the site refused the JQL: check jira.projects / jira.jql in the tenants file)"
    return JiraError(f"{exc}{hint} — JQL: {jql}", status=exc.status, retryable=exc.retryable)


def search_pages(
    client: JiraClient,
    jql: str,
    *,
    fields: tuple[str, ...] | list[str] = ISSUE_FIELDS,
    page_size: int = 100,
    expand: str | None = None,
) -> Iterator[RawPage]:
    """Every page of ``POST /rest/api/3/search/jql`` for ``jql``; errors name the tenant and the JQL.

    ``expand="changelog"`` brings each issue's recent history in the same response: no extra
    request per page (``POST /changelog/bulkfetch`` would cost at least one more per page).
    """
    body: dict[str, Any] = {"jql": jql, "fields": list(fields), "maxResults": page_size}
    if expand:
        body["expand"] = expand
    try:
        yield from client.token_pages(SEARCH_PATH, body)
    except JiraError as exc:
        raise _explain(exc, jql) from None


def newest_change(client: JiraClient, tenant: Tenant, since: datetime) -> datetime | None:
    """The ``updated`` time of the newest issue changed at or after ``since`` (minute precision), if any.

    One cheap request (one issue, one field), used by the change sensor.
    """
    jql = tenant_jql(tenant, since=since, order="ORDER BY updated DESC")
    try:
        page = client.request("POST", SEARCH_PATH, json_body={"jql": jql, "fields": ["updated"], "maxResults": 1})
    except JiraError as exc:
        raise _explain(exc, jql) from None
    data = page.json()
    issues = data.get("issues") if isinstance(data, dict) else None
    if not issues or not isinstance(issues[0], dict):
        return None
    fields = issues[0].get("fields") or {}
    return parse_jira_datetime(fields.get("updated"))


# Sites whose approximate count failed: warned about once per process, not on every sync.
_NO_COUNT: set[str] = set()


def approximate_count(client: JiraClient, tenant: Tenant) -> int | None:
    """Jira's estimate of how many issues the tenant's JQL matches now (one request), or None.

    ``POST /search/approximate-count`` counts what the caller may browse, like the search, but
    "recent updates might not be immediately visible": the caller uses it as a trigger only. A
    site that does not answer it (an older or restricted site: 404, 403, ...) or answers
    something else yields None with one warning per site and process; the sync goes on without it.
    """
    jql = tenant_jql(tenant, order="")
    try:
        data = client.request("POST", COUNT_PATH, json_body={"jql": jql}).json()
    except JiraError as exc:
        _warn_once(client.site, f"{exc}")
        return None
    count = data.get("count") if isinstance(data, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        _warn_once(client.site, f"{client.describe('POST', COUNT_PATH)}: no count in the answer")
        return None
    return count


def _warn_once(site: str, reason: str) -> None:
    if site in _NO_COUNT:
        return
    _NO_COUNT.add(site)
    log.warning("%s — deletions are found by the scheduled reconciliation only (until the count answers)", reason)
