"""A fan-out first sync that fails or is SIGKILLed midway resumes from what it landed: the next run
fetches only the ids without landed records (at most the requests that were in flight again) and
converges exactly. Until it completes, the table step sees none of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import DBAPIError

from etl_assets.core.store import schema
from etl_assets.core.store.ops import unsealed_fan_out
from etl_assets.defs.resources import SourceResource
from etl_assets.fakes.loopback import Fault
from etl_assets_tests.convergence import assert_converged, convergence_problems, materialize

# About the database itself: every backend runs it, even when the test matrix is split (conftest.py).
pytestmark = pytest.mark.both_backends

BULK = "/rest/api/3/issue/bulkfetch"
CONCURRENCY = 2


def _jira(attempts: int = 2) -> SourceResource:
    return SourceResource(
        source="jira", max_attempts=attempts, max_wait_s=0.2, fan_out_min_records=0, fan_out_concurrency=CONCURRENCY
    )


def _bulk_requests(env) -> int:
    return sum(1 for method, path in env.tenants["1"].site.requests if method == "POST" and path.endswith(BULK))


def _raw_meta(result) -> dict:
    return {
        k: v.value for k, v in result.asset_materializations_for_node("jira__raw__raw_jira_issues")[0].metadata.items()
    }


def _landed(env) -> int:
    """Records in tenant 1's unsealed issues fan-out (0 before it starts)."""
    b = schema.raw_batches
    engine = create_engine(env.database_url)
    try:
        with engine.connect() as conn:
            where = (b.c.tenant_id == "1") & (b.c.entity == "issues") & (b.c.kind == "fetching")
            return int(conn.execute(select(func.coalesce(func.sum(b.c.records), 0)).where(where)).scalar_one())
    except DBAPIError:  # the child has not created the tables yet
        return 0
    finally:
        engine.dispose()


@pytest.mark.sites(n_issues=350)
def test_a_fan_out_that_failed_midway_resumes_from_its_checkpoints(env):
    total = len(env.tenants["1"].site.issues)
    server = env.tenants["1"].server
    # The 4th bulk fetch fails (one attempt only): the step fails after some chunks landed.
    server.faults += [Fault.delay(0.05, path=BULK)] * 3 + [Fault.respond(500, "down", path=BULK)]
    first = materialize(env, "1", resources={"jira": _jira(attempts=1)})
    assert not first.success
    pending = unsealed_fan_out(create_engine(env.database_url), "1", "issues")
    assert pending is not None, "the listing and the landed chunks wait for the resume"
    landed = _landed(env)
    assert 0 < landed < total
    # The table step sees none of an unfinished fan-out (it would set a watermark that skips the rest).
    assert materialize(env, "1", "key:tables/issues_table").success
    assert convergence_problems(env, "1"), "issues are missing until the resume"
    engine = create_engine(env.database_url)
    issues = schema.metadata.tables["issues"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(issues).where(issues.c.tenant_id == "1")).scalar_one() == 0
    engine.dispose()
    before = _bulk_requests(env)
    second = materialize(env, "1", resources={"jira": _jira()})
    assert second.success
    meta = _raw_meta(second)
    assert (meta["fan_out"], meta["fan_out_landed_before"]) == ("resumed", landed)
    assert _bulk_requests(env) - before == -(-(total - landed) // 100), "only what had not landed is fetched"
    assert unsealed_fan_out(create_engine(env.database_url), "1", "issues") is None
    assert_converged(env, "1")


CHILD = """
import dagster as dg
from etl_assets.core.settings import Settings
from etl_assets.defs.build import build_definitions, resources_from_settings
from etl_assets.defs.resources import SourceResource

jira = SourceResource(source="jira", max_attempts=2, max_wait_s=0.2, fan_out_min_records=0, fan_out_concurrency={concurrency})
defs = build_definitions(resources={**resources_from_settings(Settings.load()), "jira": jira})
job = defs.resolve_implicit_global_asset_job_def()
keys = list(dg.AssetSelection.from_string("key:jira/raw/raw_jira_issues").resolve(defs.resolve_asset_graph()))
job.execute_in_process(partition_key="1", asset_selection=keys, instance=dg.DagsterInstance.ephemeral())
print("finished", flush=True)
""".replace("{concurrency}", str(CONCURRENCY))


@pytest.mark.slow
@pytest.mark.sites(n_issues=1000)
@pytest.mark.parametrize("backend", ["sqlite"])  # the SQLite journal is the case a kill can hurt most
def test_a_first_sync_killed_at_60_percent_resumes_fetching_at_most_what_was_in_flight(env):
    total = len(env.tenants["1"].site.issues)
    server = env.tenants["1"].server
    # The ids each bulk fetch asks for are noted as it arrives; its answer then takes a while, so
    # the kill lands mid-fan-out.
    asked_ids: Counter[str] = Counter()
    serve = server.handler

    def noting(request):
        response = serve(request)
        if request.method == "POST" and request.path == BULK:
            asked_ids.update(json.loads(request.body)["issueIdsOrKeys"])
            response.delay_s = 0.25
        return response

    server.handler = noting
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env=env.process_env(),
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _landed(env) < 0.6 * total:
            if child.poll() is not None:
                raise AssertionError(f"the child ended before 60 %: {child.communicate()[1][-3000:]}")
            assert time.monotonic() < deadline, "timed out waiting for 60 % of the fan-out"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        child.communicate()

    landed = _landed(env)
    asked_before_kill = sum(asked_ids.values())
    assert 0.6 * total <= landed < total, "the kill left the fan-out unfinished past 60 %"
    before = _bulk_requests(env)
    result = materialize(env, "1", resources={"jira": _jira()})
    assert result.success
    meta = _raw_meta(result)
    assert (meta["fan_out"], meta["fan_out_landed_before"]) == ("resumed", landed)
    assert _bulk_requests(env) - before == -(-(total - landed) // 100), "only what had not landed is asked for"
    # Each landed answer was a checkpoint: what is fetched twice is what was in flight at the kill.
    twice = sum(1 for n in asked_ids.values() if n > 1)
    assert twice == asked_before_kill - landed
    assert twice <= CONCURRENCY * 100, "at most the in-flight window (the concurrency cap) is fetched again"
    assert sum(asked_ids.values()) == total + twice
    server.handler = serve
    assert_converged(env, "1")
