"""A Jira sync at scale against a loopback Jira with latency and a burst rate limit.

    .venv/bin/python benchmarks/bench_sync.py [--issues 100000] [--latency-ms 300] [--burst 40]
        [--rate 20] [--concurrency 12] [--json benchmarks/results/bench_sync.json]

What it does (see benchmarks/README.md):

* starts the sample Jira site (``etl_assets/core/sources/jira/sample``, realistic ADF descriptions,
  comments and changelogs) with ``--issues`` issues in a separate process, served over loopback
  HTTP; every answer waits ``--latency-ms``; a token bucket of ``--burst`` requests refilled at
  ``--rate`` per second answers 429 with ``Retry-After`` (whole seconds, as Jira does) and
  ``RateLimit-Reason: jira-burst-based`` when empty, and ``X-RateLimit-NearLimit: true`` below a
  fifth of its capacity; the fake embeddings server as in ``bench_vectorize.py`` (another process);
* renders every issue's JSON once, before anything is timed, for the fields and expansions the
  sync asks for, and serves search pages and bulk fetches alike from those rendered views (the
  id listing is still rendered per request). A real Jira renders on its own servers (the latency
  stands for that); this one shares the benchmark's two cores, and re-encoding ~1 MB per answer
  (~25 ms) would be a cost of the fake charged to whichever path asks most at once. The paged
  baseline and the fan-out are served from the same views; the figures say how many views were
  rendered during each (0 expected);
* runs each phase in its own child process (peak RSS is the phase's own):
  1. the fetch stage as the paged path does it (one ``search/jql`` page after another, following
     ``nextPageToken``, comments and changelogs paged) — the baseline, pages counted and dropped
     (the benchmark's own count of their records, a parse per page, is timed apart and left out);
  2. the first sync end to end as the assets run it: raw (the fan-out: id listing, bulk fetches
     under the adaptive limit, each answer landed), projects and issues tables, issue vectors
     into a store that keeps ids and hashes and drops vectors; then in the same process a
     no-change incremental run (raw, table, vectors) and, after one issue is deleted on the site,
     incremental runs until the issue has left the table and the vectors;
  3. a first sync SIGKILLed once 60 % of the issues have landed, then resumed: issues fetched
     twice (from the server's log of bulk-fetch ids), whether the resumed table equals phase 2's;
  4. the first sync of a tenant restricted to a fifth of the projects, for peak RSS at N/5 vs N.
* prints the figures and writes them as JSON.

The phases call the core functions the Dagster assets call (``pipeline``, ``ops``,
``sync_vectors``) in one process, so the figures hold no executor start-up; see the README for
what a run's executor adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_vectorize import FakeServer, MemoryStore, in_child  # noqa: E402

TENANT = "bench"
BULK = "/rest/api/3/issue/bulkfetch"


# -- the loopback Jira (its own process) -------------------------------------------------------------


class Bucket:
    """A token bucket: ``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float) -> None:
        self.capacity, self.rate = float(burst), rate
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> tuple[bool, float, float]:
        """(admitted, seconds until a token, tokens left)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, 0.0, self.tokens
        return False, (1 - self.tokens) / self.rate, self.tokens


def _serve(conn: Any, options: dict[str, Any]) -> None:
    from etl_assets.core.sources.jira.sample import JiraSiteHandler, generate_sample_site
    from etl_assets.fakes.loopback import LoopbackServer, Request, Response

    started = time.perf_counter()
    site = generate_sample_site(seed=3, n_projects=options["projects"], n_issues=options["issues"])
    generated_s = time.perf_counter() - started
    # Issue views are rendered once, before anything is timed (``prerender``), and served as bytes
    # from then on: a real Jira renders on its own servers (the latency stands for that), while
    # here the server shares the benchmark's cores, and re-encoding ~1 MB per answer would tax
    # whichever path asks most at once. Both paths are served from the same views.
    handler = JiraSiteHandler(site, cache_views=True)
    bucket = Bucket(options["burst"], options["rate"])
    latency = options["latency_ms"] / 1000
    stats: Counter[str] = Counter()
    bulk_ids: Counter[str] = Counter()
    lock = threading.Lock()

    def bench(req: Request) -> Response:
        what = req.path.removeprefix("/__bench/")
        if what == "stats":
            with lock:
                return Response.json(
                    {
                        **stats,
                        "ids_asked_twice": sum(1 for n in bulk_ids.values() if n > 1),
                        "views_rendered": handler.views_rendered,
                    }
                )
        if what == "prerender":
            started = time.perf_counter()
            rendered = handler.prerender(req.query["fields"].split(","), req.query.get("expand", "").split(","))
            return Response.json({"rendered": rendered, "seconds": round(time.perf_counter() - started, 1)})
        if what == "reset":
            with lock:
                stats.clear()
                bulk_ids.clear()
                handler.views_rendered = 0
            return Response.json({})
        if what == "delete":
            # An issue nothing else points at (no parent, sub-tasks or links): deleting it changes no
            # other issue, so the tables of phases 2 and 3 stay comparable.
            with site._lock:
                linked = {link["id"] for i in site.issues for link in i["fields"].get("subtasks") or []}
                linked |= {(i["fields"].get("parent") or {}).get("id") for i in site.issues}
                for i in site.issues:
                    links = i["fields"].get("issuelinks") or []
                    linked |= {(lk.get("inwardIssue") or lk.get("outwardIssue") or {}).get("id") for lk in links}
                victim = next(
                    i
                    for i in site.issues
                    if i["id"] not in linked
                    and not i["fields"].get("parent")
                    and not i["fields"].get("subtasks")
                    and not i["fields"].get("issuelinks")
                )
                deleted = site.delete_issue(victim["key"])
            handler.clear_views()  # the site changed: views are rendered again as they are asked for
            return Response.json({"id": victim["id"], "deleted": deleted})
        if what == "info":
            projects = sorted(p["key"] for p in site.projects)
            counts = Counter(i["fields"]["project"]["key"] for i in site.issues)
            return Response.json({"issues": len(site.issues), "projects": projects, "per_project": counts})
        return Response.json({}, status=404)

    def handle(req: Request) -> Response:
        if req.path.startswith("/__bench/"):
            return bench(req)
        admitted, wait_s, left = bucket.take()
        with lock:
            stats["requests"] += 1
        if not admitted:
            with lock:
                stats["throttled"] += 1
            headers = {
                "Retry-After": str(max(1, math.ceil(wait_s))),
                "RateLimit-Reason": "jira-burst-based",
                "X-RateLimit-Limit": str(int(bucket.capacity)),
                "X-RateLimit-Remaining": "0",
            }
            return Response.json({"errorMessages": ["Rate limit exceeded."]}, 429, headers, delay_s=latency)
        if req.method == "POST" and req.path == BULK:
            with lock:
                bulk_ids.update(req.json().get("issueIdsOrKeys") or [])
                stats["bulkfetch"] += 1
        elif req.path.endswith("/search/jql"):
            with lock:
                stats["search"] += 1
        status, headers, body = handler.handle(req.method, req.path, req.query, req.body)
        if left < bucket.capacity / 5:
            headers = {**headers, "X-RateLimit-NearLimit": "true"}
        return Response(status=status, headers=headers, body=body, delay_s=latency)

    server = LoopbackServer(handle).start()
    conn.send({"url": server.url, "generated_s": round(generated_s, 1)})
    try:
        conn.recv()  # until told to stop
    finally:
        server.stop()


class JiraServer:
    def __init__(self, **options: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, options), daemon=True, name="fake-jira")

    def __enter__(self) -> JiraServer:
        self.process.start()
        if not self.conn.poll(1800):
            raise RuntimeError("the loopback Jira did not start")
        info = self.conn.recv()
        self.url: str = info["url"]
        self.generated_s = info["generated_s"]
        return self

    def call(self, what: str, timeout: float = 60, **query: str) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/__bench/{what}", params=query, timeout=timeout).json()

    def prerender(self, args: dict[str, Any]) -> dict[str, Any]:
        """Render every issue once for the fields the sync asks for (see ``_serve``)."""
        from etl_assets.core.records import FetchRequest
        from etl_assets.core.sources.jira.specs import _issue_ask

        with _Jira(self.url, args) as client:
            _, ask = _issue_ask(client, FetchRequest(_tenant(self.url)))
        expand = "changelog,names,schema" if ask.custom else "changelog"
        return self.call("prerender", timeout=3600, fields=",".join(ask.fields), expand=expand)

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()


# -- phases ------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _tenant(url: str, projects: tuple[str, ...] = ()) -> Any:
    from etl_assets.core.sources.jira.source import JiraSiteConfig
    from etl_assets.core.tenants import Tenant

    return Tenant(TENANT, "Bench", {"jira": JiraSiteConfig(url=url, email_env="E", token_env="T", projects=projects)})


class _Jira:
    """A client for the loopback site, as the Jira resource opens one."""

    def __init__(self, url: str, args: dict[str, Any]) -> None:
        import httpx

        from etl_assets.core.sources.jira.client import JiraClient

        timeout = httpx.Timeout(60.0, connect=10.0)
        limits = httpx.Limits(max_connections=args["concurrency"] + 4)
        self.http = httpx.Client(base_url=url, timeout=timeout, limits=limits)
        self.client = JiraClient(self.http, TENANT, url, max_attempts=8, max_wait_s=60.0)

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.http.close()


def phase_baseline(url: str, args: dict[str, Any]) -> dict[str, Any]:
    """The paged fetch stage: every search page in turn (and its comment/changelog pages)."""
    from etl_assets.core.records import FetchRequest
    from etl_assets.core.sources.jira.specs import ISSUES

    started = time.perf_counter()
    pages = records = size = 0
    counting = 0.0  # the benchmark's own count of records (a parse per page): not the fetch's work
    with _Jira(url, args) as client:
        for page in ISSUES.fetch(client, FetchRequest(_tenant(url), page_size=100)):
            pages += 1
            size += len(page.body)
            count_started = time.perf_counter()
            records += len(ISSUES.records(page.json()))
            counting += time.perf_counter() - count_started
        stats = client.stats
    return {
        "wall_s": round(time.perf_counter() - started - counting, 2),
        "counting_s": round(counting, 2),
        "pages": pages,
        "records": records,
        "bytes": size,
        "requests": stats.requests,
        "throttled": stats.throttled,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _engine(db: str) -> Any:
    """An engine on ``db`` with every table of the catalogue (sources declare theirs on import)."""
    import etl_assets.core.catalogue  # noqa: F401
    from etl_assets.core.store.db import make_engine

    return make_engine(f"sqlite:///{db}")


def _db_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _raw_and_tables(engine: Any, url: str, args: dict[str, Any], tenant: Any) -> dict[str, Any]:
    """The raw and table steps of projects and issues, as the assets run them."""
    from etl_assets.core import pipeline
    from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS
    from etl_assets.core.store import ops

    out: dict[str, Any] = {}
    with _Jira(url, args) as client:
        before = client.stats.requests, client.stats.throttled
        started = time.perf_counter()
        for spec in (PROJECTS, ISSUES):
            plans, _ = pipeline.plan_fetches(engine, spec, tenant, page_size=100)
            run = pipeline.FetchRun(engine, spec, tenant, client, plans)
            for plan in run:
                if plan.kind == "full" and spec.fan_out is not None:
                    options = pipeline.FanOutOptions(concurrency=args["concurrency"], min_records=0)
                    fanned = pipeline.fetch_fanned_out(
                        engine, spec, tenant, client, options=options, page_size=100, overlap=timedelta(minutes=10)
                    )
                    assert fanned is not None
                    out["fan_out"] = fanned.metadata()
                    continue
                ops.land_raw(engine, spec, tenant.id, pipeline.fetch(spec, client, plan), kind=plan.kind)
            if spec is ISSUES:
                out["fetch_kinds"] = "+".join(p.kind for p in run.plans)
                out |= {k: v for k, v in run.metadata().items() if k in ("live_estimate", "reconcile_reason")}
        out["raw_s"] = round(time.perf_counter() - started, 2)
        out["jira_requests"] = client.stats.requests - before[0]
        out["jira_429s"] = client.stats.throttled - before[1]
    started = time.perf_counter()
    for spec in (PROJECTS, ISSUES):
        result = ops.build_table(engine, spec, tenant.id)
        if spec is ISSUES:
            out |= {"rows_inserted": result.inserted, "rows_updated": result.updated, "rows_deleted": result.deleted}
            out |= {
                "live_rows": result.live_rows,
                "raw_pruned_bytes": result.pruned.pruned_bytes if result.pruned else 0,
            }
    out["tables_s"] = round(time.perf_counter() - started, 2)
    out["rss_after_tables_mb"] = _peak_rss_mb()
    return out


async def _vectors(engine: Any, embeddings_url: str, store: Any, args: dict[str, Any]) -> dict[str, Any]:
    from etl_assets.core import pipeline
    from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
    from etl_assets.core.sources.jira.specs import ISSUES
    from etl_assets.core.store import ops
    from etl_assets.core.vectorsync import sync_vectors

    settings = EmbeddingSettings(
        provider="openai", api_key="sk-bench", base_url=embeddings_url, model="text-embedding-3-small", dimensions=256
    )

    async def live_ids(ids: list[str]) -> set[str]:
        return await asyncio.to_thread(pipeline.live_external_ids, engine, ISSUES, TENANT, ids)

    started = time.perf_counter()
    async with open_embedder(settings) as embedder:
        result = await sync_vectors(
            spec=ISSUES,
            tenant_id=TENANT,
            pages=lambda: ops.iter_rows(engine, ISSUES, TENANT, access=True),
            live_ids=live_ids,
            embedder=embedder,
            collection=store,
            concurrency=4,
            fingerprint=lambda: ops.live_fingerprint(engine, ISSUES, TENANT, access=True),
        )
        requests = embedder.stats.requests
    return {
        "vectors_s": round(time.perf_counter() - started, 2),
        "embedding_requests": requests,
        "points_upserted": result.points_upserted,
        "change_detection": result.change_detection,
    }


def _sync(engine: Any, url: str, embeddings_url: str, store: Any, args: dict[str, Any], tenant: Any) -> dict[str, Any]:
    started = time.perf_counter()
    out = _raw_and_tables(engine, url, args, tenant)
    out |= asyncio.run(_vectors(engine, embeddings_url, store, args))
    out["wall_s"] = round(time.perf_counter() - started, 2)
    return out


def phase_first_sync(url: str, embeddings_url: str, db: str, args: dict[str, Any]) -> dict[str, Any]:
    """First sync end to end, a no-change run, then one deleted issue until it leaves search."""
    import httpx
    from sqlalchemy import select

    from etl_assets.core.sources.jira import tables

    engine = _engine(db)
    store = MemoryStore("client_bench_issues")
    tenant = _tenant(url)
    first = _sync(engine, url, embeddings_url, store, args, tenant)
    first["views_rendered"] = httpx.get(f"{url}/__bench/stats", timeout=60).json().get("views_rendered")
    first["peak_rss_mb"] = _peak_rss_mb()
    first["db_bytes"] = _db_size(Path(db))

    no_change = _sync(engine, url, embeddings_url, store, args, tenant)

    victim = httpx.get(f"{url}/__bench/delete", timeout=60).json()["id"]
    syncs = 0
    deletion: list[dict[str, Any]] = []
    while syncs < 13:
        syncs += 1
        run = _sync(engine, url, embeddings_url, store, args, tenant)
        deletion.append({k: run.get(k) for k in ("fetch_kinds", "reconcile_reason", "rows_deleted", "wall_s")})
        deleted_at = (
            engine.connect()
            .execute(select(tables.issues.c.deleted_at).where(tables.issues.c.external_id == victim))
            .scalar_one()
        )
        if deleted_at is not None and not any(p[0] == victim for p in store.points.values()):
            break
    engine.dispose()
    return {"first": first, "no_change": no_change, "deletion_syncs": syncs, "deletion_runs": deletion}


def phase_fan_out_only(url: str, db: str, args: dict[str, Any]) -> dict[str, Any]:
    """The issues fan-out alone (a fresh database or a resume), for the kill phase."""
    from etl_assets.core import pipeline
    from etl_assets.core.sources.jira.specs import ISSUES

    engine = _engine(db)
    with _Jira(url, args) as client:
        started = time.perf_counter()
        options = pipeline.FanOutOptions(concurrency=args["concurrency"], min_records=0)
        result = pipeline.fetch_fanned_out(engine, ISSUES, _tenant(url), client, options=options, page_size=100)
        assert result is not None
    return {**result.metadata(), "wall_s": round(time.perf_counter() - started, 2)}


def _landed(db: str) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(records), 0) FROM raw_batches WHERE entity = 'issues' AND kind = 'fetching'"
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def _kill_child(url: str, db: str, args: dict[str, Any]) -> None:
    phase_fan_out_only(url, db, args)


def phase_kill_and_resume(server: JiraServer, db: str, reference_db: str, args: dict[str, Any], total: int) -> dict:
    ctx = mp.get_context("spawn")
    server.call("reset")
    child = ctx.Process(target=_kill_child, args=(server.url, db, args), name="killed-first-sync")
    child.start()
    deadline = time.monotonic() + 3600
    while _landed(db) < 0.6 * total:
        if not child.is_alive():
            raise RuntimeError("the first sync ended before 60 % landed")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for 60 %")
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join()
    landed = _landed(db)
    killed = server.call("stats")
    resumed = in_child(phase_fan_out_only, server.url, db, args)
    after = server.call("stats")
    equal = in_child(phase_compare, db, reference_db)
    window = args["concurrency"] * 100
    twice = after.get("ids_asked_twice", 0)
    return {
        "landed_at_kill": landed,
        "share_at_kill": round(landed / total, 3),
        "bulkfetch_before_kill": killed.get("bulkfetch", 0),
        "resumed": resumed,
        "issues_fetched_twice": twice,
        "window_issues": window,
        "batches_fetched_twice": round(twice / window, 2),
        **equal,
    }


def phase_compare(db: str, reference_db: str) -> dict[str, Any]:
    """Build the resumed database's issues table and compare it with the first sync's."""
    from sqlalchemy import select

    from etl_assets.core.sources.jira import tables
    from etl_assets.core.sources.jira.specs import ISSUES
    from etl_assets.core.store import ops

    engine = _engine(db)
    ops.build_table(engine, ISSUES, TENANT)
    volatile = {"id", "first_seen_at", "synced_at"}

    def rows(e: Any) -> dict[str, Any]:
        t = tables.issues
        return {
            r.external_id: {k: v for k, v in r._mapping.items() if k not in volatile}
            for r in e.connect().execute(select(t).where(t.c.deleted_at.is_(None)))
        }

    reference = _engine(reference_db)
    mine, theirs = rows(engine), rows(reference)
    # Both were fetched after phase 2 deleted one issue that nothing links to: the same live rows.
    differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    return {
        "resumed_rows": len(mine),
        "reference_rows": len(theirs),
        "rows_differing": len(differing),
        "differing_ids": differing[:10],
    }


def phase_rss(url: str, embeddings_url: str, db: str, args: dict[str, Any], projects: list[str]) -> dict[str, Any]:
    engine = _engine(db)
    out = _sync(engine, url, embeddings_url, MemoryStore("client_bench_issues"), args, _tenant(url, tuple(projects)))
    return {**out, "peak_rss_mb": _peak_rss_mb()}


# -- the report ----------------------------------------------------------------------------------------


def report(f: dict[str, Any]) -> str:
    first, base = f["sync"]["first"], f["baseline"]
    fan = first["fan_out"]
    lines = [
        f"loopback Jira: {f['issues']:,} issues, {f['latency_ms']} ms per request, burst {f['burst']} "
        f"refilled {f['rate']}/s (429 + Retry-After), fan-out concurrency up to {f['concurrency']}",
        "",
        "first sync end to end (raw fan-out -> tables -> vectors):",
        f"  wall {first['wall_s']} s (raw {first['raw_s']} s, tables {first['tables_s']} s, "
        f"vectors {first['vectors_s']} s); Jira requests {first['jira_requests']}, 429s {first['jira_429s']}; "
        f"peak RSS {first['peak_rss_mb']} MB; database {first['db_bytes'] / 2**20:.1f} MB",
        f"  concurrency peak {fan['fan_out_concurrency_peak']}, decreases {fan['fan_out_concurrency_decreases']}, "
        f"near-limit answers {fan['fan_out_near_limit_answers']}, held for Retry-After "
        f"{fan['fan_out_held_for_retry_after_s']} s",
        f"fetch stage: fan-out {fan['fan_out_fetch_s'] + 0:.1f} s of bulk fetches, raw step {first['raw_s']} s "
        f"(listing, bulk fetches, landing, catch-up) vs paged baseline {base['wall_s']} s "
        f"({base['requests']} requests, {base['throttled']} 429s): {f['fetch_ratio']}x; issue views rendered "
        f"while timed: {base.get('views_rendered')} (baseline), {first.get('views_rendered')} (first sync)",
        f"no-change incremental run: wall {f['sync']['no_change']['wall_s']} s, Jira requests "
        f"{f['sync']['no_change']['jira_requests']}, embedding requests {f['sync']['no_change']['embedding_requests']}",
        f"one issue deleted in Jira: {f['sync']['deletion_syncs']} sync(s) until it left the table and the vectors",
        f"SIGKILL at {f['kill']['share_at_kill'] * 100:.0f} %: {f['kill']['issues_fetched_twice']} issues fetched "
        f"twice = {f['kill']['batches_fetched_twice']} windows of {f['kill']['window_issues']}; resumed table "
        f"{f['kill']['rows_differing']} rows differing of {f['kill']['reference_rows']}",
        f"peak RSS: {f['rss_small']['peak_rss_mb']} MB at {f['rss_small_issues']:,} issues vs "
        f"{first['peak_rss_mb']} MB at {f['issues']:,} ({f['rss_ratio']}x)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=100_000)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_sync.json")
    args = parser.parse_args(argv)
    opts = {"concurrency": args.concurrency}
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp,
        JiraServer(
            issues=args.issues, projects=args.projects, latency_ms=args.latency_ms, burst=args.burst, rate=args.rate
        ) as jira,
        FakeServer(latency_s=0.1, per_token_s=2e-6, dimensions=256, exact_tokens=False) as embeddings,
    ):
        print(f"site of {args.issues:,} issues generated in {jira.generated_s} s", flush=True)
        info = jira.call("info")
        prerendered = jira.prerender(opts)
        print(f"issue views rendered before timing: {prerendered}", flush=True)
        jira.call("reset")
        baseline = in_child(phase_baseline, jira.url, opts)
        baseline["views_rendered"] = jira.call("stats").get("views_rendered", 0)
        print(f"baseline: {baseline}", flush=True)
        jira.call("reset")
        db = str(Path(tmp) / "sync.db")
        sync = in_child(phase_first_sync, jira.url, embeddings.url, db, opts)
        print(f"first sync: {sync['first']}", flush=True)
        jira.prerender(opts)  # the deleted issue cleared the views
        kill = phase_kill_and_resume(jira, str(Path(tmp) / "killed.db"), db, opts, info["issues"])
        print(f"kill: {kill}", flush=True)
        # A fifth of the issues: the smallest projects until a fifth is reached.
        chosen, count = [], 0
        for key, n in sorted(info["per_project"].items(), key=lambda kv: kv[1]):
            if count + n > info["issues"] / 5 and chosen:
                break
            chosen.append(key)
            count += n
        small = in_child(phase_rss, jira.url, embeddings.url, str(Path(tmp) / "small.db"), opts, chosen)
    raw_s = sync["first"]["raw_s"]
    figures = {
        "issues": info["issues"],
        "latency_ms": args.latency_ms,
        "burst": args.burst,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "site_generated_s": jira.generated_s,
        "site_prerendered": prerendered,
        "baseline": baseline,
        "sync": sync,
        "fetch_ratio": round(baseline["wall_s"] / raw_s, 1) if raw_s else None,
        "kill": kill,
        "rss_small": small,
        "rss_small_issues": count,
        "rss_ratio": round(sync["first"]["peak_rss_mb"] / small["peak_rss_mb"], 2),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_at_start": load},
        "load_at_end": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join(sys.argv),
    }
    print(report(figures))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
