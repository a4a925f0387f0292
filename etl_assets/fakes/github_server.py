"""A fake GitHub REST v3 server on loopback, for tests and benchmarks.

Wraps :class:`~etl_assets.core.sources.github.sample.GitHubSiteHandler` (the sample org's
handler: GitHub's response shapes, paging, ETags and rate-limit headers) in a
:class:`~etl_assets.fakes.loopback.LoopbackServer`, behind bearer-token authentication and an
optional path prefix (``/api/v3``, as on GitHub Enterprise Server). The generic faults of
the loopback server (429s, resets, truncations, delays) apply on top.

    site = generate_sample_org("acme")
    with GitHubServer(site, token="ghp_x", prefix="/api/v3") as gh:
        httpx.get(gh.api_url + "/orgs/acme/repos", headers={"Authorization": "Bearer ghp_x"})
"""

from __future__ import annotations

import collections
from typing import Any

from etl_assets.core.sources.github.sample import GitHubSite, GitHubSiteHandler
from etl_assets.fakes.loopback import Fault, LoopbackServer, Request, Response

__all__ = ["GitHubServer"]


class GitHubServer:
    """``site`` served on 127.0.0.1; ``requests``/``not_modified`` count what reached the handler."""

    def __init__(self, site: GitHubSite, *, token: str, prefix: str = "") -> None:
        self.site = site
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.handler = GitHubSiteHandler(site)
        self.seen: list[Request] = []
        self.server = LoopbackServer(self._handle)

    @property
    def api_url(self) -> str:
        """The API root to configure as ``github.url``."""
        return self.server.url + self.prefix

    def start(self) -> GitHubServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> GitHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def faults(self) -> collections.deque[Fault]:
        return self.server.faults

    def _handle(self, req: Request) -> Response:
        self.seen.append(req)
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return Response.json(
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, status=401
            )
        if not req.path.startswith(self.prefix + "/"):
            return Response.json({"message": "Not Found"}, status=404)
        status, headers, body = self.handler.handle(
            req.method, req.path[len(self.prefix) :], req.query, req.headers, self.api_url
        )
        return Response(status=status, headers=headers, body=body)


def expected_rows(site: GitHubSite, entity: str) -> dict[str, dict[str, Any]]:
    """GitHub id -> the columns its row must hold after a clean sync of an org-wide tenant of ``site``
    (what :func:`etl_assets.fakes.convergence.convergence_problems` compares the tables with)."""
    visible = {r.id: r for r in site.repos.values() if r.visible}
    if entity == "github_repositories":
        return {str(r.id): {"full_name": r.full_name, "private": r.private} for r in visible.values()}
    out: dict[str, dict[str, Any]] = {}
    if entity in ("github_issues", "github_pull_requests"):
        want_pr = entity == "github_pull_requests"
        for i in site.items.values():
            if i.repo_id in visible and i.is_pr == want_pr:
                out[str(i.pr_id if want_pr else i.id)] = {
                    "key": f"{visible[i.repo_id].full_name}#{i.number}",
                    "title": i.title,
                    "state": i.state,
                    "locked": i.locked,
                    "updated": i.updated,
                }
        return out
    want_review = entity == "github_review_comments"
    for c in site.comments.values():
        if c.repo_id in visible and c.review == want_review:
            out[str(c.id)] = {"key": f"{visible[c.repo_id].full_name}#{c.number}", "body": c.body, "updated": c.updated}
    return out
