"""The SQL schema every source shares: raw landing, quarantine, sync state, schema versions, the entity-table shape.

Sources declare their own entity tables with :func:`entity_table` on the same ``metadata``.

SQLAlchemy Core keeps one schema for SQLite (the embedded default) and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

TS = DateTime(timezone=True)
# Surrogate keys are 64-bit on PostgreSQL: every INSERT .. ON CONFLICT DO UPDATE draws a value
# from the sequence even when it updates, so a large tenant re-synced in full many times would
# exhaust a 32-bit serial long before it had 2^31 rows. SQLite's INTEGER PRIMARY KEY is 64-bit
# already, and only that spelling makes it the rowid (autoincrementing).
ID = BigInteger().with_variant(Integer(), "sqlite")

raw_batches = Table(
    "raw_batches",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("tenant_id", String(48), nullable=False),
    Column("entity", String(32), nullable=False),
    # full: a complete listing; incremental: changes since a watermark; ids: a reconciliation listing
    Column("kind", String(16), nullable=False),
    Column("fetched_at", TS, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("records", Integer, nullable=False),
    Column("run_id", String(64)),
    Column("consumed_at", TS),
    Index("ix_raw_batches_pending", "tenant_id", "entity", "consumed_at"),
)

raw_jira_pages = Table(
    "raw_jira_pages",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("batch_id", ID, ForeignKey("raw_batches.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("tenant_id", String(48), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("page_no", Integer, nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(512), nullable=False),
    Column("params", JSON, nullable=False),
    Column("status", Integer, nullable=False),
    Column("fetched_at", TS, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("body", Text, nullable=False),
)

rejected_records = Table(
    "rejected_records",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("tenant_id", String(48), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("external_id", String(64)),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("batch_id", ID),
    Column("rejected_at", TS, nullable=False),
    Index("ix_rejected_tenant_entity", "tenant_id", "entity"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("tenant_id", String(48), primary_key=True),
    Column("entity", String(32), primary_key=True),
    Column("watermark", TS),
    Column("syncs_since_reconcile", Integer, nullable=False, default=0),
    Column("last_reconciled_at", TS),
)

# One row per schema migration this database has had (see ``store.migrations``); the newest
# version is the schema's. Kept as a history rather than one value, for diagnosis.
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", TS, nullable=False),
)


def entity_table(name: str, *columns: Column) -> Table:
    """A source's entity table: the common columns every stage relies on, plus the source's own."""
    return Table(
        name,
        metadata,
        Column("id", ID, primary_key=True, autoincrement=True),
        Column("tenant_id", String(48), nullable=False),
        Column("external_id", String(64), nullable=False),
        *columns,
        Column("content_hash", String(64), nullable=False),
        Column("data", JSON, nullable=False),
        Column("first_seen_at", TS, nullable=False),
        Column("synced_at", TS, nullable=False),
        Column("deleted_at", TS),
        UniqueConstraint("tenant_id", "external_id", name=f"uq_{name}_tenant_external"),
        Index(f"ix_{name}_tenant_live", "tenant_id", "deleted_at"),
    )
