"""deploy/dagster.yaml's instance storage: Dagster's PostgreSQL storage, keeping its connections.

A run on stock ``storage: postgres:`` opens a connection for nearly every event it writes; on
the deployed storage (``etl_assets.defs.instance_storage``) the same run reuses a few. Both runs
happen in this process, so every connection they open goes through ``psycopg2.connect``, which
the test counts.
"""

# No "from __future__ import annotations": Dagster reads the assets' annotations at runtime.
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from etl_assets.defs.instance_storage import PooledPostgresStorage
from etl_assets_tests import pg, procs


@dg.asset(check_specs=[dg.AssetCheckSpec("non_empty", asset="numbers", blocking=True)])
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("three numbers")
    return dg.MaterializeResult(
        metadata={"count": 3}, check_results=[dg.AssetCheckResult(check_name="non_empty", passed=True)]
    )


@dg.asset(deps=[numbers])
def total() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"total": 6})


def _home(tmp_path: Path, name: str, *, stock: bool) -> Path:
    home = tmp_path / name
    procs.write_instance_yaml(home)  # deploy/dagster.yaml, as shipped
    if stock:
        config = yaml.safe_load((home / "dagster.yaml").read_text())
        config["storage"] = {"postgres": config["storage"]["custom"]["config"]}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def _run(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int, int]:
    """Materialize two assets on the instance in ``home``: its storage class, events, connections."""
    opened = []
    connect = psycopg2.connect

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(1)
        return connect(*args, **kwargs)

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        monkeypatch.setattr(psycopg2, "connect", counting)
        result = dg.materialize([numbers, total], instance=instance)
        monkeypatch.setattr(psycopg2, "connect", connect)
        assert result.success
        events = len(instance.all_logs(result.run_id))
        storage = instance.get_ref().storage_data
        assert storage is not None
        return f"{storage.module_name}.{storage.class_name}", events, len(opened)
    finally:
        instance.dispose()


def test_a_run_on_the_deployed_storage_reuses_its_connections(tmp_path, monkeypatch):
    storage = pg.dagster_storage_database("pooled")
    for name, value in storage.dagster_env().items():
        monkeypatch.setenv(name, value)
    deployed = _run(_home(tmp_path, "deployed", stock=False), monkeypatch)
    stock = _run(_home(tmp_path, "stock", stock=True), monkeypatch)
    assert deployed[0] == f"{PooledPostgresStorage.__module__}.{PooledPostgresStorage.__name__}"
    assert stock[0] == "dagster_postgres.DagsterPostgresStorage"
    (_, events, pooled), (_, stock_events, unpooled) = deployed, stock
    assert events == stock_events and events >= 15, (events, stock_events)
    # Stock: a connection for nearly every event. Deployed: one per storage part, and a few spares.
    assert unpooled >= events, (unpooled, events)
    assert pooled <= 8, (pooled, events)
