"""The embedded vector store: Qdrant Edge (EdgeQdrantClient) against qdrant-client's local mode.

For each engine and size, a child process of its own (so its RSS is its own) builds a collection
as the project does — named dense vector ``dense`` (cosine) and sparse ``bm25`` with Qdrant's IDF
modifier, payload with tenant, external id, project and date — and writes it the way the vector
step does: ``vectorstore.NewPoint`` s of the vectors (numpy rows, as the embedder returns them),
sparse vectors and payloads the step holds, handed to ``Collection.write`` in writes of
``Collection.upsert_points``
(4,096 points on Edge, 256 on local mode: the most ``vectorsync`` writes at once, which it
does while the writer is its bottleneck), then runs dense, sparse,
hybrid (prefetch both, RRF) and filtered dense queries. On Edge the writer indexes as it goes
(every ``edge_client.INDEX_EVERY_BYTES`` of vectors) and once more at the end.

The Edge child also measures Edge's own bulk rate (raw ``EdgeShard.update`` with 10,000 points per
call, on a shard with the same payload indexes): the baseline for "adapter upserts >= 80 % of the
engine's bulk rate". It runs in a third process, so that its shard does not count in the
writer's memory, and in turns with the writer, about 10,000 points at a time (the writer's
calls, then the same points in one bulk call), so that both are measured under the same load of
a shared machine. Both timings start from the same data (numpy vectors, payload dicts, sparse
term lists) and include making the engine's objects. The writer's index builds run inside its
write calls; they are timed apart (``EdgeQdrantClient.indexing_seconds``) and left out of its
write rate, since the bulk baseline builds no index.

Memory is reported as RSS and split into anonymous memory (the process's own: heap, Python
objects, what Edge keeps in RAM) and file-backed pages (Edge's segments are memory-mapped: pages
of the page cache mapped into the process, which the kernel can drop and read again; Linux counts
a page mapped twice — Edge maps a segment being written once to read and once to write — twice).
The peak is the kernel's high-water mark of RSS. For Edge a second child opens the store the
writer left, as a search process (the MCP server, the CLI) does, and runs the same queries: its
RSS is the steady state of a process that only searches.

    .venv/bin/python benchmarks/bench_store.py                      # 50k and 200k, dim 384 (~30 min)
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
WITH_BULK = True  # --no-bulk: no bulk baseline (no third process)


def memory_mb() -> dict[str, float]:
    """RSS, its peak, and RSS split into anonymous and file-backed (mapped) pages, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value

    def mb(key: str) -> float:
        return round(int(fields[key].split()[0]) / 1024, 1)

    return {"rss_mb": mb("VmRSS"), "peak_rss_mb": mb("VmHWM"), "anon_mb": mb("RssAnon"), "file_mb": mb("RssFile")}


Batch = tuple[list[int], np.ndarray, list[list[int]], list[list[float]]]


def batches(n: int, dim: int, size: int, seed: int = 1) -> Iterator[Batch]:
    """The points in batches of ``size``: ids, unit vectors, sparse term ids and weights (Zipf-like
    vocabulary). The same arguments give the same points (the bulk process makes them again)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, size):
        m = min(size, n - start)
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


async def run_engine(engine: str, n: int, dim: int, queries: int, folder: Path, write: int | None) -> dict[str, Any]:
    from qdrant_client import AsyncQdrantClient, models

    from etl_assets.core.edge_client import EdgeQdrantClient
    from etl_assets.core.vectorstore import Collection, NewPoint

    out: dict[str, Any] = {"engine": engine, "n": n, "dim": dim, "start": memory_mb()}
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
    collection = Collection(client, NAME, "bench", "issues", local=True)
    size = write or collection.upsert_points  # what vectorsync hands Collection.write at a time
    out["write_points"] = size

    spent = 0.0
    bulk = BulkProcess(folder, n, dim, size) if engine == "edge" and WITH_BULK else None
    unsent = 0  # points the writer wrote and the bulk process has not
    try:
        for ids, x, terms, weights in batches(n, dim, size):
            # What the vector step holds before it writes: payloads, BM25 vectors (made when rows
            # are split), dense vectors as the embedder returns them (numpy rows).
            payloads = [payload(i) for i in ids]
            sparse = [models.SparseVector(indices=t, values=w) for t, w in zip(terms, weights, strict=True)]
            started = time.perf_counter()
            points = [NewPoint(i, v, sv, p) for i, v, sv, p in zip(ids, x, sparse, payloads, strict=True)]
            await collection.write(points)
            spent += time.perf_counter() - started
            unsent += len(ids)
            if bulk is not None and unsent >= BULK_POINTS:  # right after the writer wrote the same points
                bulk.write(unsent)
                unsent = 0
        if bulk is not None and unsent:
            bulk.write(unsent)
    finally:
        bulk_out = bulk.close() if bulk is not None else None
    indexing = client.indexing_seconds(NAME) if isinstance(client, EdgeQdrantClient) else 0.0
    out["upsert_s"] = spent  # the write calls, the index builds inside them included
    out["index_while_writing_s"] = indexing
    out["upserts_per_s"] = n / (spent - indexing)  # writes only: the bulk baseline builds no index
    out["upserts_with_index_per_s"] = n / spent
    if bulk_out is not None:
        out["bulk"] = bulk_out
        out["bulk_upserts_per_s"] = n / bulk_out["spent_s"]
        out["adapter_vs_bulk"] = round(out["upserts_per_s"] / out["bulk_upserts_per_s"], 3)
    out["after_upserts"] = memory_mb()
    if isinstance(client, EdgeQdrantClient):
        started = time.perf_counter()
        await client.optimize(NAME)  # what close() does at the end of the writing step
        out["index_build_s"] = time.perf_counter() - started
        out["index_total_s"] = indexing + out["index_build_s"]
        out["segments"] = (await client.get_collection(NAME)).segments_count
    out["count"] = (await client.count(NAME)).count
    out["after_index"] = memory_mb()
    await run_queries(client, dim, queries, out)
    out.update(memory_mb())
    started = time.perf_counter()
    await client.close()
    out["close_s"] = time.perf_counter() - started
    out["after_close"] = memory_mb()
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


BULK_POINTS = 10_000  # about this many points per raw EdgeShard.update call of the bulk baseline


class BulkProcess:
    """The bulk baseline in a process of its own, driven over a pipe: ``write(k)`` has it write the
    next ``k`` points (the writer's, made again from the same seed) in one raw call, and waits."""

    def __init__(self, folder: Path, n: int, dim: int, size: int) -> None:
        command = [sys.executable, __file__, "--child", "edge-bulk", "--n", str(n), "--dim", str(dim)]
        command += ["--batch", str(size), "--folder", str(folder)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the bulk process ended (exit {self.proc.wait()})")
        return answer

    def write(self, points: int) -> None:
        self._ask(f"write {points}")

    def close(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            return None
        result: dict[str, Any] = json.loads(self._ask("close"))
        self.proc.wait()
        return result


def bulk_child(n: int, dim: int, size: int, folder: Path) -> None:
    """The bulk process: raw EdgeShard.update on a shard with the same vectors and payload indexes
    as the writer's collection. Its timing starts from the same data as the writer's (numpy
    vectors, payload dicts, term lists) and includes making Edge's points, as the writer's does."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.create(
        str(folder / "bulk"),
        qe.EdgeConfig(
            vectors={"dense": qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        ),
    )
    for field in ("tenant_id", "external_id", "project"):
        shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
    shard.update(qe.UpdateOperation.create_field_index("updated", qe.PayloadSchemaType.Datetime))
    spent, calls = 0.0, 0
    source = batches(n, dim, size)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "close":
            break
        wanted, got = int(rest[0]), 0
        taken: list[Batch] = []
        while got < wanted:
            taken.append(next(source))
            got += len(taken[-1][0])
        rows = [
            (i, v, t, w, payload(i))
            for ids, x, terms, weights in taken
            for i, v, t, w in zip(ids, x, terms, weights, strict=True)
        ]
        started = time.perf_counter()
        points = [qe.Point(i, {"dense": v.tolist(), "bm25": qe.SparseVector(t, w)}, p) for i, v, t, w, p in rows]
        shard.update(qe.UpdateOperation.upsert_points(points))
        spent += time.perf_counter() - started
        calls += 1
        print("ok", flush=True)
    out = {"spent_s": spent, "calls": calls, **memory_mb()}
    shard.close()
    shutil.rmtree(folder / "bulk", ignore_errors=True)
    print(json.dumps(out), flush=True)


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
    global WITH_BULK
    WITH_BULK = not args.no_bulk
    folder = Path(args.folder)
    if args.engine == "edge-bulk":
        bulk_child(args.n, args.dim, args.batch, folder)
        return
    if args.engine == "edge-reader":
        result = asyncio.run(read_store(args.n, args.dim, args.queries, folder / "store"))
    else:
        result = asyncio.run(run_engine(args.engine, args.n, args.dim, args.queries, folder, args.batch))
    print("RESULT " + json.dumps(result), flush=True)


def run_child(engine: str, n: int, queries: int, folder: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--child", engine, "--n", str(n), "--dim", str(args.dim)]
    command += ["--queries", str(queries), "--folder", str(folder)]
    command += ["--batch", str(args.batch)] if args.batch else []
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
    parser.add_argument(
        "--batch", type=int, default=None, help="points per Collection.upsert call (default: the engine's write size)"
    )
    parser.add_argument("--no-bulk", action="store_true", help="no bulk baseline (no third process)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_store.json"))
    parser.add_argument(
        "--child",
        dest="engine",
        choices=["edge", "edge-reader", "edge-bulk", "local", "local-memory"],
        help=argparse.SUPPRESS,
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


def _build(r: dict[str, Any]) -> str:
    """Index build time: while writing + at the end (Edge only)."""
    if "index_build_s" not in r:
        return "-"
    return f"{r['index_while_writing_s']:.0f} + {r['index_build_s']:.0f} s"


def summary(r: dict[str, Any]) -> str:
    memory = f"RSS {r['rss_mb']:.0f} MB (anonymous {r['anon_mb']:.0f}, file-backed {r['file_mb']:.0f}), peak {r['peak_rss_mb']:.0f}"
    if r["engine"] == "edge-reader":
        return f"edge-reader n={r['n']}: opened and searched, {memory}, dense p50 {r['dense_p50_ms']:.1f} ms"
    extra = ""
    if r["engine"] == "edge":
        extra = f" in {r['write_points']}-point writes"
        if "bulk_upserts_per_s" in r:
            extra += f", bulk {r['bulk_upserts_per_s']:.0f}/s (adapter = {r['adapter_vs_bulk']:.0%})"
        extra += f", index build {_build(r)} ({r['segments']} segments)"
    return f"{r['engine']} n={r['n']}: {r['upserts_per_s']:.0f} upserts/s{extra}, {memory}, {r['wall_s']:.0f}s"


def table(results: list[dict[str, Any]]) -> str:
    head = "| engine | points | upserts/s | Edge bulk/s (adapter share) | index build (writing + end) | "
    head += " | ".join(f"{k} p50 / p95 ms" for k in ("dense", "sparse", "hybrid", "dense+filter"))
    head += " | RSS (peak) MB | anonymous / file-backed MB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        bulk = f"{r['bulk_upserts_per_s']:,.0f} ({r['adapter_vs_bulk']:.0%})" if "bulk_upserts_per_s" in r else "-"
        ups = f"{r['upserts_per_s']:,.0f}" if "upserts_per_s" in r else "-"
        lat = " | ".join(
            f"{r[f'{k}_p50_ms']:.1f} / {r[f'{k}_p95_ms']:.1f}" for k in ("dense", "sparse", "hybrid", "dense+filter")
        )
        lines.append(
            f"| {r['engine']} | {r['n']:,} | {ups} | {bulk} | {_build(r)} | {lat} "
            f"| {r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) | {r['anon_mb']:.0f} / {r['file_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
