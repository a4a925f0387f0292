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
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.core.access_sync import access_condition
from etl_assets.core.catalogue import BY_NAME, UnknownPrincipal, resolve_principal
from etl_assets.core.embeddings.base import Embedder, ModelMismatchError
from etl_assets.core.permissions import PUBLIC, admits
from etl_assets.core.settings import Settings
from etl_assets.core.sparse import SPARSE_VECTOR, query_vector
from etl_assets.core.tenants import Tenant, TenantRegistry
from etl_assets.core.vectorstore import (
    BASE_PAYLOAD_INDEXES,
    VectorLayout,
    collection_name,
    layout_of,
    payload_schema,
    recorded_filters,
)

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
# get_issue stays model-sized: the newest comments, each shortened, and a bounded list of links.
MAX_COMMENTS = 50
COMMENT_CHARS = 4_000
MAX_LINKS = 200
# A query is a few words or a pasted error message; beyond this it is a mistake (a whole log
# file), and the embedding provider would truncate or refuse it anyway.
MAX_QUERY_CHARS = 10_000


class SearchMode(StrEnum):
    """How a search ranks: ``dense`` (the embedding model's similarity), ``sparse`` (BM25 over
    the indexed text: exact words, keys, identifiers) or ``hybrid`` (both, fused; the default)."""

    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


# Hybrid fusion of the dense and the sparse leg. benchmarks/retrieval.py measures RRF and DBSF
# on the sample's labelled queries (README, "Hybrid retrieval"): with the thresholds below, as
# searches are served, the two tie (nDCG@10 0.821 vs 0.821, MRR@10 0.939 vs 0.937 over 90
# queries); without thresholds DBSF leads (0.848 vs 0.840). RRF is kept: it fuses ranks, so a
# leg the threshold leaves with one or two candidates still counts as much as it should,
# where DBSF gives a lone candidate a flat 0.5 whatever its score.
FUSION = models.Fusion.RRF

# "No good match": the least score a hit needs in a leg (dense: cosine similarity of the
# model; sparse: BM25 with the collection's IDF) to be returned. In hybrid mode a candidate
# must clear the threshold of at least one leg; an issue whose key the query names is
# returned whatever its score. Derived by ``benchmarks/retrieval.py`` (its "calibration"
# figures, ``evaluation.calibrate``) on the sample site (300 issues) from the rank-1 scores of
# the 90 labelled queries and the best scores of the 12 nonsense queries
# (``evaluation.NONSENSE_QUERIES``): where the two ranges are apart, their midpoint; where
# they overlap, just above the best nonsense score (nonsense must return nothing).
# all-MiniLM-L6-v2: nonsense reaches 0.373 (a French query, on a French issue's fields) while
# real queries' relevant rank-1 hits go down to 0.230 (bare keys, other languages) -> 0.381,
# which leaves 11 of the 90 queries without a relevant rank-1 hit in dense mode.
# BM25: nonsense reaches 15.10 (the French query, on common words of French and Spanish
# issues), relevant rank-1 hits go down to 7.33 -> 15.407. A BM25 score grows with the
# collection's IDF, whose ceiling (a term in one point) is ln(1 + (N - 0.5) / 1.5) for N points:
# so the sparse threshold is kept in units of that ceiling ("rare terms' worth": 15.407 / 6.364
# for the sample's 870 points = 2.42) and scaled to each collection's size at query time.
# (Derived again after an issue's history digest and rich-text custom fields became chunks of
# their own: short chunks score higher on BM25 and on a language's common words.)
# Re-run the benchmark on a tenant's own labelled queries to re-derive both.
# Dense thresholds belong to one model; a model without one here gets none (every dense
# hit clears the dense leg).
# USE multilingual v3 (EMBEDDING_MODEL=universal-sentence-encoder-multilingual-3): nonsense reaches
# 0.166, relevant rank-1 hits go down to 0.126 -> 0.170 (6 of the 90 queries cut in dense mode).
DENSE_MIN_SCORE: dict[str, float] = {
    "sentence-transformers/all-MiniLM-L6-v2": 0.381,
    "universal-sentence-encoder-multilingual-3": 0.170,
}
SPARSE_MIN_RARE_TERMS = 2.42


def rare_idf(points: int) -> float:
    """Qdrant's IDF of a term found in one of ``points`` points: the ceiling of a term's weight."""
    return math.log(1 + (max(points, 1) - 0.5) / 1.5)


# Qdrant's answer to a filter on a field without a payload index (a server in strict mode).
_MISSING_INDEX = re.compile(r'Index required but not found for \\?"([^"\\]+)\\?"')

# A Jira issue key: project key (a letter, then letters, digits or _) and a number.
ISSUE_KEY = re.compile(r"(?<![\w-])([A-Za-z][A-Za-z0-9_]{0,19}-[1-9][0-9]{0,8})(?![\w-])")


def issue_keys(query: str) -> list[str]:
    """The issue keys ``query`` names, upper-cased, in order, each once."""
    out: list[str] = []
    for match in ISSUE_KEY.findall(query):
        key = match.upper()
        if key not in out:
            out.append(key)
    return out


def check_query(query: str) -> None:
    """Refuse a query nothing sensible can be found for, with a sentence saying why."""
    if not query.strip():
        raise InvalidRequestError("query is empty: describe what you are looking for in words")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequestError(
            f"query is {len(query)} characters long; at most {MAX_QUERY_CHARS} are accepted: "
            "shorten it to the words or the error line that matter"
        )
    if not any(c.isalnum() for c in query):
        raise InvalidRequestError("query has no letters or digits (only punctuation): give words to search for")


# -- who is asking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who a call runs as: a name for the logs, the tenants it may use, and whose access it has.

    Within a tenant a call sees what the Jira account ``jira_user`` (an e-mail or accountId,
    resolved per tenant from the committed permission tables) could open in Jira; without one,
    only what Jira shows anyone (``public``). ``unrestricted`` (operators) applies no access
    filter at all and is logged by the caller.
    """

    id: str
    tenants: frozenset[str]
    jira_user: str | None = None
    unrestricted: bool = False

    def __post_init__(self) -> None:
        if self.unrestricted and self.jira_user:
            raise ValueError(f"principal {self.id!r}: a Jira user or unrestricted, not both")


def resolve_access(engine: Engine, tenant_id: str, who: str | None) -> frozenset[str]:
    """The principals (``public``, ``user:…``, ``group:…``) a search as ``who`` matches in one tenant.

    ``who`` is an e-mail or accountId known to the tenant's committed permission tables; None
    is anonymous (``public`` only). An unknown user is an :class:`InvalidRequestError` naming
    tenant and user, never silently anonymous.
    """
    if who is None:
        return frozenset({PUBLIC})
    try:
        with engine.connect() as conn:
            return frozenset(resolve_principal(conn, tenant_id, who.strip()))
    except UnknownPrincipal as exc:
        raise InvalidRequestError(
            f"{exc}; the permission sync (tables/permissions_table) records the site's users"
        ) from None


def visible(
    conn: Connection, tenant_id: str, entity: str, external_ids: Sequence[str], access: frozenset[str] | None
) -> set[str]:
    """Which of ``external_ids`` (rows of ``entity``) ``access`` may see: all for an unrestricted
    search (None), else those whose committed access list names one of its principals (the same
    rule as Qdrant's filter; an entity without access lists is for unrestricted searches only)."""
    if access is None:
        return set(external_ids)
    spec = BY_NAME[entity]
    lists = spec.access(conn, tenant_id, external_ids) if spec.access is not None else {}
    return {i for i, acl in lists.items() if admits(acl, access)}


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
    score: float = Field(
        description="score of the best-matching passage in the search's mode (dense: cosine similarity; "
        "sparse: BM25; hybrid: fused rank score), higher is better; compare scores within one answer only"
    )
    passage: str = Field(description="the indexed text that matched best (shortened)")
    exact_key: bool = Field(default=False, description="the query named this issue's key: it is ranked first")
    comment_author: str | None = Field(default=None, description="when a comment matched best: its author")
    comment_created: str | None = Field(default=None, description="when a comment matched best: when it was written")


class SearchResult(_Result):
    tenant: str
    mode: SearchMode
    hits: list[IssueHit]
    notice: str | None = Field(
        default=None, description="why the answer is empty or incomplete (no good match, a key not indexed)"
    )


class LinkedIssue(_Result):
    key: str
    relation: str = Field(
        description="how the issue relates to this one: parent, epic, sub-task, child (an issue whose "
        "parent this is), or a Jira link type such as 'blocks' or 'is blocked by'"
    )
    summary: str | None = None
    status: str | None = None


class IssueComment(_Result):
    author: str | None = Field(default=None, description="display name; 'a former user' for a deleted account")
    created: str | None = Field(default=None, description="ISO 8601 UTC")
    updated: str | None = None
    body: str = Field(description="the comment's text (ADF as Markdown-like text), shortened when very long")


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
    resolved_at: str | None = None
    synced_at: str | None = Field(default=None, description="when this row was last committed from Jira")
    links: list[LinkedIssue] = Field(
        default_factory=list, description="parent, sub-tasks, children and Jira issue links, with their summaries"
    )
    custom_fields: dict[str, str] = Field(
        default_factory=dict, description="the custom fields configured for the tenant, by name, as text"
    )
    attachments: list[str] = Field(default_factory=list, description="attachment names (contents are not synced)")
    history: str | None = Field(
        default=None, description="digest of the changelog: status moves, reopenings, assignees, resolutions"
    )
    comments: list[IssueComment] = Field(
        default_factory=list, description=f"the newest comments (at most {MAX_COMMENTS}), oldest first"
    )
    comments_older: int = Field(default=0, description="older comments not returned (over the cap)")
    comments_restricted: int = Field(
        default=0, description="comments left out because Jira restricts them to a role or group the caller is not in"
    )
    comments_incomplete: str | None = Field(
        default=None, description="why the committed comment list is incomplete (a page failed), else null"
    )
    not_synced: list[str] = Field(default_factory=list, description="parts of a Jira issue the tables do not hold")


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


_FIELD_FILTER = re.compile(r"^\s*(?P<name>[^<>=]*[^<>=\s])\s*(?P<op>>=|<=|=|>|<)\s*(?P<value>.*?)\s*$")
_RANGE_OPS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}


@dataclass(frozen=True)
class FieldFilter:
    """A filter on one of the tenant's custom fields, by the field's name: ``Story Points>=5``,
    ``Team=Falcon``, ``Target date<2026-07-01``. A text field (an option, a user) takes ``=`` and
    matches the value exactly as Jira shows it; a number or date field takes ``=``, ``>=``, ``>``,
    ``<=`` and ``<`` (a date alone means that whole day, UTC, for ``=``)."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> FieldFilter:
        """``NAME<op>VALUE`` as a filter; :class:`InvalidRequestError` when it is not one."""
        match = _FIELD_FILTER.match(text)
        if match is None or not match["value"]:
            raise InvalidRequestError(
                f"custom field filter {text!r} is not NAME=VALUE (or NAME>=VALUE, >, <=, <), e.g. 'Story Points>=5'"
            )
        return cls(match["name"], match["op"], match["value"])

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def condition(self, fields: Mapping[str, tuple[str, str]], collection: str) -> models.FieldCondition:
        """The Qdrant condition on the payload field this filter names among ``fields`` (the
        collection's recorded filter fields: {payload field: (index kind, name)})."""
        wanted = " ".join(self.name.split()).lower()
        key = next(
            (k for k, (_, name) in fields.items() if " ".join(name.split()).lower() == wanted or k == self.name), None
        )
        if key is None:
            names = ", ".join(sorted({name for _, name in fields.values()}, key=str.lower)) or "none yet"
            raise InvalidRequestError(
                f"cannot filter on custom field {self.name!r}: {collection} has no payload index for it (filterable: "
                f"{names}); a custom field the tenant lists gets one when the collection's vector step indexes "
                "its single values (a number, a date, one option or user)"
            )
        kind, name = fields[key]
        if kind == "keyword":
            if self.op != "=":
                raise InvalidRequestError(
                    f"custom field {name!r} holds text: filter it with '=' (e.g. '{name}={self.value}'), not {self.op!r}"
                )
            return models.FieldCondition(key=key, match=models.MatchValue(value=self.value))
        if kind in ("float", "integer"):
            try:
                number = float(self.value)
            except ValueError:
                raise InvalidRequestError(f"custom field {name!r} holds numbers: {self.value!r} is not one") from None
            if not math.isfinite(number):
                raise InvalidRequestError(f"custom field {name!r} holds numbers: {self.value!r} is not a finite one")
            bounds = {"gte": number, "lte": number} if self.op == "=" else {_RANGE_OPS[self.op]: number}
            return models.FieldCondition(key=key, range=models.Range(**bounds))
        if kind == "datetime":
            try:
                when = _aware(datetime.fromisoformat(self.value.replace("Z", "+00:00")))
            except ValueError:
                raise InvalidRequestError(
                    f"custom field {name!r} holds dates: {self.value!r} is not an ISO 8601 date or time "
                    "(e.g. 2026-07-01 or 2026-07-01T09:30:00Z)"
                ) from None
            times: dict[str, datetime] = {_RANGE_OPS.get(self.op, "gte"): when}
            if self.op == "=":  # a date alone is that whole day
                times |= {"lt": when + timedelta(days=1)} if len(self.value.strip()) == 10 else {"lte": when}
            return models.FieldCondition(key=key, range=models.DatetimeRange(**times))
        raise InvalidRequestError(f"custom field {name!r} is indexed as {kind}, which no filter here reads")


def field_conditions(
    filters: Sequence[FieldFilter], fields: Mapping[str, tuple[str, str]], collection: str
) -> list[models.Condition]:
    """The conditions of custom-field ``filters`` on a collection recording ``fields`` (see FieldFilter)."""
    return [f.condition(fields, collection) for f in filters]


@dataclass(frozen=True)
class IssueFilters:
    """Narrowing of ``search_issues``; every field left None matches everything."""

    project: str | None = None
    issue_type: str | None = None
    status_category: StatusCategory | None = None
    assignee: str | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    # Filters on the tenant's custom fields by name (every one must hold); comments do not carry them.
    custom_fields: tuple[FieldFilter, ...] = ()


def _match(key: str, value: Any) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def tenant_filter(tenant_id: str, access: Collection[str] | None) -> list[models.Condition]:
    """The conditions every search has: the tenant, and unless unrestricted (None) the access list."""
    must: list[models.Condition] = [_match("tenant_id", tenant_id)]
    if access is not None:
        must.append(access_condition(access))
    return must


def issue_filter(
    tenant_id: str,
    filters: IssueFilters,
    external_ids: Sequence[str] | None = None,
    *,
    access: Collection[str] | None,
    fields: Mapping[str, tuple[str, str]] | None = None,
    collection: str = "",
) -> models.Filter:
    """The Qdrant payload filter for ``filters`` within one tenant (plus resolved ``external_ids``),
    admitting only points ``access`` may see (None: unrestricted). Custom-field filters are looked
    up in ``fields``, the filter fields ``collection`` records."""
    must = tenant_filter(tenant_id, access)
    must += field_conditions(filters.custom_fields, fields or {}, collection)
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
    return models.Filter(must=must)


# Payload fields the filters above use: created on a Qdrant server's collection when missing
# (local mode has no payload indexes). The schemas come from the entity spec where it names them.
FILTERED_FIELDS = ("tenant_id", "external_id", "key", "project_key", "type", "status_category", "updated", "access")


def _legacy_filter(
    tenant_id: str,
    project: str | None,
    status_category: str | None,
    access: Collection[str] | None,
    custom: Sequence[FieldFilter] = (),
    fields: Mapping[str, tuple[str, str]] | None = None,
    collection: str = "",
) -> models.Filter:
    return issue_filter(
        tenant_id,
        IssueFilters(project=project, status_category=status_category, custom_fields=tuple(custom)),  # type: ignore[arg-type]
        access=access,
        fields=fields,
        collection=collection,
    )


# -- the one-shot search (CLI, evaluation) ---------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    score: float
    external_id: str
    payload: dict[str, Any]
    exact_key: bool = False

    @property
    def key(self) -> str:
        return str(self.payload.get("key") or self.payload.get("name") or self.external_id)


async def _check_model(
    client: AsyncQdrantClient, embedder: Embedder, name: str, entity: str, tenant_id: str
) -> tuple[VectorLayout, dict[str, tuple[str, str]]]:
    """The collection's layout and its recorded row filter fields, once its model is checked."""
    if not await client.collection_exists(name):
        raise NotIndexedError(
            f"collection {name} does not exist yet: materialize vectors/{entity}_vectors for tenant {tenant_id}"
        )
    info = await client.get_collection(name)
    built_with = (info.config.metadata or {}).get("embedding_model")
    layout = layout_of(info)
    if built_with != embedder.model or layout.size != embedder.dimensions:
        raise ModelMismatchSearchError(
            f"collection {name} was built with {built_with!r} ({layout.size} dimensions) but the configured model is "
            f"{embedder.model!r} ({embedder.dimensions}); set EMBEDDING_PROVIDER/EMBEDDING_MODEL to match"
        )
    return layout, recorded_filters(info.config.metadata)


async def _points(client: AsyncQdrantClient, name: str) -> int:
    return (await client.count(name, exact=False)).count


def effective_mode(mode: SearchMode | str, layout: VectorLayout, name: str, entity: str) -> SearchMode:
    """The mode a search runs in: hybrid falls back to dense on a collection without BM25 vectors."""
    try:
        chosen = SearchMode(mode)
    except ValueError:
        raise InvalidRequestError(
            f"mode {mode!r} unknown; use one of {', '.join(m.value for m in SearchMode)}"
        ) from None
    if layout.hybrid:
        return chosen
    if chosen is SearchMode.SPARSE:
        raise NotIndexedError(
            f"collection {name} has no BM25 vectors yet (built before hybrid search): re-run "
            f"vectors/{entity}_vectors, which adds them without re-embedding, or use mode 'dense'"
        )
    return SearchMode.DENSE


@dataclass(frozen=True)
class Thresholds:
    """Least scores per leg (None: no threshold); see ``DENSE_MIN_SCORE``."""

    dense: float | None
    sparse: float | None

    @classmethod
    def calibrated(cls, model: str, points: int) -> Thresholds:
        """The thresholds for ``model`` on a collection of ``points`` points."""
        return cls(DENSE_MIN_SCORE.get(model), SPARSE_MIN_RARE_TERMS * rare_idf(points))


NO_THRESHOLDS = Thresholds(None, None)


async def _ranked(
    client: AsyncQdrantClient,
    name: str,
    layout: VectorLayout,
    mode: SearchMode,
    vector: list[float] | None,
    sparse: models.SparseVector | None,
    flt: models.Filter,
    k: int,
    thresholds: Thresholds,
    fusion: models.Fusion = FUSION,
) -> list[tuple[float, str, dict[str, Any]]]:
    # Long rows have several chunks: over-fetch, then keep each row's best chunk.
    fetch = max(k * 4, k + 10)
    if mode is SearchMode.DENSE:
        assert vector is not None
        response = await client.query_points(
            name,
            query=vector,
            using=layout.using,
            limit=fetch,
            with_payload=True,
            query_filter=flt,
            score_threshold=thresholds.dense,
        )
    elif mode is SearchMode.SPARSE:
        assert sparse is not None
        if not sparse.indices:
            return []
        response = await client.query_points(
            name,
            query=sparse,
            using=SPARSE_VECTOR,
            limit=fetch,
            with_payload=True,
            query_filter=flt,
            score_threshold=thresholds.sparse,
        )
    else:
        assert vector is not None and sparse is not None
        # Each leg keeps only candidates that clear its own threshold: a query that matches
        # nothing well in either leg gets no answer, not the least bad five.
        legs = [
            models.Prefetch(query=vector, using=layout.using, filter=flt, limit=fetch, score_threshold=thresholds.dense)
        ]
        if sparse.indices:
            legs.append(
                models.Prefetch(
                    query=sparse, using=SPARSE_VECTOR, filter=flt, limit=fetch, score_threshold=thresholds.sparse
                )
            )
        response = await client.query_points(
            name,
            prefetch=legs,
            query=models.FusionQuery(fusion=fusion),
            limit=fetch,
            with_payload=True,
            query_filter=flt,
        )
    best: dict[str, tuple[float, str, dict[str, Any]]] = {}
    for point in response.points:
        payload = point.payload or {}
        ext = str(payload.get("external_id"))
        if ext not in best or point.score > best[ext][0]:
            best[ext] = (point.score, ext, payload)
    return sorted(best.values(), key=lambda h: h[0], reverse=True)[:k]


async def _by_keys(
    client: AsyncQdrantClient, name: str, keys: Sequence[str], flt: models.Filter
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The chunk-0 point of each issue in ``keys`` that is indexed and passes ``flt``: key -> (id, payload)."""
    if not keys:
        return {}
    lookup = models.Filter(must=[flt, models.FieldCondition(key="key", match=models.MatchAny(any=list(keys)))])
    # A long issue has several chunks; its first chunk (the summary's) stands for it.
    points, _ = await client.scroll(
        name, scroll_filter=lookup, limit=16 * len(keys), with_payload=True, with_vectors=False
    )
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    chunk_of: dict[str, int] = {}
    for p in points:
        payload = p.payload or {}
        key, chunk = str(payload.get("key")), payload.get("chunk")
        chunk = chunk if isinstance(chunk, int) else 0
        if key not in out or chunk < chunk_of[key]:
            out[key], chunk_of[key] = (str(payload.get("external_id")), payload), chunk
    return out


async def rank(
    client: AsyncQdrantClient,
    embedder: Embedder,
    query: str,
    *,
    name: str,
    layout: VectorLayout,
    mode: SearchMode,
    flt: models.Filter,
    k: int,
    keyed: bool,
    thresholds: Thresholds,
    fusion: models.Fusion = FUSION,
    dense: Callable[[], Awaitable[list[float]]] | None = None,
) -> tuple[list[Hit], list[str]]:
    """Ranked hits for ``query`` (one per row, best first), and the keys it named that are not indexed.

    With ``keyed`` (the collection's points carry an issue ``key``), an issue whose key the
    query names is ranked first, whatever its score, when it is indexed and passes ``flt``.
    ``dense`` gives the query's embedding when the caller ranks several collections for one query
    (embedded once); without it the query is embedded here.
    """
    if mode is SearchMode.SPARSE:
        vector = None
    else:
        vector = await dense() if dense is not None else (await embedder.embed([query]))[0]
    sparse = None if mode is SearchMode.DENSE else query_vector(query)
    keys = issue_keys(query) if keyed else []
    try:
        ranked = await _ranked(client, name, layout, mode, vector, sparse, flt, k, thresholds, fusion)
        found = await _by_keys(client, name, keys, flt)
    except UnexpectedResponse as exc:
        missing_index = _MISSING_INDEX.search(str(exc.content.decode("utf-8", "replace")))
        if exc.status_code != 400 or missing_index is None:
            raise
        raise InvalidRequestError(
            f"collection {name} cannot filter on {missing_index.group(1)!r}: the Qdrant server requires a payload "
            f"index for it and the collection has none; re-run the vector step (it creates the indexes) or drop "
            "that filter"
        ) from None
    hits = [Hit(score, ext, payload) for score, ext, payload in ranked]
    pinned: list[Hit] = []
    top = hits[0].score if hits else 1.0
    for key in keys:
        if key in found:
            ext, payload = found[key]
            own = next((h.score for h in hits if h.external_id == ext), top)
            pinned.append(Hit(own, ext, payload, exact_key=True))
    pinned_ids = {h.external_id for h in pinned}
    out = pinned + [h for h in hits if h.external_id not in pinned_ids]
    return out[:k] if len(pinned) < k else pinned, [key for key in keys if key not in found]


async def search(
    client: AsyncQdrantClient,
    embedder: Embedder,
    query: str,
    *,
    tenant_id: str,
    access: Collection[str] | None,
    entity: str = "issues",
    project: str | None = None,
    status_category: str | None = None,
    custom_fields: Sequence[FieldFilter] = (),
    k: int = 10,
    mode: SearchMode | str = SearchMode.HYBRID,
    thresholds: Thresholds | None = None,
    fusion: models.Fusion = FUSION,
) -> list[Hit]:
    """Rank the tenant's rows of ``entity`` for ``query``; one hit per row, best first.

    ``access`` is who is searching: the principals from :func:`resolve_access` (only points
    whose access list names one of them can come back, decided inside Qdrant), or None for an
    unrestricted operator search. It has no default: every caller says which.

    ``mode`` is dense, sparse or hybrid (the default; dense on a collection built before
    hybrid search). Hits below the calibrated "good match" thresholds are left out, so a
    nonsense query returns nothing (``thresholds=NO_THRESHOLDS`` turns that off). An issue
    whose key the query names comes first when it is indexed. ``custom_fields`` filter on the
    tenant's custom fields by name (see :class:`FieldFilter`); a name the collection has no
    payload index for is an :class:`InvalidRequestError` naming the ones it has.

    The query is embedded with the configured model, which must be the one the
    collection was built with — otherwise the scores would be meaningless
    (:class:`ModelMismatchError`); a missing collection is a :class:`LookupError`; a query
    that cannot be searched (empty, only punctuation, too long) an :class:`InvalidRequestError`.
    """
    check_query(query)
    name = collection_name(tenant_id, entity)
    layout, fields = await _check_model(client, embedder, name, entity, tenant_id)
    flt = _legacy_filter(tenant_id, project, status_category, access, custom_fields, fields, name)
    chosen = effective_mode(mode, layout, name, entity)
    hits, _ = await rank(
        client,
        embedder,
        query,
        name=name,
        layout=layout,
        mode=chosen,
        flt=flt,
        k=k,
        keyed=entity == ISSUES,
        thresholds=thresholds or Thresholds.calibrated(embedder.model, await _points(client, name)),
        fusion=fusion,
    )
    return hits


def _embed_once(embedder: Embedder, query: str) -> Callable[[], Awaitable[list[float]]]:
    """The query's embedding, asked of the provider at most once however many collections use it."""
    done: list[list[float]] = []

    async def get() -> list[float]:
        if not done:
            done.append((await embedder.embed([query]))[0])
        return done[0]

    return get


# -- the service ---------------------------------------------------------------------------------------


def issue_url(tenant: Tenant, key: str) -> str:
    """The issue's page on the tenant's Jira site (``<site>/browse/<KEY>``)."""
    return f"{site_url(tenant).rstrip('/')}/browse/{quote(key)}"


def site_url(tenant: Tenant) -> str:
    """The tenant's Jira site: issue hits and tenants are shown with it (every tenant has one)."""
    site = tenant.section("jira")
    return site.url if site is not None else ""


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return _aware(value).astimezone(UTC).isoformat()
    return str(value) if value is not None else None


def _passage(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= PASSAGE_CHARS else text[: PASSAGE_CHARS - 1].rstrip() + "…"


def _shorten(text: Any, limit: int = COMMENT_CHARS) -> str:
    text = str(text or "")
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + f"… [shortened: {len(text)} characters in all]"


@dataclass(frozen=True)
class _IssueRows:
    issue: dict[str, Any]
    project_name: str | None
    links: list[LinkedIssue]
    comments: list[IssueComment]
    older: int
    restricted: int


@dataclass
class SearchService:
    """The search API over open clients. Open it with :meth:`open` (or hand it clients you own)."""

    client: AsyncQdrantClient
    embedder: Embedder
    engine: Engine
    registry: TenantRegistry
    # On a Qdrant server the filters need payload indexes; local mode has none.
    server_mode: bool = False
    _checked: dict[str, tuple[float, VectorLayout, int, dict[str, tuple[str, str]]]] = field(
        default_factory=dict, repr=False
    )
    _indexed: set[str] = field(default_factory=set, repr=False)
    _access: dict[tuple[str, str], tuple[float, frozenset[str]]] = field(default_factory=dict, repr=False)

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
                open_qdrant(qd.url, qd.api_key, qd.path, lock_timeout_s=10.0, engine=qd.engine) as client,
            ):
                # The tokenizer loads on first use (about a second), and a provider's SDK client is made on
                # the first request (importing the OpenAI SDK takes ~2 s): pay for both here, before any
                # query runs under a caller's timeout.
                await asyncio.to_thread(embedder.count_tokens, "warm up")
                getattr(embedder, "client", None)
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

    async def access_for(self, principal: Principal, tenant: Tenant) -> frozenset[str] | None:
        """The principals ``principal`` searches ``tenant`` as (None: unrestricted), cached a minute:
        a group change reaches a running server with the next permission sync, within that."""
        if principal.unrestricted:
            return None
        if principal.jira_user is None:
            return frozenset({PUBLIC})
        cache_key = (tenant.id, principal.jira_user)
        now = time.monotonic()
        cached = self._access.get(cache_key)
        if cached is not None and now - cached[0] < MODEL_CHECK_TTL_S:
            return cached[1]
        access = await self._sql(functools.partial(resolve_access, self.engine, tenant.id, principal.jira_user))
        self._access[cache_key] = (now, access)
        return access

    def list_tenants(self, principal: Principal) -> list[TenantInfo]:
        """The tenants the principal may use, in registry order."""
        return [TenantInfo(id=t.id, name=t.name, site=site_url(t)) for t in self._allowed(principal)]

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

    async def _ready(
        self, name: str, tenant: Tenant, entity: str = ISSUES
    ) -> tuple[VectorLayout, int, dict[str, tuple[str, str]]]:
        """The collection's layout, point count (for the sparse threshold) and recorded custom filter
        fields, checked once a minute."""
        now = time.monotonic()
        checked = self._checked.get(name)
        if checked is not None and now - checked[0] < MODEL_CHECK_TTL_S:
            return checked[1], checked[2], checked[3]
        layout, fields = await _check_model(self.client, self.embedder, name, entity, tenant.id)
        if self.server_mode and name not in self._indexed:
            await self.ensure_payload_indexes(name, entity)
        points = await _points(self.client, name)
        self._checked[name] = (now, layout, points, fields)
        return layout, points, fields

    async def ensure_payload_indexes(self, name: str, entity: str = ISSUES) -> list[str]:
        """Create the payload indexes the issue filters use where the collection lacks them
        (collections built before a field was indexed); returns the fields created. A comments
        collection gets those of its fields the filters use; an issues collection also those of
        the custom fields its metadata records (see ``vectorstore.ROW_FILTERS_KEY``)."""
        info = await self.client.get_collection(name)
        present = set((info.payload_schema or {}).keys())
        kinds = {**BASE_PAYLOAD_INDEXES, **BY_NAME[entity].payload_indexes}
        wanted = {f: kinds[f] for f in FILTERED_FIELDS if f in kinds}
        wanted |= {key: kind for key, (kind, _) in recorded_filters(info.config.metadata).items()}
        created = []
        for field_name, kind in wanted.items():
            if field_name not in present:
                await self.client.create_payload_index(name, field_name, field_schema=payload_schema(kind))
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
        mode: SearchMode | str = SearchMode.HYBRID,
        limit: int = 10,
    ) -> SearchResult:
        """The tenant's issues ranked for ``query`` (see :func:`search` for modes, thresholds and
        keys), one hit per issue, best first. An empty answer carries a ``notice`` saying why."""
        chosen = self.tenant_for(principal, tenant)
        filters = filters or IssueFilters()
        check_query(query)
        if limit < 1:
            raise InvalidRequestError(f"limit must be 1 or more, got {limit}")
        if filters.status_category and filters.status_category not in STATUS_CATEGORIES:
            raise InvalidRequestError(
                f"status_category {filters.status_category!r} unknown; use one of {', '.join(STATUS_CATEGORIES)}"
            )
        if filters.updated_after and filters.updated_before and filters.updated_after >= filters.updated_before:
            raise InvalidRequestError("updated_after must be earlier than updated_before")
        access = await self.access_for(principal, chosen)
        dense = _embed_once(self.embedder, query)
        name = collection_name(chosen.id, ISSUES)
        layout, points, fields = await self._ready(name, chosen)
        field_conditions(filters.custom_fields, fields, name)  # a bad custom-field filter fails before any query
        run_mode = effective_mode(mode, layout, name, ISSUES)
        ids: list[str] | None = None
        if filters.assignee:
            assignee = filters.assignee
            ids = await self._sql(lambda: self._ids_assigned_to(chosen.id, assignee, filters.project))
            if len(ids) > MAX_ASSIGNEE_IDS:
                raise InvalidRequestError(
                    f"assignee {filters.assignee!r} has more than {MAX_ASSIGNEE_IDS} issues; add a project filter"
                )
            if not ids:
                return SearchResult(
                    tenant=chosen.id, mode=run_mode, hits=[], notice=f"no live issue is assigned to {assignee!r}"
                )
        ranked, missing = await rank(
            self.client,
            self.embedder,
            query,
            name=name,
            layout=layout,
            mode=run_mode,
            flt=issue_filter(chosen.id, filters, ids, access=access, fields=fields, collection=name),
            k=limit,
            keyed=True,
            thresholds=Thresholds.calibrated(self.embedder.model, points),
            dense=dense,
        )
        ranked = await self._with_comments(chosen, query, mode, filters, ids, ranked, limit, access, dense)
        hits = [
            IssueHit(
                tenant=chosen.id,
                key=str(h.payload.get("key") or h.external_id),
                summary=str(h.payload.get("summary") or ""),
                status=h.payload.get("status"),
                status_category=h.payload.get("status_category"),
                project=h.payload.get("project_key"),
                issue_type=h.payload.get("type"),
                updated=h.payload.get("updated"),
                url=issue_url(chosen, str(h.payload["key"])) if h.payload.get("key") else None,
                score=round(float(h.score), 6),
                passage=_passage(h.payload.get("text")),
                exact_key=h.exact_key,
                comment_author=h.payload.get("author") if h.payload.get("entity") == COMMENTS else None,
                comment_created=h.payload.get("created") if h.payload.get("entity") == COMMENTS else None,
            )
            for h in ranked
        ]
        notes = [await self._key_notice(chosen.id, key, access) for key in missing]
        if not hits:
            notes.append("no good match: nothing in the index is close enough to the query (try other words)")
        return SearchResult(tenant=chosen.id, mode=run_mode, hits=hits, notice="; ".join(notes) or None)

    def _key_state(self, tenant_id: str, key: str, access: frozenset[str] | None) -> str:
        table = BY_NAME[ISSUES].table
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table.c.deleted_at, table.c.external_id)
                .where(table.c.tenant_id == tenant_id, table.c.key == key)
                .limit(1)
            ).first()
            # An issue the searcher may not open is answered like one that does not exist.
            if row is None or not visible(conn, tenant_id, ISSUES, [str(row[1])], access):
                return "unknown"
        return "deleted" if row[0] is not None else "live"

    async def _key_notice(self, tenant_id: str, key: str, access: frozenset[str] | None) -> str:
        """Why an issue key the query names is not among the hits."""
        state = await self._sql(functools.partial(self._key_state, tenant_id, key, access))
        if state == "deleted":
            return f"issue {key} was deleted at the source; it is no longer indexed"
        if state == "live":
            return f"issue {key} is not in the index for these filters (or not vectorized yet)"
        return f"no issue {key} in tenant {tenant_id}"

    async def _with_comments(
        self,
        tenant: Tenant,
        query: str,
        mode: SearchMode | str,
        filters: IssueFilters,
        ids: list[str] | None,
        ranked: list[Hit],
        limit: int,
        access: frozenset[str] | None,
        dense: Callable[[], Awaitable[list[float]]],
    ) -> list[Hit]:
        """Issue hits merged with comment hits: an issue ranks by its best passage, its own or a
        comment's (the comments collection is ranked in the same mode, with its own thresholds).
        An issue the query named by key stays first.

        Comment points carry their issue's key, project and type; a status-category, date or
        custom-field filter (which comment points do not carry as the issue's) leaves comments out.
        """
        name = collection_name(tenant.id, COMMENTS)
        if filters.status_category or filters.updated_after or filters.updated_before or filters.custom_fields:
            return ranked
        if not await self.client.collection_exists(name):
            return ranked
        layout, points, _ = await self._ready(name, tenant, COMMENTS)
        must = tenant_filter(tenant.id, access)
        if filters.project:
            must.append(_match("project_key", filters.project))
        if filters.issue_type:
            must.append(_match("type", filters.issue_type))
        if ids is not None:
            must.append(models.FieldCondition(key="issue_id", match=models.MatchAny(any=list(ids))))
        found, _ = await rank(
            self.client,
            self.embedder,
            query,
            name=name,
            layout=layout,
            mode=effective_mode(mode, layout, name, COMMENTS),
            flt=models.Filter(must=must),
            k=limit,
            keyed=False,
            thresholds=Thresholds.calibrated(self.embedder.model, points),
            dense=dense,
        )
        best = {str(h.payload.get("key") or h.external_id): h for h in ranked}
        missing: list[str] = []
        for hit in found:
            key = str(hit.payload.get("key"))
            held = best.get(key)
            if held is not None and hit.score <= held.score:
                continue
            # The issue's fields, the comment's passage, author and date.
            own = {"text": hit.payload.get("text"), "author": hit.payload.get("author")}
            own["created"] = hit.payload.get("created")
            issue = held.payload if held is not None and held.payload.get("entity") != COMMENTS else None
            if issue is None:
                missing.append(key)
            payload = {**hit.payload, **(issue or {}), **own, "entity": COMMENTS}
            # An issue the query named by key keeps its place; its best passage is the comment's.
            exact = held is not None and held.exact_key
            best[key] = Hit(hit.score, str(hit.payload.get("issue_id")), payload, exact_key=exact)
        if missing:
            rows = await self._sql(lambda: self._issue_payloads(tenant.id, missing))
            for key in missing:
                held = best[key]
                own = {k: held.payload.get(k) for k in ("text", "author", "created", "entity")}
                payload = {**held.payload, **rows.get(key, {}), **own}
                best[key] = Hit(held.score, held.external_id, payload, exact_key=held.exact_key)
        return sorted(best.values(), key=lambda h: (not h.exact_key, -h.score))[:limit]

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

    def _issue_rows(self, tenant_id: str, key: str, access: frozenset[str] | None) -> _IssueRows | None:
        """The issue and what ``access`` may see of it (None: unrestricted); None when it may not
        see the issue at all, exactly as when it does not exist."""
        issues = BY_NAME[ISSUES].table
        projects = BY_NAME[PROJECTS].table
        comments = BY_NAME[COMMENTS].table
        live = issues.c.deleted_at.is_(None)
        with self.engine.connect() as conn:
            row = conn.execute(select(issues).where(issues.c.tenant_id == tenant_id, issues.c.key == key, live)).first()
            if row is None or not visible(conn, tenant_id, ISSUES, [str(row.external_id)], access):
                return None
            issue = dict(row._mapping)
            project_name = conn.execute(
                select(projects.c.name).where(
                    projects.c.tenant_id == tenant_id, projects.c.external_id == issue["project_external_id"]
                )
            ).scalar()
            # Links as the sync wrote them (parent/epic, sub-tasks, Jira links), then the issues
            # naming this one as parent that the row does not list (an epic's children).
            pairs: list[tuple[str, str]] = []
            stored = issue.get("links")
            for link in stored if isinstance(stored, list) else []:
                if isinstance(link, dict) and link.get("key") and link.get("relation"):
                    pairs.append((str(link["relation"]), str(link["key"])))
            if stored is None and issue.get("parent_key"):  # a row committed before links were synced
                pairs.append(("parent", issue["parent_key"]))
            listed = {k for _, k in pairs}
            children = conn.execute(
                select(issues.c.key)
                .where(issues.c.tenant_id == tenant_id, issues.c.parent_key == key, live)
                .order_by(issues.c.key)
                .limit(MAX_LINKS)
            )
            pairs += [("child", k) for (k,) in children if k not in listed]
            pairs = pairs[:MAX_LINKS]
            linked = conn.execute(
                select(issues.c.key, issues.c.summary, issues.c.status_name, issues.c.external_id).where(
                    issues.c.tenant_id == tenant_id, issues.c.key.in_({k for _, k in pairs}), live
                )
            ).all()
            known = {r.key: (r.summary, r.status_name) for r in linked}
            # A linked issue the caller may not open is left out, as Jira leaves it out.
            shown_ids = visible(conn, tenant_id, ISSUES, [str(r.external_id) for r in linked], access)
            hidden = {r.key for r in linked if str(r.external_id) not in shown_ids}
            pairs = [(rel, k) for rel, k in pairs if k not in hidden]
            links = [
                LinkedIssue(
                    key=k, relation=rel, summary=known.get(k, (None, None))[0], status=known.get(k, (None, None))[1]
                )
                for rel, k in pairs
            ]
            # Comments: the live ones the caller may see (their committed access lists); the others
            # are counted as restricted, never shown.
            of_issue = (
                comments.c.tenant_id == tenant_id,
                comments.c.issue_external_id == issue["external_id"],
                comments.c.deleted_at.is_(None),
            )
            in_issue = conn.execute(
                select(
                    comments.c.external_id, comments.c.author, comments.c.created, comments.c.updated, comments.c.body
                )
                .where(*of_issue)
                .order_by(comments.c.created.desc(), comments.c.id.desc())
            ).all()
            seen = visible(conn, tenant_id, COMMENTS, [str(r.external_id) for r in in_issue], access)
        allowed = [r for r in in_issue if str(r.external_id) in seen]
        shown = [
            IssueComment(author=r.author, created=_iso(r.created), updated=_iso(r.updated), body=_shorten(r.body))
            for r in reversed(allowed[:MAX_COMMENTS])
        ]
        return _IssueRows(issue, project_name, links, shown, len(allowed) - len(shown), len(in_issue) - len(allowed))

    async def get_issue(self, principal: Principal, key: str, *, tenant: str | None = None) -> IssueDetail:
        """The committed issue ``key`` from the tables: fields, description, links, custom fields,
        history digest and the newest comments the principal may see (the others counted, not shown).
        An issue the principal may not open is answered as not found.

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
            access = await self.access_for(principal, t)
            rows = await self._sql(functools.partial(self._issue_rows, t.id, key, access))
            if rows is not None:
                found.append((t, rows))
        if not found:
            where = ", ".join(t.id for t in candidates)
            raise NotFoundError(f"issue {key!r} not found in tenant {where} (or deleted at the source)")
        if len(found) > 1:
            raise InvalidRequestError(
                f"issue {key!r} exists in tenants {', '.join(f[0].id for f in found)}; name the tenant"
            )
        t, rows = found[0]
        issue = rows.issue
        raw_custom = issue.get("custom_fields")
        custom = {
            str(name): str(value.get("text") if isinstance(value, dict) else value)
            for name, value in (raw_custom.items() if isinstance(raw_custom, dict) else ())
        }
        raw_attachments = issue.get("attachments")
        attachments = [
            str(a.get("name"))
            for a in (raw_attachments if isinstance(raw_attachments, list) else [])
            if isinstance(a, dict)
        ]
        # A row committed before schema version 3 has none of the document columns.
        not_synced = ["attachment contents"]
        if issue.get("comments_total") is None:
            not_synced.append("comments")
        if issue.get("links") is None:
            not_synced.append("issue links other than parent/child")
        return IssueDetail(
            tenant=t.id,
            key=issue["key"],
            summary=issue["summary"],
            description=issue.get("description"),
            url=issue_url(t, issue["key"]),
            project=issue.get("project_key"),
            project_name=rows.project_name,
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
            resolved_at=_iso(issue.get("resolved_at")),
            synced_at=_iso(issue.get("synced_at")),
            links=rows.links,
            custom_fields=custom,
            attachments=attachments,
            history=issue.get("history") or None,
            comments=rows.comments,
            comments_older=rows.older,
            comments_restricted=rows.restricted,
            comments_incomplete=issue.get("comments_incomplete"),
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


# -- across sources ------------------------------------------------------------------------------
# One query over the issue-like collections of every source, merged by score. The source filter
# chooses collections (each belongs to one entity of one source), so it also holds for points
# written before points carried a ``source`` payload field.

CROSS_SOURCE_ENTITIES = tuple(name for name, spec in BY_NAME.items() if spec.work_item)


@dataclass(frozen=True)
class SourceHit:
    score: float
    source: str  # the source the row came from: 'jira', 'github'
    entity: str
    external_id: str
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.payload.get("key") or self.external_id)

    @property
    def title(self) -> str:
        return str(self.payload.get("summary") or self.payload.get("title") or "")


async def search_sources(
    client: AsyncQdrantClient,
    embedder: Embedder,
    query: str,
    *,
    tenant_id: str,
    access: Collection[str] | None,
    sources: Sequence[str] | None = None,
    entities: Sequence[str] = CROSS_SOURCE_ENTITIES,
    k: int = 10,
    mode: SearchMode | str = SearchMode.HYBRID,
) -> list[SourceHit]:
    """The tenant's best ``k`` rows for ``query`` across ``entities`` of ``sources`` (default: all),
    one hit per row, each naming its source, ranked in ``mode`` as :func:`search` ranks one entity
    (hybrid scores are rank-fused, so they compare across collections). Collections not built for
    the tenant (a source it does not use) are left out; none at all is a :class:`NotIndexedError`."""
    specs = [BY_NAME[e] for e in entities if e in BY_NAME and (sources is None or BY_NAME[e].source in sources)]
    if not specs:
        raise InvalidRequestError(f"no searchable entity for sources {', '.join(sources or [])!r}")
    present = [s for s in specs if await client.collection_exists(collection_name(tenant_id, s.name))]
    if not present:
        raise NotIndexedError(
            f"no collection of {', '.join(s.name for s in specs)} exists yet for tenant {tenant_id}: "
            "materialize their vectors"
        )
    hits = [
        SourceHit(hit.score, spec.source, spec.name, hit.external_id, hit.payload)
        for spec in present
        for hit in await search(
            client, embedder, query, tenant_id=tenant_id, access=access, entity=spec.name, k=k, mode=mode
        )
    ]
    return sorted(hits, key=lambda h: h.score, reverse=True)[:k]
