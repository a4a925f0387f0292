"""Permission sync of a large tenant: a no-change sync and a 1 % audience change, against a full rewrite.

    .venv/bin/python benchmarks/bench_permissions.py                 # 50,000 issues (+ their comments)
    .venv/bin/python benchmarks/bench_permissions.py --issues 2000   # a quick look

Data: the sample permission fixture (:mod:`etl_assets.core.sources.jira.sample.permissions`)
with ``--issues`` issues over its four projects, 1-3 comments each, served over the fixture's
httpx transport and fetched by the real fetcher; tables in SQLite (temp dir); points in
qdrant-client's embedded engine (``--qdrant memory`` by default, or ``disk``), 4-dimension vectors (only payloads matter here).
The change moves ``--changed`` x issues (spread over those with a security level) to the other
level of their scheme. Payloads are written by point id (``point_ids``). Printed: the time of each phase, payload writes and points written, and the ratio of
the incremental payload write to the baseline — rewriting every point's access list.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.access_sync import ACCESS_FIELD, apply_access_updates
from etl_assets.core.permissions import compute_access, issue_facts_from_json
from etl_assets.core.sources.jira import permission_tables as pt
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.permissions import fetch_permissions
from etl_assets.core.sources.jira.sample.permissions import generate_permission_fixture, permission_transport
from etl_assets.core.store.db import make_engine
from etl_assets.core.vectorstore import point_id

COLLECTIONS = {"issue": "client_bench_issues", "comment": "client_bench_comments"}
OTHER_LEVEL = {"3000": "3001", "3001": "3000", "3002": "3003", "3003": "3002"}


def sync_tables(engine: Any, fx: Any) -> tuple[dict[tuple[str, ...], list[str]], dict[str, float]]:
    t0 = time.perf_counter()
    with httpx.Client(transport=permission_transport(fx), base_url="https://sample.atlassian.net") as http:
        client = JiraClient(http=http, tenant_id="bench", site="https://sample.atlassian.net")
        projects = [{"id": p["id"], "key": p["key"], "lead": {"accountId": p["lead"]}} for p in fx.projects]
        facts = [issue_facts_from_json(i) for i in fx.issues]
        fetched = fetch_permissions(client, projects, facts)
    t1 = time.perf_counter()
    access = compute_access(fetched.snapshot, facts)
    t2 = time.perf_counter()
    with engine.begin() as conn:
        pt.save_snapshot(conn, "bench", fetched)
        pending = pt.save_access(conn, "bench", access)
    t3 = time.perf_counter()
    return pending, {"fetch_s": t1 - t0, "compute_s": t2 - t1, "commit_s": t3 - t2}


async def load_points(client: AsyncQdrantClient, access: dict[str, tuple[str, ...]]) -> None:
    for name in COLLECTIONS.values():
        await client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    batch: dict[str, list[models.PointStruct]] = {k: [] for k in COLLECTIONS}
    for key, acl in access.items():
        kind, _, ext = key.partition(":")
        batch[kind].append(
            models.PointStruct(
                id=point_id("bench", kind, ext),
                vector=[1.0, 0.0, 0.0, 0.0],
                payload={"external_id": ext, ACCESS_FIELD: list(acl)},
            )
        )
    for kind, pts in batch.items():
        for start in range(0, len(pts), 1000):
            await client.upsert(COLLECTIONS[kind], points=pts[start : start + 1000], wait=True)


def ids(kind: str, external_id: str) -> list[str]:
    """The points of one issue or comment (one chunk each here)."""
    return [point_id("bench", kind, external_id)]


async def main_async(args: argparse.Namespace) -> None:
    fx = generate_permission_fixture(issues_per_project=max(1, args.issues // 4))
    n_comments = sum(len(i["fields"]["comment"]["comments"]) for i in fx.issues)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'perm.db'}")
        pending, first = sync_tables(engine, fx)
        with engine.begin() as conn:
            access = pt.committed_access(conn, "bench")
            pt.mark_applied(conn, "bench", access)
        client = (
            AsyncQdrantClient(path=str(Path(tmp) / "qdrant"))
            if args.qdrant == "disk"
            else AsyncQdrantClient(location=":memory:")
        )
        try:
            await load_points(client, access)
            _, same = sync_tables(engine, fx)
            with engine.connect() as conn:
                no_change_pending = pt.pending_access(conn, "bench")
            leveled = [i for i in fx.issues if i["fields"]["security"]]
            wanted = round(len(fx.issues) * args.changed)
            moved = leveled[:: max(1, len(leveled) // wanted)][:wanted]
            for issue in moved:
                fx.set_security(issue["key"], OTHER_LEVEL[issue["fields"]["security"]["id"]])
            pending, changed = sync_tables(engine, fx)
            written_keys = {k for keys in pending.values() for k in keys}
            t0 = time.perf_counter()
            stats = await apply_access_updates(client, COLLECTIONS, pending, point_ids=ids)
            incremental_s = time.perf_counter() - t0
            with engine.begin() as conn:
                pt.mark_applied(conn, "bench", stats.applied)
                full = pt.committed_access(conn, "bench")
            by_list: dict[tuple[str, ...], list[str]] = {}
            for key, acl in full.items():
                by_list.setdefault(acl, []).append(key)
            t0 = time.perf_counter()
            baseline = await apply_access_updates(client, COLLECTIONS, by_list, point_ids=ids)
            full_s = time.perf_counter() - t0
        finally:
            await client.close()
        engine.dispose()
    issues_changed = len({k for k in written_keys if k.startswith("issue:")})
    print(f"issues {len(fx.issues):,}  comments {n_comments:,}  points {len(access):,}  with a level {len(leveled):,}")
    print(
        f"first sync     fetch {first['fetch_s']:.2f}s  compute {first['compute_s']:.2f}s  commit {first['commit_s']:.2f}s"
    )
    print(
        f"no-change sync fetch {same['fetch_s']:.2f}s  compute {same['compute_s']:.2f}s  "
        f"commit {same['commit_s']:.2f}s  pending payload writes {len(no_change_pending)}"
    )
    print(
        f"1% change      {len(moved):,} issues moved level; fetch {changed['fetch_s']:.2f}s  "
        f"compute {changed['compute_s']:.2f}s  commit {changed['commit_s']:.2f}s"
    )
    print(
        f"               points whose list changed {len(written_keys):,} ({issues_changed:,} issues + "
        f"{len(written_keys) - issues_changed:,} comments); set-payload operations {stats.payload_writes} "
        f"in {stats.requests} requests; "
        f"Qdrant write {incremental_s:.2f}s"
    )
    print(
        f"baseline       rewrite every list: {baseline.points:,} points, {baseline.payload_writes} set_payload "
        f"operations in {baseline.requests} requests, {full_s:.2f}s  -> incremental/baseline time {incremental_s / full_s:.3f}, "
        f"points {len(written_keys) / baseline.points:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=50_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of issues moved to another level")
    parser.add_argument(
        "--qdrant",
        choices=["memory", "disk"],
        default="memory",
        help="embedded engine in memory, or in a folder (local mode persists every point write: slow)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
