"""Definitions load; the schedule and the automation condition request the runs expected."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import dagster as dg

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.definitions import defs as lazy_defs
from etl_assets.defs.build import build_definitions
from etl_assets.defs.executor import PER_RUN_EXECUTOR, first_sync_run_config, run_executor
from etl_assets.defs.names import FIRST_SYNC_TAG, asset_keys

MULTIPROCESS = {"execution": {"config": {"multiprocess": {}}}}


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


def _sync_tick(env, d: dg.Definitions) -> dict[str, dg.RunRequest]:
    """One tick of the sync schedule, as the daemon evaluates it (with the database resource)."""
    schedule = d.resolve_schedule_def("sync_all_tenants")
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC),
            repository_def=d.get_repository_def(),
            resources={"database": env.resources()["database"]},
        ) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests or []
    return {r.partition_key: r for r in requests}


def _keys(request: dg.RunRequest) -> set[str]:
    return {k.to_user_string() for k in request.asset_selection or ()}


GITHUB_KEYS = {k.to_user_string() for spec in CATALOGUE if spec.source == "github" for k in asset_keys(spec)}
JIRA_KEYS = {k.to_user_string() for spec in CATALOGUE if spec.source == "jira" for k in asset_keys(spec)} | {
    "tables/permissions_table",
    "vectors/access_payloads",
}


def test_schedule_requests_one_run_per_tenant(env):
    requests = _sync_tick(env, env.definitions())
    assert sorted(requests) == ["1", "2"]
    assert len({r.run_key for r in requests.values()}) == 2
    # Both tenants use Jira and GitHub here: each run is the whole graph.
    assert all(_keys(r) == JIRA_KEYS | GITHUB_KEYS for r in requests.values())


def _materialize_keys(env, tenant_id: str, keys: set[str]) -> dg.ExecuteInProcessResult:
    job = env.definitions().resolve_implicit_global_asset_job_def()
    selection = [dg.AssetKey.from_user_string(k) for k in sorted(keys)]
    return job.execute_in_process(partition_key=tenant_id, asset_selection=selection)


def _live_rows(env, source: str, tenant_id: str) -> int:
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.store.ops import count_rows

    engine = make_engine(env.database_url)
    try:
        return sum(count_rows(engine, spec, tenant_id) for spec in CATALOGUE if spec.source == source)
    finally:
        engine.dispose()


def test_schedule_leaves_out_a_source_the_tenant_never_had_and_keeps_one_until_its_rows_are_gone(env):
    github = env.tenants["2"].github
    env.tenants["2"].github = None  # tenant 2 uses Jira only
    requests = _sync_tick(env, env.definitions())
    assert _keys(requests["1"]) == JIRA_KEYS | GITHUB_KEYS
    assert _keys(requests["2"]) == JIRA_KEYS, "GitHub's 15 steps would list nothing for tenant 2"
    # A run of the whole graph lists nothing for tenant 2's GitHub: still nothing of it is stored.
    assert env.materialize("2").success
    assert _keys(_sync_tick(env, env.definitions())["2"]) == JIRA_KEYS
    # Tenant 2 takes GitHub up, syncs it, then drops it: its rows and points must go, so its
    # scheduled run keeps GitHub's steps, and running that selection removes them.
    env.tenants["2"].github = github
    assert env.materialize("2").success
    assert _live_rows(env, "github", "2") > 0
    env.tenants["2"].github = None
    kept = _sync_tick(env, env.definitions())["2"]
    assert _keys(kept) == JIRA_KEYS | GITHUB_KEYS
    result = _materialize_keys(env, "2", _keys(kept))
    assert result.success
    assert _live_rows(env, "github", "2") == 0
    points = {}
    for event in result.get_asset_materialization_events():
        done = event.step_materialization_data.materialization
        if done.asset_key.path[0] == "vectors" and done.asset_key.path[-1].startswith("github_"):
            points[done.asset_key.to_user_string()] = done.metadata["points_total"].value
    assert len(points) == 5 and set(points.values()) == {0}, points


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


def test_with_a_qdrant_server_runs_choose_their_executor_and_a_first_sync_may_ask_for_multiprocess(env):
    server = {"DATABASE_URL": env.database_url, "QDRANT_URL": "http://127.0.0.1:9"}  # the executor only

    def defs(**extra: str) -> dg.Definitions:
        return build_definitions(registry=env.registry, resources=env.resources(), env={**server, **extra})

    d = defs()
    assert d.resolve_job_def("jira_sync").executor_def.name == PER_RUN_EXECUTOR
    # By default every run is in process, a first sync too (it is tagged as one).
    first = _sync_tick(env, d)
    assert {t: r.run_config for t, r in first.items()} == {"1": {}, "2": {}}
    assert all(r.tags[FIRST_SYNC_TAG] == "true" for r in first.values())
    spread = defs(ETL_FIRST_SYNC_EXECUTOR="multiprocess")
    assert {t: r.run_config for t, r in _sync_tick(env, spread).items()} == {"1": MULTIPROCESS, "2": MULTIPROCESS}
    # The change sensor's request for a never-synced tenant is a first sync too.
    res = env.resources()
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_sensor_context(instance=instance, resources={"jira": res["jira"], "database": res["database"]}) as ctx,
    ):
        sensed = spread.resolve_sensor_def("jira_issue_changes")(ctx)
    assert [(r.partition_key, r.run_config) for r in sensed.run_requests] == [("1", MULTIPROCESS), ("2", MULTIPROCESS)]
    assert env.materialize("1").success
    after = _sync_tick(env, spread)
    assert (after["1"].run_config, after["2"].run_config) == ({}, MULTIPROCESS), "tenant 1 is no longer new"
    assert FIRST_SYNC_TAG not in after["1"].tags
    # ETL_EXECUTOR forces one executor for every run; a first sync then asks for nothing else.
    for kind in ("multiprocess", "in_process"):
        forced = defs(ETL_EXECUTOR=kind, ETL_FIRST_SYNC_EXECUTOR="multiprocess")
        assert forced.resolve_job_def("jira_sync").executor_def.name == kind
        assert _sync_tick(env, forced)["2"].run_config == {}
    # The embedded store (no QDRANT_URL): in process, always.
    assert env.definitions().resolve_job_def("jira_sync").executor_def.name == "in_process"


@dg.op
def _step_pid() -> int:
    return os.getpid()


@dg.job(executor_def=run_executor("per_run"))
def step_pid_job() -> None:
    _step_pid()


def test_the_per_run_executor_runs_steps_in_the_run_process_unless_the_run_asks_for_multiprocess(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        pids = {}
        for label, run_config in (("default", {}), ("first sync", first_sync_run_config(True))):
            with dg.execute_job(dg.reconstructable(step_pid_job), instance, run_config=run_config) as result:
                assert result.success, label
                pids[label] = result.output_for_node("_step_pid")
    assert pids["default"] == os.getpid(), "in process: the step ran in the run's own process"
    assert pids["first sync"] != os.getpid(), "multiprocess: the step ran in a process of its own"
