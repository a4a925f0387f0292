"""Latency of the MCP server's tools over streamable HTTP, on the bundled sample tenant.

What it does, in a fresh temporary data directory (nothing of yours is touched):

1. syncs and indexes sample tenant 1 (``sample://acme``, 300 issues) with the Dagster CLI and
   the packaged local model (all-MiniLM-L6-v2, offline);
2. starts ``python -m etl_assets.mcp_server --transport http`` with one bearer token;
3. with the SDK's own client, one request at a time: ``search_issues`` for each of the sample
   site's labelled queries (cycled) and ``get_issue`` for the keys those searches returned;
4. prints p50/p95/mean/max in milliseconds, client-side (the whole MCP round trip: HTTP, JSON-RPC,
   the query's embedding on CPU, Qdrant local mode, the tables), and writes them as JSON.

    .venv/bin/python benchmarks/bench_mcp.py [--searches 200] [--gets 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from etl_assets.core.sources.jira.sample import generate_sample_site, labelled_queries

ROOT = Path(__file__).resolve().parents[1]
TOKEN_ENV = "BENCH_MCP_TOKEN"
TOKEN = "bench-token-0123456789abcdefghijklmnop"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def figures(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.50), 1),
        "p95_ms": round(percentile(values, 0.95), 1),
        "mean_ms": round(statistics.fmean(values), 1),
        "max_ms": round(max(values), 1),
    }


def sync_sample(env: dict[str, str], home: Path) -> float:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "etl_assets.definitions"]
        + ["--select", "*", "--partition", "1"],
        cwd=ROOT,
        env={**env, "DAGSTER_HOME": str(home)},
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def start_server(env: dict[str, str], config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "etl_assets.mcp_server", "--transport", "http", "--port", "0"]
            + ["--config", str(config)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+/mcp)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


async def measure(url: str, queries: list[str], searches: int, gets: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:

            async def call(tool: str, args: dict[str, Any]) -> tuple[float, Any]:
                started = time.perf_counter()
                result = await client.call_tool(tool, args)
                elapsed = 1000 * (time.perf_counter() - started)
                if result.is_error:
                    raise SystemExit(f"{tool} failed: {result.content}")
                return elapsed, result.structured_content

            for query in queries[:3]:  # warm-up: connection, first embeddings
                await call("search_issues", {"query": query, "limit": 10})
            search_ms: list[float] = []
            keys: list[str] = []
            for i in range(searches):
                elapsed, out = await call("search_issues", {"query": queries[i % len(queries)], "limit": 10})
                search_ms.append(elapsed)
                keys += [hit["key"] for hit in out["hits"]]
            get_ms = [(await call("get_issue", {"key": keys[i % len(keys)]}))[0] for i in range(gets)]
    return {"search_issues": figures(search_ms), "get_issue": figures(get_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_mcp.json")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it; a second run reuses its index")
    args = parser.parse_args()
    queries = [q for q, _ in labelled_queries(generate_sample_site(seed=7))]
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = args.keep.absolute()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mcp-")))
        env = {
            **os.environ,
            "ETL_DATA_DIR": str(tmp / "data"),
            "EMBEDDING_PROVIDER": "local",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            TOKEN_ENV: TOKEN,
        }
        for name in ("ETL_TENANTS_FILE", "DATABASE_URL", "QDRANT_URL", "QDRANT_PATH", "OPENAI_API_KEY"):
            env.pop(name, None)  # the bundled sample tenants, embedded stores, the local model
        print("syncing and indexing sample tenant 1 with the local model (unless --keep has it) ...", flush=True)
        reuse = args.keep is not None and (tmp / "data" / "etl.db").exists()
        sync_s = 0.0 if reuse else sync_sample(env, tmp / "dagster_home")
        config = tmp / "mcp.yaml"
        config.write_text(
            json.dumps(
                {
                    "http_clients": [
                        {
                            "name": "bench",
                            "token_env": TOKEN_ENV,
                            "principal": "bench",
                            "tenants": ["1"],
                            # searches run as a Jira user: the access filter is part of what is timed
                            "jira_user": "anna.schmidt@example.com",
                        }
                    ],
                    "limits": {"requests_per_minute": 1_000_000},
                }
            )
        )
        log = tmp / "server.log"
        proc, url = start_server(env, config, log)
        try:
            print(f"server at {url}; {args.searches} searches, {args.gets} get_issue calls ...", flush=True)
            results = asyncio.run(measure(url, queries, args.searches, args.gets))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        # The server logs each call's own time: what the round trip adds is the difference.
        for tool in ("search_issues", "get_issue"):
            server_ms = [float(m) for m in re.findall(rf"{tool} by bench in (\d+) ms", log.read_text())]
            results[f"{tool}_server_side"] = figures(
                server_ms[-(args.searches if tool == "search_issues" else args.gets) :]
            )
    report = {
        "tenant": "sample 1 (sample://acme?seed=7)",
        "model": "local all-MiniLM-L6-v2",
        "store": "Qdrant local mode, SQLite",
        "transport": "streamable HTTP, one client, sequential",
        "sync_and_index_s": round(sync_s, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **results,
    }
    print(json.dumps(report, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
