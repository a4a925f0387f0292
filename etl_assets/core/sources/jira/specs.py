"""Jira's entity specs: projects, work item types, statuses and issues.

What differs between them (endpoint, parser, table, the text we embed, the payload) is
described here once; the raw, table and vector assets are built from these by one factory
each.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime, tzinfo
from typing import Any

from etl_assets.core.records import ChildLink, ChildRecords, EntitySpec, FanOut, FetchRequest, PagedPart, RawPage
from etl_assets.core.sources.jira import custom_fields, parsers, permission_tables, tables
from etl_assets.core.sources.jira.client import JiraAuthError, JiraClient, JiraError
from etl_assets.core.sources.jira.jql import (
    ISSUE_FIELDS,
    approximate_count,
    newest_change,
    search_pages,
    search_pages_parsed,
    tenant_jql,
    user_zone,
)
from etl_assets.core.sources.jira.source import jira_site

log = logging.getLogger(__name__)

COMMENT_PAGE = 100  # comments per GET /issue/{id}/comment page (Jira's documented default and cap)
_COMMENT_PATH = re.compile(r"^/rest/api/3/issue/([^/]+)/comment$")
CHANGELOG_PAGE = 100  # histories per GET /issue/{id}/changelog page (the endpoint's documented default)
_CHANGELOG_PATH = re.compile(r"^/rest/api/3/issue/([^/]+)/changelog$")
# Keys a search page's landed params carry beside the request body (see _fetch_issues).
ASKED_RENDERED = "rendered_fields"
ASKED_ACCESS = "access_fields"


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


def _issues_named(data: Any) -> list[Any]:
    """The issues of a search page, each with the ``names``/``schema`` of its custom fields (from
    the page's ``expand=names,schema``), as ``GET /issue`` would carry them."""
    issues = _issues(data)
    names, schema = (
        data.get("names") if isinstance(data, dict) else None,
        data.get("schema") if isinstance(data, dict) else None,
    )
    if not isinstance(names, dict):
        # A bulk fetch's issues carry their own names/schema (of every field): kept as a search's are.
        return [_own_names(issue) for issue in issues]
    return _page_names(issues, names, schema)


def _own_names(issue: Any) -> Any:
    """An issue with its own ``names``/``schema`` (``POST /issue/bulkfetch``, ``GET /issue``) in the
    form a search page's give it: only its custom fields, and no keys when it has none."""
    if not isinstance(issue, dict) or not isinstance(issue.get("names"), dict):
        return issue
    own = {k: v for k, v in issue.items() if k not in ("names", "schema")}
    return _page_names([own], issue["names"], issue.get("schema"))[0]


def _page_names(issues: list[Any], names: dict[str, Any], schema: Any) -> list[Any]:
    out = []
    for issue in issues:
        fields = issue.get("fields") if isinstance(issue, dict) else None
        if not isinstance(fields, dict):
            out.append(issue)
            continue
        ids = [f for f in fields if str(f).startswith("customfield_") and f in names]
        if not ids:
            out.append(issue)
            continue
        out.append(
            {
                **issue,
                "names": {f: names[f] for f in ids},
                "schema": {f: schema[f] for f in ids if isinstance(schema, dict) and f in schema},
            }
        )
    return out


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


def _embedded_comments(issue: Any) -> tuple[list[Any], int | None]:
    fields = issue.get("fields") if isinstance(issue, dict) else None
    comment = fields.get("comment") if isinstance(fields, dict) else None
    if not isinstance(comment, dict):
        return [], None
    comments = comment.get("comments")
    total = comment.get("total")
    return (comments if isinstance(comments, list) else []), (
        total if isinstance(total, int) and not isinstance(total, bool) else None
    )


def comment_pages(client: JiraClient, issue_id: str, start: int, total: int, key: str) -> Iterator[RawPage]:
    """The comments of one issue from ``start`` on, a page at a time, until ``total`` arrived.

    A page that fails for good (after the client's retries) ends this issue's paging with a
    warning: the pages before it are kept, the issue is marked as having incomplete comments
    by the table step (nothing of it is deleted) and fetched again by the next run. Refused
    credentials still fail the step: every other request would fail the same way.
    """
    path = f"/rest/api/3/issue/{issue_id}/comment"
    for _ in range(100_000):
        if start >= total:
            return
        try:
            page = client.request(
                "GET", path, params={"startAt": start, "maxResults": COMMENT_PAGE, "orderBy": "created"}
            )
        except JiraAuthError as exc:
            if exc.status == 401:
                raise
            log.warning("issue %s: comments from %d on not fetched: %s", key, start, exc)
            return
        except JiraError as exc:
            log.warning("issue %s: comments from %d on not fetched: %s", key, start, exc)
            return
        yield page
        data = page.json()
        got = data.get("comments") if isinstance(data, dict) else None
        if not isinstance(got, list) or not got:
            return
        start += len(got)
        if isinstance(data.get("total"), int):
            total = data["total"]


def _embedded_histories(issue: Any) -> tuple[list[Any], int | None]:
    changelog = issue.get("changelog") if isinstance(issue, dict) else None
    if not isinstance(changelog, dict):
        return [], None
    histories, total = changelog.get("histories"), changelog.get("total")
    return (histories if isinstance(histories, list) else []), (
        total if isinstance(total, int) and not isinstance(total, bool) else None
    )


def changechangelogpages(client: JiraClient, issue_id: str, total: int, key: str) -> Iterator[RawPage]:
    """The whole changelog of one issue whose embedded changelog is capped, a page at a time.

    Paged from the start, not from past the embedded histories: which histories a search
    embeds is not documented (first or newest), and merging by history id is right either way,
    at the cost of at most one page more. A page that fails for good ends the paging like a
    comment page does (see :func:`comment_pages`): what arrived is kept, the issue is marked
    ``history_incomplete`` and fetched again by the next run. A 404 (the issue was deleted
    meanwhile) is that same outcome for this one issue; its deletion is found by reconciliation.
    """
    path = f"/rest/api/3/issue/{issue_id}/changelog"
    start = 0
    for _ in range(100_000):
        if start >= total:
            return
        try:
            page = client.request("GET", path, params={"startAt": start, "maxResults": CHANGELOG_PAGE})
        except JiraAuthError as exc:
            if exc.status == 401:
                raise
            log.warning("issue %s: changelog from %d on not fetched: %s", key, start, exc)
            return
        except JiraError as exc:
            log.warning("issue %s: changelog from %d on not fetched: %s", key, start, exc)
            return
        yield page
        data = page.json()
        got = data.get("values") if isinstance(data, dict) else None
        if not isinstance(got, list) or not got or data.get("isLast") is True:
            return
        start += len(got)
        if isinstance(data.get("total"), int):
            total = data["total"]


def _changechangelogpage(path: str, data: Any) -> tuple[str, list[Any]] | None:
    match = _CHANGELOG_PATH.match(path)
    if match is None or not isinstance(data, dict):
        return None
    values = data.get("values")
    return match.group(1), values if isinstance(values, list) else []


def _merge_changelog(issue: Any, paged: list[Any]) -> tuple[Any, str | None]:
    """The issue with its embedded and paged histories (one each by id), and why it is incomplete."""
    embedded, total = _embedded_histories(issue)
    if not isinstance(issue, dict) or (not paged and (total is None or len(embedded) >= total)):
        return issue, None
    changelog = issue.get("changelog")
    merged: dict[str, Any] = {}
    for history in [*embedded, *paged]:
        if isinstance(history, dict):
            merged.setdefault(str(history.get("id")), history)
    histories = list(merged.values())
    whole = {
        **issue,
        "changelog": {
            **(changelog if isinstance(changelog, dict) else {}),
            "startAt": 0,
            "maxResults": len(histories),
            "histories": histories,
        },
    }
    if total is not None and len(histories) < total:
        return whole, f"{len(histories)} of {total} changelog entries arrived"
    return whole, None


def _field_listing(client: JiraClient, req: FetchRequest) -> tuple[RawPage | None, Any]:
    """``GET /field`` once per issue sync: the tenant's custom fields and the site's pickers.

    A tenant that names custom fields needs it (a failure fails the step, as always: its
    texts would change otherwise). For the others it only finds the user/group pickers that
    access may depend on; if it fails the sync carries on without them, and the issues' access
    facts say the pickers were not read, so access that depends on them fails safe.
    """
    try:
        listing = client.request("GET", custom_fields.FIELD_PATH)
    except JiraAuthError as exc:
        if exc.status == 401 or jira_site(req.tenant).custom_fields:
            raise
        log.warning("tenant %s: user/group picker fields not read (%s); access by them fails safe", req.tenant.id, exc)
        return None, None
    except JiraError as exc:
        if jira_site(req.tenant).custom_fields:
            raise
        log.warning("tenant %s: user/group picker fields not read (%s); access by them fails safe", req.tenant.id, exc)
        return None, None
    return listing, listing.json()


@dataclasses.dataclass(frozen=True)
class _IssueAsk:
    """What every issue request of one fetch asks for, and what its pages carry beside their body."""

    fields: tuple[str, ...]
    custom: bool  # the tenant renders custom fields: names and schema are asked for too
    asked: dict[str, Any]
    # The API user's zone (``user_zone``), asked once by a fan-out for its catch-up; None: unknown.
    zone: tzinfo | None = None


def _issue_ask(client: JiraClient, req: FetchRequest) -> tuple[RawPage | None, _IssueAsk]:
    """The field listing (landed with the issues: it says what the names meant at fetch time) and
    the fields the issue requests ask for."""
    listing_page, listing = _field_listing(client, req)
    custom: tuple[str, ...] = ()
    if jira_site(req.tenant).custom_fields:
        resolved = custom_fields.resolve(jira_site(req.tenant).custom_fields, listing, req.tenant.id)
        for warning in resolved.warnings:
            log.warning("%s", warning)
        custom = resolved.ids
    pickers = custom_fields.access_fields(listing) if listing_page is not None else None
    extra = [f for f in (pickers or {}) if f not in custom]
    # What each issue page asked for beyond its body, landed with it: which custom fields are
    # the tenant's (rendered into the text) and which are read only for access (never rendered);
    # ``access_fields`` None: the site's pickers could not be listed.
    asked = {ASKED_RENDERED: list(custom), ASKED_ACCESS: pickers}
    return listing_page, _IssueAsk((*ISSUE_FIELDS, *custom, *extra), bool(custom), asked)


def _follow_ups(client: JiraClient, data: Any) -> Iterator[RawPage]:
    """Jira embeds only the first comments and histories of an issue: page through the rest of
    each capped list, for every issue of a page (``data``: its parsed body)."""
    for issue in _issues(data):
        comments, total = _embedded_comments(issue)
        if total is not None and total > len(comments) and isinstance(issue.get("id"), str | int):
            yield from comment_pages(client, str(issue["id"]), len(comments), total, str(issue.get("key")))
        histories, changes = _embedded_histories(issue)
        if changes is not None and changes > len(histories) and isinstance(issue.get("id"), str | int):
            yield from changechangelogpages(client, str(issue["id"]), changes, str(issue.get("key")))


def _fetch_issues(client: JiraClient, req: FetchRequest) -> Iterator[RawPage]:
    if req.ids_only:
        yield from _list_issue_ids(client, req)
        return
    listing_page, ask = _issue_ask(client, req)
    if listing_page is not None:
        yield listing_page
    # JQL reads the watermark literal in the API user's zone: ask it once per fetch.
    yield from _search_issues(client, req, ask, user_zone(client) if req.since is not None else None)


def _search_issues(client: JiraClient, req: FetchRequest, ask: _IssueAsk, zone: tzinfo | None) -> Iterator[RawPage]:
    """The issues ``req`` asks for (all, or changed since ``req.since`` read in ``zone``), a search
    page at a time, each followed by the pages of its issues' capped comments and changelogs."""
    for page, data in search_pages_parsed(
        client,
        tenant_jql(req.tenant, since=req.since, zone=zone),
        fields=ask.fields,
        page_size=min(req.page_size, 100),
        # names,schema: what each custom field is called and its type, for rendering it as text.
        expand="changelog,names,schema" if ask.custom else "changelog",
    ):
        yield dataclasses.replace(page, params={**page.params, **ask.asked})
        yield from _follow_ups(client, data)


def _list_issue_ids(client: JiraClient, req: FetchRequest) -> Iterator[RawPage]:
    """The tenant's live issue ids, 1,000 a page (the id-only search's cheap listing)."""
    yield from search_pages(client, tenant_jql(req.tenant, order="ORDER BY key ASC"), fields=["id"], page_size=1000)


BULKFETCH_PATH = "/rest/api/3/issue/bulkfetch"
BULKFETCH_MAX = 100  # issueIdsOrKeys per request (the endpoint's documented maximum)
ID_LISTING_PAGE = 5000  # search/jql returns up to 5,000 issues a page when only ids are asked for


def _fan_out_ids(client: JiraClient, req: FetchRequest) -> Iterator[RawPage]:
    yield from search_pages(
        client, tenant_jql(req.tenant, order="ORDER BY key ASC"), fields=["id"], page_size=ID_LISTING_PAGE
    )


def _fan_out_begin(client: JiraClient, req: FetchRequest) -> tuple[list[RawPage], _IssueAsk]:
    """The field listing and what every bulk fetch asks for; and the API user's zone, which the
    catch-up's watermark is read in (asked now: this runs beside the id listing)."""
    listing_page, ask = _issue_ask(client, req)
    ask = dataclasses.replace(ask, zone=user_zone(client))
    return ([listing_page] if listing_page is not None else []), ask


def _fan_out_catch_up(client: JiraClient, ask: _IssueAsk, req: FetchRequest) -> Iterator[RawPage]:
    """What changed since ``req.since``, as an incremental fetch reads it, with the fields, field
    listing (landed at the start) and zone the fan-out began with."""
    yield from _search_issues(client, req, ask, ask.zone)


def _bulk_fetch(client: JiraClient, ask: _IssueAsk, ids: list[str]) -> tuple[list[RawPage], int]:
    """``POST /issue/bulkfetch`` for ``ids`` (at most 100) with the fields and expansions a search
    page asks for, and the follow-up pages of their comments and changelogs; and the issues they hold.

    Ids Jira reports in ``issueErrors`` (a retriable error on its side) are asked for once more;
    still failing, the step fails naming them, and the next run (resuming) asks again. An id that
    is simply absent (deleted since the listing, or no longer visible) is not an error.
    """
    body: dict[str, Any] = {
        "issueIdsOrKeys": ids,
        "fields": list(ask.fields),
        "expand": ["changelog", "names", "schema"] if ask.custom else ["changelog"],
    }
    pages: list[RawPage] = []
    records = 0
    for attempt in range(2):
        page, data = client.request_parsed("POST", BULKFETCH_PATH, json_body=body)
        pages.append(dataclasses.replace(page, params={**page.params, **ask.asked}))
        pages.extend(_follow_ups(client, data))
        records += len(_issues(data))
        errors = data.get("issueErrors") if isinstance(data, dict) else None
        failed = [str(e.get("id")) for e in errors or [] if isinstance(e, dict) and e.get("id") is not None]
        if not failed:
            return pages, records
        if attempt == 0:
            body = {**body, "issueIdsOrKeys": failed}
    messages = "; ".join(f"{e.get('id')}: {e.get('errorMessage')}" for e in (errors or [])[:5] if isinstance(e, dict))
    raise JiraError(f"{client.describe('POST', BULKFETCH_PATH)}: {len(failed)} issues not returned twice ({messages})")


def _issue_records(data: Any, asked: Mapping[str, Any]) -> list[Any]:
    """The issues of a landed search page, given what the page asked for (see ``_fetch_issues``).

    Only the tenant's own custom fields keep their ``names``/``schema`` (what gets rendered into
    the text); each issue carries :data:`parsers.ACCESS_FIELDS_KEY`: the picker fields the search
    asked for, id -> ``user``/``group`` (None: not read). A page landed before access facts
    existed asked for neither and is read as before.
    """
    issues = _issues_named(data)
    if ASKED_ACCESS not in asked:
        return issues
    rendered = set(asked.get(ASKED_RENDERED) or ())
    access = asked.get(ASKED_ACCESS)
    out = []
    for issue in issues:
        if not isinstance(issue, dict):
            out.append(issue)
            continue
        issue = {**issue, parsers.ACCESS_FIELDS_KEY: access}
        for key in ("names", "schema"):
            if isinstance(issue.get(key), dict):
                issue[key] = {f: v for f, v in issue[key].items() if f in rendered}
        out.append(issue)
    return out


def _comment_page(path: str, data: Any) -> tuple[str, list[Any]] | None:
    match = _COMMENT_PATH.match(path)
    if match is None or not isinstance(data, dict):
        return None
    comments = data.get("comments")
    return match.group(1), comments if isinstance(comments, list) else []


def _issue_comments(issue: Any, paged: list[Any]) -> ChildRecords:
    fields = issue.get("fields") if isinstance(issue, dict) else None
    if not isinstance(fields, dict) or "comment" not in fields:
        return ChildRecords([], fetched=False)
    embedded, total = _embedded_comments(issue)
    records = [*embedded, *paged]
    ids = {str(c.get("id")) for c in records if isinstance(c, dict)}
    if total is not None and len(ids) < total:
        return ChildRecords(records, complete=False, note=f"{len(ids)} of {total} comments arrived")
    return ChildRecords(records)


def _day(value: Any) -> str | None:
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else None


def _comment_text(r: Mapping[str, Any]) -> str:
    head = f"Comment on {r['issue_key']}"
    if r.get("issue_type"):
        head += f" ({r['issue_type']})"
    head += f" by {r.get('author') or parsers.DELETED_AUTHOR}"
    if _day(r.get("created")):
        head += f" on {_day(r.get('created'))}"
    return _join(head + ":", r.get("body"))


def _links_text(r: Mapping[str, Any]) -> str | None:
    links = r.get("links") or []
    if not links:
        return None
    return "\n".join(f"{link['relation'].capitalize()}: {link['key']}" for link in links)


def _links_payload(r: Mapping[str, Any]) -> dict[str, Any]:
    links = [link for link in (r.get("links") or []) if isinstance(link, dict)]
    parent = next((link["key"] for link in links if link.get("relation") in ("parent", "epic")), None)
    return {
        "parent_key": parent or r.get("parent_key"),
        "subtask_keys": [link["key"] for link in links if link.get("relation") == "sub-task"],
        "linked_keys": [link["key"] for link in links if link.get("relation") not in ("parent", "epic", "sub-task")],
    }


def _custom_text(r: Mapping[str, Any], exclude: Collection[str] = ()) -> str | None:
    fields = r.get("custom_fields") or {}
    lines = [f"{name}: {v['text']}" for name, v in fields.items() if isinstance(v, dict) and name not in exclude]
    return "\n".join(lines) or None


def _custom_payload(r: Mapping[str, Any]) -> dict[str, Any]:
    fields = r.get("custom_fields") or {}
    return {
        custom_fields.slug(name): v["value"]
        for name, v in fields.items()
        if isinstance(v, dict) and v.get("value") is not None
    }


def _issue_sections(r: Mapping[str, Any]) -> list[str]:
    """An issue's text in the parts chunked apart (``EntitySpec.sections``): its key, summary,
    fields, the custom fields that hold a value (not prose), links, attachments and description;
    then each rich-text custom field (an ADF text area such as "Root cause"); then its history digest.

    A root cause or a reopening is one line about something else than the description it would
    share a chunk with, and an embedding of that chunk averages it away: on the sample site the
    queries only those lines answer found their issue in the top five about one time in three
    (dense). Each part of its own, they are embedded as they read.
    """
    fields = r.get("custom_fields") or {}
    rich = [name for name, v in fields.items() if isinstance(v, dict) and v.get("rich")]
    main = _join(
        f"{r['key']}: {r['summary']}",
        _line("Project", r.get("project_key")),
        _line("Type", r.get("wit_name")),
        _line("Status", r.get("status_name")),
        _line("Priority", r.get("priority")),
        _line("Labels", r.get("labels")),
        _line("Components", r.get("components")),
        _line("Resolution", r.get("resolution")),
        _custom_text(r, exclude=rich),
        _links_text(r),
        _attachments_text(r),
        r.get("description"),
    )
    parts = [main, *(f"{name}: {fields[name]['text']}" for name in rich)]
    if r.get("history"):
        parts.append("History:\n" + r["history"])
    return parts


def _attachments_text(r: Mapping[str, Any]) -> str | None:
    items = r.get("attachments") or []
    if not items:
        return None
    return "Attachments: " + ", ".join(f"{a['name']} ({a['type']})" for a in items)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


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

COMMENTS = EntitySpec(
    source="jira",
    name="comments",
    item="comment",
    title="Jira issue comments",
    endpoint="GET /rest/api/3/issue/{issueIdOrKey}/comment (and the issues' comment field)",
    table=tables.comments,
    parse=parsers.parse_comment,
    fetch=lambda client, req: iter(()),  # fetched with their issues
    records=lambda data: [],
    text=_comment_text,
    payload=lambda r: {
        "key": r["issue_key"],
        "issue_id": r["issue_external_id"],
        "comment_id": r["external_id"],
        "project_key": r.get("project_key"),
        "type": r.get("issue_type"),
        "author": r.get("author"),
        "created": _iso(r.get("created")),
        "updated": _iso(r.get("updated")),
    },
    payload_indexes={
        "key": "keyword",
        "issue_id": "keyword",
        "project_key": "keyword",
        "type": "keyword",
        "updated": "datetime",
    },
    parent="issues",
    # A restricted comment (visibility: a role or group) is indexed like any other: its access
    # list is its audience within the issue's, so only they find it.
    access=lambda conn, tenant_id, ids: permission_tables.access_of(conn, tenant_id, "comment", ids),
)

COMMENTS_OF_ISSUES = ChildLink(
    spec=COMMENTS,
    parent_column="issue_external_id",
    extract=_issue_comments,
    page=_comment_page,
    inherit=lambda row: {
        "issue_key": row["key"],
        "project_key": row.get("project_key"),
        "issue_type": row.get("wit_name"),
    },
    incomplete_column="comments_incomplete",
)

ISSUES = EntitySpec(
    source="jira",
    name="issues",
    work_item=True,
    item="issue",
    title="Jira issues (work items)",
    endpoint="POST /rest/api/3/search/jql",
    table=tables.issues,
    parse=parsers.parse_issue,
    fetch=_fetch_issues,
    records=_issues_named,
    page_records=_issue_records,
    text=lambda r: "\n\n".join(_issue_sections(r)),
    sections=_issue_sections,
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
        "resolved_at": _iso(r.get("resolved_at")),
        "status_changed_at": _iso(r.get("status_changed_at")),
        **_links_payload(r),
        **_custom_payload(r),
    },
    references=(
        ("project_external_id", "projects"),
        ("wit_external_id", "wits"),
        ("status_external_id", "statuses"),
    ),
    # Its configured custom fields' single values (cf_<name>), indexed by their schema type.
    row_filters=lambda r: custom_fields.filter_fields(r.get("custom_fields")),
    payload_indexes={
        "key": "keyword",
        "project_key": "keyword",
        "type": "keyword",
        "status": "keyword",
        "status_category": "keyword",
        "priority": "keyword",
        "labels": "keyword",
        "updated": "datetime",
        "parent_key": "keyword",
        "resolved_at": "datetime",
        "status_changed_at": "datetime",
    },
    incremental=True,
    access=lambda conn, tenant_id, ids: permission_tables.access_of(conn, tenant_id, "issue", ids),
    annotations=(parsers.ACCESS_FIELDS_KEY,),
    newest_change=newest_change,
    live_estimate=approximate_count,
    version=lambda record: (
        parsers.parse_jira_datetime((record.get("fields") or {}).get("updated"))
        if isinstance(record, dict) and isinstance(record.get("fields"), dict)
        else None
    ),
    children=(COMMENTS_OF_ISSUES,),
    parts=(PagedPart(page=_changechangelogpage, merge=_merge_changelog, incomplete_column="history_incomplete"),),
    fan_out=FanOut(
        list_ids=_fan_out_ids,
        begin=_fan_out_begin,
        fetch=_bulk_fetch,
        chunk=BULKFETCH_MAX,
        catch_up=_fan_out_catch_up,
    ),
)

SPECS: tuple[EntitySpec, ...] = (PROJECTS, WITS, STATUSES, ISSUES, COMMENTS)
