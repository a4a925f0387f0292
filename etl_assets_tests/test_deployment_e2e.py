"""The system as deployed: dagster-webserver and dagster-daemon on loopback, instance storage and
tables on PostgreSQL, the queued run coordinator, the schedule and the automation sensor.

One deployment serves every test in this module (starting it costs more than the checks);
the fake Jira sites and the embeddings server run in this process, the webserver, the daemon
and the run workers the daemon launches are real subprocesses, and everything is stopped by
process id when the module ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.sources.jira.specs import PROJECTS
from etl_assets.core.vectorstore import collection_name, open_qdrant
from etl_assets.defs import names
from etl_assets.defs.names import asset_keys, raw_key, table_key, vector_key
from etl_assets_tests import pg, procs
from etl_assets_tests.conftest import Env, running_fakes

pytestmark = pytest.mark.slow

SCHEDULE = "sync_all_tenants"
SENSOR = "vectors_follow_tables"
POOL_LIMITS = {"jira": 3, "embeddings": 2}
# Every asset of the graph: each entity's, and the permission stage's two.
ALL_KEYS = [k.path for spec in CATALOGUE for k in asset_keys(spec)] + [
    names.PERMISSIONS_TABLE.path,
    names.ACCESS_PAYLOADS.path,
]


# -- the environment: fakes in this process, databases on the test PostgreSQL server --------------


@contextlib.contextmanager
def fresh_deployment(
    tmp_path_factory: pytest.TempPathFactory, label: str
) -> Iterator[tuple[Env, pg.PgDatabase, dict[str, str], procs.Procs]]:
    """Fakes, a tables database and Dagster's storage on the test PostgreSQL server, an instance
    home with deploy/dagster.yaml, and a process manager that stops what it started. Yields the
    fakes' Env, the storage database, the webserver/daemon environment and the manager."""
    tmp = tmp_path_factory.mktemp(label)
    tables = pg.create_database(f"{label}_tables")
    storage = pg.dagster_storage_database(label)
    home = tmp / "dagster_home"
    fast_instance_yaml(home)
    with running_fakes(tmp, tables.url, sizes=((6, 20), (4, 10))) as env, procs.managed(tmp / "logs") as running:
        yield env, storage, deployment_env(env, storage, home), running


def deployment_env(env: Env, storage: pg.PgDatabase, home: Path) -> dict[str, str]:
    """What the webserver and daemon (and so every run worker they start) run with."""
    return {
        **env.process_env(),
        **storage.dagster_env(),
        "DAGSTER_HOME": str(home),
        "ETL_DATA_DIR": str(env.tmp / "data"),
        "ETL_SYNC_CRON": "* * * * *",  # the real schedule definition, due every minute
        "ETL_AUTOMATION_INTERVAL_S": "5",
        "PYTHONUNBUFFERED": "1",
    }


def fast_instance_yaml(home: Path) -> Path:
    # deploy/dagster.yaml as shipped, with the queue polled every second instead of every five.
    return procs.write_instance_yaml(
        home,
        run_coordinator={
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
    )


@dataclass
class Deployed:
    deployment: procs.Deployment
    env: Env
    storage: pg.PgDatabase  # Dagster's instance storage
    scheduled_runs: set[str] = field(default_factory=set)  # what the schedule launched while it was on


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    with fresh_deployment(tmp_path_factory, "e2e") as (env, storage, process_env, running):
        # The one-off instance step first, as docs/deploy.md says: the webserver, the daemon and
        # `dagster instance migrate` each create Dagster's tables in an empty database when they
        # find none, and started together they race ("type snapshots already exists").
        bin_dir = Path(sys.executable).parent
        init = subprocess.run(
            [str(procs.PROJECT_ROOT / "deploy" / "init-instance.sh")],
            env={
                **process_env,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "ETL_POOL_JIRA": str(POOL_LIMITS["jira"]),
                "ETL_POOL_EMBEDDINGS": str(POOL_LIMITS["embeddings"]),
            },
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
        deployment = procs.start_deployment(running, env=process_env)
        deployment.wait_ready()
        yield Deployed(deployment, env, storage)


# -- what landed ------------------------------------------------------------------------------


def live_ids(env: Env, spec, tenant_id: str) -> set[str]:  # type: ignore[no-untyped-def]
    engine = create_engine(env.database_url)
    t = spec.table
    try:
        with engine.connect() as conn:
            q = select(t.c.external_id).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None))
            return {r[0] for r in conn.execute(q)}
    finally:
        engine.dispose()


def point_payloads(env: Env, tenant_id: str, entity: str) -> list[dict]:
    """Payloads of one collection, read under the same folder lock the run workers take."""

    async def go() -> list[dict]:
        async with open_qdrant(None, None, env.qdrant_path, lock_timeout_s=120) as client:
            name = collection_name(tenant_id, entity)
            if not await client.collection_exists(name):
                return []
            out, offset = [], None
            while True:
                page, offset = await client.scroll(name, limit=500, offset=offset, with_payload=True)
                out += [p.payload or {} for p in page]
                if offset is None:
                    return out

    # A thread of its own: callers may already run an event loop (Playwright's sync API does).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def assert_tenant_synced(env: Env, tenant_id: str) -> None:
    site = env.tenants[tenant_id].site
    expected = {
        "projects": len(site.projects),
        "wits": len(site.issue_types),
        "statuses": len(site.statuses),
        "issues": len(site.issues),
    }
    # The Jira entities with a count straight from the site (comments and GitHub: their own tests).
    for spec in (s for s in CATALOGUE if s.name in expected):
        rows = live_ids(env, spec, tenant_id)
        assert len(rows) == expected[spec.name] > 0, (tenant_id, spec.name)
        points = point_payloads(env, tenant_id, spec.name)
        assert {p["external_id"] for p in points} == rows, (tenant_id, spec.name)
        assert {p["tenant_id"] for p in points} == {tenant_id}


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def instigator_id(deployment: procs.Deployment, kind: str, name: str) -> tuple[str, str]:
    """(GraphQL id, status) of a schedule or sensor."""
    selector_arg = "scheduleSelector" if kind == "schedule" else "sensorSelector"
    state = "scheduleState" if kind == "schedule" else "sensorState"
    typename = "Schedule" if kind == "schedule" else "Sensor"
    query = (
        f"query($s: {typename}Selector!) {{ {kind}OrError({selector_arg}: $s) {{ __typename "
        f"... on {typename} {{ id {state} {{ status }} }} ... on PythonError {{ message }} }} }}"
    )
    selector = {"repositoryLocationName": procs.LOCATION, "repositoryName": procs.REPOSITORY, f"{kind}Name": name}
    found = deployment.graphql(query, {"s": selector})[f"{kind}OrError"]
    assert found["__typename"] == typename, found
    return found["id"], found[state]["status"]


def selector(kind: str, name: str) -> dict:
    return {"repositoryLocationName": procs.LOCATION, "repositoryName": procs.REPOSITORY, f"{kind}Name": name}


STOP = {
    "schedule": "mutation($id: String) { stopRunningSchedule(id: $id) { __typename "
    "... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }",
    "sensor": "mutation($id: String) { stopSensor(id: $id) { __typename "
    "... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }",
}


def latest_tick_status(deployment: procs.Deployment, kind: str, name: str) -> str | None:
    typename = "Schedule" if kind == "schedule" else "Sensor"
    state = "scheduleState" if kind == "schedule" else "sensorState"
    query = (
        f"query($s: {typename}Selector!) {{ {kind}OrError({kind}Selector: $s) {{ ... on {typename} {{ "
        f"{state} {{ ticks(limit: 1) {{ status }} }} }} }} }}"
    )
    ticks = deployment.graphql(query, {"s": selector(kind, name)})[f"{kind}OrError"][state]["ticks"]
    return ticks[0]["status"] if ticks else None


def stop_instigator(deployment: procs.Deployment, kind: str, name: str) -> None:
    """Stop a schedule or sensor through GraphQL, and make sure it stays stopped.

    The daemon writes the instigator's state back when a tick it is evaluating finishes; a
    stop that lands during that tick is overwritten by the tick's copy, which still says
    running. So: let the current tick finish, stop, and check again a moment later.
    """
    for _ in range(10):
        procs.wait_until(
            lambda: latest_tick_status(deployment, kind, name) != "STARTED",
            timeout_s=60,
            what=f"the {kind}'s current tick to finish",
        )
        result = deployment.graphql(STOP[kind], {"id": instigator_id(deployment, kind, name)[0]})
        assert "Error" not in next(iter(result.values()))["__typename"], result
        time.sleep(3)  # longer than a tick's write-back takes
        if (
            instigator_id(deployment, kind, name)[1] == "STOPPED"
            and latest_tick_status(deployment, kind, name) != "STARTED"
        ):
            return
    raise AssertionError(f"{kind} {name} would not stay stopped")


# -- the tests ----------------------------------------------------------------------------------


def test_instance_is_postgres_with_queue_limits_and_pools(deployed):
    deployment = deployed.deployment
    data = deployment.graphql(
        "{ instance { runQueuingSupported runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml } "
        "supportsConcurrencyLimits concurrencyLimits { concurrencyKey slotCount } } }"
    )["instance"]
    assert data["runQueuingSupported"] and data["supportsConcurrencyLimits"]
    assert "dagster/partition" in data["runQueueConfig"]["tagConcurrencyLimitsYaml"]
    assert "applyLimitPerUniqueValue: true" in data["runQueueConfig"]["tagConcurrencyLimitsYaml"]
    pools = {c["concurrencyKey"]: c["slotCount"] for c in data["concurrencyLimits"]}
    assert pools == POOL_LIMITS  # set by deploy/init-instance.sh, kept in the PostgreSQL instance storage
    # Runs, event logs and schedules really are in PostgreSQL: the instance tables exist there.
    engine = create_engine(deployed.storage.url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert {"runs", "event_logs", "jobs", "job_ticks", "concurrency_limits"} <= tables


def test_schedule_turned_on_runs_every_tenant(deployed):
    deployment, env = deployed.deployment, deployed.env
    started = deployment.graphql(
        "mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename "
        "... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }",
        {"s": selector("schedule", SCHEDULE)},
    )["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult", started
    assert started["scheduleState"]["status"] == "RUNNING"
    try:
        # Due at the top of every minute; the daemon fires it and queues one run per tenant.
        def first_tick_runs() -> list[dict] | None:
            runs = deployment.runs(tags=[{"key": "dagster/schedule_name", "value": SCHEDULE}])
            return runs if {tag(r, "dagster/partition") for r in runs} == set(env.tenants) else None

        runs = procs.wait_until(
            first_tick_runs,
            timeout_s=150,
            interval_s=1.0,
            what="the schedule's runs",
            watch=[deployment.webserver, deployment.daemon],
            on_timeout=deployment.procs.logs,
        )
    finally:
        # Off again at once, so it fires once and its runs do not pile up behind the other tests.
        stop_instigator(deployment, "schedule", SCHEDULE)
    # Every run the schedule made (a second minute may have begun before it was stopped).
    all_scheduled = [r["runId"] for r in deployment.runs(tags=[{"key": "dagster/schedule_name", "value": SCHEDULE}])]
    deployed.scheduled_runs = set(all_scheduled)
    done = deployment.wait_runs_done(all_scheduled, timeout_s=300)
    assert {r["status"] for r in done} == {"SUCCESS"}, (done, deployment.procs.logs())
    assert {tag(r, "dagster/partition") for r in runs} == set(env.tenants)  # type: ignore[union-attr]
    assert all(tag(r, "etl/tenant") == tag(r, "dagster/partition") for r in done)
    for tenant_id in env.tenants:
        assert_tenant_synced(env, tenant_id)


def test_materialization_launched_through_graphql_succeeds(deployed):
    deployment, env = deployed.deployment, deployed.env
    run_id = deployment.launch(ALL_KEYS, "1")
    (run,) = deployment.wait_runs_done([run_id])
    assert run["status"] == "SUCCESS", deployment.procs.logs()
    assert tag(run, "dagster/partition") == "1"
    assert_tenant_synced(env, "1")


def test_two_runs_of_one_tenant_never_overlap(deployed):
    deployment = deployed.deployment
    # Short runs (one entity's raw and table steps): the limit is on runs, not on what they select.
    keys = [raw_key(PROJECTS).path, table_key(PROJECTS).path]
    first = deployment.launch(keys, "2")
    second = deployment.launch(keys, "2")
    seen_one_waiting = []

    def finished() -> bool:
        runs = {r["runId"]: r["status"] for r in deployment.runs(runIds=[first, second])}
        active = [s for s in runs.values() if s in ("STARTING", "STARTED")]
        if len(active) == 1 and "QUEUED" in runs.values():
            seen_one_waiting.append(True)
        assert len(active) <= 1, f"two runs of tenant 2 in progress at once: {runs}"
        return all(s in procs.DONE for s in runs.values())

    procs.wait_until(
        finished,
        timeout_s=240,
        interval_s=0.5,
        what="both runs of tenant 2",
        watch=[deployment.webserver, deployment.daemon],
        on_timeout=deployment.procs.logs,
    )
    runs = {r["runId"]: r for r in deployment.runs(runIds=[first, second])}
    assert all(r["status"] == "SUCCESS" for r in runs.values()), runs
    assert seen_one_waiting, "the second run was never seen waiting in the queue while the first ran"
    a, b = sorted(runs.values(), key=lambda r: r["startTime"])
    assert b["startTime"] >= a["endTime"], (a, b)


def sensor_ticks(deployment: procs.Deployment, limit: int = 10) -> list[dict]:
    data = deployment.graphql(
        "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState { "
        f"ticks(limit: {limit}) {{ status timestamp skipReason runIds error {{ message }} }} }} }} }} }}",
        {"s": selector("sensor", SENSOR)},
    )
    return data["sensorOrError"]["sensorState"]["ticks"]


def test_automation_sensor_turned_on_vectorizes_a_committed_table(deployed):
    deployment, env = deployed.deployment, deployed.env
    deployment.wait_idle()
    # Off, then on again through GraphQL (it is declared running in code, so it starts out on).
    stop_instigator(deployment, "sensor", SENSOR)
    started_at = time.time()
    started = deployment.graphql(
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
        "... on Sensor { sensorState { status } } ... on PythonError { message } } }",
        {"s": selector("sensor", SENSOR)},
    )["startSensor"]
    assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started
    # A restarted sensor does not act on what happened while it was off: let it tick once first.
    procs.wait_until(
        lambda: any(t["timestamp"] > started_at for t in sensor_ticks(deployment, 1)),
        timeout_s=90,
        what="the sensor's first tick after it was turned on",
        on_timeout=deployment.procs.logs,
    )

    # Jira renames a project; a run of only the raw and table steps commits it to the table.
    env.tenants["2"].site.projects[0]["name"] = "Renamed for the sensor"
    table_run_id = deployment.launch([raw_key(PROJECTS).path, table_key(PROJECTS).path], "2")
    (table_run,) = deployment.wait_runs_done([table_run_id])
    assert table_run["status"] == "SUCCESS", deployment.procs.logs()

    # The sensor sees the committed table and asks for the vectors, in a run of its own.
    def sensor_run() -> dict | None:
        for r in deployment.runs(tags=[{"key": "dagster/sensor_name", "value": SENSOR}]):
            if tag(r, "dagster/partition") == "2" and r["creationTime"] > table_run["creationTime"]:
                return r
        return None

    def explain() -> str:
        runs = [(r["runId"][:8], r["status"], r["tags"]) for r in deployment.runs()]
        return f"ticks: {sensor_ticks(deployment)}\nruns: {runs}\n{deployment.procs.logs()}"

    found = procs.wait_until(
        sensor_run,
        timeout_s=180,
        interval_s=1.0,
        what="a run launched by the sensor",
        watch=[deployment.webserver, deployment.daemon],
        on_timeout=explain,
    )
    (done,) = deployment.wait_runs_done([found["runId"]])  # type: ignore[index]
    assert done["status"] == "SUCCESS", deployment.procs.logs()
    assert done["startTime"] >= table_run["endTime"]  # after the table's run, never alongside it
    selected = deployment.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { assetSelection { path } } } }", {"id": done["runId"]}
    )["runOrError"]["assetSelection"]
    assert {tuple(a["path"]) for a in selected} <= {tuple(vector_key(spec).path) for spec in CATALOGUE}
    assert tuple(vector_key(PROJECTS).path) in {tuple(a["path"]) for a in selected}
    assert "Renamed for the sensor" in {p.get("name") for p in point_payloads(env, "2", "projects")}
    assert_tenant_synced(env, "2")


def test_no_two_runs_of_a_tenant_ever_overlapped(deployed):
    """Over every run this module's deployment executed: one tenant, one run at a time."""
    deployment = deployed.deployment
    by_tenant: dict[str, list[dict]] = defaultdict(list)
    for r in deployment.runs():
        partition = tag(r, "dagster/partition")
        if partition and r["startTime"]:
            by_tenant[partition].append(r)
    assert set(by_tenant) == {"1", "2"}
    # And the schedule, once stopped, stayed stopped: no run of it beyond those its test saw.
    assert deployed.scheduled_runs
    later = {r["runId"] for r in deployment.runs(tags=[{"key": "dagster/schedule_name", "value": SCHEDULE}])}
    assert later == deployed.scheduled_runs
    for tenant_id, runs in by_tenant.items():
        runs.sort(key=lambda r: r["startTime"])
        for a, b in zip(runs, runs[1:], strict=False):
            assert a["endTime"] is not None and b["startTime"] >= a["endTime"], (tenant_id, a, b)
