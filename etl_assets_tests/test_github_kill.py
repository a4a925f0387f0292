"""A GitHub sync SIGKILLed mid-run, in the raw, table or vector step, converges exactly on the next run.

The killed run is a child process running the GitHub assets of tenant 1 in process (one step at a
time) against the loopback GitHub server; the re-run is in this process. Before the re-run the
state must NOT be converged (the kill really left work undone); after it, it must be exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import DBAPIError

from etl_assets.core.store import schema
from etl_assets.fakes.loopback import Fault
from etl_assets_tests.convergence import convergence_problems
from etl_assets_tests.github_env import GITHUB_ENTITIES, GITHUB_SELECTION, GITHUB_TOKEN, TOKEN_ENV, github_for, run

CHILD = """
import sys
import dagster as dg
from etl_assets.defs.build import build_definitions

defs = build_definitions()
job = defs.resolve_implicit_global_asset_job_def()
keys = list(dg.AssetSelection.from_string(sys.argv[1]).resolve(defs.resolve_asset_graph()))
job.execute_in_process(partition_key="1", asset_selection=keys, instance=dg.DagsterInstance.ephemeral())
print("finished", flush=True)
"""


def _tenants_file(env, gh, path: Path) -> Path:
    tenants = []
    for t in env.tenants.values():
        entry = {
            "id": t.id,
            "jira": {"url": t.url, "email_env": f"T{t.id}_JIRA_EMAIL", "token_env": f"T{t.id}_JIRA_TOKEN"},
        }
        if t.id == "1":
            entry["github"] = {"url": gh.api_url, "token_env": TOKEN_ENV, "org": "acme"}
        tenants.append(entry)
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return path


def _github_batches(env) -> tuple[int, int]:
    """(landed, not yet built) raw batches of GitHub entities for tenant 1."""
    b = schema.raw_batches
    names = [s.name for s in GITHUB_ENTITIES]
    engine = create_engine(env.database_url)
    try:
        with engine.connect() as conn:
            where = (b.c.tenant_id == "1") & b.c.entity.in_(names)
            landed = conn.execute(select(func.count()).where(where)).scalar_one()
            pending = conn.execute(select(func.count()).where(where & b.c.consumed_at.is_(None))).scalar_one()
    except DBAPIError:  # the table may not exist before the child's first migration
        return 0, 0
    finally:
        engine.dispose()
    return int(landed), int(pending)


def _wait_for(what: str, ready: Callable[[], bool], child: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            raise AssertionError(f"the child ended before {what}: {child.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the SQLite journal is the case a kill can hurt most
@pytest.mark.parametrize("moment", ["raw", "table", "vector"])
def test_a_github_sync_killed_mid_run_converges_on_the_next_run(env, monkeypatch, tmp_path, moment):
    with github_for(env, monkeypatch) as gh:
        child_env = {
            **env.process_env(),
            "ETL_TENANTS_FILE": str(_tenants_file(env, gh, tmp_path / "tenants.yaml")),
            TOKEN_ENV: GITHUB_TOKEN,
        }
        if moment == "raw":
            # The first request for a repository's listings hangs: the child is mid-landing.
            gh.faults.append(Fault("delay", path="/api/v3/repos/", delay_s=120))
        elif moment == "vector":
            # The first embedding request hangs: tables committed, vectors in flight.
            env.embeddings.faults.append(Fault("delay", path="/v1/embeddings", delay_s=120))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, GITHUB_SELECTION],
            env=child_env,
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if moment == "raw":
                _wait_for("a repository request", lambda: gh.server.requests_received > len(gh.seen), child)
            elif moment == "table":
                _wait_for("a landed batch", lambda: _github_batches(env)[0] > 0, child)
            else:
                _wait_for("an embedding request", lambda: env.embeddings.server.requests_received > 0, child)
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
            child.communicate()
            gh.faults.clear()
            env.embeddings.faults.clear()

        before = convergence_problems(env, "1", entities=GITHUB_ENTITIES)
        assert before, f"the kill at the {moment} step left nothing undone: the test proves nothing"
        if moment == "table":
            assert _github_batches(env)[1] > 0, "killed after landing: some batch must still wait for its table"
        result = run(env, gh)
        assert result.success
        assert convergence_problems(env, "1", entities=GITHUB_ENTITIES) == []
