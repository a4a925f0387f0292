"""The embedded vector store: Qdrant Edge (EdgeQdrantClient) against qdrant-client's local mode.

For each engine and size, a child process of its own (so its RSS is its own) builds a collection
as the project does — named dense vector ``dense`` (cosine) and sparse ``bm25`` with Qdrant's IDF
modifier, payload with tenant, external id, project and date — through qdrant-client's API
(``upsert`` in the batches ``vectorstore.upsert_batches`` makes), then runs dense, sparse, hybrid
(prefetch both, RRF) and filtered dense queries. The Edge child also measures Edge's own bulk rate
(raw ``EdgeShard.update`` with 10,000 points per call, on a shard of its own): the baseline for
"adapter upserts >= 80 % of the engine's bulk rate".

    .venv/bin/python benchmarks/bench_store.py                      # 50k and 200k, dim 384 (~15 min)
    .venv/bin/python benchmarks/bench_store.py --sizes 5000 --queries 20   # a quick look

Figures go to stdout and to ``benchmarks/results/bench_store.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAME = "client_bench_issues"
PROJECTS = [f"P{i}" for i in range(20)]
VOCAB = 30_000
TERMS = 24
BATCH = 256  # points per upsert call: the engine's default (vectorstore.UPSERT_MAX_POINTS); --batch


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def batches(
    n: int, dim: int, seed: int = 1
) -> Iterator[tuple[list[int], np.ndarray, list[list[int]], list[list[float]]]]:
    """The points in batches: ids, unit vectors, sparse term ids and weights (Zipf-like vocabulary)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        x = rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        terms = [sorted(set((rng.zipf(1.3, TERMS) % VOCAB).tolist())) for _ in range(m)]
        weights = [rng.integers(1, 4, len(t)).astype(float).tolist() for t in terms]
        yield list(range(start + 1, start + m + 1)), x, terms, weights


def payload(i: int) -> dict[str, Any]:
    return {
        "tenant_id": "bench",
        "external_id": str(i),
        "project": PROJECTS[i % len(PROJECTS)],
        "updated": f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T00:00:00Z",
        "chunk": 0,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_engine(engine: str, n: int, dim: int, queries: int, folder: Path) -> dict[str, Any]:
    from qdrant_client import AsyncQdrantClient, models

    from etl_assets.core.edge_client import EdgeQdrantClient

    out: dict[str, Any] = {"engine": engine, "n": n, "dim": dim}
    client: AsyncQdrantClient
    if engine == "edge":
        client = EdgeQdrantClient(folder / "store")
    elif engine == "local":  # qdrant-client local mode in a folder, as the project ran it before Edge
        client = AsyncQdrantClient(path=str(folder / "store"))
    else:  # local mode in memory: no SQLite writes, the fastest local mode can be
        client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        NAME,
        vectors_config={"dense": models.VectorParams(size=dim, distance=models.Distance.COSINE)},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        metadata={"embedding_model": "bench", "dimensions": dim},
    )
    if engine == "edge":
        for field, kind in (("tenant_id", "keyword"), ("external_id", "keyword"), ("project", "keyword")):
            await client.create_payload_index(NAME, field, field_schema=models.PayloadSchemaType(kind))
        await client.create_payload_index(NAME, "updated", field_schema=models.PayloadSchemaType.DATETIME)

    spent = 0.0
    for ids, x, terms, weights in batches(n, dim):
        points = [
            models.PointStruct(
                id=i,
                vector={"dense": v.tolist(), "bm25": models.SparseVector(indices=t, values=w)},
                payload=payload(i),
            )
            for i, v, t, w in zip(ids, x, terms, weights, strict=True)
        ]
        started = time.perf_counter()
        await client.upsert(NAME, points=points, wait=True)
        spent += time.perf_counter() - started
    out["upsert_s"] = spent
    out["upserts_per_s"] = n / spent
    if engine == "edge":
        assert isinstance(client, EdgeQdrantClient)
        started = time.perf_counter()
        await client.optimize(NAME)  # what close() does at the end of the writing step
        out["index_build_s"] = time.perf_counter() - started
    out["count"] = (await client.count(NAME)).count

    rng = np.random.default_rng(99)
    qx = rng.standard_normal((queries, dim)).astype(np.float32)
    qx /= np.linalg.norm(qx, axis=1, keepdims=True)
    qterms = [sorted(set((rng.zipf(1.3, 4) % VOCAB).tolist())) for _ in range(queries)]

    def dense(k: int) -> Awaitable[Any]:
        return client.query_points(NAME, query=qx[k].tolist(), using="dense", limit=10)

    def sparse(k: int) -> Awaitable[Any]:
        vec = models.SparseVector(indices=qterms[k], values=[1.0] * len(qterms[k]))
        return client.query_points(NAME, query=vec, using="bm25", limit=10)

    def hybrid(k: int) -> Awaitable[Any]:
        vec = models.SparseVector(indices=qterms[k], values=[1.0] * len(qterms[k]))
        return client.query_points(
            NAME,
            prefetch=[
                models.Prefetch(query=qx[k].tolist(), using="dense", limit=40),
                models.Prefetch(query=vec, using="bm25", limit=40),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=10,
        )

    def filtered(k: int) -> Awaitable[Any]:
        flt = models.Filter(
            must=[
                models.FieldCondition(key="tenant_id", match=models.MatchValue(value="bench")),
                models.FieldCondition(key="project", match=models.MatchValue(value=PROJECTS[k % len(PROJECTS)])),
            ]
        )
        return client.query_points(NAME, query=qx[k].tolist(), using="dense", query_filter=flt, limit=10)

    kinds: dict[str, Callable[[int], Awaitable[Any]]] = {
        "dense": dense,
        "sparse": sparse,
        "hybrid": hybrid,
        "dense+filter": filtered,
    }
    for kind, call in kinds.items():
        await call(0)  # warm-up
        times = []
        hits = 0
        for k in range(queries):
            started = time.perf_counter()
            response = await call(k)
            times.append((time.perf_counter() - started) * 1000)
            hits += len(response.points)
        out[f"{kind}_p50_ms"] = statistics.median(times)
        out[f"{kind}_p95_ms"] = percentile(times, 0.95)
        out[f"{kind}_hits"] = hits / queries
    out["rss_mb"], out["peak_rss_mb"] = rss_mb()
    started = time.perf_counter()
    await client.close()
    out["close_s"] = time.perf_counter() - started

    if engine == "edge":
        out["bulk_upserts_per_s"] = edge_bulk_rate(n, dim, folder / "bulk")
    return out


def edge_bulk_rate(n: int, dim: int, folder: Path) -> float:
    """Edge's own rate: raw EdgeShard.update with 10,000 points per call, the same points, payloads and indexes."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.create(
        str(folder),
        qe.EdgeConfig(
            vectors={"dense": qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        ),
    )
    # The same payload indexes as the adapter's collection: Edge maintains them on every upsert.
    for field in ("tenant_id", "external_id", "project"):
        shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
    shard.update(qe.UpdateOperation.create_field_index("updated", qe.PayloadSchemaType.Datetime))
    spent = 0.0
    pending: list[Any] = []
    for ids, x, terms, weights in batches(n, dim):
        rows = [(i, v.tolist(), t, w) for i, v, t, w in zip(ids, x, terms, weights, strict=True)]
        started = time.perf_counter()
        pending += [qe.Point(i, {"dense": v, "bm25": qe.SparseVector(t, w)}, payload(i)) for i, v, t, w in rows]
        if len(pending) >= 10_000:
            shard.update(qe.UpdateOperation.upsert_points(pending))
            pending = []
        spent += time.perf_counter() - started
    started = time.perf_counter()
    if pending:
        shard.update(qe.UpdateOperation.upsert_points(pending))
    spent += time.perf_counter() - started
    shard.close()
    return n / spent


def child(args: argparse.Namespace) -> None:
    global BATCH
    BATCH = args.batch
    folder = Path(tempfile.mkdtemp(prefix=f"bench_store_{args.engine}_"))
    try:
        result = asyncio.run(run_engine(args.engine, args.n, args.dim, args.queries, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000,200000", help="Edge collection sizes, comma-separated")
    parser.add_argument("--local-sizes", default="2000", help="sizes for local mode in a folder (SQLite: slow)")
    parser.add_argument("--memory-sizes", default="50000", help="sizes for local mode in memory")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200, help="queries per kind for Edge")
    parser.add_argument("--local-queries", type=int, default=30, help="queries per kind for local mode (slow)")
    parser.add_argument("--batch", type=int, default=BATCH, help="points per upsert call")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_store.json"))
    parser.add_argument("--child", dest="engine", choices=["edge", "local", "local-memory"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args)
        return

    results = []
    runs = [("edge", args.sizes), ("local-memory", args.memory_sizes), ("local", args.local_sizes)]
    for engine, sizes in runs:
        for n in [int(s) for s in sizes.split(",") if s.strip()]:
            queries = args.queries if engine == "edge" else args.local_queries
            command = [sys.executable, __file__, "--child", engine, "--n", str(n), "--dim", str(args.dim)]
            command += ["--queries", str(queries), "--batch", str(args.batch)]
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{engine} at {n}: failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}", flush=True)
                continue
            result = json.loads(line.removeprefix("RESULT "))
            result["wall_s"] = time.perf_counter() - started
            result["queries"] = queries
            results.append(result)
            print(summary(result), flush=True)
            print("  " + json.dumps(result), flush=True)  # every figure as soon as it is known

    print()
    print(table(results))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "results": results,
            },
            indent=1,
        )
    )


def summary(r: dict[str, Any]) -> str:
    extra = ""
    if r["engine"] == "edge":
        extra = (
            f", bulk {r['bulk_upserts_per_s']:.0f}/s (adapter = {r['upserts_per_s'] / r['bulk_upserts_per_s']:.0%}),"
            f" index build {r['index_build_s']:.1f}s"
        )
    return f"{r['engine']} n={r['n']}: {r['upserts_per_s']:.0f} upserts/s{extra}, RSS {r['rss_mb']:.0f} MB, {r['wall_s']:.0f}s"


def table(results: list[dict[str, Any]]) -> str:
    head = "| engine | points | upserts/s | Edge bulk/s | index build | "
    head += " | ".join(f"{k} p50 / p95 ms" for k in ("dense", "sparse", "hybrid", "dense+filter"))
    head += " | RSS (peak) MB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        bulk = f"{r['bulk_upserts_per_s']:,.0f}" if "bulk_upserts_per_s" in r else "-"
        build = f"{r['index_build_s']:.0f} s" if "index_build_s" in r else "-"
        lat = " | ".join(
            f"{r[f'{k}_p50_ms']:.1f} / {r[f'{k}_p95_ms']:.1f}" for k in ("dense", "sparse", "hybrid", "dense+filter")
        )
        lines.append(
            f"| {r['engine']} | {r['n']:,} | {r['upserts_per_s']:,.0f} | {bulk} | {build} | {lat} "
            f"| {r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
