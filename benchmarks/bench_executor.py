"""What a no-change incremental run of one tenant costs with each Dagster executor.

    .venv/bin/python benchmarks/bench_executor.py [--issues 2000] [--runs 3]

One tenant on the sample Jira site served over loopback HTTP by its own process (generated once,
as ``bench_sync.py`` serves it, without latency or limit), the fake embeddings server and a
loopback Qdrant server (``etl_assets/fakes/qdrant_server.py``: ``QDRANT_URL`` set, as in a
deployment, where the default executor is multiprocess), SQLite for the tables. A first sync
fills everything; then ``--runs`` no-change runs of the whole graph per executor, each launched
as an operator launches one (``dagster asset materialize ... --partition``, a fresh process),
alternating executors. Reported per executor: the run's own duration (RUN_START to RUN_SUCCESS
in the event log) and the command's wall time (process start and code loading included), the
median of the runs.
"""

from __future__ import annotations

import argparse
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


def materialize(env: dict[str, str], executor: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "etl_assets.definitions"]
        + ["--select", "*", "--partition", "bench"],
        cwd=ROOT,
        env={**env, "ETL_EXECUTOR": executor},
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{executor} run failed:\n{done.stderr[-3000:]}")
    return {"wall_s": wall}


def last_run_duration(home: Path) -> float:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        [record] = instance.get_run_records(limit=1)
        return float(record.end_time - record.start_time)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_executor.json")
    args = parser.parse_args(argv)
    from etl_assets.fakes.qdrant_server import FakeQdrant

    with (
        tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp,
        FakeServer(latency_s=0.05, per_token_s=1e-6, dimensions=256, exact_tokens=False) as embeddings,
        FakeQdrant(Path(tmp) / "qdrant") as qdrant,
        JiraServer(issues=args.issues, projects=8, latency_ms=0, burst=10**6, rate=10**6) as jira,
    ):
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
        tenants = Path(tmp) / "tenants.yaml"
        tenants.write_text(
            "tenants:\n  - id: bench\n    jira:\n"
            f"      url: {jira.url}\n      email_env: BENCH_JIRA_EMAIL\n      token_env: BENCH_JIRA_TOKEN\n"
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ETL_TENANTS_FILE": str(tenants),
            "DATABASE_URL": f"sqlite:///{tmp}/etl.db",
            "QDRANT_URL": qdrant.url,
            "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-bench-not-a-secret",
            "OPENAI_BASE_URL": embeddings.url,
            "EMBEDDING_DIMENSIONS": "256",
            "HF_HUB_OFFLINE": "1",
            "BENCH_JIRA_EMAIL": "bench@example.com",
            "BENCH_JIRA_TOKEN": "not-a-secret",
        }
        first = materialize(env, "in_process")
        first["run_s"] = last_run_duration(home)
        print(f"first sync: {first}", flush=True)
        results: dict[str, list[dict[str, Any]]] = {"in_process": [], "multiprocess": []}
        for _ in range(args.runs):
            for executor in results:
                run = materialize(env, executor)
                run["run_s"] = last_run_duration(home)
                results[executor].append(run)
                print(f"{executor}: {run}", flush=True)
    summary = {
        executor: {
            "median_run_s": round(statistics.median(r["run_s"] for r in runs), 2),
            "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
        }
        for executor, runs in results.items()
    }
    figures = {
        "issues": args.issues,
        "first_sync": first,
        "runs": results,
        "summary": summary,
        "load": os.getloadavg(),
        "command": " ".join(sys.argv),
    }
    for executor, s in summary.items():
        print(
            f"{executor}: no-change run {s['median_run_s']} s (command {s['median_wall_s']} s), median of {args.runs}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
