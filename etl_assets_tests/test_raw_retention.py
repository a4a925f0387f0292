"""Raw retention: consumed batches beyond the policy are pruned after the table commit, reported in
the step's metadata; pending batches never are; SQLite gets its space back from the maintenance job."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from etl_assets.core.records import RawPage
from etl_assets.core.settings import Settings, SettingsError
from etl_assets.core.sources.jira.specs import PROJECTS
from etl_assets.core.store import ops, schema
from etl_assets.core.store.db import make_engine
from etl_assets.core.store.retention import Keep, RawRetention, reclaim_space
from etl_assets_tests.pg import database_url_for_test

# About the database itself: every backend runs it, even when the test matrix is split (conftest.py).
pytestmark = pytest.mark.both_backends


def listing(n: int, size: int = 1) -> list[RawPage]:
    """One project listing page of ``size`` projects, ``n`` telling runs apart."""
    values = [{"id": str(i), "key": f"K{i}", "name": f"run {n} " + "x" * 200} for i in range(size)]
    return [RawPage("GET", "/x", {}, 200, json.dumps({"values": values, "isLast": True}), datetime.now(UTC))]


def batches(engine, tenant: str = "t") -> list[tuple[int, bool]]:
    b = schema.raw_batches
    with engine.connect() as conn:
        return [
            (r.id, r.consumed_at is not None)
            for r in conn.execute(select(b).where(b.c.tenant_id == tenant, b.c.entity == "projects").order_by(b.c.id))
        ]


def test_retention_is_read_from_the_settings_per_entity():
    settings = Settings.load({"ETL_RAW_KEEP_BATCHES": "2, issues=10", "ETL_RAW_KEEP_DAYS": "issues=7"})
    assert settings.raw_retention.of("issues") == Keep(10, 7)
    assert settings.raw_retention.of("projects") == Keep(2, None)
    assert Settings.load({}).raw_retention.of("issues") == Keep(3, None)
    for env, fragment in [
        ({"ETL_RAW_KEEP_BATCHES": "-1"}, "ETL_RAW_KEEP_BATCHES='-1' is not allowed"),
        ({"ETL_RAW_KEEP_DAYS": "issues=0"}, "ETL_RAW_KEEP_DAYS='issues=0' is not allowed"),
        ({"ETL_RAW_KEEP_BATCHES": "3,5"}, "a second value for every entity"),
    ]:
        with pytest.raises(SettingsError, match=fragment):
            Settings.load(env)


def test_an_unknown_entity_in_the_retention_fails_the_definitions():
    from etl_assets.defs.build import build_definitions

    with pytest.raises(SettingsError, match="name isues, which no raw step lands"):
        build_definitions(env={"ETL_RAW_KEEP_BATCHES": "isues=3"})


def test_consumed_batches_beyond_the_count_are_pruned_after_the_commit(tmp_path, backend):
    engine = make_engine(database_url_for_test(tmp_path, backend, f"retention-{backend}"))
    keep = RawRetention.parse("1,projects=2", None).of("projects")
    for n in range(4):
        ops.land_raw(engine, PROJECTS, "t", listing(n, size=3), kind="full")
        result = ops.build_table(engine, PROJECTS, "t", retention=keep)
    meta = result.metadata()
    assert meta["raw_pruned_batches"] == 1 and meta["raw_pruned_pages"] == 1
    assert meta["raw_pruned_bytes"] == len(listing(0, size=3)[0].body.encode())
    assert (meta["raw_kept_batches"], meta["raw_kept_pages"], meta["raw_retention"]) == (2, 2, "2 batches")
    assert [consumed for _, consumed in batches(engine)] == [True, True]
    # The table is what the newest batch said (pruning touched only raw history).
    assert ops.count_rows(engine, PROJECTS, "t") == 3
    # A pending batch is never pruned, whatever the policy; another tenant's history is its own.
    ops.land_raw(engine, PROJECTS, "t", listing(9), kind="full")
    ops.land_raw(engine, PROJECTS, "u", listing(9), kind="full")
    ops.build_table(engine, PROJECTS, "u", retention=Keep(0))
    assert [consumed for _, consumed in batches(engine)] == [True, True, False]
    assert batches(engine, "u") == [], "keep 0: u's consumed batch went"
    engine.dispose()


def test_batches_older_than_the_days_are_pruned_even_among_the_newest(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'etl.db'}")
    for n in range(3):
        ops.land_raw(engine, PROJECTS, "t", listing(n), kind="full")
        ops.build_table(engine, PROJECTS, "t", retention=Keep(10))
    first = batches(engine)[0][0]
    b = schema.raw_batches
    with engine.begin() as conn:
        conn.execute(update(b).where(b.c.id == first).values(fetched_at=datetime.now(UTC) - timedelta(days=8)))
    ops.land_raw(engine, PROJECTS, "t", listing(3), kind="full")
    result = ops.build_table(engine, PROJECTS, "t", retention=Keep(10, days=7))
    assert (result.pruned.pruned_batches, result.pruned.kept_batches) == (1, 3)
    assert first not in [bid for bid, _ in batches(engine)]
    engine.dispose()


def test_the_maintenance_job_gives_sqlite_space_back(tmp_path):
    from etl_assets.defs.maintenance import build_maintenance_job
    from etl_assets.defs.resources import DatabaseResource

    url = f"sqlite:///{tmp_path / 'etl.db'}"
    engine = make_engine(url)
    for n in range(6):
        ops.land_raw(engine, PROJECTS, "t", listing(n, size=2000), kind="full")
        ops.build_table(engine, PROJECTS, "t", retention=Keep(5))
    ops.build_table(engine, PROJECTS, "t", retention=Keep(0))  # prunes everything consumed
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.raw_jira_pages)).scalar_one() == 0
    engine.dispose()
    before = (tmp_path / "etl.db").stat().st_size
    result = build_maintenance_job().execute_in_process(resources={"database": DatabaseResource(url=url)})
    assert result.success
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = event.event_specific_data.metadata
    assert meta["action"].value == "vacuum"
    after = (tmp_path / "etl.db").stat().st_size
    assert after < before / 2, (before, after)
    assert meta["file_bytes_after"].value == after
    # A second run finds nothing worth a VACUUM.
    again = reclaim_space(make_engine(url))
    assert again.action.startswith("none")


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_is_left_to_autovacuum(tmp_path, backend):
    engine = make_engine(database_url_for_test(tmp_path, backend, "reclaim-pg"))
    assert reclaim_space(engine).action == "none: left to autovacuum"
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])  # the pruning itself runs on both in the store tests
def test_the_table_step_reports_what_the_retention_pruned(env):
    import dagster as dg

    from etl_assets.defs.build import build_definitions

    defs = build_definitions(
        registry=env.registry,
        resources=env.resources(),
        env={"DATABASE_URL": env.database_url, "ETL_RAW_KEEP_BATCHES": "5,projects=1"},
    )
    job = defs.resolve_implicit_global_asset_job_def()
    selection = dg.AssetSelection.from_string("key:jira/raw/raw_jira_projects or key:tables/projects_table")
    keys = list(selection.resolve(defs.resolve_asset_graph()))
    for _ in range(2):
        result = job.execute_in_process(partition_key="1", asset_selection=keys)
    meta = result.asset_materializations_for_node("tables__projects_table")[0].metadata
    assert meta["raw_pruned_batches"].value == 1 and meta["raw_pruned_bytes"].value > 0
    assert (meta["raw_kept_batches"].value, meta["raw_retention"].value) == (1, "1 batch")
