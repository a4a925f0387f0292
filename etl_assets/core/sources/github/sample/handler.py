"""A fake GitHub REST v3 API over a :class:`GitHubSite`, in process.

:class:`GitHubSiteHandler` answers the endpoints the sync uses with GitHub's response shapes
(as in GitHub's published OpenAPI description: ``issue``, ``pull-request-simple``,
``issue-comment``, ``pull-request-review-comment``, ``minimal-repository``), its paging
(``page``/``per_page`` up to 100, a ``Link`` header with ``next`` and ``last``), its
conditional requests (``ETag``; ``If-None-Match`` → 304, which does not count against the rate
limit), its rate-limit headers, and a 301 to ``/repositories/{id}/…`` for a renamed
repository. It speaks plain (method, path, query, headers) so that :func:`sample_transport`
(an ``httpx.MockTransport``) and the loopback server of the tests
(``etl_assets.fakes.github_server``) can both put it on the wire.

Served: ``GET /orgs/{org}/repos``, ``GET /repos/{o}/{r}``, ``GET /repos/{o}/{r}/issues``,
``/pulls``, ``/issues/comments``, ``/pulls/comments``, the same under ``/repositories/{id}``,
and ``GET /rate_limit``. Everything else is a 404.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from etl_assets.core.sources.github.sample.site import Comment, GitHubSite, Item, Repo

__all__ = ["GitHubSiteHandler", "sample_transport"]

_JSON = "application/json; charset=utf-8"
_DOCS = "https://docs.github.com/rest"


def _ts(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _user(login: str) -> dict[str, Any]:
    return {"login": login, "id": sum(map(ord, login)) * 97, "type": "User", "site_admin": False}


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class GitHubSiteHandler:
    site: GitHubSite
    rate_limit: int = 5000
    reset_epoch: int = 4_102_444_800  # far ahead: the demo never runs out
    remaining: int = 5000
    requests: int = 0
    not_modified: int = 0

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], base: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request; ``base`` is the API root as the client sees it (for URLs in bodies)."""
        self.requests += 1
        try:
            if method != "GET":
                raise _HttpError(404, "Not Found")
            body, link = self._dispatch(path.rstrip("/") or "/", query, base)
        except _HttpError as exc:
            payload = json.dumps({"message": exc.message, "documentation_url": _DOCS}).encode()
            self.remaining = max(0, self.remaining - 1)
            return exc.status, {"content-type": _JSON, **self._limits(), **exc.headers}, payload
        data = json.dumps(body, separators=(",", ":")).encode()
        etag = 'W/"' + hashlib.sha256(data).hexdigest()[:40] + '"'
        out = {"content-type": _JSON, "etag": etag}
        if link:
            out["link"] = link
        asked = headers.get("if-none-match")
        if asked is not None and etag in (t.strip() for t in asked.split(",")):
            self.not_modified += 1
            return 304, {**out, **self._limits()}, b""  # free: the remaining count does not move
        self.remaining = max(0, self.remaining - 1)
        return 200, {**out, **self._limits()}, data

    def _limits(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-used": str(self.rate_limit - self.remaining),
            "x-ratelimit-reset": str(self.reset_epoch),
            "x-ratelimit-resource": "core",
        }

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self, path: str, query: dict[str, str], base: str) -> tuple[Any, str | None]:
        parts = path.strip("/").split("/")
        if parts == ["rate_limit"]:
            return {"resources": {"core": {"limit": self.rate_limit, "remaining": self.remaining}}}, None
        if len(parts) == 3 and parts[0] == "orgs" and parts[2] == "repos":
            if parts[1].lower() != self.site.org.lower():
                raise _HttpError(404, "Not Found")
            repos = sorted((r for r in self.site.repos.values() if r.visible), key=lambda r: r.full_name.lower())
            return self._paged(path, query, base, [self._repo(r, base) for r in repos])
        if len(parts) >= 3 and parts[0] == "repos":
            repo, moved = self.site.repo_by_name(f"{parts[1]}/{parts[2]}")
            if repo is None or not repo.visible:
                raise _HttpError(404, "Not Found")
            if moved:
                rest = "/".join(parts[3:])
                target = f"{base}/repositories/{repo.id}" + (f"/{rest}" if rest else "")
                target += f"?{urlencode(query)}" if query else ""
                raise _HttpError(301, "Moved Permanently", {"location": target})
            return self._repo_route(repo, parts[3:], path, query, base)
        if len(parts) >= 2 and parts[0] == "repositories" and parts[1].isdigit():
            found = self.site.repos.get(int(parts[1]))
            if found is None or not found.visible:
                raise _HttpError(404, "Not Found")
            return self._repo_route(found, parts[2:], path, query, base)
        raise _HttpError(404, "Not Found")

    def _repo_route(
        self, repo: Repo, rest: list[str], path: str, query: dict[str, str], base: str
    ) -> tuple[Any, str | None]:
        if not rest:
            return self._repo(repo, base), None
        items = [i for i in self.site.items.values() if i.repo_id == repo.id]
        if rest == ["issues"]:
            state = _choice(query, "state", ("open", "closed", "all"), "open")
            chosen = [i for i in items if state == "all" or i.state == state]
            chosen = self._since_sorted(chosen, query, ("created", "updated", "comments"))
            return self._paged(path, query, base, [self._issue(i, repo, base) for i in chosen])
        if rest == ["pulls"]:
            state = _choice(query, "state", ("open", "closed", "all"), "open")
            prs = [i for i in items if i.is_pr and (state == "all" or i.state == state)]
            sort = _choice(query, "sort", ("created", "updated", "popularity", "long-running"), "created")
            default = "desc" if sort in ("created", "updated") else "asc"
            desc = _choice(query, "direction", ("asc", "desc"), default) == "desc"
            prs.sort(key=lambda i: (i.updated if sort == "updated" else i.created, i.id), reverse=desc)
            return self._paged(path, query, base, [self._pull(i, repo, base) for i in prs])
        if rest in (["issues", "comments"], ["pulls", "comments"]):
            review = rest[0] == "pulls"
            comments = [c for c in self.site.comments.values() if c.repo_id == repo.id and c.review == review]
            comments = self._since_sorted(comments, query, ("created", "updated"), default_sort="created", asc=True)
            render = self._review_comment if review else self._issue_comment
            return self._paged(path, query, base, [render(c, repo, base) for c in comments])
        raise _HttpError(404, "Not Found")

    @staticmethod
    def _since_sorted(
        rows: list[Any],
        query: dict[str, str],
        sorts: tuple[str, ...],
        *,
        default_sort: str = "created",
        asc: bool = False,
    ) -> list[Any]:
        since = query.get("since")
        if since:
            try:
                cutoff = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                raise _HttpError(422, f"Invalid value for parameter 'since': {since!r}") from None
            rows = [r for r in rows if r.updated >= cutoff]
        sort = _choice(query, "sort", sorts, default_sort)
        desc = _choice(query, "direction", ("asc", "desc"), "asc" if asc else "desc") == "desc"
        key: Callable[[Any], Any] = {
            "created": lambda r: (r.created, r.id),
            "updated": lambda r: (r.updated, r.id),
            "comments": lambda r: (getattr(r, "comments", 0), r.id),
        }[sort]
        return sorted(rows, key=key, reverse=desc)

    def _paged(self, path: str, query: dict[str, str], base: str, rows: list[Any]) -> tuple[Any, str | None]:
        per_page = max(1, min(_int(query, "per_page", 30), 100))
        page = max(1, _int(query, "page", 1))
        last = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page : page * per_page]

        def link(n: int) -> str:
            return f"{base}{path}?{urlencode({**query, 'page': n})}"

        rels = []
        if page < last:
            rels += [f'<{link(page + 1)}>; rel="next"', f'<{link(last)}>; rel="last"']
        if page > 1:
            rels += [f'<{link(1)}>; rel="first"', f'<{link(page - 1)}>; rel="prev"']
        return chunk, ", ".join(rels) or None

    # -- shapes ----------------------------------------------------------------------------

    def _repo(self, r: Repo, base: str) -> dict[str, Any]:
        return {
            "id": r.id,
            "node_id": f"R_{r.id}",
            "name": r.name,
            "full_name": r.full_name,
            "private": r.private,
            "owner": {**_user(r.owner), "type": "Organization"},
            "html_url": f"https://github.com/{r.full_name}",
            "description": r.description,
            "fork": False,
            "url": f"{base}/repos/{r.full_name}",
            "created_at": _ts(r.created),
            "updated_at": _ts(r.updated),
            "pushed_at": _ts(r.updated),
            "language": r.language,
            "archived": r.archived,
            "disabled": False,
            "visibility": "private" if r.private else "public",
            "topics": r.topics,
            "default_branch": "main",
        }

    def _labels(self, names: list[str]) -> list[dict[str, Any]]:
        return [
            {"id": 900 + sum(map(ord, n)), "name": n, "color": "d73a4a", "default": False, "description": None}
            for n in names
        ]

    def _milestone(self, title: str | None) -> dict[str, Any] | None:
        if title is None:
            return None
        number = 1 if title == "v1.0" else 2
        return {"id": 7000 + number, "number": number, "title": title, "state": "open", "description": None}

    def _issue(self, i: Item, r: Repo, base: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": i.id,
            "node_id": f"I_{i.id}",
            "url": f"{base}/repos/{r.full_name}/issues/{i.number}",
            "repository_url": f"{base}/repos/{r.full_name}",
            "html_url": f"https://github.com/{r.full_name}/{'pull' if i.is_pr else 'issues'}/{i.number}",
            "number": i.number,
            "state": i.state,
            "state_reason": i.state_reason,
            "title": i.title,
            "body": i.body,
            "user": _user(i.user),
            "labels": self._labels(i.labels),
            "assignee": _user(i.assignees[0]) if i.assignees else None,
            "assignees": [_user(a) for a in i.assignees],
            "milestone": self._milestone(i.milestone),
            "locked": i.locked,
            "active_lock_reason": i.lock_reason,
            "comments": i.comments,
            "created_at": _ts(i.created),
            "updated_at": _ts(i.updated),
            "closed_at": _ts(i.closed),
            "author_association": "MEMBER",
        }
        if i.is_pr:
            out["pull_request"] = {
                "url": f"{base}/repos/{r.full_name}/pulls/{i.number}",
                "html_url": f"https://github.com/{r.full_name}/pull/{i.number}",
                "diff_url": f"https://github.com/{r.full_name}/pull/{i.number}.diff",
                "patch_url": f"https://github.com/{r.full_name}/pull/{i.number}.patch",
                "merged_at": _ts(i.merged),
            }
        return out

    def _pull(self, i: Item, r: Repo, base: str) -> dict[str, Any]:
        sha = hashlib.sha1(f"{i.id}".encode()).hexdigest()  # noqa: S324 - a fake commit id
        repo_ref = {"id": r.id, "name": r.name, "full_name": r.full_name, "url": f"{base}/repos/{r.full_name}"}
        return {
            "id": i.pr_id,
            "node_id": f"PR_{i.pr_id}",
            "url": f"{base}/repos/{r.full_name}/pulls/{i.number}",
            "html_url": f"https://github.com/{r.full_name}/pull/{i.number}",
            "issue_url": f"{base}/repos/{r.full_name}/issues/{i.number}",
            "number": i.number,
            "state": i.state,
            "locked": i.locked,
            "title": i.title,
            "user": _user(i.user),
            "body": i.body,
            "labels": self._labels(i.labels),
            "milestone": self._milestone(i.milestone),
            "active_lock_reason": i.lock_reason,
            "created_at": _ts(i.created),
            "updated_at": _ts(i.updated),
            "closed_at": _ts(i.closed),
            "merged_at": _ts(i.merged),
            "merge_commit_sha": sha if i.merged else None,
            "assignee": _user(i.assignees[0]) if i.assignees else None,
            "assignees": [_user(a) for a in i.assignees],
            "draft": i.draft,
            "head": {"label": f"{r.owner}:{i.head}", "ref": i.head, "sha": sha, "repo": repo_ref},
            "base": {"label": f"{r.owner}:{i.base}", "ref": i.base, "sha": sha[::-1], "repo": repo_ref},
            "author_association": "MEMBER",
        }

    def _issue_comment(self, c: Comment, r: Repo, base: str) -> dict[str, Any]:
        return {
            "id": c.id,
            "node_id": f"IC_{c.id}",
            "url": f"{base}/repos/{r.full_name}/issues/comments/{c.id}",
            "html_url": f"https://github.com/{r.full_name}/issues/{c.number}#issuecomment-{c.id}",
            "body": c.body,
            "user": _user(c.user),
            "created_at": _ts(c.created),
            "updated_at": _ts(c.updated),
            "issue_url": f"{base}/repos/{r.full_name}/issues/{c.number}",
            "author_association": "MEMBER",
        }

    def _review_comment(self, c: Comment, r: Repo, base: str) -> dict[str, Any]:
        return {
            "url": f"{base}/repos/{r.full_name}/pulls/comments/{c.id}",
            "pull_request_review_id": c.id + 1_000_000,
            "id": c.id,
            "node_id": f"PRRC_{c.id}",
            "diff_hunk": "@@ -1,3 +1,4 @@",
            "path": c.path,
            "commit_id": c.commit_id,
            "original_commit_id": c.commit_id,
            "user": _user(c.user),
            "body": c.body,
            "created_at": _ts(c.created),
            "updated_at": _ts(c.updated),
            "html_url": f"https://github.com/{r.full_name}/pull/{c.number}#discussion_r{c.id}",
            "pull_request_url": f"{base}/repos/{r.full_name}/pulls/{c.number}",
            "author_association": "MEMBER",
            "line": c.line,
            "side": "RIGHT",
        }


def _int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise _HttpError(422, f"Invalid value for parameter '{name}': {raw!r}") from None


def _choice(query: dict[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = query.get(name, default)
    if value not in allowed:
        raise _HttpError(422, f"Invalid value for parameter '{name}': {value!r}, allowed: {', '.join(allowed)}")
    return value


def sample_transport(site: GitHubSite) -> httpx.MockTransport:
    """An httpx transport answering from :class:`GitHubSiteHandler` over ``site`` (the demo's ``sample://``)."""
    handler = GitHubSiteHandler(site)

    def respond(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
        query = dict(request.url.params.items())
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, out, body = handler.handle(request.method, request.url.path, query, headers, base)
        return httpx.Response(status, headers=out, content=body, request=request)

    return httpx.MockTransport(respond)
