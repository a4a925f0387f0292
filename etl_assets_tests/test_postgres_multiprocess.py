"""Commit ordering on PostgreSQL across processes.

1. The graph runs under the multiprocess executor (every step its own process, as in a
   deployment) from the Dagster CLI: each vector step starts after its table step committed
   and sees every row that step committed.
2. A table step killed with SIGKILL in the middle of its transaction leaves nothing visible:
   the test holds a row lock the step needs at the end of its transaction, waits until the
   step has written its rows and is blocked on that lock, kills it, and looks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from sqlalchemy import create_engine, select, text

from etl_assets.core.sources.jira.specs import PROJECTS, STATUSES
from etl_assets.core.store import ops, schema
from etl_assets.core.store.db import make_engine
from etl_assets.core.vectorstore import collection_name, open_qdrant
from etl_assets.defs.names import raw_key, table_key, vector_key
from etl_assets_tests import pg, procs

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"])]

CHECKED = (PROJECTS, STATUSES)


def _distinct_point_ids(qdrant_path: str, tenant_id: str, entity: str) -> set[str]:
    async def go() -> set[str]:
        async with open_qdrant(None, None, qdrant_path, lock_timeout_s=60) as client:
            out, offset = set(), None
            while True:
                page, offset = await client.scroll(
                    collection_name(tenant_id, entity), limit=500, offset=offset, with_payload=["external_id"]
                )
                out |= {(p.payload or {})["external_id"] for p in page}
                if offset is None:
                    return out

    return asyncio.run(go())


def test_vector_steps_in_their_own_processes_see_every_committed_row(env, tmp_path, monkeypatch):
    storage = pg.dagster_storage_database("multiprocess")
    home = tmp_path / "dagster_home"
    procs.write_instance_yaml(home)  # deploy/dagster.yaml: PostgreSQL instance storage, pools
    process_env = {
        **env.process_env(),
        **storage.dagster_env(),
        "DAGSTER_HOME": str(home),
        "ETL_EXECUTOR": "multiprocess",
    }
    # Two independent entities, so steps of both run side by side; each step is a process of its own.
    selection = " or ".join(
        f"key:{k.to_user_string()}" for spec in CHECKED for k in (raw_key(spec), table_key(spec), vector_key(spec))
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "etl_assets.definitions",
            "--select",
            selection,
            "--partition",
            "1",
        ],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    for key, value in storage.dagster_env().items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        (run,) = instance.get_runs()
        assert run.is_success
        events = [r.event_log_entry for r in instance.get_records_for_run(run.run_id).records]
        # Pools are live on this storage: steps claimed slots of "jira" and "embeddings".
        assert {"jira", "embeddings"} <= set(instance.event_log_storage.get_concurrency_keys())

    orchestrator = {
        e.dagster_event.pid for e in events if e.dagster_event and e.dagster_event.event_type_value == "RUN_START"
    }
    started = {e.step_key: e for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"}
    succeeded = {
        e.step_key: e for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"
    }
    step_pids = {step: e.dagster_event.pid for step, e in started.items()}  # type: ignore[union-attr]
    assert len(step_pids) == 3 * len(CHECKED)
    assert len(set(step_pids.values())) == len(step_pids), "every step should have had a process of its own"
    assert not set(step_pids.values()) & orchestrator

    meta = {}
    for e in events:
        ev = e.dagster_event
        if ev and ev.event_type_value == "ASSET_MATERIALIZATION":
            meta[e.step_key] = ev.event_specific_data.materialization.metadata  # type: ignore[union-attr]
    site = env.tenants["1"].site
    expected = {"projects": len(site.projects), "statuses": len(site.statuses)}
    for spec in CHECKED:
        table_step, vector_step = f"tables__{spec.name}_table", f"vectors__{spec.name}_vectors"
        assert started[vector_step].timestamp >= succeeded[table_step].timestamp, (
            "vectors ran before the table committed"
        )
        committed = meta[table_step]["live_rows"].value
        assert committed == expected[spec.name] > 0
        assert meta[vector_step]["rows_live"].value == committed, spec.name
        assert len(_distinct_point_ids(env.qdrant_path, "1", spec.name)) == committed, spec.name


# -- a table step killed mid-transaction -------------------------------------------------------

KILLED_APP = "etl_killed_table_step"

CHILD = textwrap.dedent(
    """
    import sys
    from etl_assets.core.sources.jira.specs import PROJECTS
    from etl_assets.core.store import ops
    from etl_assets.core.store.db import make_engine

    ops.build_table(make_engine(sys.argv[1]), PROJECTS, "1")
    print("COMMITTED")
    """
)


def _projects(url: str) -> dict[str, tuple[str, object]]:
    engine = create_engine(url)
    t = PROJECTS.table
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(t.c.external_id, t.c.name, t.c.deleted_at).where(t.c.tenant_id == "1"))
            return {r.external_id: (r.name, r.deleted_at) for r in rows}
    finally:
        engine.dispose()


def test_table_step_killed_mid_transaction_leaves_nothing_visible(env, tmp_path):
    url = env.database_url
    assert env.materialize("1", "key:jira/raw/raw_jira_projects or key:tables/projects_table").success
    before = _projects(url)
    assert len(before) == len(env.tenants["1"].site.projects)
    # Jira renames one project and drops another; the new listing is landed as a pending batch.
    site = env.tenants["1"].site
    renamed, dropped = site.projects[0]["id"], site.projects[-1]["id"]
    site.projects[0]["name"] = "Renamed, never committed"
    site.projects.pop()
    assert env.materialize("1", "key:jira/raw/raw_jira_projects").success

    engine = create_engine(url)
    holder = engine.connect()
    watcher = create_engine(url, isolation_level="AUTOCOMMIT").connect()
    b = schema.raw_batches
    child = None
    try:
        # The table step marks its batches consumed last, just before COMMIT: hold that row.
        holder.begin()
        pending = holder.execute(
            select(b.c.id)
            .where(b.c.tenant_id == "1", b.c.entity == "projects", b.c.consumed_at.is_(None))
            .with_for_update()
        ).all()
        assert len(pending) == 1
        script = tmp_path / "table_step.py"
        script.write_text(CHILD)
        child_url = f"{url}?application_name={KILLED_APP}"
        child = subprocess.Popen(
            [sys.executable, str(script), child_url],
            env=env.process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def blocked_after_writing() -> int | None:
            row = watcher.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :app AND wait_event_type = 'Lock' "
                    "AND backend_xid IS NOT NULL AND query ILIKE 'UPDATE raw_batches%'"
                ),
                {"app": KILLED_APP},
            ).first()
            if child.poll() is not None:
                raise AssertionError(f"the table step exited early: {child.stdout.read().decode()[-3000:]}")  # type: ignore[union-attr]
            return row[0] if row else None

        backend = procs.wait_until(
            blocked_after_writing, timeout_s=60, interval_s=0.1, what="the table step to block inside its transaction"
        )
        # It has upserted and marked rows deleted in this transaction (it holds a write lock on projects)...
        writes = watcher.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE l.pid = :pid AND c.relname = 'projects' AND l.mode = 'RowExclusiveLock'"
            ),
            {"pid": backend},
        ).scalar_one()
        assert writes == 1, "the step should have written to projects before blocking"
        assert _projects(url) == before  # ... none of which anyone else can see yet.

        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        holder.rollback()  # release the row; the orphaned backend finds its client gone and aborts
        procs.wait_until(
            lambda: (
                watcher.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
                ).scalar_one()
                == 0
            ),
            timeout_s=60,
            what="the killed step's backend to end",
        )
    finally:
        if child is not None and child.poll() is None:
            procs.stop_process_tree(child.pid, grace_s=1)
        holder.close()
        watcher.close()
        engine.dispose()

    after = _projects(url)
    assert after == before, "a killed transaction must leave every row as it was"
    assert after[renamed][0] != "Renamed, never committed" and after[dropped][1] is None
    check = make_engine(url)
    try:
        with check.connect() as conn:
            still_pending = conn.execute(select(b.c.id).where(b.c.id == pending[0].id, b.c.consumed_at.is_(None))).all()
        assert still_pending, "the batch must stay pending so the next run consumes it"
        # The next table step converges: the rename and the deletion land, once.
        result = ops.build_table(check, PROJECTS, "1")
    finally:
        check.dispose()
    assert result.updated == 1 and result.deleted == 1
    final = _projects(url)
    assert final[renamed][0] == "Renamed, never committed" and final[dropped][1] is not None
