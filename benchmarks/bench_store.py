"""The embedded vector store: Qdrant Edge (EdgeQdrantClient) against qdrant-client's local mode.

For each engine and size, a child process of its own (so its RSS is its own) builds a collection
as the project does — named dense vector ``dense`` (cosine) and sparse ``bm25`` with Qdrant's IDF
modifier, payload with tenant, external id, project and date — through qdrant-client's API
(``upsert`` in the batches ``vectorstore.upsert_batches`` makes), then runs dense, sparse, hybrid
(prefetch both, RRF) and filtered dense queries. The Edge child also measures Edge's own bulk rate
(raw ``EdgeShard.update`` with 10,000 points per call, on a shard of its own with the same payload
indexes): the baseline for "adapter upserts >= 80 % of the engine's bulk rate". The two are
interleaved, 10,000 points at a time (the adapter's 256-point calls, then the same points in one
bulk call), so that both are measured under the same load of a shared machine.

Memory is reported as RSS and split into anonymous memory (the process's own: heap, Python
objects, what Edge keeps in RAM) and file-backed pages (Edge's segments are memory-mapped: pages
of the page cache mapped into the process, which the kernel can drop and read again). For Edge
a second child opens the store the writer left, as a search process (the MCP server, the CLI)
does, and runs the same queries: its RSS is the steady state of a process that only searches.

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
WITH_BULK = True  # --no-bulk: no bulk baseline in the Edge writer (its memory is then the adapter's alone)
BATCH = 256  # points per upsert call: the engine's default (vectorstore.UPSERT_MAX_POINTS); --batch


def memory_mb() -> dict[str, float]:
    """RSS, its peak, and RSS split into anonymous and file-backed (mapped) pages, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value

    def mb(key: str) -> float:
        return round(int(fields[key].split()[0]) / 1024, 1)

    return {"rss_mb": mb("VmRSS"), "peak_rss_mb": mb("VmHWM"), "anon_mb": mb("RssAnon"), "file_mb": mb("RssFile")}


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
    bulk = BulkShard(folder / "bulk", dim) if engine == "edge" and WITH_BULK else None
    pending: list[tuple[list[int], np.ndarray, list[list[int]], list[list[float]]]] = []
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
        if bulk is not None:
            pending.append((ids, x, terms, weights))  # numpy until written: lists of floats cost 10x the memory
            if sum(len(b[0]) for b in pending) >= BULK_POINTS:  # right after the adapter wrote the same points
                bulk.upsert(pending)
                pending = []
    out["upsert_s"] = spent
    out["upserts_per_s"] = n / spent
    if bulk is not None:
        if pending:
            bulk.upsert(pending)
        out["bulk_upserts_per_s"] = n / bulk.spent
        out["adapter_vs_bulk"] = round(out["upserts_per_s"] / out["bulk_upserts_per_s"], 3)
        bulk.close()
        shutil.rmtree(folder / "bulk", ignore_errors=True)
    out["after_upserts"] = memory_mb()
    if engine == "edge":
        assert isinstance(client, EdgeQdrantClient)
        started = time.perf_counter()
        await client.optimize(NAME)  # what close() does at the end of the writing step
        out["index_build_s"] = time.perf_counter() - started
    out["count"] = (await client.count(NAME)).count
    out["after_index"] = memory_mb()
    await run_queries(client, dim, queries, out)
    out.update(memory_mb())
    started = time.perf_counter()
    await client.close()
    out["close_s"] = time.perf_counter() - started
    return out


async def run_queries(client: Any, dim: int, queries: int, out: dict[str, Any]) -> None:
    """Dense, sparse, hybrid and filtered queries: p50 / p95 ms and hits per kind into ``out``."""
    from qdrant_client import models

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


BULK_POINTS = 10_000  # points per raw EdgeShard.update call of the bulk baseline


class BulkShard:
    """Edge's own rate: raw EdgeShard.update with BULK_POINTS points per call, on a shard with the
    same vectors and payload indexes as the adapter's collection (Edge maintains them on every upsert).
    The points' conversion to Edge's objects counts, as it does for the adapter."""

    def __init__(self, folder: Path, dim: int) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.shard = qe.EdgeShard.create(
            str(folder),
            qe.EdgeConfig(
                vectors={"dense": qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
                sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            ),
        )
        for field in ("tenant_id", "external_id", "project"):
            self.shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        self.shard.update(qe.UpdateOperation.create_field_index("updated", qe.PayloadSchemaType.Datetime))
        self.spent = 0.0

    def upsert(self, pending: list[tuple[list[int], np.ndarray, list[list[int]], list[list[float]]]]) -> None:
        qe = self.qe
        # As for the adapter, whose timing starts with qdrant-client's points built: vectors as lists.
        rows = [
            (i, v.tolist(), t, w)
            for ids, x, terms, weights in pending
            for i, v, t, w in zip(ids, x, terms, weights, strict=True)
        ]
        started = time.perf_counter()
        points = [qe.Point(i, {"dense": v, "bm25": qe.SparseVector(t, w)}, payload(i)) for i, v, t, w in rows]
        self.shard.update(qe.UpdateOperation.upsert_points(points))
        self.spent += time.perf_counter() - started

    def close(self) -> None:
        self.shard.close()


async def read_store(n: int, dim: int, queries: int, store: Path) -> dict[str, Any]:
    """A process that only searches: open the store the Edge writer left, run the same queries."""
    from etl_assets.core.edge_client import EdgeQdrantClient

    out: dict[str, Any] = {"engine": "edge-reader", "n": n, "dim": dim, "before_open": memory_mb()}
    client = EdgeQdrantClient(store)
    out["count"] = (await client.count(NAME)).count
    out["after_open"] = memory_mb()
    await run_queries(client, dim, queries, out)
    out.update(memory_mb())
    await client.close()
    return out


def child(args: argparse.Namespace) -> None:
    """One engine and size in this process; the parent's folder holds the store (the reader opens it)."""
    global BATCH, WITH_BULK
    BATCH, WITH_BULK = args.batch, not args.no_bulk
    folder = Path(args.folder)
    if args.engine == "edge-reader":
        result = asyncio.run(read_store(args.n, args.dim, args.queries, folder / "store"))
    else:
        result = asyncio.run(run_engine(args.engine, args.n, args.dim, args.queries, folder))
    print("RESULT " + json.dumps(result), flush=True)


def run_child(engine: str, n: int, queries: int, folder: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--child", engine, "--n", str(n), "--dim", str(args.dim)]
    command += ["--queries", str(queries), "--batch", str(args.batch), "--folder", str(folder)]
    command += ["--no-bulk"] if args.no_bulk else []
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"{engine} at {n}: failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}", flush=True)
        return None
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["wall_s"] = time.perf_counter() - started
    result["queries"] = queries
    print(summary(result), flush=True)
    print("  " + json.dumps(result), flush=True)  # every figure as soon as it is known
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000,200000", help="Edge collection sizes, comma-separated")
    parser.add_argument("--local-sizes", default="2000", help="sizes for local mode in a folder (SQLite: slow)")
    parser.add_argument("--memory-sizes", default="50000", help="sizes for local mode in memory")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200, help="queries per kind for Edge")
    parser.add_argument("--local-queries", type=int, default=30, help="queries per kind for local mode (slow)")
    parser.add_argument("--batch", type=int, default=BATCH, help="points per upsert call")
    parser.add_argument(
        "--no-bulk", action="store_true", help="no bulk baseline: the Edge writer's memory is the adapter's alone"
    )
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_store.json"))
    parser.add_argument(
        "--child", dest="engine", choices=["edge", "edge-reader", "local", "local-memory"], help=argparse.SUPPRESS
    )
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args)
        return

    results = []
    runs = [("edge", args.sizes), ("local-memory", args.memory_sizes), ("local", args.local_sizes)]
    for engine, sizes in runs:
        for n in [int(s) for s in sizes.split(",") if s.strip()]:
            queries = args.queries if engine == "edge" else args.local_queries
            folder = Path(tempfile.mkdtemp(prefix=f"bench_store_{engine}_"))
            try:
                result = run_child(engine, n, queries, folder, args)
                if result is not None:
                    results.append(result)
                    if engine == "edge":
                        reader = run_child("edge-reader", n, queries, folder, args)
                        results += [reader] if reader is not None else []
            finally:
                shutil.rmtree(folder, ignore_errors=True)

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
    memory = f"RSS {r['rss_mb']:.0f} MB (anonymous {r['anon_mb']:.0f}, file-backed {r['file_mb']:.0f})"
    if r["engine"] == "edge-reader":
        return f"edge-reader n={r['n']}: opened and searched, {memory}, dense p50 {r['dense_p50_ms']:.1f} ms"
    extra = ""
    if r["engine"] == "edge" and "bulk_upserts_per_s" in r:
        extra = (
            f", bulk {r['bulk_upserts_per_s']:.0f}/s (adapter = {r['adapter_vs_bulk']:.0%}),"
            f" index build {r['index_build_s']:.1f}s"
        )
    return f"{r['engine']} n={r['n']}: {r['upserts_per_s']:.0f} upserts/s{extra}, {memory}, {r['wall_s']:.0f}s"


def table(results: list[dict[str, Any]]) -> str:
    head = "| engine | points | upserts/s | Edge bulk/s (adapter share) | index build | "
    head += " | ".join(f"{k} p50 / p95 ms" for k in ("dense", "sparse", "hybrid", "dense+filter"))
    head += " | RSS (peak) MB | anonymous / file-backed MB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        bulk = f"{r['bulk_upserts_per_s']:,.0f} ({r['adapter_vs_bulk']:.0%})" if "bulk_upserts_per_s" in r else "-"
        build = f"{r['index_build_s']:.0f} s" if "index_build_s" in r else "-"
        ups = f"{r['upserts_per_s']:,.0f}" if "upserts_per_s" in r else "-"
        lat = " | ".join(
            f"{r[f'{k}_p50_ms']:.1f} / {r[f'{k}_p95_ms']:.1f}" for k in ("dense", "sparse", "hybrid", "dense+filter")
        )
        lines.append(
            f"| {r['engine']} | {r['n']:,} | {ups} | {bulk} | {build} | {lat} "
            f"| {r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) | {r['anon_mb']:.0f} / {r['file_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
