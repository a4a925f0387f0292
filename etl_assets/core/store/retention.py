"""How long landed raw responses are kept, per entity, and the pruning that applies it.

Raw batches are kept after their table step consumed them, for audit and replay; without a
bound they grow with every sync (four runs of a 2,000-issue tenant left 109 MB). A consumed
batch is kept while it is among the entity's newest ``batches`` consumed batches **and** (when
``days`` is set) was fetched within the last ``days`` days; both are caps. Pending batches
(landed, not yet consumed, or a fan-out still fetching) are never pruned.

Pruning runs after the table step's commit, in a transaction of its own: a prune that fails
leaves the committed table as it is, and the table transaction is not held open by deletes.
SQLite does not give the freed pages back to the file system by itself; the maintenance job
(``raw_maintenance``) reclaims them on its schedule (see :func:`reclaim_space`). PostgreSQL
leaves that to autovacuum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, LargeBinary, cast, func, select
from sqlalchemy import text as sql_text

from etl_assets.core.store import schema

DEFAULT_KEEP_BATCHES = 3
_ENTITY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Keep:
    """What one entity keeps: the newest ``batches`` consumed batches, none older than ``days``."""

    batches: int = DEFAULT_KEEP_BATCHES
    days: int | None = None

    def describe(self) -> str:
        batches = f"{self.batches} batch" + ("" if self.batches == 1 else "es")
        return batches + (f", {self.days} days" if self.days is not None else "")


@dataclass(frozen=True)
class RawRetention:
    """The retention of every entity: a default and per-entity overrides (by entity name)."""

    batches: int = DEFAULT_KEEP_BATCHES
    days: int | None = None
    batches_by_entity: Mapping[str, int] = field(default_factory=dict)
    days_by_entity: Mapping[str, int] = field(default_factory=dict)

    def of(self, entity: str) -> Keep:
        return Keep(self.batches_by_entity.get(entity, self.batches), self.days_by_entity.get(entity, self.days))

    @property
    def entities(self) -> set[str]:
        """The entities named by an override (checked against the catalogue by the definitions)."""
        return set(self.batches_by_entity) | set(self.days_by_entity)

    @classmethod
    def parse(cls, batches: str | None, days: str | None) -> RawRetention:
        """From ``ETL_RAW_KEEP_BATCHES`` / ``ETL_RAW_KEEP_DAYS``: ``N`` for every entity and/or
        ``entity=N`` overrides, separated by commas (e.g. ``3,issues=10``). Raises ValueError
        naming the part it cannot read."""
        default_batches, by_batches = _parse_counts(batches, minimum=0, what="batches", example="3,issues=10")
        default_days, by_days = _parse_counts(days, minimum=1, what="days", example="30,issues=7")
        return cls(
            DEFAULT_KEEP_BATCHES if default_batches is None else default_batches,
            default_days,
            by_batches,
            by_days,
        )


def _parse_counts(text: str | None, *, minimum: int, what: str, example: str) -> tuple[int | None, dict[str, int]]:
    default: int | None = None
    by_entity: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = (x.strip() for x in item.rpartition("="))
        if not re.fullmatch(r"\d+", value) or int(value) < minimum:
            raise ValueError(
                f"{item!r}: use a whole number of {minimum} or more ({what}), alone or as entity=N, "
                f"separated by commas (e.g. {example})"
            )
        if not sep:
            if default is not None:
                raise ValueError(f"{item!r}: a second value for every entity (name the entity: entity=N)")
            default = int(value)
        elif not _ENTITY.fullmatch(name):
            raise ValueError(f"{item!r}: {name!r} is not an entity name (e.g. issues, projects, permissions)")
        else:
            by_entity[name] = int(value)
    return default, by_entity


@dataclass
class PruneResult:
    """What one prune removed and what it left (consumed batches only)."""

    pruned_batches: int = 0
    pruned_pages: int = 0
    pruned_bytes: int = 0
    kept_batches: int = 0
    kept_pages: int = 0
    policy: str = ""

    def metadata(self) -> dict[str, Any]:
        return {
            "raw_pruned_batches": self.pruned_batches,
            "raw_pruned_pages": self.pruned_pages,
            "raw_pruned_bytes": self.pruned_bytes,
            "raw_kept_batches": self.kept_batches,
            "raw_kept_pages": self.kept_pages,
            "raw_retention": self.policy,
        }


def _body_bytes(conn: Connection) -> Any:
    p = schema.raw_jira_pages
    if conn.dialect.name == "postgresql":
        return func.octet_length(p.c.body)
    return func.length(cast(p.c.body, LargeBinary))  # SQLite: length() of TEXT counts characters


def prune(conn: Connection, tenant_id: str, entity: str, keep: Keep, *, now: datetime | None = None) -> PruneResult:
    """Delete ``entity``'s consumed batches of ``tenant_id`` that ``keep`` does not keep, in ``conn``'s
    transaction; pages go with their batch."""
    b, p = schema.raw_batches, schema.raw_jira_pages
    consumed = [
        (bid, fetched_at)
        for bid, fetched_at in conn.execute(
            select(b.c.id, b.c.fetched_at)
            .where(b.c.tenant_id == tenant_id, b.c.entity == entity, b.c.consumed_at.is_not(None))
            .order_by(b.c.id.desc())
        )
    ]
    cutoff = None if keep.days is None else (now or datetime.now(UTC)) - timedelta(days=keep.days)
    doomed: list[int] = []
    kept: list[int] = []
    for n, (bid, fetched_at) in enumerate(consumed):
        fetched = fetched_at.replace(tzinfo=UTC) if fetched_at.tzinfo is None else fetched_at
        too_old = cutoff is not None and fetched < cutoff
        (doomed if n >= keep.batches or too_old else kept).append(bid)
    result = PruneResult(policy=keep.describe())
    for start in range(0, len(doomed), 500):
        part = doomed[start : start + 500]
        pages, size = conn.execute(
            select(func.count(), func.coalesce(func.sum(_body_bytes(conn)), 0)).where(
                p.c.tenant_id == tenant_id, p.c.batch_id.in_(part)
            )
        ).one()
        result.pruned_pages += int(pages)
        result.pruned_bytes += int(size)
        conn.execute(p.delete().where(p.c.batch_id.in_(part)))
        conn.execute(b.delete().where(b.c.id.in_(part)))
    result.pruned_batches = len(doomed)
    result.kept_batches = len(kept)
    for start in range(0, len(kept), 500):
        result.kept_pages += int(
            conn.execute(
                select(func.count())
                .select_from(p)
                .where(p.c.tenant_id == tenant_id, p.c.batch_id.in_(kept[start : start + 500]))
            ).scalar_one()
        )
    return result


def prune_raw(engine: Engine, tenant_id: str, entity: str, keep: Keep) -> PruneResult:
    """:func:`prune` in a transaction of its own (after the table step's commit)."""
    with engine.begin() as conn:
        return prune(conn, tenant_id, entity, keep)


@dataclass(frozen=True)
class ReclaimResult:
    dialect: str
    action: str
    file_bytes_before: int | None = None
    file_bytes_after: int | None = None
    free_pages_before: int | None = None

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dialect": self.dialect, "action": self.action}
        if self.file_bytes_before is not None:
            out |= {
                "file_bytes_before": self.file_bytes_before,
                "file_bytes_after": self.file_bytes_after,
                "free_pages_before": self.free_pages_before,
                "reclaimed_bytes": (self.file_bytes_before or 0) - (self.file_bytes_after or 0),
            }
        return out


def _sqlite_sizes(conn: Connection) -> tuple[int, int]:
    page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
    pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    return pages * page_size, free


def reclaim_space(engine: Engine, *, min_free_fraction: float = 0.1) -> ReclaimResult:
    """Give the pages freed by pruning back to the file system: SQLite only.

    SQLite keeps deleted pages in its file (free list) for reuse. When they are at least
    ``min_free_fraction`` of the file, ``VACUUM`` rewrites the database without them (it needs
    the database to itself for a moment and temporary space up to the file's size; the busy
    timeout waits for a running step's transaction), then the WAL is checkpointed and truncated.
    PostgreSQL: nothing to do here, autovacuum makes freed space reusable.
    """
    if engine.dialect.name != "sqlite":
        return ReclaimResult(engine.dialect.name, "none: left to autovacuum")
    with engine.connect() as conn:
        before, free = _sqlite_sizes(conn)
        page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
        if before == 0 or free * page_size < min_free_fraction * before:
            return ReclaimResult("sqlite", "none: little free space", before, before, free)
    # VACUUM cannot run inside a transaction: autocommit on a connection of its own.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sql_text("VACUUM"))
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        after, _ = _sqlite_sizes(conn)
    return ReclaimResult("sqlite", "vacuum", before, after, free)
