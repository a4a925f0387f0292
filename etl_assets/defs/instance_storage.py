"""Dagster's PostgreSQL instance storage, holding its connections: ``deploy/dagster.yaml`` names it.

Stock ``dagster-postgres`` opens a new connection for every read and write of a run worker
(SQLAlchemy's ``NullPool``), and a run writes an event for every step start, output,
materialization, check and log line: about 590 connections for one tenant's 15-step no-change
run, each a TCP handshake, a backend process and a SCRAM password exchange. Measured on the
benchmark machine, that was half of the run (``benchmarks/bench_executor.py``; README, "The
no-change run and the executor").

:class:`PooledPostgresStorage` is that storage, configured the same way, with each of its three
parts (runs, event log, schedules) switched to the pooled engine Dagster's own webserver uses
(``optimize_for_webserver``: one connection kept per part and process, more on demand while
threads need them, recycled hourly), and no statement timeout (a run worker's long reads must
not be cut). A process then holds three connections while it lives: plan for them (docs/deploy.md).
"""

from __future__ import annotations

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres.storage import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Connections one storage part may open beyond its kept one, while that many threads need one
# at once (the daemon's threads, a sensor's); they are closed when returned.
MAX_OVERFLOW = 10
POOL_RECYCLE_S = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` (same configuration) that keeps a connection per part and process."""

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> PooledPostgresStorage:
        storage = cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            # statement_timeout 0: none (the webserver sets one for its queries; a run worker must not)
            part.optimize_for_webserver(statement_timeout=0, pool_recycle=POOL_RECYCLE_S, max_overflow=MAX_OVERFLOW)
        return storage
