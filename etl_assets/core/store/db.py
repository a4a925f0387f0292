"""Engines for the two databases we support, with the settings each needs."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url

from etl_assets.core.store.ops import create_schema


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and metadata."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL must still never be echoed
        return "<unparsable database URL>"


def _switch_to_wal(cur: sqlite3.Cursor, *, deadline_s: float = 60.0) -> None:
    """Put the database in WAL mode (persistent: once switched, every later connection finds it so).

    The switch needs the database to itself, and SQLite answers "database is locked" at once
    (without waiting its busy timeout) when another connection opening the same old database
    holds it for a moment; so the switch is retried until that connection has let go.
    """
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
            time.sleep(0.05)


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``; with ``create``, the schema is created or upgraded to this code's first.

    ``create=False`` opens the database as it is (tools that only read, and tests of old schemas).
    """
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001
        raise ValueError(
            "DATABASE_URL is not a valid SQLAlchemy URL (e.g. sqlite:///.data/etl.db or "
            "postgresql+psycopg2://user:pass@host/db)"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"DATABASE_URL: unsupported database {parsed.get_backend_name()!r} (sqlite or postgresql)")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            # WAL lets the vector step read while another process writes; FKs are off by default.
            _switch_to_wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    if create:
        create_schema(engine)
    return engine
