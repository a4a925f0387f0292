"""Neutral records every stage speaks: raw pages, record errors, entity specs.

Sources produce them, the store and the vector engine consume them; nothing here knows a
particular source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table

if TYPE_CHECKING:
    from etl_assets.core.tenants import Tenant


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: a datetime as ISO 8601 in UTC (a naive one is UTC already).

    One rule for every stage, so that the row hash of the store and the payload of a point
    spell the same instant the same way.
    """
    if isinstance(value, datetime):
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()
    return value


@dataclass(frozen=True)
class RawPage:
    """One response body as the source sent it, with what was asked for."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: str
    fetched_at: datetime

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.body.encode("utf-8")).hexdigest()

    def json(self) -> Any:
        return json.loads(self.body)


class RecordError(ValueError):
    """One source record is unusable; ``external_id`` is set when it could be read."""

    def __init__(self, reason: str, external_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.external_id = external_id


@dataclass(frozen=True)
class FetchRequest:
    tenant: Tenant
    since: datetime | None = None  # incremental entities: fetch only what changed since
    ids_only: bool = False  # a cheap listing of live ids, for reconciliation
    page_size: int = 50


@dataclass(frozen=True)
class ChildRecords:
    """The child records (e.g. comments) found for one parent record (e.g. an issue).

    ``complete`` is False when the source said it has more than arrived (a capped list whose
    paging failed): the children that arrived are upserted, absent ones are NOT marked deleted,
    and the parent is flagged so that the next run fetches it again.
    """

    records: list[Any]
    complete: bool = True
    note: str | None = None
    # False when the parent record does not carry the children at all (the field was not asked
    # for): nothing is upserted or deleted, and the parent is not flagged.
    fetched: bool = True


@dataclass(frozen=True)
class ChildLink:
    """How a parent entity carries a child entity whose rows it commits in its own transaction."""

    spec: EntitySpec  # the child entity (its ``parent`` names the parent entity)
    parent_column: str  # the child table's column holding the parent's external id
    # (parent record, extra child records fetched on their own pages for it) -> its children
    extract: Callable[[Any, list[Any]], ChildRecords]
    # (request path, parsed body) -> (parent external id, child records) for a page that carries
    # children fetched separately (e.g. ``GET /issue/{id}/comment``); None for other pages.
    page: Callable[[str, Any], tuple[str, list[Any]] | None]
    # Columns the child rows copy from their parent's row (e.g. the issue key).
    inherit: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda parent_row: {}
    # Column of the parent table where an incomplete child list is noted (held back watermark).
    incomplete_column: str | None = None


@dataclass(frozen=True)
class PagedPart:
    """A part of a parent record that the source caps and the raw step pages on its own (the
    histories of a long Jira changelog), merged back into the record before it is parsed."""

    # (request path, parsed body) -> (parent external id, items) for a page of this part; else None
    page: Callable[[str, Any], tuple[str, list[Any]] | None]
    # (record, items paged for it) -> (the whole record, None; or as much as arrived, why incomplete)
    merge: Callable[[Any, list[Any]], tuple[Any, str | None]]
    # Column of the parent table where an incomplete part is noted (held back watermark).
    incomplete_column: str


@dataclass(frozen=True)
class FanOut:
    """How a source reads a big listing in parallel (a first sync, a full re-sync): ids first, then
    the records of a chunk of ids per request (``core.pipeline.fetch_fanned_out`` runs it)."""

    # (the source's client, request) -> pages listing the live ids cheaply (ids only, large pages)
    list_ids: Callable[[Any, FetchRequest], Iterator[RawPage]]
    # (client, request) -> pages landed before the records (e.g. a field listing), and what every
    # chunk's request asks for (passed to ``fetch`` unchanged)
    begin: Callable[[Any, FetchRequest], tuple[list[RawPage], Any]]
    # (client, what ``begin`` returned, ids) -> every page of those records (with their follow-up
    # pages, e.g. comments beyond the embedded ones) and how many records they hold. Runs on
    # several threads at once.
    fetch: Callable[[Any, Any, list[str]], tuple[list[RawPage], int]]
    chunk: int = 100  # ids per request (the endpoint's maximum)
    # (client, what ``begin`` returned, request with ``since``) -> the pages of what changed since
    # (the catch-up after the chunks); None: the entity's own incremental ``fetch``
    catch_up: Callable[[Any, Any, FetchRequest], Iterator[RawPage]] | None = None


@dataclass(frozen=True)
class EntitySpec:
    source: str  # the package under core/sources/ it comes from; part of asset keys and point ids
    name: str  # table name and the last part of the collection name
    item: str  # one record, singular, for names and messages: 'issue'
    title: str  # for docstrings and the UI
    endpoint: str
    table: Table
    parse: Callable[[object], dict[str, Any]]
    fetch: Callable[[Any, FetchRequest], Iterator[RawPage]]  # (the source's client, request)
    records: Callable[[Any], list[Any]]  # the source objects inside one response body
    text: Callable[[Mapping[str, Any]], str]  # what we embed
    payload: Callable[[Mapping[str, Any]], dict[str, Any]]  # display/filter fields on each point
    references: tuple[tuple[str, str], ...] = ()  # (column, referenced entity) by (tenant, source id)
    payload_indexes: Mapping[str, str] = field(default_factory=dict)  # payload field -> Qdrant schema
    # Filter fields that differ per row and per tenant (a tenant's Jira custom fields): row ->
    # {payload field: (index kind, the name a search filters it by)}. The vector sync creates their
    # payload indexes when it first meets them and records them in the collection's metadata,
    # where a search looks a filter's name up (vectorstore.ROW_FILTERS_KEY).
    row_filters: Callable[[Mapping[str, Any]], Mapping[str, tuple[str, str]]] | None = None
    # The parts of ``text`` that are chunked apart, in order (a Jira issue: its fields and
    # description, each rich-text custom field, its history; ``text`` is the parts joined by blank
    # lines): a short part about something else, embedded inside a chunk of a long one, is
    # averaged away. None: ``text`` is chunked as one.
    sections: Callable[[Mapping[str, Any]], Sequence[str]] | None = None
    incremental: bool = False  # fetched by watermark; deletions found by reconciliation
    # The source has no cheap id listing (GitHub): its reconciliation fetches whole records and
    # applies them as a full listing, so what changed without a newer timestamp converges too.
    reconcile_in_full: bool = False
    # When one source object arrives twice (overlapping incremental windows), the newer version wins.
    version: Callable[[Any], Any] | None = None
    # For incremental entities: (the source's client, tenant, since) -> the newest change at or after
    # ``since``, in one cheap request; what the change sensor asks before it starts a run.
    newest_change: Callable[[Any, Tenant, datetime], datetime | None] | None = None
    # For incremental entities: (the source's client, tenant) -> the source's estimate of how many
    # of the tenant's objects exist now, in one cheap request; None when it cannot say. An estimate
    # below the live rows the table will hold makes the raw step reconcile in the same run: a
    # trigger only, the id listing decides what is gone. None here: reconcile on the schedule only.
    live_estimate: Callable[[Any, Tenant], int | None] | None = None
    # A child entity (comments of issues) has no raw or table step of its own: its rows are written
    # by its parent's table step, in the parent's transaction; its vectors follow the parent's table.
    parent: str | None = None
    children: tuple[ChildLink, ...] = ()
    # Parts of a record paged separately by the raw step and merged before parsing (see PagedPart).
    parts: tuple[PagedPart, ...] = ()
    # Which live rows are indexed (a SQL condition on the table); None: all of them. Rows left out
    # (restricted comments) stay in the table, are counted, and have no points.
    indexed: Callable[[Table], Any] | None = None
    # Who may see each row's points (guarantee 4): (connection, tenant, external ids) -> the
    # committed access list of each id that has one (principals such as ``user:<accountId>``,
    # ``group:<groupId>``, ``public``). The vector sync writes it as the points' ``access``
    # payload; a row without a list, and every row of an entity without this, gets none, and
    # only an unrestricted (operator) search finds it.
    access: Callable[[Any, str, Sequence[str]], Mapping[str, Sequence[str]]] | None = None
    # The records of a landed page read with what the page asked for (its landed ``params``),
    # when that matters (which of an issue's custom fields are the tenant's); else ``records``.
    page_records: Callable[[Any, Mapping[str, Any]], list[Any]] | None = None
    # Keys ``page_records`` adds to each record for its parser (what the request asked for): left
    # out of a quarantined record's stored payload, which is the record as the source sent it.
    annotations: tuple[str, ...] = ()
    # A work item (an issue, a pull request): searched together across sources (search_sources).
    work_item: bool = False
    # A parallel, resumable way to read everything (see FanOut); None: full listings are paged.
    fan_out: FanOut | None = None
