"""Landing raw responses, building committed tables, and reading them back.

The table step works in one transaction: it consumes every raw batch not yet consumed,
upserts rows, marks vanished rows deleted, quarantines records it cannot parse, and
commits before returning — so whatever reads the table afterwards sees all of it or, if
anything failed, none of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from etl_assets.core.records import ChildLink, EntitySpec, RawPage, RecordError
from etl_assets.core.store import migrations, schema
from etl_assets.core.store.retention import Keep, PruneResult, prune_raw

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_schema(engine: Engine) -> None:
    """Create the tables, or upgrade those an earlier release made (see ``store.migrations``)."""
    migrations.upgrade(engine)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()  # type: ignore[union-attr]
    return value


def row_hash(row: Mapping[str, Any]) -> str:
    canonical = json.dumps({k: _jsonable(v) for k, v in row.items()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- raw landing ----------------------------------------------------------------------------


@dataclass
class LandResult:
    batch_id: int
    kind: str
    pages: int
    records: int
    bytes: int


def land_raw(
    engine: Engine,
    spec: EntitySpec,
    tenant_id: str,
    pages: Iterable[RawPage],
    *,
    kind: str,
    run_id: str | None = None,
) -> LandResult:
    """Store every response unchanged, in one transaction, as a new pending batch.

    Pages are fetched before the transaction opens, so a Jira failure mid-listing
    leaves no half batch for the table step to mistake for a complete listing.
    """
    fetched = list(pages)
    records = sum(len(spec.records(page.json())) for page in fetched)
    with engine.begin() as conn:
        batch_id = _insert_batch(conn, tenant_id, spec.name, fetched, kind=kind, records=records, run_id=run_id)
    return LandResult(batch_id, kind, len(fetched), records, sum(len(p.body) for p in fetched))


def _insert_batch(
    conn: Connection,
    tenant_id: str,
    entity: str,
    fetched: list[RawPage],
    *,
    kind: str,
    records: int,
    run_id: str | None,
    consumed_at: datetime | None = None,
) -> int:
    inserted = conn.execute(
        insert(schema.raw_batches).values(
            tenant_id=tenant_id,
            entity=entity,
            kind=kind,
            fetched_at=utcnow(),
            pages=len(fetched),
            records=records,
            run_id=run_id,
            consumed_at=consumed_at,
        )
    ).inserted_primary_key
    assert inserted is not None  # a single-row INSERT always reports its key
    batch_id = int(inserted[0])
    _insert_pages(conn, batch_id, tenant_id, entity, fetched, 0)
    return batch_id


def _insert_pages(
    conn: Connection, batch_id: int, tenant_id: str, entity: str, fetched: list[RawPage], first: int
) -> None:
    if not fetched:
        return
    conn.execute(
        insert(schema.raw_jira_pages),
        [
            {
                "batch_id": batch_id,
                "tenant_id": tenant_id,
                "entity": entity,
                "page_no": first + i,
                "method": p.method,
                "path": p.path,
                "params": p.params,
                "status": p.status,
                "fetched_at": p.fetched_at,
                "content_hash": p.content_hash,
                "body": p.body,
            }
            for i, p in enumerate(fetched)
        ],
    )


# -- fan-out landing: a big read landed as it arrives, visible to the table step once complete -------

# A fan-out lands two batches: the id listing ("listing", sealed as "ids": what is live) and the
# records fetched for those ids ("fetching", sealed as "incremental"), appended to as each answer
# arrives — each append is a checkpoint a resumed run starts from.
UNSEALED_KINDS = ("listing", "fetching")


@dataclass(frozen=True)
class FanOutBatches:
    listing: int
    content: int
    started_at: datetime  # when the listing was landed: the catch-up re-reads from here


def unsealed_fan_out(engine: Engine, tenant_id: str, entity: str) -> FanOutBatches | None:
    """The fan-out of ``tenant_id``'s ``entity`` a killed or failed run left unfinished, if any."""
    b = schema.raw_batches
    mine = (b.c.tenant_id == tenant_id, b.c.entity == entity, b.c.consumed_at.is_(None))
    with engine.connect() as conn:
        listing = conn.execute(
            select(b.c.id, b.c.fetched_at).where(*mine, b.c.kind == "listing").order_by(b.c.id.desc()).limit(1)
        ).first()
        if listing is None:
            return None
        content = conn.execute(
            select(b.c.id).where(*mine, b.c.kind == "fetching", b.c.id > listing.id).order_by(b.c.id).limit(1)
        ).scalar_one_or_none()
    if content is None:  # never happens: both are landed in one transaction
        return None
    return FanOutBatches(int(listing.id), int(content), as_utc(listing.fetched_at))  # type: ignore[arg-type]


def start_fan_out(
    engine: Engine,
    spec: EntitySpec,
    tenant_id: str,
    listing: list[RawPage],
    *,
    run_id: str | None = None,
    records: int | None = None,
) -> FanOutBatches:
    """Land the id listing and an empty batch for the records, in one transaction; neither is seen
    by the table step until :func:`seal_fan_out`. ``records``: the ids it holds, if counted already."""
    if records is None:
        records = sum(len(spec.records(page.json())) for page in listing)
    with engine.begin() as conn:
        listing_id = _insert_batch(conn, tenant_id, spec.name, listing, kind="listing", records=records, run_id=run_id)
        content_id = _insert_batch(conn, tenant_id, spec.name, [], kind="fetching", records=0, run_id=run_id)
        started = conn.execute(
            select(schema.raw_batches.c.fetched_at).where(schema.raw_batches.c.id == listing_id)
        ).scalar_one()
    return FanOutBatches(listing_id, content_id, as_utc(started))  # type: ignore[arg-type]


def record_ids(records: Iterable[Any]) -> Iterator[str]:
    """The ids of ``records`` (those without a usable id are skipped), as the table step keys them."""
    for record in records:
        key = _record_key(record)
        if key is not None:
            yield key


def _batch_record_ids(conn: Connection, spec: EntitySpec, tenant_id: str, batch_id: int) -> Iterator[str]:
    for _no, _path, _params, body in _batch_pages(conn, tenant_id, batch_id):
        yield from record_ids(spec.records(json.loads(body)))


def fan_out_ids(engine: Engine, spec: EntitySpec, tenant_id: str, batches: FanOutBatches) -> tuple[list[str], set[str]]:
    """The ids the listing holds (in its order), and those whose records have landed already."""
    with engine.connect() as conn:
        listed = list(dict.fromkeys(_batch_record_ids(conn, spec, tenant_id, batches.listing)))
        landed = set(_batch_record_ids(conn, spec, tenant_id, batches.content))
    return listed, landed


def append_fan_out(
    engine: Engine,
    spec: EntitySpec,
    tenant_id: str,
    batches: FanOutBatches,
    pages: list[RawPage],
    records: int | None = None,
) -> int:
    """Append ``pages`` to the fan-out's records batch in one transaction (a checkpoint); the records
    they hold (``records`` when the caller counted them already)."""
    if not pages:
        return 0
    if records is None:
        records = sum(len(spec.records(page.json())) for page in pages)
    b, p = schema.raw_batches, schema.raw_jira_pages
    with engine.begin() as conn:
        # Taken in the transaction, so the page numbers stay in landing order.
        start = conn.execute(
            select(func.coalesce(func.max(p.c.page_no) + 1, 0)).where(
                p.c.tenant_id == tenant_id, p.c.batch_id == batches.content
            )
        ).scalar_one()
        _insert_pages(conn, batches.content, tenant_id, spec.name, pages, int(start))
        conn.execute(
            update(b)
            .where(b.c.id == batches.content)
            .values(pages=b.c.pages + len(pages), records=b.c.records + records)
        )
    return records


def seal_fan_out(engine: Engine, batches: FanOutBatches) -> None:
    """Make the fan-out's two batches visible to the table step, at once: the listing says what is
    live, the records batch (landed after it) what each record holds."""
    b = schema.raw_batches
    with engine.begin() as conn:
        conn.execute(update(b).where(b.c.id == batches.listing).values(kind="ids"))
        conn.execute(update(b).where(b.c.id == batches.content).values(kind="incremental"))


def record_raw(
    conn: Connection, tenant_id: str, entity: str, pages: Iterable[RawPage], *, run_id: str | None = None
) -> int:
    """Land ``pages`` as a batch already consumed, in the caller's transaction: for a stage that
    parses what it fetched and commits the result in that same transaction (the permission
    rules). The caller prunes after its commit (``retention.prune_raw``), as the table steps do.
    Returns the batch id."""
    fetched = list(pages)
    return _insert_batch(
        conn, tenant_id, entity, fetched, kind="full", records=len(fetched), run_id=run_id, consumed_at=utcnow()
    )


# -- table build ----------------------------------------------------------------------------


@dataclass
class TableResult:
    batches: int = 0
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    undeleted: int = 0
    rejected: int = 0
    live_rows: int = 0
    watermark: datetime | None = None
    rejected_reasons: list[str] = field(default_factory=list)
    # Figures of child entities written in the same transaction, e.g. comments_inserted.
    children: dict[str, int] = field(default_factory=dict)
    # The raw retention applied after the commit (None: not applied).
    pruned: PruneResult | None = None

    def metadata(self) -> dict[str, Any]:
        skip = ("rejected_reasons", "children", "pruned")
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        out["watermark"] = self.watermark.isoformat() if self.watermark else None
        out.update(self.children)
        if self.pruned is not None:
            out.update(self.pruned.metadata())
        return out


def _pending_batches(conn: Connection, tenant_id: str, entity: str) -> list[Any]:
    """The batches the table step consumes: landed, not consumed, and not part of a fan-out still
    fetching (those become visible all at once when it is sealed)."""
    b = schema.raw_batches
    return list(
        conn.execute(
            select(b.c.id, b.c.kind)
            .where(
                b.c.tenant_id == tenant_id,
                b.c.entity == entity,
                b.c.consumed_at.is_(None),
                b.c.kind.not_in(UNSEALED_KINDS),
            )
            .order_by(b.c.id)
        )
    )


PAGES_PER_READ = 20  # raw pages held at once while a batch is read (a bulk page is about 1 MB)


def _batch_pages(
    conn: Connection, tenant_id: str, batch_id: int, only: set[int] | None = None
) -> Iterator[tuple[int, str, Any, str]]:
    """``(page_no, path, params, body)`` of a batch in landing order (only the pages ``only`` names,
    if given), read a few pages at a time: a driver that buffers a whole result (psycopg2) must not
    hold a 100,000-issue batch at once."""
    p = schema.raw_jira_pages
    mine = (p.c.tenant_id == tenant_id, p.c.batch_id == batch_id)
    numbers = [n for (n,) in conn.execute(select(p.c.page_no).where(*mine).order_by(p.c.page_no))]
    if only is not None:
        numbers = [n for n in numbers if n in only]
    for start in range(0, len(numbers), PAGES_PER_READ):
        group = numbers[start : start + PAGES_PER_READ]
        yield from conn.execute(
            select(p.c.page_no, p.c.path, p.c.params, p.c.body)
            .where(*mine, p.c.page_no.in_(group))
            .order_by(p.c.page_no)
        )


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    stmt: Any  # the two dialects' Insert types share on_conflict_do_update but no base class
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - we support the two dialects we test
        raise NotImplementedError(f"no upsert for dialect {dialect}")
    keep = {"id", "tenant_id", "external_id", "first_seen_at"}
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "external_id"],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keep},
    )
    for start in range(0, len(rows), 500):
        conn.execute(stmt, rows[start : start + 500])


def _reject(
    conn: Connection,
    tenant_id: str,
    entity: str,
    batch_id: int,
    record: Any,
    error: RecordError | str,
    annotations: tuple[str, ...] = (),
) -> str:
    reason = error.reason if isinstance(error, RecordError) else str(error)
    reason = reason.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    ext = error.external_id if isinstance(error, RecordError) else None
    if annotations and isinstance(record, dict):
        record = {k: v for k, v in record.items() if k not in annotations}
    try:
        payload = json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        # Quarantine must not fail on the record it quarantines; the page itself stays in raw_jira_pages.
        payload = f"<payload not serialisable ({type(exc).__name__}); see raw_jira_pages of batch {batch_id}>"
    payload = payload.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    conn.execute(
        insert(schema.rejected_records).values(
            tenant_id=tenant_id,
            entity=entity,
            external_id=ext,
            reason=reason[:2000],
            payload=payload[:1_000_000],
            batch_id=batch_id,
            rejected_at=utcnow(),
        )
    )
    return reason


def _record_key(record: Any) -> str | None:
    if isinstance(record, dict) and isinstance(record.get("id"), str | int) and not isinstance(record["id"], bool):
        return str(record["id"]).strip() or None
    return None


# Non-finite numbers: Python's json reads the literals NaN, Infinity and -Infinity, but they are not
# JSON (RFC 8259) and PostgreSQL's json type refuses them, which used to fail the whole table
# transaction. A record carrying one is quarantined (reason naming its Jira id and where the value
# sits) rather than written with the value replaced: Jira never sends these, so such a record is
# damaged, a replacement would store something the source never said, and quarantine shows the
# damage in the no_rejected_records check. Both backends then behave alike (SQLite would accept it).
def _loads_noting_non_finite(body: str) -> tuple[Any, bool]:
    """The parsed body, and whether it held a non-finite number (so only such bodies are walked)."""
    seen: list[str] = []

    def constant(name: str) -> float:
        seen.append(name)
        return float(name)

    return json.loads(body, parse_constant=constant), bool(seen)


def _non_finite_path(value: Any) -> tuple[str, float] | None:
    """Where ``value`` holds NaN or an infinity (e.g. ``fields.parent``), and the number."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:  # iterative: records may nest deeper than the recursion limit
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "<the record itself>", item
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


def build_table(engine: Engine, spec: EntitySpec, tenant_id: str, *, retention: Keep | None = None) -> TableResult:
    """Consume the pending raw batches for ``tenant_id`` into ``spec.table``, in one transaction;
    then, after the commit, prune the consumed raw batches that ``retention`` does not keep
    (default: :class:`~etl_assets.core.store.retention.Keep`'s)."""
    result = _build_table(engine, spec, tenant_id)
    result.pruned = prune_raw(engine, tenant_id, spec.name, retention or Keep())
    return result


def _page_records(spec: EntitySpec, data: Any, params: Any) -> list[Any]:
    if spec.page_records is not None:
        return spec.page_records(data, params if isinstance(params, dict) else {})
    return spec.records(data)


def _build_table(engine: Engine, spec: EntitySpec, tenant_id: str) -> TableResult:
    """Two passes over the pending pages, so that memory holds where each record is, not the records:
    the first finds each id's newest copy, the listings and the child pages; the second reads again
    only the pages holding a chosen copy and writes rows 500 at a time."""
    table = spec.table
    result = TableResult()
    with engine.begin() as conn:
        batches = _pending_batches(conn, tenant_id, spec.name)
        result.batches = len(batches)
        # external id -> (batch, page, index in the page, version) of its newest copy
        chosen: dict[str, tuple[int, int, int, Any]] = {}
        live_listing: set[str] | None = None  # ids in the newest complete listing, if any
        listing_batch = -1
        # (child entity, batch, parent id) -> child records fetched on pages of their own
        paged: dict[tuple[str, int, str], list[Any]] = {}
        for batch_id, kind in batches:
            listed: set[str] = set()
            for page_no, path, params, body in _batch_pages(conn, tenant_id, batch_id):
                data = json.loads(body)
                for link in spec.children:
                    found_children = link.page(path, data)
                    if found_children is not None:
                        paged.setdefault((link.spec.name, batch_id, found_children[0]), []).extend(found_children[1])
                for n, part in enumerate(spec.parts):
                    found_part = part.page(path, data)
                    if found_part is not None:
                        paged.setdefault((f"part:{n}", batch_id, found_part[0]), []).extend(found_part[1])
                for index, record in enumerate(_page_records(spec, data, params)):
                    key = _record_key(record)
                    if key is not None:
                        listed.add(key)
                    if kind == "ids":
                        continue
                    result.fetched += 1
                    if key is None:
                        result.rejected_reasons.append(
                            _reject(
                                conn,
                                tenant_id,
                                spec.name,
                                batch_id,
                                record,
                                RecordError(f"{spec.name}: a record with a missing or invalid 'id'"),
                                spec.annotations,
                            )
                        )
                        continue
                    version = spec.version(record) if spec.version is not None else None
                    held = chosen.get(key)
                    if held is not None and version is not None and held[3] is not None and version < held[3]:
                        continue  # an overlapping window brought an older copy of what we already hold
                    chosen[key] = (batch_id, page_no, index, version)
            if kind in ("full", "ids"):
                live_listing, listing_batch = listed, batch_id
        # (batch, page) -> {index in the page: external id} of the copies chosen
        wanted: dict[tuple[int, int], dict[int, str]] = {}
        for key, (batch_id, page_no, index, _version) in chosen.items():
            wanted.setdefault((batch_id, page_no), {})[index] = key

        existing = {
            row.external_id: row
            for row in conn.execute(
                select(table.c.external_id, table.c.content_hash, table.c.deleted_at).where(
                    table.c.tenant_id == tenant_id
                )
            )
        }
        now = utcnow()
        upserts: list[dict[str, Any]] = []
        kids = _Children(conn, spec, tenant_id, now, result)
        for part in spec.parts:
            result.children[f"{spec.name}_with_{part.incomplete_column}"] = 0
        for batch_id, record, key, non_finite in _chosen_records(conn, spec, tenant_id, batches, wanted):
            if live_listing is not None and batch_id < listing_batch and key not in live_listing:
                continue  # changed earlier, then gone from a later listing: the deletion below wins
            notes: dict[str, str | None] = {}
            for n, part in enumerate(spec.parts):
                record, notes[part.incomplete_column] = part.merge(record, paged.get((f"part:{n}", batch_id, key), []))
            try:
                row = spec.parse(record)
            except RecordError as exc:
                result.rejected_reasons.append(
                    _reject(conn, tenant_id, spec.name, batch_id, record, exc, spec.annotations)
                )
                continue
            for column, note in notes.items():
                row[column] = None if note is None else note[:1000]
                if note is not None:
                    result.children[f"{spec.name}_with_{column}"] += 1
            found = _non_finite_path(record) if non_finite else None
            if found is not None:
                ext = row["external_id"]  # validated by the parser: fits the rejected_records column
                reason = (
                    f"{spec.item} {ext}: '{found[0]}' is {json.dumps(found[1])}, which is not JSON (RFC 8259); "
                    "the database cannot store the record"
                )
                result.rejected_reasons.append(
                    _reject(conn, tenant_id, spec.name, batch_id, record, RecordError(reason, ext), spec.annotations)
                )
                continue
            kids.collect(record, row, batch_id, paged)
            digest = row_hash(row)
            before = existing.get(key)
            if before is not None and before.content_hash == digest and before.deleted_at is None:
                result.unchanged += 1
                continue
            if before is None:
                result.inserted += 1
            elif before.deleted_at is not None:
                result.undeleted += 1
            else:
                result.updated += 1
            upserts.append(
                {
                    **row,
                    "tenant_id": tenant_id,
                    "content_hash": digest,
                    "data": record,
                    "first_seen_at": now,
                    "synced_at": now,
                    "deleted_at": None,
                }
            )
            if len(upserts) >= 500:
                _upsert(conn, table, upserts)
                upserts.clear()
            kids.flush()
        _upsert(conn, table, upserts)

        if live_listing is not None:
            newer = {k for k, (b, _page, _index, _version) in chosen.items() if b > listing_batch}
            gone = [
                k for k, row in existing.items() if row.deleted_at is None and k not in live_listing and k not in newer
            ]
            for start in range(0, len(gone), 500):
                conn.execute(
                    update(table)
                    .where(table.c.tenant_id == tenant_id, table.c.external_id.in_(gone[start : start + 500]))
                    .values(deleted_at=now, synced_at=now)
                )
            result.deleted = len(gone)
            kids.parents_gone(gone)
        kids.finish()

        if batches:
            b = schema.raw_batches
            conn.execute(update(b).where(b.c.id.in_([bid for bid, _ in batches])).values(consumed_at=now))
        result.rejected = len(result.rejected_reasons)
        result.live_rows = conn.execute(
            select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id, table.c.deleted_at.is_(None))
        ).scalar_one()
        if "updated" in table.c:
            result.watermark = _advance_watermark(conn, spec, tenant_id, is_reconcile=live_listing is not None)
    return result


def _chosen_records(
    conn: Connection,
    spec: EntitySpec,
    tenant_id: str,
    batches: list[Any],
    wanted: dict[tuple[int, int], dict[int, str]],
) -> Iterator[tuple[int, Any, str, bool]]:
    """``(batch, record, external id, whether its page held a non-finite number)`` of each chosen
    copy, read again page by page (only pages that hold one)."""
    for batch_id, kind in batches:
        if kind == "ids":
            continue
        pages = {page for (batch, page) in wanted if batch == batch_id}
        for page_no, _path, params, body in _batch_pages(conn, tenant_id, batch_id, pages):
            data, non_finite = _loads_noting_non_finite(body)
            records = _page_records(spec, data, params)
            for index, key in sorted(wanted[(batch_id, page_no)].items()):
                yield batch_id, records[index], key, non_finite


class _Children:
    """The child rows (comments) of the parents one table step writes, in the same transaction.

    Children present on a re-fetched parent are upserted; those no longer on it are marked
    deleted — unless the parent's child list is incomplete (a page of it failed), in which
    case nothing is deleted and the parent row says why (its watermark is held back, so the
    next run fetches that parent again). Children of deleted parents are deleted with them.
    """

    def __init__(self, conn: Connection, spec: EntitySpec, tenant_id: str, now: datetime, result: TableResult):
        self.conn, self.spec, self.tenant_id, self.now, self.result = conn, spec, tenant_id, now, result
        self.existing: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.doomed: dict[str, list[str]] = {}
        for link in spec.children:
            t = link.spec.table
            parent_col = t.c[link.parent_column]
            self.existing[link.spec.name] = {
                r.external_id: r
                for r in conn.execute(
                    select(t.c.external_id, t.c.content_hash, t.c.deleted_at, parent_col.label("parent")).where(
                        t.c.tenant_id == tenant_id
                    )
                )
            }
            self.rows[link.spec.name] = []
            self.doomed[link.spec.name] = []
            for k in ("inserted", "updated", "unchanged", "deleted", "rejected"):
                result.children[f"{link.spec.name}_{k}"] = 0
            if link.incomplete_column:
                result.children[f"{spec.name}_with_incomplete_{link.spec.name}"] = 0

    def _count(self, link: ChildLink, what: str, n: int = 1) -> None:
        self.result.children[f"{link.spec.name}_{what}"] += n

    def collect(
        self, record: Any, row: dict[str, Any], batch_id: int, paged: dict[tuple[str, int, str], list[Any]]
    ) -> None:
        parent = row["external_id"]
        for link in self.spec.children:
            child = link.spec
            found = link.extract(record, paged.get((child.name, batch_id, parent), []))
            if not found.fetched:
                continue
            if link.incomplete_column:
                row[link.incomplete_column] = None if found.complete else (found.note or "incomplete")[:1000]
                if not found.complete:
                    self.result.children[f"{self.spec.name}_with_incomplete_{child.name}"] += 1
            inherited = {**link.inherit(row), link.parent_column: parent}
            present: set[str] = set()
            existing = self.existing[child.name]
            for item in found.records:
                try:
                    child_row = child.parse(item)
                except RecordError as exc:
                    if exc.external_id:
                        present.add(exc.external_id)  # still at the source: its last good row stays
                    # Named by its parent (the Jira key a person can open) and its own id.
                    where = f"{self.spec.item} {row.get('key') or parent}"
                    exc = RecordError(f"{where}: {exc.reason}", exc.external_id)
                    self.result.rejected_reasons.append(
                        _reject(self.conn, self.tenant_id, child.name, batch_id, item, exc)
                    )
                    self._count(link, "rejected")
                    continue
                ext = child_row["external_id"]
                if ext in present:
                    continue  # embedded and paged lists overlap
                present.add(ext)
                child_row.update(inherited)
                digest = row_hash(child_row)
                before = existing.get(ext)
                if before is not None and before.content_hash == digest and before.deleted_at is None:
                    self._count(link, "unchanged")
                    continue
                self._count(link, "inserted" if before is None or before.deleted_at is not None else "updated")
                self.rows[child.name].append(
                    {
                        **child_row,
                        "tenant_id": self.tenant_id,
                        "content_hash": digest,
                        "data": item,
                        "first_seen_at": self.now,
                        "synced_at": self.now,
                        "deleted_at": None,
                    }
                )
            if found.complete:
                self.doomed[child.name] += [
                    k for k, r in existing.items() if r.parent == parent and r.deleted_at is None and k not in present
                ]

    def parents_gone(self, parents: list[str]) -> None:
        gone = set(parents)
        for link in self.spec.children:
            self.doomed[link.spec.name] += [
                k for k, r in self.existing[link.spec.name].items() if r.parent in gone and r.deleted_at is None
            ]

    def flush(self, at_least: int = 500) -> None:
        """Write the child rows collected so far (when there are ``at_least``): memory stays bounded."""
        for link in self.spec.children:
            rows = self.rows[link.spec.name]
            if len(rows) >= at_least:
                _upsert(self.conn, link.spec.table, rows)
                rows.clear()

    def finish(self) -> None:
        self.flush(at_least=1)
        for link in self.spec.children:
            table = link.spec.table
            doomed = sorted(set(self.doomed[link.spec.name]))
            for start in range(0, len(doomed), 500):
                self.conn.execute(
                    update(table)
                    .where(table.c.tenant_id == self.tenant_id, table.c.external_id.in_(doomed[start : start + 500]))
                    .values(deleted_at=self.now, synced_at=self.now)
                )
            self._count(link, "deleted", len(doomed))
            cond = [table.c.tenant_id == self.tenant_id, table.c.deleted_at.is_(None)]
            live = self.conn.execute(select(func.count()).select_from(table).where(*cond)).scalar_one()
            self.result.children[f"{link.spec.name}_live"] = live
            if link.spec.indexed is not None:
                indexed = self.conn.execute(
                    select(func.count()).select_from(table).where(*cond, link.spec.indexed(table))
                ).scalar_one()
                self.result.children[f"{link.spec.name}_not_indexed"] = live - indexed


# -- sync state (watermarks) --------------------------------------------------------------------


def _advance_watermark(conn: Connection, spec: EntitySpec, tenant_id: str, *, is_reconcile: bool) -> datetime | None:
    table = spec.table
    newest = as_utc(
        conn.execute(select(func.max(table.c.updated)).where(table.c.tenant_id == tenant_id)).scalar_one_or_none()
    )
    columns = [link.incomplete_column for link in spec.children if link.incomplete_column]
    for column in (*columns, *(part.incomplete_column for part in spec.parts)):
        # A parent whose children or paged parts arrived incomplete must be fetched again: the
        # watermark stays below it (the fetch re-reads from the watermark less the overlap).
        col = table.c[column]
        oldest = as_utc(
            conn.execute(
                select(func.min(table.c.updated)).where(
                    table.c.tenant_id == tenant_id, table.c.deleted_at.is_(None), col.is_not(None)
                )
            ).scalar_one_or_none()
        )
        if oldest is not None and newest is not None and oldest <= newest:
            newest = oldest - timedelta(minutes=1)
    s = schema.sync_state
    state = conn.execute(select(s).where(s.c.tenant_id == tenant_id, s.c.entity == spec.name)).first()
    values = {
        "watermark": newest,
        "syncs_since_reconcile": 0 if is_reconcile else ((state.syncs_since_reconcile if state else 0) + 1),
    }
    if is_reconcile:
        values["last_reconciled_at"] = utcnow()
    if state is None:
        conn.execute(insert(s).values(tenant_id=tenant_id, entity=spec.name, **values))
    else:
        conn.execute(update(s).where(s.c.tenant_id == tenant_id, s.c.entity == spec.name).values(**values))
    return newest


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    syncs_since_reconcile: int
    last_reconciled_at: datetime | None


def ever_synced(engine: Engine, tenant_id: str, entity: str) -> bool:
    """Whether a table step of ``entity`` ever committed for the tenant (it records a sync state then,
    even when the source held nothing and there is no watermark)."""
    s = schema.sync_state
    with engine.connect() as conn:
        found = conn.execute(select(s.c.entity).where(s.c.tenant_id == tenant_id, s.c.entity == entity)).first()
    return found is not None


def holds_data(engine: Engine, specs: Iterable[EntitySpec], tenant_id: str) -> bool:
    """Whether the database holds anything of these entities for the tenant: a row (live or marked
    deleted) or a landed raw batch with records. Nothing means no point was ever written either:
    points are only ever written from committed rows."""
    b = schema.raw_batches
    with engine.connect() as conn:
        for spec in specs:
            t = spec.table
            if conn.execute(select(t.c.id).where(t.c.tenant_id == tenant_id).limit(1)).first() is not None:
                return True
            landed = select(b.c.id).where(b.c.tenant_id == tenant_id, b.c.entity == spec.name, b.c.records > 0)
            if conn.execute(landed.limit(1)).first() is not None:
                return True
    return False


def read_sync_state(engine: Engine, tenant_id: str, entity: str) -> SyncState:
    s = schema.sync_state
    with engine.connect() as conn:
        row = conn.execute(select(s).where(s.c.tenant_id == tenant_id, s.c.entity == entity)).first()
    if row is None:
        return SyncState(None, 0, None)
    return SyncState(as_utc(row.watermark), row.syncs_since_reconcile, as_utc(row.last_reconciled_at))


# -- reading committed rows -----------------------------------------------------------------------


def iter_rows(
    engine: Engine,
    spec: EntitySpec,
    tenant_id: str,
    *,
    deleted: bool = False,
    page_size: int = 500,
    access: bool = False,
) -> Iterator[list[dict[str, Any]]]:
    """Committed rows of one tenant in pages (keyset on the primary key), through a fresh connection.

    Memory is bounded by ``page_size``; each page is read in its own short transaction
    so that a long vectorization does not pin a snapshot. With ``access``, each row of an
    entity that has access lists (``spec.access``) carries its committed list as ``access``
    (None when it has none yet), read in the same transaction as the page.
    """
    table = spec.table
    last_id = 0
    while True:
        with engine.connect() as conn:
            where = and_(
                table.c.tenant_id == tenant_id,
                table.c.id > last_id,
                table.c.deleted_at.is_not(None) if deleted else table.c.deleted_at.is_(None),
                *([spec.indexed(table)] if spec.indexed is not None and not deleted else []),
            )
            rows = [
                dict(r._mapping) for r in conn.execute(select(table).where(where).order_by(table.c.id).limit(page_size))
            ]
            if access and spec.access is not None and rows:
                lists = spec.access(conn, tenant_id, [str(r["external_id"]) for r in rows])
                for row in rows:
                    row["access"] = lists.get(str(row["external_id"]))
        if not rows:
            return
        for row in rows:
            for col in ("updated", "created", "deleted_at", "synced_at", "first_seen_at"):
                if col in row:
                    row[col] = as_utc(row[col])
        yield rows
        last_id = rows[-1]["id"]


def count_rows(engine: Engine, spec: EntitySpec, tenant_id: str, *, live: bool = True) -> int:
    table = spec.table
    cond = table.c.deleted_at.is_(None) if live else table.c.deleted_at.is_not(None)
    extra = [spec.indexed(table)] if spec.indexed is not None and live else []
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id, cond, *extra)
        ).scalar_one()


def live_rows_after_pending(engine: Engine, spec: EntitySpec, tenant_id: str) -> int:
    """How many live rows the table will hold once its pending batches are consumed, if nothing
    was deleted: the live rows now (indexed or not) plus the records of pending batches that are
    not among them (new objects, or deleted rows that came back)."""
    table = spec.table
    with engine.connect() as conn:
        live = conn.execute(
            select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id, table.c.deleted_at.is_(None))
        ).scalar_one()
        pending: set[str] = set()
        for batch_id, _kind in _pending_batches(conn, tenant_id, spec.name):
            for _no, _path, _params, body in _batch_pages(conn, tenant_id, batch_id):
                pending.update(k for k in map(_record_key, spec.records(json.loads(body))) if k is not None)
        ids = sorted(pending)
        known = 0
        for start in range(0, len(ids), 500):
            known += conn.execute(
                select(func.count())
                .select_from(table)
                .where(
                    table.c.tenant_id == tenant_id,
                    table.c.deleted_at.is_(None),
                    table.c.external_id.in_(ids[start : start + 500]),
                )
            ).scalar_one()
    return int(live) + len(ids) - int(known)


def live_fingerprint(engine: Engine, spec: EntitySpec, tenant_id: str, *, access: bool = False) -> str:
    """A digest of the tenant's live rows (ids and row hashes): equal digests, equal live rows.

    Reads two short columns, so the vector step can tell "nothing changed" without
    reading whole rows (see ``vectorsync.sync_vectors``). With ``access``, the rows' committed
    access lists (``spec.access``) are part of it: a changed list is a change the vector step
    must look at (it rewrites the points' payload, not their vectors).
    """
    table = spec.table
    digest = hashlib.sha256()
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.external_id, table.c.content_hash)
            .where(
                table.c.tenant_id == tenant_id,
                table.c.deleted_at.is_(None),
                *([spec.indexed(table)] if spec.indexed is not None else []),
            )
            .order_by(table.c.id)
        ).all()
        for external_id, content_hash in rows:
            digest.update(f"{external_id}\x1f{content_hash}\x1e".encode())
        if access and spec.access is not None:
            ids = [str(r[0]) for r in rows]
            for start in range(0, len(ids), 500):
                lists = spec.access(conn, tenant_id, ids[start : start + 500])
                for external_id in ids[start : start + 500]:
                    acl = lists.get(external_id)
                    digest.update(f"{external_id}\x1f{'' if acl is None else ','.join(acl)}\x1d".encode())
    return digest.hexdigest()


# -- checks ---------------------------------------------------------------------------------


def duplicate_ids(conn: Connection, spec: EntitySpec, tenant_id: str) -> list[str]:
    t = spec.table
    q = (
        select(t.c.external_id)
        .where(t.c.tenant_id == tenant_id)
        .group_by(t.c.external_id)
        .having(func.count() > 1)
        .limit(20)
    )
    return [r[0] for r in conn.execute(q)]


def rows_without_tenant(conn: Connection, spec: EntitySpec) -> int:
    t = spec.table
    return conn.execute(
        select(func.count()).select_from(t).where((t.c.tenant_id.is_(None)) | (t.c.tenant_id == ""))
    ).scalar_one()


def dangling_references(
    conn: Connection, spec: EntitySpec, tenant_id: str, catalogue: Mapping[str, EntitySpec]
) -> dict[str, int]:
    """Live rows whose (tenant, Jira id) reference finds no row of the referenced entity."""
    t = spec.table
    out: dict[str, int] = {}
    for column, target_name in spec.references:
        target = catalogue[target_name].table
        ref = t.c[column]
        exists = select(target.c.id).where(target.c.tenant_id == t.c.tenant_id, target.c.external_id == ref).exists()
        q = (
            select(func.count())
            .select_from(t)
            .where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None), ref.is_not(None), ~exists)
        )
        out[column] = conn.execute(q).scalar_one()
    return out


def rejected_count(conn: Connection, entity: str, tenant_id: str, since: datetime | None = None) -> int:
    r = schema.rejected_records
    cond = [r.c.tenant_id == tenant_id, r.c.entity == entity]
    if since is not None:
        cond.append(r.c.rejected_at >= since)
    return conn.execute(select(func.count()).select_from(r).where(*cond)).scalar_one()
