"""Search over a tenant's index and its committed tables: the Dagster-free API that the CLI,
the MCP server (``etl_assets.mcp_server``) and tests call.

Two layers:

- :func:`search` — one ranked query over one tenant's collection, on clients the caller
  opened (the CLI and the retrieval evaluation use it).
- :class:`SearchService` — what a long-running server holds: the Qdrant client, the embedder
  and a database engine, opened once (:meth:`SearchService.open`, an async context manager
  that closes them in the loop that opened them) and the typed operations on top —
  :meth:`~SearchService.search_issues`, :meth:`~SearchService.get_issue`,
  :meth:`~SearchService.list_projects`, :meth:`~SearchService.list_tenants`. Every operation
  runs as a :class:`Principal`; a tenant outside the principal's set is answered exactly like
  a tenant that does not exist.

Errors a caller can act on are :class:`SearchError` (a sentence naming what to change, never
a secret or a traceback); anything else is a bug or an outage of a backing service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from qdrant_client import AsyncQdrantClient, models
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.core.catalogue import BY_NAME
from etl_assets.core.embeddings.base import Embedder, ModelMismatchError
from etl_assets.core.settings import Settings
from etl_assets.core.tenants import Tenant, TenantRegistry
from etl_assets.core.vectorstore import BASE_PAYLOAD_INDEXES, collection_name, payload_schema

T = TypeVar("T")

ISSUES = "issues"
COMMENTS = "comments"
PROJECTS = "projects"
STATUS_CATEGORIES = ("new", "indeterminate", "done")
StatusCategory = Literal["new", "indeterminate", "done"]
# A collection's model is checked again after this long: a collection can be rebuilt with
# another model while a server runs, and one lookup per query would double a server's round trips.
MODEL_CHECK_TTL_S = 60.0
# An assignee filter resolves to the ids of that person's issues (the points carry no assignee
# yet); beyond this many the filter would be a very large request, so the caller must narrow it.
MAX_ASSIGNEE_IDS = 10_000
PASSAGE_CHARS = 600


class SearchMode(StrEnum):
    """How ``search_issues`` ranks. Only dense retrieval exists today; hybrid (BM25 + dense) is
    planned and will be a new member, so callers that name a mode keep working."""

    DENSE = "dense"


# -- who is asking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who a call runs as, and the tenants they may use.

    ``id`` is carried into every operation so that per-issue permission filtering (a later
    issue) can be applied inside the vector store's filter; today access is per tenant.
    """

    id: str
    tenants: frozenset[str]


# -- errors a caller can act on ----------------------------------------------------------------------


class SearchError(Exception):
    """A request the service refuses or cannot answer. The message says what to do instead and
    is safe to show the caller: no secret, no internal detail."""


class UnknownTenantError(SearchError):
    """The tenant does not exist or the principal may not use it (the two are not told apart)."""


class InvalidRequestError(SearchError):
    """An argument is out of range or malformed."""


class NotFoundError(SearchError):
    """The issue (or other row) is not among the committed, live rows."""


class NotIndexedError(SearchError, LookupError):
    """The tenant's collection or tables are not built yet."""


class ModelMismatchSearchError(SearchError, ModelMismatchError):
    """The collection was built with another embedding model than the one configured."""


# -- results -----------------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class IssueHit(_Result):
    """One issue in a ranked answer: its best-matching chunk decides the score."""

    tenant: str
    key: str
    summary: str
    status: str | None = None
    status_category: str | None = None
    project: str | None = None
    issue_type: str | None = None
    updated: str | None = Field(default=None, description="last update, ISO 8601 UTC")
    url: str | None = Field(default=None, description="the issue in Jira")
    score: float = Field(description="cosine similarity of the best-matching passage, higher is better")
    passage: str = Field(description="the indexed text that matched best (shortened)")
    comment_author: str | None = Field(default=None, description="when a comment matched best: its author")
    comment_created: str | None = Field(default=None, description="when a comment matched best: when it was written")


class SearchResult(_Result):
    tenant: str
    mode: SearchMode
    hits: list[IssueHit]


class LinkedIssue(_Result):
    key: str
    relation: Literal["parent", "child"]
    summary: str | None = None
    status: str | None = None


class IssueDetail(_Result):
    """One committed issue as the tables hold it (not Jira live)."""

    tenant: str
    key: str
    summary: str
    description: str | None = None
    url: str | None = None
    project: str | None = None
    project_name: str | None = None
    issue_type: str | None = None
    status: str | None = None
    status_category: str | None = None
    priority: str | None = None
    resolution: str | None = None
    labels: list[str] = Field(default_factory=list)
    components: list[str] = Field(default_factory=list)
    assignee: str | None = None
    reporter: str | None = None
    created: str | None = None
    updated: str | None = None
    synced_at: str | None = Field(default=None, description="when this row was last committed from Jira")
    links: list[LinkedIssue] = Field(
        default_factory=list, description="parent and child issues; other issue links are not synced yet"
    )
    custom_fields: dict[str, Any] = Field(
        default_factory=dict, description="customfield_* values the sync fetched (none are fetched yet)"
    )
    comments: list[dict[str, Any]] = Field(
        default_factory=list, description="comments the sync fetched (not synced yet: always empty today)"
    )
    not_synced: list[str] = Field(default_factory=list, description="parts of a Jira issue the tables do not hold yet")


class ProjectInfo(_Result):
    key: str
    name: str
    description: str | None = None
    category: str | None = None
    project_type: str | None = None
    lead: str | None = None
    url: str | None = None
    issues: int = Field(description="live issues of the project in the tables")


class TenantInfo(_Result):
    id: str
    name: str
    site: str = Field(description="the Jira site the tenant's index is built from")


# -- filters -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssueFilters:
    """Narrowing of ``search_issues``; every field left None matches everything."""

    project: str | None = None
    issue_type: str | None = None
    status_category: StatusCategory | None = None
    assignee: str | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


def _match(key: str, value: Any) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def issue_filter(tenant_id: str, filters: IssueFilters, external_ids: Sequence[str] | None = None) -> models.Filter:
    """The Qdrant payload filter for ``filters`` within one tenant (plus resolved ``external_ids``)."""
    must: list[models.Condition] = [_match("tenant_id", tenant_id)]
    if filters.project:
        must.append(_match("project_key", filters.project))
    if filters.issue_type:
        must.append(_match("type", filters.issue_type))
    if filters.status_category:
        must.append(_match("status_category", filters.status_category))
    if filters.updated_after or filters.updated_before:
        must.append(
            models.FieldCondition(
                key="updated",
                range=models.DatetimeRange(
                    gte=_aware(filters.updated_after) if filters.updated_after else None,
                    lt=_aware(filters.updated_before) if filters.updated_before else None,
                ),
            )
        )
    if external_ids is not None:
        must.append(models.FieldCondition(key="external_id", match=models.MatchAny(any=list(external_ids))))
    # Where the permissions issue will add the principal's access condition (guarantee 4).
    return models.Filter(must=must)


# Payload fields the filters above use: created on a Qdrant server's collection when missing
# (local mode has no payload indexes). The schemas come from the entity spec where it names them.
FILTERED_FIELDS = ("tenant_id", "external_id", "project_key", "type", "status_category", "updated")


def _legacy_filter(tenant_id: str, project: str | None, status_category: str | None) -> models.Filter:
    return issue_filter(tenant_id, IssueFilters(project=project, status_category=status_category))  # type: ignore[arg-type]


# -- the one-shot search (CLI, evaluation) ---------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    score: float
    external_id: str
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.payload.get("key") or self.payload.get("name") or self.external_id)


async def _check_model(client: AsyncQdrantClient, embedder: Embedder, name: str, entity: str, tenant_id: str) -> None:
    if not await client.collection_exists(name):
        raise NotIndexedError(
            f"collection {name} does not exist yet: materialize vectors/{entity}_vectors for tenant {tenant_id}"
        )
    info = await client.get_collection(name)
    built_with = (info.config.metadata or {}).get("embedding_model")
    params = info.config.params.vectors
    size = params.size if isinstance(params, models.VectorParams) else None
    if built_with != embedder.model or size != embedder.dimensions:
        raise ModelMismatchSearchError(
            f"collection {name} was built with {built_with!r} ({size} dimensions) but the configured model is "
            f"{embedder.model!r} ({embedder.dimensions}); set EMBEDDING_PROVIDER/EMBEDDING_MODEL to match"
        )


async def _ranked(
    client: AsyncQdrantClient, name: str, vector: list[float], flt: models.Filter, k: int
) -> list[tuple[float, str, dict[str, Any]]]:
    # Long rows have several chunks: over-fetch, then keep each row's best chunk.
    response = await client.query_points(
        name, query=vector, limit=max(k * 4, k + 10), with_payload=True, query_filter=flt
    )
    best: dict[str, tuple[float, str, dict[str, Any]]] = {}
    for point in response.points:
        payload = point.payload or {}
        ext = str(payload.get("external_id"))
        if ext not in best or point.score > best[ext][0]:
            best[ext] = (point.score, ext, payload)
    return sorted(best.values(), key=lambda h: h[0], reverse=True)[:k]


async def search(
    client: AsyncQdrantClient,
    embedder: Embedder,
    query: str,
    *,
    tenant_id: str,
    entity: str = "issues",
    project: str | None = None,
    status_category: str | None = None,
    k: int = 10,
) -> list[Hit]:
    """Rank the tenant's rows of ``entity`` by similarity to ``query``; one hit per row.

    The query is embedded with the configured model, which must be the one the
    collection was built with — otherwise the scores would be meaningless
    (:class:`ModelMismatchError`); a missing collection is a :class:`LookupError`.
    """
    name = collection_name(tenant_id, entity)
    await _check_model(client, embedder, name, entity, tenant_id)
    [vector] = await embedder.embed([query])
    ranked = await _ranked(client, name, vector, _legacy_filter(tenant_id, project, status_category), k)
    return [Hit(score, ext, payload) for score, ext, payload in ranked]


# -- the service ---------------------------------------------------------------------------------------


def issue_url(tenant: Tenant, key: str) -> str:
    """The issue's page on the tenant's Jira site (``<site>/browse/<KEY>``)."""
    return f"{tenant.jira.url.rstrip('/')}/browse/{quote(key)}"


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return _aware(value).astimezone(UTC).isoformat()
    return str(value) if value is not None else None


def _passage(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= PASSAGE_CHARS else text[: PASSAGE_CHARS - 1].rstrip() + "…"


@dataclass
class SearchService:
    """The search API over open clients. Open it with :meth:`open` (or hand it clients you own)."""

    client: AsyncQdrantClient
    embedder: Embedder
    engine: Engine
    registry: TenantRegistry
    # On a Qdrant server the filters need payload indexes; local mode has none.
    server_mode: bool = False
    _checked: dict[str, float] = field(default_factory=dict, repr=False)
    _indexed: set[str] = field(default_factory=set, repr=False)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings | None = None, registry: TenantRegistry | None = None
    ) -> AsyncIterator[SearchService]:
        """Open the Qdrant client, the embedder and a database engine in the running loop; close
        all three on exit, in this loop (DESIGN.md, guarantee 2)."""
        from etl_assets.core.embeddings.factory import open_embedder
        from etl_assets.core.store.db import make_engine
        from etl_assets.core.vectorstore import open_qdrant

        settings = settings or Settings.load()
        registry = registry or TenantRegistry.load(settings.tenants_file)
        qd = settings.qdrant
        # A reader never migrates: the Dagster side owns the schema.
        engine = make_engine(settings.database, create=False)
        try:
            async with (
                open_embedder(settings.embedding) as embedder,
                open_qdrant(qd.url, qd.api_key, qd.path, lock_timeout_s=10.0) as client,
            ):
                # The tokenizer loads on first use (about a second): pay for it here, not in the first query.
                await asyncio.to_thread(embedder.count_tokens, "warm up")
                yield cls(client, embedder, engine, registry, server_mode=bool(qd.url))
        finally:
            engine.dispose()

    # -- tenants and principals --

    def _allowed(self, principal: Principal) -> list[Tenant]:
        return [t for t in self.registry.tenants if t.id in principal.tenants]

    def tenant_for(self, principal: Principal, tenant: str | None) -> Tenant:
        """The tenant a call means: the one named (if the principal may use it), or the
        principal's only tenant when none is named."""
        allowed = self._allowed(principal)
        known = ", ".join(t.id for t in allowed) or "none"
        if tenant is None:
            if len(allowed) == 1:
                return allowed[0]
            if not allowed:
                raise UnknownTenantError(f"principal {principal.id!r} may use no tenant; ask an operator")
            raise InvalidRequestError(f"name a tenant: this principal may use {known}")
        for t in allowed:
            if t.id == tenant:
                return t
        raise UnknownTenantError(f"tenant {tenant!r} unknown; known: {known}")

    def list_tenants(self, principal: Principal) -> list[TenantInfo]:
        """The tenants the principal may use, in registry order."""
        return [TenantInfo(id=t.id, name=t.name, site=t.jira.url) for t in self._allowed(principal)]

    # -- SQL, off the event loop --

    async def _sql(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except SQLAlchemyError as exc:
            # The driver's message may name the database host or user; the caller gets neither.
            raise NotIndexedError(
                f"the committed tables could not be read ({type(exc).__name__}); "
                "has the tenant been synced? an operator can check DATABASE_URL and the server log"
            ) from exc

    # -- search --

    async def _ready(self, name: str, tenant: Tenant) -> None:
        now = time.monotonic()
        if now - self._checked.get(name, -MODEL_CHECK_TTL_S) < MODEL_CHECK_TTL_S:
            return
        await _check_model(self.client, self.embedder, name, ISSUES, tenant.id)
        if self.server_mode and name not in self._indexed:
            await self.ensure_payload_indexes(name)
        self._checked[name] = now

    async def ensure_payload_indexes(self, name: str) -> list[str]:
        """Create the payload indexes the issue filters use where the collection lacks them
        (collections built before a field was indexed); returns the fields created."""
        info = await self.client.get_collection(name)
        present = set((info.payload_schema or {}).keys())
        kinds = {**BASE_PAYLOAD_INDEXES, **BY_NAME[ISSUES].payload_indexes}
        created = []
        for field_name in FILTERED_FIELDS:
            if field_name not in present:
                await self.client.create_payload_index(name, field_name, field_schema=payload_schema(kinds[field_name]))
                created.append(field_name)
        self._indexed.add(name)
        return created

    def _ids_assigned_to(self, tenant_id: str, assignee: str, project: str | None) -> list[str]:
        table = BY_NAME[ISSUES].table
        query = select(table.c.external_id).where(
            table.c.tenant_id == tenant_id,
            table.c.deleted_at.is_(None),
            func.lower(table.c.assignee) == assignee.strip().lower(),
        )
        if project:
            query = query.where(table.c.project_key == project)
        with self.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(query.limit(MAX_ASSIGNEE_IDS + 1))]

    async def search_issues(
        self,
        principal: Principal,
        query: str,
        *,
        tenant: str | None = None,
        filters: IssueFilters | None = None,
        mode: SearchMode = SearchMode.DENSE,
        limit: int = 10,
    ) -> SearchResult:
        """The tenant's issues ranked by similarity to ``query``, one hit per issue, best first."""
        chosen = self.tenant_for(principal, tenant)
        filters = filters or IssueFilters()
        if not query.strip():
            raise InvalidRequestError("query is empty: describe what you are looking for in words")
        if limit < 1:
            raise InvalidRequestError(f"limit must be 1 or more, got {limit}")
        if SearchMode(mode) is not SearchMode.DENSE:  # pragma: no cover - the enum holds only dense today
            raise InvalidRequestError(f"mode {mode!r} is not available; use 'dense'")
        if filters.status_category and filters.status_category not in STATUS_CATEGORIES:
            raise InvalidRequestError(
                f"status_category {filters.status_category!r} unknown; use one of {', '.join(STATUS_CATEGORIES)}"
            )
        if filters.updated_after and filters.updated_before and filters.updated_after >= filters.updated_before:
            raise InvalidRequestError("updated_after must be earlier than updated_before")
        name = collection_name(chosen.id, ISSUES)
        await self._ready(name, chosen)
        ids: list[str] | None = None
        if filters.assignee:
            assignee = filters.assignee
            ids = await self._sql(lambda: self._ids_assigned_to(chosen.id, assignee, filters.project))
            if len(ids) > MAX_ASSIGNEE_IDS:
                raise InvalidRequestError(
                    f"assignee {filters.assignee!r} has more than {MAX_ASSIGNEE_IDS} issues; add a project filter"
                )
            if not ids:
                return SearchResult(tenant=chosen.id, mode=SearchMode.DENSE, hits=[])
        [vector] = await self.embedder.embed([query])
        ranked = await _ranked(self.client, name, vector, issue_filter(chosen.id, filters, ids), limit)
        ranked = await self._with_comments(chosen.id, vector, filters, ids, ranked, limit)
        hits = [
            IssueHit(
                tenant=chosen.id,
                key=str(p.get("key") or ext),
                summary=str(p.get("summary") or ""),
                status=p.get("status"),
                status_category=p.get("status_category"),
                project=p.get("project_key"),
                issue_type=p.get("type"),
                updated=p.get("updated"),
                url=issue_url(chosen, str(p["key"])) if p.get("key") else None,
                score=round(float(score), 6),
                passage=_passage(p.get("text")),
                comment_author=p.get("author") if p.get("entity") == COMMENTS else None,
                comment_created=p.get("created") if p.get("entity") == COMMENTS else None,
            )
            for score, ext, p in ranked
        ]
        return SearchResult(tenant=chosen.id, mode=SearchMode.DENSE, hits=hits)

    async def _with_comments(
        self,
        tenant_id: str,
        vector: list[float],
        filters: IssueFilters,
        ids: list[str] | None,
        ranked: list[tuple[float, str, dict[str, Any]]],
        limit: int,
    ) -> list[tuple[float, str, dict[str, Any]]]:
        """Issue hits merged with comment hits: an issue ranks by its best passage, its own or a comment's.

        Comment points carry their issue's key, project and type; a status-category filter
        (which comment points do not carry) leaves comments out.
        """
        name = collection_name(tenant_id, COMMENTS)
        if filters.status_category or not await self.client.collection_exists(name):
            return ranked
        must: list[models.Condition] = [_match("tenant_id", tenant_id)]
        if filters.project:
            must.append(_match("project_key", filters.project))
        if filters.issue_type:
            must.append(_match("type", filters.issue_type))
        if ids is not None:
            must.append(models.FieldCondition(key="issue_id", match=models.MatchAny(any=list(ids))))
        found = await _ranked(self.client, name, vector, models.Filter(must=must), limit)
        best = {str(p.get("key") or ext): (sc, ext, p) for sc, ext, p in ranked}
        missing: list[str] = []
        for score, _, payload in found:
            key = str(payload.get("key"))
            if key in best and score <= best[key][0]:
                continue
            # The issue's fields, the comment's passage, author and date.
            own = {"text": payload.get("text"), "author": payload.get("author"), "created": payload.get("created")}
            issue = best[key][2] if key in best and best[key][2].get("entity") != COMMENTS else None
            if issue is None:
                missing.append(key)
            best[key] = (score, str(payload.get("issue_id")), {**payload, **(issue or {}), **own, "entity": COMMENTS})
        if missing:
            rows = await self._sql(lambda: self._issue_payloads(tenant_id, missing))
            for key in missing:
                score, ext, payload = best[key]
                own = {k: payload.get(k) for k in ("text", "author", "created", "entity")}
                best[key] = (score, ext, {**payload, **rows.get(key, {}), **own})
        return sorted(best.values(), key=lambda h: h[0], reverse=True)[:limit]

    def _issue_payloads(self, tenant_id: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        issues = BY_NAME[ISSUES].table
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(issues).where(
                    issues.c.tenant_id == tenant_id, issues.c.key.in_(keys), issues.c.deleted_at.is_(None)
                )
            )
            return {
                r.key: {
                    k: _iso(v) if isinstance(v, datetime) else v
                    for k, v in BY_NAME[ISSUES].payload(dict(r._mapping)).items()
                }
                for r in rows
            }

    # -- the tables --

    def _issue_rows(self, tenant_id: str, key: str) -> tuple[dict[str, Any] | None, str | None, list[LinkedIssue]]:
        issues = BY_NAME[ISSUES].table
        projects = BY_NAME[PROJECTS].table
        live = issues.c.deleted_at.is_(None)
        with self.engine.connect() as conn:
            row = conn.execute(select(issues).where(issues.c.tenant_id == tenant_id, issues.c.key == key, live)).first()
            if row is None:
                return None, None, []
            issue = dict(row._mapping)
            project_name = conn.execute(
                select(projects.c.name).where(
                    projects.c.tenant_id == tenant_id, projects.c.external_id == issue["project_external_id"]
                )
            ).scalar()
            links: list[LinkedIssue] = []
            if issue.get("parent_key"):
                parent = conn.execute(
                    select(issues.c.summary, issues.c.status_name).where(
                        issues.c.tenant_id == tenant_id, issues.c.key == issue["parent_key"], live
                    )
                ).first()
                links.append(
                    LinkedIssue(
                        key=issue["parent_key"],
                        relation="parent",
                        summary=parent[0] if parent else None,
                        status=parent[1] if parent else None,
                    )
                )
            children = conn.execute(
                select(issues.c.key, issues.c.summary, issues.c.status_name)
                .where(issues.c.tenant_id == tenant_id, issues.c.parent_key == key, live)
                .order_by(issues.c.key)
                .limit(200)
            )
            links += [LinkedIssue(key=k, relation="child", summary=s, status=st) for k, s, st in children]
        return issue, project_name, links

    async def get_issue(self, principal: Principal, key: str, *, tenant: str | None = None) -> IssueDetail:
        """The committed issue ``key`` from the tables: fields, description, links, and what is not synced yet.

        Without ``tenant``, the principal's tenants are searched; the key must be in exactly one.
        """
        key = key.strip().upper()
        if not key:
            raise InvalidRequestError("key is empty: pass an issue key such as ABC-123")
        if tenant is None and len(self._allowed(principal)) > 1:
            candidates = self._allowed(principal)
        else:
            candidates = [self.tenant_for(principal, tenant)]
        found = []
        for t in candidates:
            issue, project_name, links = await self._sql(functools.partial(self._issue_rows, t.id, key))
            if issue is not None:
                found.append((t, issue, project_name, links))
        if not found:
            where = ", ".join(t.id for t in candidates)
            raise NotFoundError(f"issue {key!r} not found in tenant {where} (or deleted at the source)")
        if len(found) > 1:
            raise InvalidRequestError(
                f"issue {key!r} exists in tenants {', '.join(f[0].id for f in found)}; name the tenant"
            )
        t, issue, project_name, links = found[0]
        raw = issue.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        fields: dict[str, Any] = data["fields"] if isinstance(data.get("fields"), dict) else {}
        custom = {k: v for k, v in fields.items() if k.startswith("customfield_")}
        comment = fields.get("comment")
        comments = comment.get("comments") if isinstance(comment, dict) else None
        not_synced = [
            part
            for part, present in (
                ("comments", isinstance(comments, list)),
                ("history", "changelog" in data),
                ("issue links other than parent/child", "issuelinks" in fields),
                ("custom fields", bool(custom)),
            )
            if not present
        ]
        return IssueDetail(
            tenant=t.id,
            key=issue["key"],
            summary=issue["summary"],
            description=issue.get("description"),
            url=issue_url(t, issue["key"]),
            project=issue.get("project_key"),
            project_name=project_name,
            issue_type=issue.get("wit_name"),
            status=issue.get("status_name"),
            status_category=issue.get("status_category"),
            priority=issue.get("priority"),
            resolution=issue.get("resolution"),
            labels=list(issue.get("labels") or []),
            components=list(issue.get("components") or []),
            assignee=issue.get("assignee"),
            reporter=issue.get("reporter"),
            created=_iso(issue.get("created")),
            updated=_iso(issue.get("updated")),
            synced_at=_iso(issue.get("synced_at")),
            links=links,
            custom_fields=custom,
            comments=[c for c in comments if isinstance(c, dict)] if isinstance(comments, list) else [],
            not_synced=not_synced,
        )

    def _project_rows(self, tenant_id: str) -> list[ProjectInfo]:
        projects = BY_NAME[PROJECTS].table
        issues = BY_NAME[ISSUES].table
        counts = (
            select(issues.c.project_external_id, func.count().label("n"))
            .where(issues.c.tenant_id == tenant_id, issues.c.deleted_at.is_(None))
            .group_by(issues.c.project_external_id)
            .subquery()
        )
        query = (
            select(projects, func.coalesce(counts.c.n, 0).label("issue_count"))
            .outerjoin(counts, counts.c.project_external_id == projects.c.external_id)
            .where(projects.c.tenant_id == tenant_id, projects.c.deleted_at.is_(None))
            .order_by(projects.c.key)
        )
        with self.engine.connect() as conn:
            return [
                ProjectInfo(
                    key=r.key,
                    name=r.name,
                    description=r.description,
                    category=r.category,
                    project_type=r.project_type,
                    lead=r.lead,
                    url=r.url,
                    issues=int(r.issue_count),
                )
                for r in conn.execute(query)
            ]

    async def list_projects(self, principal: Principal, *, tenant: str | None = None) -> list[ProjectInfo]:
        """The tenant's live projects from the tables, by key, with their live issue counts."""
        chosen = self.tenant_for(principal, tenant)
        return await self._sql(lambda: self._project_rows(chosen.id))
