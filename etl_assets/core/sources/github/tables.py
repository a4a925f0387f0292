"""GitHub's entity tables, declared on the shared schema metadata, and its HTTP cache.

Table names carry the source (``github_issues``) because entity names are global: they name
tables, collections (``client_<tenant>_github_issues``) and assets, and Jira has ``issues`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Connection, Index, Integer, String, Table, Text, and_, select

from etl_assets.core.permissions import PUBLIC, RESTRICTED
from etl_assets.core.store.schema import ID, TS, entity_table, metadata

_REPO = (Column("repo", String(300), nullable=False),)

repositories = entity_table(
    "github_repositories",
    Column("full_name", String(300), nullable=False),
    Column("name", String(200), nullable=False),
    Column("owner", String(200)),
    Column("description", Text),
    Column("visibility", String(32)),
    Column("private", Boolean),
    Column("archived", Boolean),
    Column("language", String(100)),
    Column("topics", JSON, nullable=False),
    Column("default_branch", String(300)),
    Column("url", String(2000)),
    Column("created", TS),
    Column("updated", TS),
)


def _issue_like(name: str, *extra: Column) -> Table:
    return entity_table(
        name,
        *(Column(c.name, c.type, nullable=c.nullable) for c in _REPO),
        Column("number", Integer, nullable=False),
        Column("key", String(400), nullable=False),  # owner/repo#number
        Column("title", String(2000), nullable=False),
        Column("body", Text),
        Column("state", String(32), nullable=False),
        Column("state_reason", String(64)),
        Column("locked", Boolean),
        Column("author", String(200)),
        Column("assignees", JSON, nullable=False),
        Column("labels", JSON, nullable=False),
        Column("milestone", String(1000)),
        Column("url", String(2000)),
        Column("created", TS),
        Column("closed", TS),
        *extra,
        Column("updated", TS, nullable=False),
    )


issues = _issue_like("github_issues", Column("comments", Integer))
pull_requests = _issue_like(
    "github_pull_requests",
    Column("draft", Boolean),
    Column("merged", TS),
    Column("base_ref", String(300)),
    Column("head_ref", String(300)),
)


def _comment(name: str, *extra: Column) -> Table:
    return entity_table(
        name,
        *(Column(c.name, c.type, nullable=c.nullable) for c in _REPO),
        Column("number", Integer, nullable=False),  # of the issue or pull request commented on
        Column("key", String(400), nullable=False),  # owner/repo#number
        Column("body", Text),
        Column("author", String(200)),
        Column("url", String(2000)),
        Column("created", TS),
        *extra,
        Column("updated", TS, nullable=False),
    )


issue_comments = _comment("github_issue_comments")
review_comments = _comment(
    "github_review_comments", Column("path", String(2000)), Column("commit_id", String(64)), Column("line", Integer)
)

# Conditional requests: the last ETag and body per request URL. A 304 answer (which does not count
# against GitHub's rate limit) is replayed from here, so a no-change sync lands the same pages a
# full one would, at almost no cost. One row per (tenant, sha256 of the URL with its query).
http_cache = Table(
    "github_http_cache",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("tenant_id", String(48), nullable=False),
    Column("url_hash", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("etag", String(300), nullable=False),
    Column("next_url", Text),
    Column("body", Text, nullable=False),
    Column("stored_at", TS, nullable=False),
    Index("ux_github_http_cache_key", "tenant_id", "url_hash", unique=True),
)


def repository_access(table: Table, repo_column: str = "repo") -> Any:
    """The access hook (``EntitySpec.access``) of a GitHub entity: who may see each row's points.

    A row of a **public** repository is public (anyone on the internet can read it); a row of a
    private or internal repository, or of one not synced, is for operators only
    (``restricted:unreadable``): repository collaborators and teams are not synced, and GitHub
    accounts are not Jira accounts, so nobody else can be named. A repository that changes
    visibility changes its rows' lists, and the vector step rewrites their payloads.
    """
    repos = repositories

    def access(conn: Connection, tenant_id: str, ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        # A repository's own row says its visibility; any other row's repository is joined.
        source: Any = (
            table
            if table is repos
            else table.outerjoin(
                repos,
                and_(
                    repos.c.tenant_id == table.c.tenant_id,
                    repos.c.full_name == table.c[repo_column],
                    repos.c.deleted_at.is_(None),
                ),
            )
        )
        out: dict[str, tuple[str, ...]] = {}
        for start in range(0, len(ids), 500):
            query = (
                select(table.c.external_id, repos.c.visibility, repos.c.private)
                .select_from(source)
                .where(table.c.tenant_id == tenant_id, table.c.external_id.in_(list(ids[start : start + 500])))
            )
            for external_id, visibility, private in conn.execute(query):
                public = visibility == "public" or (visibility is None and private is False)
                out[str(external_id)] = (PUBLIC,) if public else (RESTRICTED,)
        return out

    return access
