"""Bounded JQL for a tenant's issues, and the fetches that use it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etl_assets.core.records import RawPage
from etl_assets.core.sources.jira.client import JiraAuthError, JiraClient, JiraError
from etl_assets.core.sources.jira.parsers import parse_jira_datetime
from etl_assets.core.sources.jira.source import jira_site
from etl_assets.core.tenants import Tenant

log = logging.getLogger(__name__)

SEARCH_PATH = "/rest/api/3/search/jql"
COUNT_PATH = "/rest/api/3/search/approximate-count"
MYSELF_PATH = "/rest/api/3/myself"
# No zone is further west of UTC than -12:00: a literal in UTC wall time this far before the
# instant is not after it, read in any zone. Used when the API user's zone is unknown (a bounded
# re-read, up to 26 h at UTC+14, never a miss).
_WEST_MOST_OFFSET = timedelta(hours=12)
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
    # Not embedded: what access depends on (the issue's security level; see parsers.access_facts).
    "security",
)
_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def jql_datetime(moment: datetime, zone: tzinfo | None) -> str:
    """A ``yyyy-MM-dd HH:mm`` literal that JQL, reading it in ``zone``, takes for ``moment`` or earlier.

    JQL reads date literals as wall time in the API user's profile zone. The literal is that wall
    time, rounded down to the minute; where the zone repeats it (the hour after a DST fall-back)
    Jira may take either reading, so the literal steps back until even the later reading is not
    after ``moment`` (re-reading at most an hour more, never missing a change). ``zone`` None: not
    known, so the UTC wall time less 12 h (no zone lies further west).
    """
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    if zone is None:
        return (moment - _WEST_MOST_OFFSET).strftime("%Y-%m-%d %H:%M")
    wall = moment.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    for _ in range(8):  # a transition moves the clock by at most a few hours
        latest = max(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
        if latest <= moment:
            break
        wall -= timedelta(minutes=-((moment - latest) // timedelta(minutes=1)))
    else:  # a zone whose rules this loop does not settle: the widest margin, still never a miss
        return jql_datetime(moment, None)
    return wall.strftime("%Y-%m-%d %H:%M")


def user_zone(client: JiraClient) -> tzinfo | None:
    """The API user's profile time zone (``GET /myself`` ``timeZone``, an IANA name), in which JQL
    reads date literals; None (with a warning) when the site does not say or names no zone we know."""
    try:
        me = client.request("GET", MYSELF_PATH).json()
    except JiraError as exc:
        if isinstance(exc, JiraAuthError) and exc.status == 401:
            raise  # refused credentials: every other request would fail the same way
        log.warning("%s — the watermark is widened by 12 h instead", exc)
        return None
    name = me.get("timeZone") if isinstance(me, dict) else None
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    log.warning(
        "%s: time zone %r is not a known IANA zone — the watermark is widened by 12 h instead",
        client.describe("GET", MYSELF_PATH),
        name,
    )
    return None


def tenant_jql(
    tenant: Tenant,
    *,
    since: datetime | None = None,
    zone: tzinfo | None = UTC,
    order: str = "ORDER BY updated ASC",
) -> str:
    """The tenant's JQL: its project restriction and extra clause, optionally ``updated >= since``.

    JQL compares ``updated`` at minute granularity in the calling user's time zone (``zone``, see
    :func:`user_zone`), so ``since`` should already include the overlap; :func:`jql_datetime`
    formats it in that zone, rounded down.
    """
    clauses: list[str] = []
    if jira_site(tenant).projects:
        bad = [p for p in jira_site(tenant).projects if not _PROJECT_KEY.match(p)]
        if bad:
            raise ValueError(f"tenant {tenant.id!r}: invalid project key(s) in registry: {', '.join(bad)}")
        clauses.append(f"project in ({', '.join(_quote(p) for p in jira_site(tenant).projects)})")
    if jira_site(tenant).jql:
        clauses.append(f"({jira_site(tenant).jql})")
    if since is not None:
        clauses.append(f"updated >= {_quote(jql_datetime(since, zone))}")
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
    for page, _data in search_pages_parsed(client, jql, fields=fields, page_size=page_size, expand=expand):
        yield page


def search_pages_parsed(
    client: JiraClient,
    jql: str,
    *,
    fields: tuple[str, ...] | list[str] = ISSUE_FIELDS,
    page_size: int = 100,
    expand: str | None = None,
) -> Iterator[tuple[RawPage, Any]]:
    """:func:`search_pages`, each page with its parsed body (see ``JiraClient.token_pages_parsed``)."""
    body: dict[str, Any] = {"jql": jql, "fields": list(fields), "maxResults": page_size}
    if expand:
        body["expand"] = expand
    try:
        yield from client.token_pages_parsed(SEARCH_PATH, body)
    except JiraError as exc:
        raise _explain(exc, jql) from None


def newest_change(client: JiraClient, tenant: Tenant, since: datetime) -> datetime | None:
    """The ``updated`` time of the tenant's newest issue (the caller compares it with ``since``).

    One cheap request (one issue, one field), used by the change sensor. No date literal: the
    answer carries its offset, so the API user's time zone cannot shift it (and no ``/myself``).
    """
    jql = tenant_jql(tenant, order="ORDER BY updated DESC")
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
