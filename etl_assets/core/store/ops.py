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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from etl_assets.core.records import EntitySpec, RawPage, RecordError
from etl_assets.core.store import migrations, schema

log = logging.getLogger(__name__)

KEEP_CONSUMED_BATCHES = 3  # raw history kept per tenant and entity, for audit and replay


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
    now = utcnow()
    with engine.begin() as conn:
        inserted = conn.execute(
            insert(schema.raw_batches).values(
                tenant_id=tenant_id,
                entity=spec.name,
                kind=kind,
                fetched_at=now,
                pages=len(fetched),
                records=records,
                run_id=run_id,
            )
        ).inserted_primary_key
        assert inserted is not None  # a single-row INSERT always reports its key
        batch_id = inserted[0]
        if fetched:
            conn.execute(
                insert(schema.raw_jira_pages),
                [
                    {
                        "batch_id": batch_id,
                        "tenant_id": tenant_id,
                        "entity": spec.name,
                        "page_no": i,
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
    return LandResult(batch_id, kind, len(fetched), records, sum(len(p.body) for p in fetched))


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

    def metadata(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "rejected_reasons"}
        out["watermark"] = self.watermark.isoformat() if self.watermark else None
        return out


def _pending_batches(conn: Connection, tenant_id: str, entity: str) -> list[Any]:
    b = schema.raw_batches
    return list(
        conn.execute(
            select(b.c.id, b.c.kind)
            .where(b.c.tenant_id == tenant_id, b.c.entity == entity, b.c.consumed_at.is_(None))
            .order_by(b.c.id)
        )
    )


def _batch_bodies(conn: Connection, batch_id: int) -> Iterator[str]:
    p = schema.raw_jira_pages
    for (body,) in conn.execute(select(p.c.body).where(p.c.batch_id == batch_id).order_by(p.c.page_no)):
        yield body


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


def _reject(conn: Connection, tenant_id: str, entity: str, batch_id: int, record: Any, error: RecordError | str) -> str:
    reason = error.reason if isinstance(error, RecordError) else str(error)
    reason = reason.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    ext = error.external_id if isinstance(error, RecordError) else None
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


def _older(spec: EntitySpec, record: Any, held: Any) -> bool:
    if spec.version is None:
        return False
    new, old = spec.version(record), spec.version(held)
    return new is not None and old is not None and new < old


def build_table(engine: Engine, spec: EntitySpec, tenant_id: str) -> TableResult:
    """Consume the pending raw batches for ``tenant_id`` into ``spec.table``, in one transaction."""
    table = spec.table
    result = TableResult()
    with engine.begin() as conn:
        batches = _pending_batches(conn, tenant_id, spec.name)
        result.batches = len(batches)
        latest: dict[str, tuple[Any, int]] = {}  # external id -> (record, batch) — newest batch wins
        non_finite_batches: set[int] = set()  # batches with a NaN/Infinity somewhere in a body
        live_listing: set[str] | None = None  # ids in the newest complete listing, if any
        listing_batch = -1
        for batch_id, kind in batches:
            listed: set[str] = set()
            for body in _batch_bodies(conn, batch_id):
                data, has_non_finite = _loads_noting_non_finite(body)
                if has_non_finite:
                    non_finite_batches.add(batch_id)
                for record in spec.records(data):
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
                            )
                        )
                        continue
                    if key in latest and _older(spec, record, latest[key][0]):
                        continue  # an overlapping window brought an older copy of what we already hold
                    latest[key] = (record, batch_id)
            if kind in ("full", "ids"):
                live_listing, listing_batch = listed, batch_id

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
        for key, (record, batch_id) in latest.items():
            if live_listing is not None and batch_id < listing_batch and key not in live_listing:
                continue  # changed earlier, then gone from a later listing: the deletion below wins
            try:
                row = spec.parse(record)
            except RecordError as exc:
                result.rejected_reasons.append(_reject(conn, tenant_id, spec.name, batch_id, record, exc))
                continue
            found = _non_finite_path(record) if batch_id in non_finite_batches else None
            if found is not None:
                ext = row["external_id"]  # validated by the parser: fits the rejected_records column
                reason = (
                    f"{spec.item} {ext}: '{found[0]}' is {json.dumps(found[1])}, which is not JSON (RFC 8259); "
                    "the database cannot store the record"
                )
                result.rejected_reasons.append(
                    _reject(conn, tenant_id, spec.name, batch_id, record, RecordError(reason, ext))
                )
                continue
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
        _upsert(conn, table, upserts)

        if live_listing is not None:
            newer = {k for k, (_, b) in latest.items() if b > listing_batch}
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

        if batches:
            b = schema.raw_batches
            conn.execute(update(b).where(b.c.id.in_([bid for bid, _ in batches])).values(consumed_at=now))
            _prune_raw(conn, tenant_id, spec.name)
        result.rejected = len(result.rejected_reasons)
        result.live_rows = conn.execute(
            select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id, table.c.deleted_at.is_(None))
        ).scalar_one()
        if "updated" in table.c:
            result.watermark = _advance_watermark(conn, spec, tenant_id, is_reconcile=live_listing is not None)
    return result


def _prune_raw(conn: Connection, tenant_id: str, entity: str) -> None:
    b = schema.raw_batches
    old = [
        bid
        for (bid,) in conn.execute(
            select(b.c.id)
            .where(b.c.tenant_id == tenant_id, b.c.entity == entity, b.c.consumed_at.is_not(None))
            .order_by(b.c.id.desc())
            .offset(KEEP_CONSUMED_BATCHES)
        )
    ]
    if old:
        p = schema.raw_jira_pages
        conn.execute(p.delete().where(p.c.batch_id.in_(old)))
        conn.execute(b.delete().where(b.c.id.in_(old)))


# -- sync state (watermarks) --------------------------------------------------------------------


def _advance_watermark(conn: Connection, spec: EntitySpec, tenant_id: str, *, is_reconcile: bool) -> datetime | None:
    table = spec.table
    newest = as_utc(
        conn.execute(select(func.max(table.c.updated)).where(table.c.tenant_id == tenant_id)).scalar_one_or_none()
    )
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


def read_sync_state(engine: Engine, tenant_id: str, entity: str) -> SyncState:
    s = schema.sync_state
    with engine.connect() as conn:
        row = conn.execute(select(s).where(s.c.tenant_id == tenant_id, s.c.entity == entity)).first()
    if row is None:
        return SyncState(None, 0, None)
    return SyncState(as_utc(row.watermark), row.syncs_since_reconcile, as_utc(row.last_reconciled_at))


# -- reading committed rows -----------------------------------------------------------------------


def iter_rows(
    engine: Engine, spec: EntitySpec, tenant_id: str, *, deleted: bool = False, page_size: int = 500
) -> Iterator[list[dict[str, Any]]]:
    """Committed rows of one tenant in pages (keyset on the primary key), through a fresh connection.

    Memory is bounded by ``page_size``; each page is read in its own short transaction
    so that a long vectorization does not pin a snapshot.
    """
    table = spec.table
    last_id = 0
    while True:
        with engine.connect() as conn:
            where = and_(
                table.c.tenant_id == tenant_id,
                table.c.id > last_id,
                table.c.deleted_at.is_not(None) if deleted else table.c.deleted_at.is_(None),
            )
            rows = [
                dict(r._mapping) for r in conn.execute(select(table).where(where).order_by(table.c.id).limit(page_size))
            ]
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
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id, cond)
        ).scalar_one()


def live_fingerprint(engine: Engine, spec: EntitySpec, tenant_id: str) -> str:
    """A digest of the tenant's live rows (ids and row hashes): equal digests, equal live rows.

    Reads two short columns, so the vector step can tell "nothing changed" without
    reading whole rows (see ``vectorsync.sync_vectors``).
    """
    table = spec.table
    digest = hashlib.sha256()
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.external_id, table.c.content_hash)
            .where(table.c.tenant_id == tenant_id, table.c.deleted_at.is_(None))
            .order_by(table.c.id)
        )
        for external_id, content_hash in rows:
            digest.update(f"{external_id}\x1f{content_hash}\x1e".encode())
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
