"""Schema versions: bringing a database made by an earlier release up to this code, at start.

Every process that opens the tables database calls :func:`upgrade` (through
``ops.create_schema``). It applies, in order, the migrations of :data:`MIGRATIONS` the
database has not had yet, then ``metadata.create_all`` creates any table that does not
exist, and the versions applied are recorded in the ``schema_version`` table.

Why a short list of idempotent migrations in code, and not Alembic:

- **Tables are declared by sources.** Each source puts its entity tables on the shared
  ``metadata`` (``entity_table``); a new source or a new table needs no migration at all,
  because ``create_all`` (run after the migrations) creates it in its current shape. A
  migration is written only to change a table that may already exist. Alembic would add a
  second description of the same tables (a revision chain, ``env.py``, an ini file to find
  at run time from a wheel) and a fresh database would still be ``create_all`` + stamp.
- **SQLite's limited ALTER.** What the coming issues need — a new nullable column or one
  with a server default, a new index, a new table — SQLite does in place (``ADD COLUMN``,
  ``CREATE INDEX``); :func:`add_column_if_missing` and :func:`create_index_if_missing` build
  that DDL from SQLAlchemy constructs. The one change SQLite cannot do in place, a column's
  type, has not been needed there (its ``INTEGER PRIMARY KEY`` is 64-bit already). When a
  table rebuild is needed, Alembic's ``Operations.batch_alter_table`` can do it inside one
  migration on the same connection (Alembic is installed with Dagster; declare it then).
- **PostgreSQL concurrency.** Parallel step processes all upgrade on first use. Everything —
  reading the version, migrating, creating tables, recording — happens in one transaction
  that holds an advisory lock (PostgreSQL) or SQLite's write lock (``BEGIN IMMEDIATE``), so
  one process migrates and the others then find the work done. PostgreSQL's DDL is
  transactional: a failed migration leaves the database at its previous version.
- **No run-time files.** Migrations are plain functions in this module; nothing to locate
  from a wheel install.

Each migration must be **idempotent** (inspect, then change only what is missing: a database
may already have a change its recorded version does not show, e.g. a hand-run ``ALTER``)
and **frozen** (name the tables and columns as they were when it was written, never the
current ``metadata``, which later releases change). Version 1 is the schema the unversioned
releases (up to 6fa6683) created; a database found with their tables and no
``schema_version`` table is recorded at version 1 and migrated from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.schema import CreateColumn

from etl_assets.core.store import schema

log = logging.getLogger(__name__)

# Any fixed bigint: the advisory lock that serializes schema upgrades on PostgreSQL.
_SCHEMA_LOCK_KEY = 0x45544C5F534348


@dataclass(frozen=True)
class Migration:
    """One schema change: ``apply`` runs inside the upgrade transaction, idempotently."""

    version: int
    description: str
    apply: Callable[[Connection], None]


# -- helpers for migrations ----------------------------------------------------------------


def add_column_if_missing(conn: Connection, table: str, column: Column) -> bool:
    """``ALTER TABLE .. ADD COLUMN`` unless ``table`` is absent (``create_all`` makes it) or has it.

    SQLite and PostgreSQL both add a column in place, but only a nullable one or one with a
    ``server_default`` can be added to a table that has rows.
    """
    if not column.nullable and column.server_default is None:
        raise ValueError(
            f"{table}.{column.name}: a column added to existing rows needs nullable=True or a server_default"
        )
    insp = inspect(conn)
    if not insp.has_table(table) or column.name in {c["name"] for c in insp.get_columns(table)}:
        return False
    # A throwaway table gives the column the parent that DDL compilation expects.
    Table(table, MetaData(), column)
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {conn.dialect.identifier_preparer.quote(table)} ADD COLUMN {spec}")
    return True


def create_index_if_missing(conn: Connection, table: str, name: str, *columns: str, unique: bool = False) -> bool:
    """``CREATE INDEX`` on an existing table unless it is absent or has an index of that name."""
    insp = inspect(conn)
    if not insp.has_table(table) or name in {ix["name"] for ix in insp.get_indexes(table)}:
        return False
    reflected = Table(table, MetaData(), autoload_with=conn)
    Index(name, *(reflected.c[c] for c in columns), unique=unique).create(conn)
    return True


# -- the migrations ------------------------------------------------------------------------


def _v1_baseline(conn: Connection) -> None:
    """The unversioned releases' tables: ``create_all`` made them, nothing to change."""


# The tables and key columns as the releases before 64-bit keys (commit ce1ad33) created them.
_V2_KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "raw_batches": ("id",),
    "raw_jira_pages": ("id", "batch_id"),
    "rejected_records": ("id", "batch_id"),
    "projects": ("id",),
    "wits": ("id",),
    "statuses": ("id",),
    "issues": ("id",),
}


def _v2_bigint_keys(conn: Connection) -> None:
    """PostgreSQL: surrogate keys, their references and their sequences to 64 bits.

    ``INSERT .. ON CONFLICT DO UPDATE`` draws a sequence value even when it updates, so
    repeated full re-syncs of a large tenant exhaust a 32-bit serial. ``ALTER COLUMN .. TYPE
    bigint`` alone is not enough: since PostgreSQL 10 a serial's sequence is ``AS integer``
    and keeps its 2^31-1 maximum until it is altered too. Each altered table is rewritten
    under an exclusive lock, which takes time on a large table.
    """
    if conn.dialect.name != "postgresql":
        return  # SQLite's INTEGER PRIMARY KEY is the 64-bit rowid already
    quote = conn.dialect.identifier_preparer.quote
    insp = inspect(conn)
    for table, columns in _V2_KEY_COLUMNS.items():
        if not insp.has_table(table):
            continue
        types = {c["name"]: c["type"] for c in insp.get_columns(table)}
        narrow = [c for c in columns if c in types and not isinstance(types[c], BigInteger)]
        if narrow:
            # One statement per table: PostgreSQL rewrites the table once for all its columns.
            alters = ", ".join(f"ALTER COLUMN {quote(c)} TYPE BIGINT" for c in narrow)
            conn.exec_driver_sql(f"ALTER TABLE {quote(table)} {alters}")
            log.info("schema: %s.%s widened to BIGINT", table, ", ".join(narrow))
        if "id" not in types:
            continue
        seq = conn.execute(
            sql_text(
                "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL) FROM pg_sequence s "
                "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE s.seqrelid = to_regclass(pg_get_serial_sequence(:table, 'id'))"
            ),
            {"table": table},
        ).one_or_none()
        if seq is not None and seq[2] != "bigint":
            # AS bigint also lifts the maximum, because it is still integer's default.
            conn.exec_driver_sql(f"ALTER SEQUENCE {quote(seq[0])}.{quote(seq[1])} AS bigint")
            log.info("schema: sequence of %s.id widened to bigint", table)


def _v3_issue_documents(conn: Connection) -> None:
    """Issues gain links, attachments, a history digest, resolution/status-change times, custom
    fields and their comment count; the new ``comments`` table itself is made by ``create_all``."""
    for column in (
        Column("links", JSON),
        Column("attachments", JSON),
        Column("history", Text),
        Column("resolved_at", DateTime(timezone=True)),
        Column("status_changed_at", DateTime(timezone=True)),
        Column("custom_fields", JSON),
        Column("comments_total", Integer),
        Column("comments_incomplete", String(1000)),
    ):
        add_column_if_missing(conn, "issues", column)


def _v4_history_incomplete(conn: Connection) -> None:
    """Issues note why their changelog arrived incomplete (a long changelog whose paging failed)."""
    add_column_if_missing(conn, "issues", Column("history_incomplete", String(1000)))


def _v5_access_facts(conn: Connection) -> None:
    """Issues and comments keep what access depends on (security level, people, pickers,
    comment visibility) as JSON; existing rows stay NULL until their issue is synced again."""
    add_column_if_missing(conn, "issues", Column("access_facts", JSON))
    add_column_if_missing(conn, "comments", Column("access_facts", JSON))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: the tables of the unversioned releases (up to 6fa6683)", _v1_baseline),
    Migration(2, "PostgreSQL: BIGINT surrogate keys, batch references and sequences", _v2_bigint_keys),
    Migration(3, "issues: links, attachments, history digest, custom fields, comment counts", _v3_issue_documents),
    Migration(4, "issues: history_incomplete (a long changelog paged on its own)", _v4_history_incomplete),
    Migration(5, "issues, comments: access_facts (what permission-aware search reads)", _v5_access_facts),
)

HEAD_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code expects (and creates)."""

BASELINE_VERSION = 1

# Tables every unversioned release created: finding one means "version 1", not "empty".
_UNVERSIONED_TABLES = frozenset({"raw_batches", "raw_jira_pages", "rejected_records", "sync_state"})


# -- reading and upgrading -----------------------------------------------------------------


def _recorded(conn: Connection, tables: set[str]) -> int:
    """The newest version in ``schema_version``; 0 when nothing is recorded."""
    if schema.schema_version.name not in tables:
        return 0
    return int(conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0)


def _recorded_version(conn: Connection, tables: set[str]) -> int:
    recorded = _recorded(conn, tables)
    if recorded:
        return recorded
    return BASELINE_VERSION if tables & _UNVERSIONED_TABLES else 0


def schema_version(bind: Engine | Connection) -> int:
    """The database's schema version: 0 for an empty database, :data:`HEAD_VERSION` when current.

    A database made before versioning (tables, no ``schema_version``) reads as
    :data:`BASELINE_VERSION`. Reading never changes the database.
    """
    if isinstance(bind, Connection):
        return _recorded_version(bind, set(inspect(bind).get_table_names()))
    with bind.connect() as conn:
        return _recorded_version(conn, set(inspect(conn).get_table_names()))


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """One transaction that only one process at a time holds, committed on success."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Released when the transaction ends, so a crashed process cannot leave it held.
            conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        else:
            # pysqlite would begin a deferred transaction only at the first write, after the
            # version was read; IMMEDIATE takes the write lock first (waiting busy_timeout).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn
        conn.commit()


def _up_to_date(engine: Engine, head: int) -> bool:
    """Without any lock: is there nothing to do? (Parallel steps mostly find it so.)"""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        version = _recorded_version(conn, tables)
    if version > head:
        log.warning(
            "schema: the database is at version %s, newer than this code's %s (a newer release "
            "upgraded it); leaving it unchanged",
            version,
            head,
        )
        return True
    return version == head and all(t in tables for t in schema.metadata.tables)


def upgrade(engine: Engine, *, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the database to the newest version of ``migrations``; the versions applied.

    An empty database gets the current tables from ``create_all`` and every version recorded;
    an existing one gets the migrations it lacks, then any missing tables. Safe to call from
    many processes at once, and a no-op (no lock, no writes) once the database is current.
    """
    head = migrations[-1].version
    if _up_to_date(engine, head):
        return []
    with _schema_lock(engine) as conn:
        tables = set(inspect(conn).get_table_names())
        current = _recorded_version(conn, tables)  # again: another process may have just upgraded
        if current > head:
            return []
        for m in migrations:
            # An empty database (0) gets the current shape from create_all instead.
            if 0 < current < m.version:
                log.info("schema: applying migration %s (%s)", m.version, m.description)
                m.apply(conn)
        schema.metadata.create_all(conn)
        # Recorded: what was applied, and for a database from before versioning, its baseline.
        record = [m for m in migrations if m.version > _recorded(conn, tables)]
        if record:
            now = datetime.now(UTC)
            conn.execute(
                insert(schema.schema_version),
                [{"version": m.version, "description": m.description, "applied_at": now} for m in record],
            )
    if record:
        log.info("schema: database at version %s (was %s)", head, current)
    return [m.version for m in record]
