"""Definitions load; the schedule and the automation condition request the runs expected."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg

from etl_assets.definitions import defs as lazy_defs
from etl_assets.defs.build import build_definitions


def test_definitions_load_from_the_bundled_registry(monkeypatch):
    monkeypatch.delenv("ETL_TENANTS_FILE", raising=False)
    d = lazy_defs()
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    for entity in ("projects", "wits", "statuses", "issues"):
        assert {f"jira/raw/raw_jira_{entity}", f"tables/{entity}_table", f"vectors/{entity}_vectors"} <= keys
    job = d.resolve_job_def("jira_sync")
    assert job.partitions_def.get_partition_keys() == ["1", "2"]
    graph = d.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.partitions_def is not None, f"{key} is not partitioned by tenant"
    # Each node reads on its own in the UI, where only the last part of the key is shown.
    assert len({k.path[-1] for k in graph.get_all_asset_keys()}) == len(keys)


def test_vectors_depend_only_on_their_table_and_follow_it(env):
    d = env.definitions()
    graph = d.resolve_asset_graph()
    vec = graph.get(dg.AssetKey(["vectors", "issues_vectors"]))
    assert vec.parent_keys == {dg.AssetKey(["tables", "issues_table"])}
    assert vec.automation_condition is not None


def test_schedule_requests_one_run_per_tenant(env):
    d = env.definitions()
    schedule = d.resolve_schedule_def("sync_all_tenants")
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC),
            repository_def=d.get_repository_def(),
        )
        requests = schedule.evaluate_tick(context).run_requests
    assert sorted(r.partition_key for r in requests) == ["1", "2"]
    assert len({r.run_key for r in requests}) == 2


def test_automation_requests_vectors_after_their_table_committed(env):
    with dg.DagsterInstance.ephemeral() as instance:
        d = env.definitions()
        # First tick: nothing has been materialized, so nothing is requested for the vectors.
        result = dg.evaluate_automation_conditions(defs=d, instance=instance)
        assert result.total_requested == 0
        assert env.materialize(
            "1", "key:jira/raw/raw_jira_projects or key:tables/projects_table", instance=instance
        ).success
        result = dg.evaluate_automation_conditions(defs=d, instance=instance, cursor=result.cursor)
        requested = {
            (key.to_user_string(), pk)
            for key in d.resolve_asset_graph().get_all_asset_keys()
            for pk in result.get_requested_partitions(key)
        }
        assert requested == {("vectors/projects_vectors", "1")}


def _requested(d: dg.Definitions, result: Any) -> set[tuple[str, str]]:
    return {
        (key.to_user_string(), pk)
        for key in d.resolve_asset_graph().get_all_asset_keys()
        for pk in result.get_requested_partitions(key)
    }


def test_automation_holds_vectors_back_while_a_blocking_table_check_fails(env):
    with dg.DagsterInstance.ephemeral() as instance:
        d = env.definitions()
        result = dg.evaluate_automation_conditions(defs=d, instance=instance)
        # Issues land before their types and statuses: the table commits (its materialization is
        # recorded) but its blocking check references_resolve fails. Projects pass all of theirs.
        selection = " or ".join(
            f"key:{k}"
            for k in (
                "jira/raw/raw_jira_projects",
                "tables/projects_table",
                "jira/raw/raw_jira_issues",
                "tables/issues_table",
            )
        )
        run = env.materialize("1", selection, instance=instance, raise_on_error=False)
        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in run.get_asset_check_evaluations()}
        assert checks[("tables/issues_table", "references_resolve")] is False, checks
        assert all(passed for (key, _), passed in checks.items() if key == "tables/projects_table"), checks
        issues_table = instance.get_latest_materialization_event(dg.AssetKey(["tables", "issues_table"]))
        assert issues_table is not None, "the table must have materialized, or this tests nothing"
        result = dg.evaluate_automation_conditions(defs=d, instance=instance, cursor=result.cursor)
        # Only the projects' vectors: the issues' wait for a table whose blocking checks pass.
        assert _requested(d, result) == {("vectors/projects_vectors", "1")}


def test_build_definitions_rejects_unknown_executor(env):
    import pytest

    with pytest.raises(ValueError, match="ETL_EXECUTOR"):
        build_definitions(registry=env.registry, resources=env.resources(), env={"ETL_EXECUTOR": "threads"})
