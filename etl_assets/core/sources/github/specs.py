"""GitHub's entity specs: repositories, issues, pull requests, issue comments, review comments.

Every entity is listed per repository of the tenant (its ``org``'s repositories and/or the
``repos`` it names). Issues, pull requests and both kinds of comments are incremental: they
are asked for with ``since`` (pull requests, whose listing has no ``since``, newest first until
older than it). GitHub has no deletion feed and no cheap id listing, so reconciliation lists
everything again — through the ETag cache, where an unchanged page is a free 304 — and applies
it in full (``reconcile_in_full``): an issue deleted or transferred away, a repository renamed
or no longer visible, all converge at that listing.

``/repos/{o}/{r}/issues`` returns pull requests too (items with a ``pull_request`` member);
the issues entity drops them and the pull-requests entity reads ``/pulls``, which has the
merge, draft and branch fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etl_assets.core.records import EntitySpec, FetchRequest, RawPage
from etl_assets.core.sources.github import parsers, tables
from etl_assets.core.sources.github.client import GitHubClient, GitHubNotFound

if TYPE_CHECKING:
    from etl_assets.core.tenants import Tenant

log = logging.getLogger(__name__)


def _since(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _per_page(req: FetchRequest) -> int:
    return max(1, min(req.page_size, 100))


def _repository_pages(client: GitHubClient, tenant: Tenant, per_page: int = 100) -> Iterator[RawPage]:
    config = tenant.section("github")
    if config is None:
        return
    if config.org:
        yield from client.pages(f"/orgs/{config.org}/repos", {"type": "all", "sort": "full_name", "per_page": per_page})
    for full_name in config.repos:
        try:
            page, _ = client.get(f"/repos/{full_name}")
        except GitHubNotFound:
            # Gone, or no longer visible to the token (made private): its rows leave at the listing.
            log.warning("tenant %r: GitHub repository %s is not found or not visible; skipped", tenant.id, full_name)
            continue
        yield page


def _repositories(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    return [data] if isinstance(data, dict) and "id" in data else []


def repo_names(client: GitHubClient, tenant: Tenant) -> list[str]:
    """The tenant's repositories' current ``owner/repo`` names, each once (renames already applied)."""
    names: dict[str, str] = {}
    for page in _repository_pages(client, tenant):
        for repo in _repositories(page.json()):
            name = repo.get("full_name") if isinstance(repo, dict) else None
            if isinstance(name, str) and name:
                names.setdefault(name.lower(), name)
    return list(names.values())


def _per_repo(
    client: GitHubClient, tenant: Tenant, path: str, params: dict[str, Any]
) -> Iterator[tuple[str, Iterator[RawPage]]]:
    for repo in repo_names(client, tenant):
        yield repo, client.pages(f"/repos/{repo}/{path}", params)


def _listing(path: str, *, has_since: bool = True) -> Callable[[GitHubClient, FetchRequest], Iterator[RawPage]]:
    def fetch(client: GitHubClient, req: FetchRequest) -> Iterator[RawPage]:
        params: dict[str, Any] = {"sort": "updated", "per_page": _per_page(req)}
        if path == "issues":
            params["state"] = "all"
        since = None if req.ids_only else req.since
        if has_since:
            params["direction"] = "asc"
            if since is not None:
                params["since"] = _since(since)
        else:  # /pulls has no since: newest first, until a page reaches back past it
            params |= {"state": "all", "direction": "desc"}
        for repo, pages in _per_repo(client, req.tenant, path, params):
            try:
                for page in pages:
                    yield page
                    if not has_since and since is not None:
                        items = page.json()
                        oldest = parsers.updated_at(items[-1]) if isinstance(items, list) and items else None
                        if oldest is None or oldest < since:
                            break
            except GitHubNotFound:
                log.warning("tenant %r: GitHub repository %s vanished during the listing; skipped", req.tenant.id, repo)

    return fetch


def _fetch_repositories(client: GitHubClient, req: FetchRequest) -> Iterator[RawPage]:
    yield from _repository_pages(client, req.tenant, _per_page(req))


def _items(data: Any) -> list[Any]:
    return data if isinstance(data, list) else []


def _issues_only(data: Any) -> list[Any]:
    # The issues listing holds pull requests too; they are the pull-requests entity's.
    return [i for i in _items(data) if not (isinstance(i, dict) and i.get("pull_request") is not None)]


def newest_issue_change(client: GitHubClient, tenant: Tenant, since: datetime) -> datetime | None:
    """The newest issue change at or after ``since``: one request per repository (a free 304 when
    nothing changed since the last probe)."""
    newest: datetime | None = None
    per_page = 100
    for repo in repo_names(client, tenant):
        params = {"state": "all", "sort": "updated", "direction": "desc", "per_page": per_page, "since": _since(since)}
        try:
            page, _ = client.get(f"/repos/{repo}/issues", params)
        except GitHubNotFound:
            continue
        items = _items(page.json())
        # Pull requests come in this listing too but are not this entity's: a page of nothing else
        # cannot tell, so it counts as a change (a cheap run) rather than hide one.
        wanted = _issues_only(items) or (items if len(items) >= per_page else [])
        for item in wanted:
            changed = parsers.updated_at(item)
            if changed is not None and (newest is None or changed > newest):
                newest = changed
    return newest


def _join(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


def _line(label: str, value: Any) -> str | None:
    if value in (None, "", []):
        return None
    return f"{label}: {', '.join(map(str, value)) if isinstance(value, list) else value}"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _issue_payload(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": r["key"],
        "title": r["title"],
        "repo": r["repo"],
        "number": r["number"],
        "state": r["state"],
        "state_reason": r.get("state_reason"),
        "locked": r.get("locked"),
        "author": r.get("author"),
        "assignees": list(r.get("assignees") or []),
        "labels": list(r.get("labels") or []),
        "milestone": r.get("milestone"),
        "url": r.get("url"),
    }


# Every payload field is said in the text too: the vector engine rewrites a point only when its
# text changes, so a field outside the text (a timestamp, say) would go stale in the payload.
def _issue_text(kind: str) -> Callable[[Mapping[str, Any]], str]:
    def text(r: Mapping[str, Any]) -> str:
        return _join(
            f"{r['key']}: {r['title']}",
            _line("Type", kind),
            _line("State", " ".join(str(v) for v in (r.get("state"), r.get("state_reason")) if v)),
            "Conversation locked" if r.get("locked") else None,
            "Draft" if r.get("draft") else None,
            _line("Merged", _iso(r.get("merged"))),
            _line("Labels", r.get("labels")),
            _line("Milestone", r.get("milestone")),
            _line("Author", r.get("author")),
            _line("Assignees", r.get("assignees")),
            "",
            r.get("body"),
        )

    return text


def _comment_text(kind: str) -> Callable[[Mapping[str, Any]], str]:
    def text(r: Mapping[str, Any]) -> str:
        return _join(
            f"{kind} on {r['key']}", _line("Author", r.get("author")), _line("File", r.get("path")), "", r.get("body")
        )

    return text


def _comment_payload(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": r["key"],
        "repo": r["repo"],
        "number": r["number"],
        "author": r.get("author"),
        "path": r.get("path"),
        "url": r.get("url"),
    }


_ISSUE_INDEXES = {
    "key": "keyword",
    "repo": "keyword",
    "state": "keyword",
    "labels": "keyword",
    "milestone": "keyword",
    "author": "keyword",
}
_COMMENT_INDEXES = {"key": "keyword", "repo": "keyword", "author": "keyword"}

REPOSITORIES = EntitySpec(
    source="github",
    name="github_repositories",
    item="repository",
    title="GitHub repositories",
    endpoint="GET /orgs/{org}/repos, GET /repos/{owner}/{repo}",
    table=tables.repositories,
    parse=parsers.parse_repository,
    fetch=_fetch_repositories,
    records=_repositories,
    text=lambda r: _join(
        f"Repository {r['full_name']}",
        _line("Language", r.get("language")),
        _line("Topics", r.get("topics")),
        _line("Visibility", r.get("visibility")),
        "Archived" if r.get("archived") else None,
        r.get("description"),
    ),
    payload=lambda r: {
        "key": r["full_name"],
        "title": r["full_name"],
        "repo": r["full_name"],
        "visibility": r.get("visibility"),
        "archived": r.get("archived"),
        "language": r.get("language"),
        "url": r.get("url"),
    },
    payload_indexes={"key": "keyword", "repo": "keyword", "visibility": "keyword"},
    access=tables.repository_access(tables.repositories, "full_name"),
)

ISSUES = EntitySpec(
    source="github",
    name="github_issues",
    work_item=True,
    item="github issue",
    title="GitHub issues",
    endpoint="GET /repos/{owner}/{repo}/issues",
    table=tables.issues,
    access=tables.repository_access(tables.issues),
    parse=parsers.parse_issue,
    fetch=_listing("issues"),
    records=_issues_only,
    text=_issue_text("issue"),
    payload=_issue_payload,
    payload_indexes=_ISSUE_INDEXES,
    incremental=True,
    reconcile_in_full=True,
    version=parsers.updated_at,
    newest_change=newest_issue_change,
)

PULL_REQUESTS = EntitySpec(
    source="github",
    name="github_pull_requests",
    work_item=True,
    item="pull request",
    title="GitHub pull requests",
    endpoint="GET /repos/{owner}/{repo}/pulls",
    table=tables.pull_requests,
    access=tables.repository_access(tables.pull_requests),
    parse=parsers.parse_pull_request,
    fetch=_listing("pulls", has_since=False),
    records=_items,
    text=_issue_text("pull request"),
    payload=lambda r: {**_issue_payload(r), "draft": r.get("draft"), "merged": _iso(r.get("merged"))},
    payload_indexes=_ISSUE_INDEXES,
    incremental=True,
    reconcile_in_full=True,
    version=parsers.updated_at,
)

ISSUE_COMMENTS = EntitySpec(
    source="github",
    name="github_issue_comments",
    item="issue comment",
    title="GitHub issue and pull-request conversation comments",
    endpoint="GET /repos/{owner}/{repo}/issues/comments",
    table=tables.issue_comments,
    access=tables.repository_access(tables.issue_comments),
    parse=parsers.parse_issue_comment,
    fetch=_listing("issues/comments"),
    records=_items,
    text=_comment_text("Comment"),
    payload=_comment_payload,
    payload_indexes=_COMMENT_INDEXES,
    incremental=True,
    reconcile_in_full=True,
    version=parsers.updated_at,
)

REVIEW_COMMENTS = EntitySpec(
    source="github",
    name="github_review_comments",
    item="review comment",
    title="GitHub pull-request review comments",
    endpoint="GET /repos/{owner}/{repo}/pulls/comments",
    table=tables.review_comments,
    access=tables.repository_access(tables.review_comments),
    parse=parsers.parse_review_comment,
    fetch=_listing("pulls/comments"),
    records=_items,
    text=_comment_text("Review comment"),
    payload=_comment_payload,
    payload_indexes=_COMMENT_INDEXES,
    incremental=True,
    reconcile_in_full=True,
    version=parsers.updated_at,
)

SPECS: tuple[EntitySpec, ...] = (REPOSITORIES, ISSUES, PULL_REQUESTS, ISSUE_COMMENTS, REVIEW_COMMENTS)
