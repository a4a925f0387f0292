"""Crash consistency in CI: a handful of SIGKILL trials from ``scripts/crash_consistency.py``
(the script runs 50 or more), and proof that the convergence check they rely on — like
every fault test here — does detect each kind of drift.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from qdrant_client import models
from sqlalchemy import create_engine, delete, insert, update

from etl_assets.core.sources.jira.specs import PROJECTS
from etl_assets.core.store import schema
from etl_assets.core.vectorstore import open_qdrant, point_id
from etl_assets.fakes.openai_server import fake_vector
from etl_assets_tests.convergence import convergence_problems

# About the database itself: every backend runs it, even when the test matrix is split (conftest.py).
pytestmark = pytest.mark.both_backends

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crash_consistency.py"
# Raw landing, the table transaction, an embedding in flight (update), an upsert in flight;
# Qdrant local and server. The script itself runs them all, and many more.
CI_TRIALS = (0, 1, 2, 4)
CI_SEED = 1206


def _script():
    spec = importlib.util.spec_from_file_location("crash_consistency", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("crash_consistency", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_runs_killed_at_random_moments_converge_on_the_next_run():
    crash = _script()
    with crash.scratch_dir() as workdir:
        results = crash.run_trials(CI_TRIALS, CI_SEED, Path(workdir))
    table = crash.format_table(results, details=True)
    print(table)
    assert all(t.converged for t in results), table
    killed = [t for t in results if not t.phase.startswith(("after", "before"))]
    assert len(killed) >= len(CI_TRIALS) - 1, f"most trials must really kill a run mid-way:\n{table}"
    assert len({t.phase for t in killed}) >= 3, f"the kills must land in different phases:\n{table}"


# -- the check itself ---------------------------------------------------------------------------------


def _qdrant(env, action):
    async def go():
        async with open_qdrant(None, None, env.qdrant_path) as client:
            return await action(client)

    return asyncio.run(go())


def _sql(env, statement) -> None:
    engine = create_engine(env.database_url)
    with engine.begin() as conn:
        conn.execute(statement)
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])  # a check of the checker: one backend is enough
def test_the_convergence_check_detects_each_kind_of_drift(env):
    assert env.materialize("1").success
    assert convergence_problems(env, "1") == []
    site = env.tenants["1"].site
    project = site.projects[0]
    pid = point_id("1", "projects", project["id"], 0)
    collection = "client_1_projects"
    [original] = _qdrant(env, lambda c: c.retrieve(collection, [pid], with_payload=True, with_vectors=True))
    restore = [models.PointStruct(id=pid, vector=original.vector, payload=original.payload)]

    def put(payload: dict, vector: list[float] | None = None, ident: str = pid):
        vectors = {**original.vector, "dense": vector} if vector else original.vector
        point = models.PointStruct(id=ident, vector=vectors, payload={**original.payload, **payload})
        return lambda c: c.upsert(collection, points=[point], wait=True)

    def found(fragment: str) -> None:
        problems = convergence_problems(env, "1")
        assert any(fragment in p for p in problems), (fragment, problems)

    def clean() -> None:
        assert convergence_problems(env, "1") == []

    drifts = [
        # (apply, what the check must say, undo)
        (
            lambda c: c.delete(collection, points_selector=models.PointIdsList(points=[pid]), wait=True),
            f"live row {project['id']} has no point",
            lambda c: c.upsert(collection, points=restore, wait=True),
        ),
        (
            put({"external_id": "990001"}, ident=point_id("1", "projects", "990001", 0)),
            "orphan points of row 990001",
            lambda c: c.delete(
                collection,
                points_selector=models.PointIdsList(points=[point_id("1", "projects", "990001", 0)]),
                wait=True,
            ),
        ),
        (put({"name": "a stale name"}), "point is stale in name", lambda c: c.upsert(collection, points=restore)),
        (
            put({}, vector=fake_vector("another text", 64)),
            "holds a vector of another text",
            lambda c: c.upsert(collection, points=restore),
        ),
        (put({"tenant_id": "2"}), "belongs to '2'", lambda c: c.upsert(collection, points=restore)),
        (
            put({"chunk": 1}, ident=point_id("1", "projects", project["id"], 1)),
            "has chunks [0, 1]",
            lambda c: c.delete(
                collection,
                points_selector=models.PointIdsList(points=[point_id("1", "projects", project["id"], 1)]),
                wait=True,
            ),
        ),
        (
            put({"content_hash": "0" * 64}),
            "point is stale in content_hash",
            lambda c: c.upsert(collection, points=restore),
        ),
    ]
    for apply, fragment, undo in drifts:
        _qdrant(env, apply)
        found(fragment)
        _qdrant(env, undo)
        clean()

    t = PROJECTS.table
    row = (t.c.tenant_id == "1") & (t.c.external_id == project["id"])
    _sql(env, update(t).where(row).values(name="Renamed behind the back of Jira"))
    found(f"row {project['id']}.name is 'Renamed behind the back of Jira'")
    _sql(env, update(t).where(row).values(name=project["name"]))
    _sql(env, update(t).where(row).values(deleted_at=datetime.now(UTC)))
    found(f"row {project['id']} is marked deleted but exists in Jira")
    _sql(env, update(t).where(row).values(deleted_at=None))
    clean()

    gone = site.projects.pop()
    found(f"live row {gone['id']} is not in Jira")
    site.projects.append(gone)
    site.projects.append({**project, "id": "990002", "key": "NEW"})
    found("Jira object 990002 has no live row")
    site.projects.pop()
    clean()

    _sql(
        env,
        insert(schema.raw_batches).values(
            id=99999, tenant_id="1", entity="issues", kind="full", fetched_at=datetime.now(UTC), pages=0, records=0
        ),
    )
    found("1 batch(es) of issues were landed but never built")
    _sql(env, delete(schema.raw_batches).where(schema.raw_batches.c.id == 99999))
    clean()
