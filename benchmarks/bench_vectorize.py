"""The vectorization engine against the per-entity design it replaces, on one machine.

    .venv/bin/python benchmarks/bench_vectorize.py [--n 50000] [--latency-ms 100] [--per-token-us 2]
        [--tpm 1000000] [--scale 5] [--json benchmarks/results/bench_vectorize.json]

What it does (see benchmarks/README.md for how to read the figures):

* starts the fake OpenAI-compatible server (etl_assets/fakes/openai_server.py) in a
  separate process, so its work does not compete with the client for the GIL: latency per
  request plus a cost per token, exact cl100k token counts, optional RPM/TPM limits that
  answer 429 with retry-after and the x-ratelimit-* headers;
* loads N synthetic issues (100-400 tokens of text each) into SQLite in a temp dir;
* runs, each phase in its own child process (so peak RSS is the phase's own):
  1. the engine over all N rows into a store that keeps ids and hashes and drops vectors
     (``--store qdrant-local`` for Qdrant local mode), then a no-op re-run as the asset runs
     it (fingerprint first) and one that compares every row;
  2. the baseline: one embedding request and one upsert per entity, sequentially, on a
     sample of the same rows, extrapolated per entity;
  3. the engine under a TPM limit on the server, for about 2.5 minutes' worth of tokens, and
     how full the server's own 60 s window stayed, from the server's log of admissions;
  4. the engine over N and over scale x N rows into a sink that discards vectors, for peak
     RSS (the vector store's own memory would hide the engine's); these two side by side.
  5. pacing (``--pacing-only`` runs just this): the engine against each rate limiter the fake
     offers, a 60 s sliding window and a per-second token bucket with 2 s of burst, at 600k
     and 1M TPM, for ``--pacing-seconds`` of work each: the share of the limit sustained
     (tokens the server accepted per minute, first to last acceptance, over the limit), the
     share of requests answered 429, and failed entities. Targets: >= 90 %, < 5 %, 0. Two
     baseline runs (the bucket at both limits) use the budget as it was before pacing.
* prints the figures and writes them as JSON.

    .venv/bin/python benchmarks/bench_vectorize.py --pacing-only   # about 6 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import random
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

MODEL = "text-embedding-3-small"
TENANT = "bench"
API_KEY = "sk-bench-not-a-secret"

# -- the fake server, in its own process ---------------------------------------------------------


def _exact_tokens(text: str) -> int:
    from etl_assets.core.embeddings.tokens import cl100k

    return len(cl100k().encode(text))


def _cheap_tokens(text: str) -> int:
    # Below the cl100k count for these texts, so no request the client sizes is refused as
    # too large; used where the server enforces no TPM and its token count matters little.
    return len(text) // 8 + 1  # these texts run 5.4-7 characters per cl100k token


def _serve(conn: Any, options: dict[str, Any]) -> None:
    from etl_assets.fakes.openai_server import FakeEmbeddings

    exact = options.pop("exact_tokens", True)
    if exact:
        _exact_tokens("warm up")  # loads the BPE ranks before the first timed request
    fake = FakeEmbeddings(token_counter=_exact_tokens if exact else _cheap_tokens, **options)
    accepted: list[tuple[float, int]] = []  # (admission time, tokens) of every request the server took
    handler = fake.server.handler
    admitted_at = [0.0]

    def clock() -> float:  # the fake reads its clock once per request, when it admits it
        admitted_at[0] = time.monotonic()
        return admitted_at[0]

    def recording(request: Any) -> Any:
        # Handlers run one at a time on the server's loop, so the counter delta is this request's.
        before = fake.tokens
        response = handler(request)
        if fake.tokens > before:
            accepted.append((admitted_at[0], fake.tokens - before))
        return response

    fake.clock = clock
    fake.server.handler = recording
    fake.start()
    conn.send(fake.url)
    try:
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(
                    {
                        "requests": fake.requests,
                        "inputs": fake.inputs,
                        "tokens": fake.tokens,
                        "rate_limited": fake.rate_limited,
                    }
                )
            elif command == "timeline":
                conn.send(list(accepted))
            elif command == "reset":
                fake.reset_counters()
                accepted.clear()
                conn.send(True)
            else:
                break
    finally:
        fake.stop()


class FakeServer:
    """The fake embeddings server in a child process, driven through a pipe."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, options), daemon=True, name="fake-openai")

    def __enter__(self) -> FakeServer:
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError("the fake embeddings server did not start")
        self.url: str = self.conn.recv()
        return self

    def stats(self) -> dict[str, int]:
        self.conn.send("stats")
        return self.conn.recv()

    def reset(self) -> None:
        self.conn.send("reset")
        self.conn.recv()

    def timeline(self) -> list[tuple[float, int]]:
        """(time.monotonic(), tokens) of each accepted request; the clock is system-wide on Linux."""
        self.conn.send("timeline")
        return self.conn.recv()

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


# -- synthetic issues ------------------------------------------------------------------------------

_WORDS = (
    "login page fails when user with unicode password tries authenticate against sso provider after upgrade "
    "dashboard widget shows stale numbers cache invalidation release pipeline build agent timeout flaky test "
    "customer reports export csv missing rows pagination api returns error gateway latency spikes database "
    "migration locks table deadlock retry queue consumer lag kafka partition rebalance memory leak worker "
    "restarts kubernetes pod evicted node pressure alert pager rotation incident postmortem root cause fix "
    "deploy rollback feature flag toggle permissions role admin cannot invite teammates email notification "
    "delayed search index out of date reindex job nightly schedule cron timezone daylight saving bug report "
    "steps reproduce expected actual behaviour screenshot attached browser chrome firefox safari mobile app "
    "crash on startup android ios version regression since last sprint priority high blocker customer impact"
).split()


def synthetic_issue(i: int, rng: random.Random) -> dict[str, Any]:
    """One issue row whose embedded text is about 100-400 cl100k tokens."""
    summary = " ".join(rng.choices(_WORDS, k=rng.randint(5, 12))).capitalize()
    description = " ".join(rng.choices(_WORDS, k=rng.randint(70, 330)))
    updated = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    key = f"BEN-{i + 1}"
    ext = str(100_000 + i)
    raw = {
        "id": ext,
        "key": key,
        "fields": {
            "summary": summary,
            "updated": updated.isoformat(),
            "labels": ["bench"],
            "description": {
                "type": "doc",
                "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": description}]}],
            },
        },
    }
    return {
        "tenant_id": TENANT,
        "external_id": ext,
        "key": key,
        "summary": summary,
        "description": description,
        "project_key": "BEN",
        "wit_name": rng.choice(["Bug", "Task", "Story"]),
        "status_name": "Open",
        "status_category": "new",
        "priority": rng.choice(["High", "Medium", "Low"]),
        "labels": ["bench"],
        "components": [],
        "assignee": None,
        "reporter": "bench",
        "updated": updated,
        "created": updated,
        "content_hash": f"{i:064x}",
        "data": raw,
        "first_seen_at": updated,
        "synced_at": updated,
    }


def load_issues(db_url: str, tenant: str, n: int, seed: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from etl_assets.core.sources.jira import tables
    from etl_assets.core.store.db import make_engine

    started = time.perf_counter()
    engine = make_engine(db_url)
    rng = random.Random(seed)
    with engine.begin() as conn:
        batch = []
        for i in range(n):
            row = synthetic_issue(i, rng)
            row["tenant_id"] = tenant
            batch.append(row)
            if len(batch) == 2000:
                conn.execute(insert(tables.issues), batch)
                batch = []
        if batch:
            conn.execute(insert(tables.issues), batch)
    engine.dispose()
    return {"rows": n, "seconds": round(time.perf_counter() - started, 2)}


def copy_issues(db_url: str, source: str, target: str, copies: int) -> dict[str, Any]:
    """``copies`` copies of ``source``'s issues under tenant ``target``, with their own ids and keys
    (so every text and every point id is new), each copied by the database in one statement."""
    from sqlalchemy import func, insert, literal, select

    from etl_assets.core.sources.jira import tables
    from etl_assets.core.store.db import make_engine

    started = time.perf_counter()
    engine = make_engine(db_url, create=False)
    t = tables.issues
    columns = [c for c in t.columns if c.name != "id"]
    with engine.begin() as conn:
        for k in range(copies):
            values = [
                literal(target).label(c.name)
                if c.name == "tenant_id"
                else (literal(f"{k}-") + c).label(c.name)
                if c.name in ("external_id", "key")
                else c
                for c in columns
            ]
            source_rows = select(*values).where(t.c.tenant_id == source)
            conn.execute(insert(t).from_select([c.name for c in columns], source_rows))
        rows = conn.execute(select(func.count()).select_from(t).where(t.c.tenant_id == target)).scalar_one()
    engine.dispose()
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 2)}


# -- sinks -------------------------------------------------------------------------------------------


class DiscardingSink:
    """A VectorCollection that keeps nothing: every row looks new, every vector is dropped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.upserted = 0

    @property
    def upsert_points(self) -> int:  # in a Qdrant server's request sizes
        from etl_assets.core.vectorstore import UPSERT_MAX_POINTS

        return UPSERT_MAX_POINTS

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool:
        return True

    async def existing(self, ids: Sequence[str]) -> dict[str, Any]:
        return {}

    async def write(self, points: Sequence[Any]) -> None:
        self.upserted += len(points)

    async def delete_ids(self, ids: Iterable[str]) -> int:
        return len(list(ids))

    async def scroll_external_ids(self, *, page: int = 1000) -> AsyncIterator[list[Any]]:
        return
        yield  # an async generator with nothing in it

    async def count(self, **filters: Any) -> int:
        return 0

    async def read_marker(self) -> dict[str, Any] | None:
        return None

    async def write_marker(self, marker: dict[str, Any] | None) -> None:
        return None

    async def read_provider_limits(self) -> dict[str, Any] | None:
        return None

    async def write_provider_limits(self, limits: dict[str, Any]) -> None:
        return None

    async def ensure_row_filters(self, fields: Mapping[str, tuple[str, str]]) -> list[str]:
        return []


class MemoryStore(DiscardingSink):
    """A VectorCollection that keeps what the engine reads back (ids, hashes, chunk counts) and
    drops the vectors: the engine's own cost, without a vector index's (see README)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.points: dict[str, tuple[str | None, int | None, str | None, int | None]] = {}
        self.marker: dict[str, Any] | None = None
        self.limits: dict[str, Any] | None = None
        self.created = False

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool:
        created, self.created = not self.created, True
        return created

    async def existing(self, ids: Sequence[str]) -> dict[str, Any]:
        from etl_assets.core.vectorstore import ExistingPoint

        out = {}
        for i in ids:
            p = self.points.get(i)
            if p is not None:
                out[i] = ExistingPoint(i, p[0], p[2], p[3])
        return out

    async def write(self, points: Sequence[Any]) -> None:
        for pt in points:
            pl = pt.payload
            self.points[str(pt.id)] = (pl.get("external_id"), pl.get("chunk"), pl.get("content_hash"), pl.get("chunks"))
        self.upserted += len(points)

    async def delete_ids(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        for i in ids:
            self.points.pop(i, None)
        return len(ids)

    async def scroll_external_ids(self, *, page: int = 1000) -> AsyncIterator[list[Any]]:
        from etl_assets.core.vectorstore import PointRef

        keys = sorted(self.points)
        for start in range(0, len(keys), page):
            refs = []
            for k in keys[start : start + page]:
                if k in self.points:
                    ext, chunk, digest, _ = self.points[k]
                    refs.append(PointRef(k, ext, chunk, digest))
            yield refs

    async def count(self, **filters: Any) -> int:
        return len(self.points)

    async def read_marker(self) -> dict[str, Any] | None:
        return self.marker

    async def write_marker(self, marker: dict[str, Any] | None) -> None:
        self.marker = marker

    async def read_provider_limits(self) -> dict[str, Any] | None:
        return self.limits

    async def write_provider_limits(self, limits: dict[str, Any]) -> None:
        self.limits = limits


# -- phases (each runs in its own child process) -----------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _settings(url: str, args: dict[str, Any]) -> Any:
    from etl_assets.core.embeddings.factory import EmbeddingSettings

    return EmbeddingSettings(
        provider="openai",
        api_key=API_KEY,
        base_url=url,
        model=MODEL,
        dimensions=args["dimensions"],
        concurrency=args["concurrency"],
    )


async def _engine_run(
    db_url: str,
    tenant: str,
    url: str,
    args: dict[str, Any],
    collection: Any,
    limit: int | None = None,
    sampler: Callable[[Any], Any] | None = None,
    use_fingerprint: bool = True,
) -> dict[str, Any]:
    from etl_assets.core import pipeline
    from etl_assets.core.embeddings.factory import open_embedder
    from etl_assets.core.sources.jira.specs import ISSUES
    from etl_assets.core.store import ops
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.vectorsync import sync_vectors

    engine = make_engine(db_url, create=False)

    def pages() -> Any:
        seen = 0
        for page in ops.iter_rows(engine, ISSUES, tenant):
            if limit is not None and seen + len(page) > limit:
                page = page[: limit - seen]
            seen += len(page)
            if page:
                yield page
            if limit is not None and seen >= limit:
                return

    async def live_ids(ids: list[str]) -> set[str]:
        return await asyncio.to_thread(pipeline.live_external_ids, engine, ISSUES, tenant, ids)

    try:
        async with open_embedder(_settings(url, args)) as embedder:
            task = asyncio.create_task(sampler(embedder)) if sampler else None
            started = time.perf_counter()
            try:
                # As the asset calls it: rows from ops.iter_rows, the fingerprint from ops.
                fingerprint = (lambda: ops.live_fingerprint(engine, ISSUES, tenant)) if use_fingerprint else None
                result = await sync_vectors(
                    spec=ISSUES,
                    tenant_id=tenant,
                    pages=pages,
                    live_ids=live_ids,
                    embedder=embedder,
                    collection=collection,
                    concurrency=args["concurrency"],
                    fingerprint=fingerprint,
                )
            finally:
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            seconds = time.perf_counter() - started
            stats = embedder.stats.copy()
    finally:
        engine.dispose()
    return {
        "entities": result.rows_live,
        "rows_changed": result.rows_changed,
        "rows_unchanged": result.rows_unchanged,
        "chunks_embedded": result.chunks_embedded,
        "points_upserted": result.points_upserted,
        "sweep": result.sweep,
        "change_detection": result.change_detection,
        "wall_s": round(seconds, 3),
        "entities_per_s": round(result.rows_live / seconds, 1) if seconds else None,
        "requests": stats.requests,
        "http_requests": stats.http_requests,
        "tokens": stats.tokens,
        "rate_limited": stats.rate_limited,
        "retries": stats.retries,
        "waited_s": round(stats.waited_s, 3),
    }


def _store(kind: str) -> tuple[Any, Any]:
    """The collection the engine and the baseline write to, and how to close it."""
    if kind == "memory":
        return MemoryStore(f"client_{TENANT}_issues"), None
    from qdrant_client import AsyncQdrantClient

    from etl_assets.core.vectorstore import Collection, collection_name

    client = AsyncQdrantClient(location=":memory:")
    return Collection(client, collection_name(TENANT, "issues"), TENANT, "issues", local=True), client


def phase_engine(db_url: str, url: str, args: dict[str, Any]) -> dict[str, Any]:
    """The engine over all rows, then twice again with nothing changed: as the asset runs it
    (fingerprint first), and comparing every row (the path of a run where something changed)."""

    async def go() -> dict[str, Any]:
        collection, client = _store(args["store"])
        try:
            full = await _engine_run(db_url, TENANT, url, args, collection)
            full["peak_rss_mb"] = round(_peak_rss_mb(), 1)
            full["points_in_store"] = await collection.count()
            noop = await _engine_run(db_url, TENANT, url, args, collection)
            compared = await _engine_run(db_url, TENANT, url, args, collection, use_fingerprint=False)
            return {"full": full, "noop": noop, "noop_rows_compared": compared}
        finally:
            if client is not None:
                await client.close()

    return asyncio.run(go())


def phase_baseline(db_url: str, url: str, args: dict[str, Any]) -> dict[str, Any]:
    """The per-entity design: per row, one embedding request and one upsert, one after another."""
    import openai
    from qdrant_client import models

    from etl_assets.core.sources.jira.specs import ISSUES
    from etl_assets.core.store import ops
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.vectorstore import NewPoint
    from etl_assets.core.vectorsync import plan_row

    sample = args["baseline_sample"]
    no_terms = models.SparseVector(indices=[], values=[])

    class _Counts:  # plan_row only needs the model, dimensions and token counting
        model, dimensions = MODEL, args["dimensions"]

        def count_tokens(self, text: str) -> int:
            return _exact_tokens(text)

        def split(self, text: str, max_tokens: int) -> list[str]:
            return [text]

    async def go() -> dict[str, Any]:
        engine = make_engine(db_url, create=False)
        rows = next(ops.iter_rows(engine, ISSUES, TENANT, page_size=sample))
        engine.dispose()
        collection, client = _store(args["store"])
        oai = openai.AsyncOpenAI(api_key=API_KEY, base_url=url, max_retries=6)
        requests = tokens = 0
        try:
            await collection.ensure(model=MODEL, dimensions=args["dimensions"])
            started = time.perf_counter()
            for row in rows:
                # One request per row: its parts (text, history, rich-text fields) are its inputs.
                chunks = plan_row(ISSUES, TENANT, row, _Counts(), 10**9)  # type: ignore[arg-type]
                answer = await oai.embeddings.create(
                    model=MODEL, input=[c.text for c in chunks], dimensions=args["dimensions"]
                )
                requests += 1
                tokens += answer.usage.total_tokens
                # Dense only, as such a loader writes (no BM25 vector is computed: an empty one).
                await collection.write(
                    [
                        NewPoint(c.id, list(map(float, d.embedding)), no_terms, c.payload)
                        for c, d in zip(chunks, answer.data, strict=True)
                    ]
                )
            seconds = time.perf_counter() - started
        finally:
            await oai.close()
            if client is not None:
                await client.close()
        rate = len(rows) / seconds
        return {
            "entities": len(rows),
            "wall_s": round(seconds, 3),
            "entities_per_s": round(rate, 2),
            "requests": requests,
            "tokens": tokens,
            "rate_limited": 0,
            "retries": 0,
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "extrapolated": {
                "entities": args["n"],
                "wall_s": round(args["n"] / rate, 1),
                "requests": args["n"],
                "tokens": round(tokens / len(rows) * args["n"]),
            },
        }

    return asyncio.run(go())


def sustained(accepted: list[tuple[float, int]], limit: int, window_s: float = 60.0) -> dict[str, Any] | None:
    """How full the server's own 60 s window was, on average, while the run had work to send.

    ``accepted`` is the server's log of accepted requests. For every moment t from one window
    after the first acceptance to the last one (sampled every 0.1 s), the tokens accepted in
    (t - 60 s, t] are divided by the limit: the server refuses anything that would make this
    exceed 1, and a client that keeps the API busy up to its limit keeps it near 1.
    """
    import numpy as np

    if not accepted:
        return None
    times = np.array([t for t, _ in accepted])
    cumulative = np.cumsum([n for _, n in accepted], dtype=float)
    first, last = float(times[0]), float(times[-1])
    if last - first < window_s:
        return None
    ends = np.arange(first + window_s, last + 1e-9, 0.1)

    def upto(t: np.ndarray) -> np.ndarray:  # tokens accepted at or before t
        i = np.searchsorted(times, t, side="right")
        return np.where(i > 0, cumulative[np.maximum(i - 1, 0)], 0.0)

    full = (upto(ends) - upto(ends - window_s)) / limit
    return {
        "windows": len(ends),
        "mean": round(float(full.mean()), 4),
        "min": round(float(full.min()), 4),
        "max": round(float(full.max()), 4),
        "span_s": round(last - first, 1),
    }


def phase_tpm(db_url: str, url: str, args: dict[str, Any]) -> dict[str, Any]:
    """The engine against a server with a TPM limit (the fraction of it is computed from the
    server's own log, in the parent)."""

    if args.get("unpaced"):
        _unpaced_baseline()

    async def go() -> dict[str, Any]:
        sink = DiscardingSink("client_bench_issues")
        return await _engine_run(db_url, TENANT, url, args, sink, limit=args["tpm_rows"])

    out = asyncio.run(go())
    out["tpm_limit"] = args["tpm"]
    out["failed_entities"] = out["entities"] - out["rows_changed"]
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


def _unpaced_baseline() -> None:
    """In this (child) process only: the budget as it was before pacing, for the baseline rows.

    A sliding 60 s window alone (no paced bucket, no lone first request) and requests cut to
    1/40 of the TPM: what sustained 68 % of a 2 s-burst bucket with most requests answered 429.
    """
    from etl_assets.core.embeddings import openai_provider, ratelimit

    ratelimit.TPM_REQUEST_SHARE = 40

    def window_only(key: tuple[object, ...], *, rpm: int | None = None, tpm: int | None = None) -> Any:
        return ratelimit.RateLimiter(rpm=rpm, tpm=tpm)

    openai_provider.shared_limiter = window_only


def pacing_figures(accepted: list[tuple[float, int]], server: dict[str, int], tpm: int) -> dict[str, Any]:
    """Share of ``tpm`` sustained from the first to the last acceptance, and the share of 429s."""
    span = accepted[-1][0] - accepted[0][0] if len(accepted) > 1 else 0.0
    # Tokens accepted after the first acceptance, over the time they took: the first request's
    # tokens are the start line, not throughput.
    share = sum(n for _, n in accepted[1:]) / (tpm * span / 60) if span else None
    answered = server["requests"] + server["rate_limited"]
    # The same after a 10 s warm-up: a bucket starts full (its burst is extra at first), and the
    # first answer is what tells the client the limit.
    warm = [(t, n) for t, n in accepted if t >= accepted[0][0] + 10.0] if accepted else []
    warm_span = warm[-1][0] - warm[0][0] if len(warm) > 1 else 0.0
    steady = sum(n for _, n in warm[1:]) / (tpm * warm_span / 60) if warm_span else None
    return {
        "span_s": round(span, 1),
        "sustained_share": round(share, 4) if share is not None else None,
        "steady_share": round(steady, 4) if steady is not None else None,
        "requests": server["requests"],
        "rate_limited": server["rate_limited"],
        "share_429": round(server["rate_limited"] / answered, 4) if answered else None,
    }


def run_pacing(db_url: str, server: dict[str, Any], opts: dict[str, Any], mean_tokens: float, seconds: float) -> list:
    results = []
    runs = [(limiter, tpm, False) for limiter in ("window", "bucket") for tpm in (600_000, 1_000_000)]
    runs += [("bucket", tpm, True) for tpm in (600_000, 1_000_000)]  # the baseline: the budget before pacing
    for limiter, tpm, unpaced in runs:
        rows = math.ceil(tpm * seconds / 60 / mean_tokens)
        label = "baseline (window-only budget)" if unpaced else "engine"
        print(f"pacing: {label}, {limiter} limiter, {tpm} TPM, {rows} issues ...", flush=True)
        with FakeServer(**server, tpm=tpm, limiter=limiter, burst_s=2.0) as fake:
            out = in_child(phase_tpm, db_url, fake.url, {**opts, "tpm": tpm, "tpm_rows": rows, "unpaced": unpaced})
            figures = pacing_figures(fake.timeline(), fake.stats(), tpm)
        results.append(
            {
                "limiter": limiter,
                "tpm": tpm,
                "unpaced": unpaced,
                "entities": out["entities"],
                **figures,
                "failed_entities": out["failed_entities"],
                "client_429s": out["rate_limited"],
                "wall_s": out["wall_s"],
            }
        )
    return results


def pacing_table(rows: list[dict[str, Any]]) -> str:
    names = {"window": "60 s sliding window", "bucket": "per-second bucket, 2 s burst"}
    lines = [
        f"{'limiter':41}{'TPM':>10}{'entities':>10}{'span s':>8}{'sustained':>11}{'after 10 s':>12}"
        f"{'requests':>10}{'429s':>6}{'429 share':>11}{'failed':>8}"
    ]

    def pct(x: float | None) -> str:
        return f"{x:.1%}" if x is not None else "-"

    for r in rows:
        name = names[r["limiter"]] + (" (baseline)" if r.get("unpaced") else "")
        lines.append(
            f"{name:41}{r['tpm']:>10}{r['entities']:>10}{r['span_s']:>8}{pct(r['sustained_share']):>11}"
            f"{pct(r['steady_share']):>12}{r['requests']:>10}{r['rate_limited']:>6}{pct(r['share_429']):>11}"
            f"{r['failed_entities']:>8}"
        )
    lines.append("targets: sustained >= 90 % of the limit, < 5 % of requests answered 429, 0 failed entities")
    lines.append("baseline: the same engine with the budget before pacing (60 s window only, requests of 1/40 TPM)")
    return "\n".join(lines)


def phase_rss(db_url: str, url: str, args: dict[str, Any], tenant: str) -> dict[str, Any]:
    """The engine into a discarding sink: its own peak memory."""

    async def go() -> dict[str, Any]:
        sink = DiscardingSink(f"client_{tenant}_issues")
        base = _current_rss_mb()
        out = await _engine_run(db_url, tenant, url, args, sink)
        out["rss_before_mb"] = round(base, 1)
        return out

    out = asyncio.run(go())
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


def _child(conn: Any, fn: Callable[..., dict[str, Any]], fn_args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*fn_args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the benchmark
        conn.send(("error", traceback.format_exc()))


def in_children(*calls: tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Run phases each in a fresh interpreter (side by side if several), so each peak RSS is its own."""
    ctx = mp.get_context("spawn")
    running = []
    for fn, fn_args in calls:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_child, args=(child, fn, fn_args), name=fn.__name__)
        process.start()
        child.close()
        running.append((fn, parent, process))
    results, errors = [], []
    for fn, parent, process in running:
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", f"died (exit code {process.exitcode})"
        process.join()
        if status != "ok":
            errors.append(f"{fn.__name__} failed:\n{payload}")
        results.append(payload)
    if errors:
        raise RuntimeError("\n".join(errors))
    return results


def in_child(fn: Callable[..., dict[str, Any]], *fn_args: Any) -> dict[str, Any]:
    return in_children((fn, fn_args))[0]


# -- the report -----------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def report(figures: dict[str, Any]) -> str:
    eng, noop, base = figures["engine"], figures["engine_noop"], figures["baseline"]
    lines = [
        f"N={figures['config']['n']} issues, {figures['data']['mean_tokens']:.0f} tokens each on average; "
        f"server: {figures['config']['latency_ms']} ms + {figures['config']['per_token_us']} us/token per request",
        "",
        f"{'':28}{'entities/s':>12}{'requests':>10}{'tokens':>12}{'429s':>7}{'retries':>9}{'wall s':>9}{'peak RSS MB':>13}",
    ]

    def row(name: str, d: dict[str, Any]) -> str:
        return (
            f"{name:28}{d['entities_per_s']:>12}{d['requests']:>10}{d['tokens']:>12}{d['rate_limited']:>7}"
            f"{d['retries']:>9}{d['wall_s']:>9}{d['peak_rss_mb']:>13}"
        )

    lines.append(row(f"engine ({figures['config']['store']} store)", eng))
    lines.append(row(f"baseline ({base['entities']} sampled)", base))
    ext = base["extrapolated"]
    lines.append(
        f"{'  baseline extrapolated to N':28}{'':12}{ext['requests']:>10}{ext['tokens']:>12}{'':16}{ext['wall_s']:>9}"
    )
    lines += [
        "",
        f"engine / baseline entities/s: {figures['ratio_engine_to_baseline']}x "
        f"(baseline measured on {base['entities']} entities and extrapolated per entity)",
        f"no-op re-run: {noop['requests']} embedding requests, {noop['wall_s']} s = "
        f"{figures['noop_fraction_of_full']:.1%} of the full run (change detection: {noop['change_detection']})",
        f"no-op re-run comparing every row: {figures['engine_noop_rows_compared']['requests']} requests, "
        f"{figures['engine_noop_rows_compared']['wall_s']} s = {figures['noop_rows_compared_fraction_of_full']:.1%}",
    ]
    tpm = figures.get("tpm")
    if tpm:
        s = tpm["sustained_fraction_of_tpm"]
        sustained_text = (
            (
                f"the server's 60 s window {s['mean']:.1%} full on average (min {s['min']:.1%}, "
                f"over {s['span_s']} s of requests)"
            )
            if s
            else "run shorter than 60 s"
        )
        lines.append(
            f"TPM limit {tpm['tpm_limit']}: {tpm['entities']} entities, {tpm['tokens']} tokens in {tpm['wall_s']} s; "
            f"sustained {sustained_text}; 429s {tpm['rate_limited']}, retries {tpm['retries']}, "
            f"failed entities {tpm['failed_entities']}"
        )
    rss = figures.get("rss")
    if rss:
        lines.append(
            f"peak RSS, discarding sink: {rss['n']['peak_rss_mb']} MB at N={rss['n']['entities']}, "
            f"{rss['scaled']['peak_rss_mb']} MB at {rss['scaled']['entities']}: ratio {rss['ratio']} "
            f"(the two ran side by side, each in its own process)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="issues to load and vectorize (default 50000)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="server latency per request")
    p.add_argument("--per-token-us", type=float, default=2.0, help="server latency per input token")
    p.add_argument("--dimensions", type=int, default=1536)
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (EMBEDDING_CONCURRENCY)")
    p.add_argument("--baseline-sample", type=int, default=200, help="entities the baseline runs on")
    p.add_argument("--tpm", type=int, default=1_000_000, help="TPM limit of the server in the TPM phase (0: skip)")
    p.add_argument("--rpm", type=int, default=None, help="also an RPM limit in the TPM phase")
    p.add_argument("--tpm-minutes", type=float, default=2.5, help="tokens for this many minutes at the limit")
    p.add_argument("--scale", type=int, default=5, help="the RSS phase runs N and scale x N (0: skip)")
    p.add_argument(
        "--store",
        choices=["memory", "qdrant-local"],
        default="memory",
        help="where engine and baseline write: ids and hashes in memory, vectors dropped (default), "
        "or Qdrant local mode in memory (its own cost dominates beyond ~20k points)",
    )
    p.add_argument("--pacing-only", action="store_true", help="run only the pacing phase (5)")
    p.add_argument("--pacing-seconds", type=float, default=45.0, help="work per pacing run, in seconds at the limit")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", help="where the SQLite file goes (default: a temp dir, removed after)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_vectorize.json"))
    args = p.parse_args(argv)

    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-vectorize-") if not args.workdir else None
    workdir = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    if args.pacing_only:
        pacing_main(args, db_url, started)
        if tmp is not None:
            tmp.cleanup()
        return
    print(f"loading {args.n} issues into {db_url} ...", flush=True)
    loaded = load_issues(db_url, TENANT, args.n, args.seed)
    mean_tokens = _mean_tokens(db_url, TENANT, sample=2000)
    server = {
        "dimensions": args.dimensions,
        "latency_s": args.latency_ms / 1000,
        "per_token_s": args.per_token_us / 1e6,
    }
    opts = {
        "n": args.n,
        "dimensions": args.dimensions,
        "concurrency": args.concurrency,
        "baseline_sample": min(args.baseline_sample, args.n),
        "store": args.store,
    }
    figures: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {**vars(args), "latency_ms": args.latency_ms, "per_token_us": args.per_token_us},
        "data": {**loaded, "mean_tokens": round(mean_tokens, 1)},
    }
    with FakeServer(**server) as fake:
        print("engine: full run, then a no-op re-run ...", flush=True)
        engine = in_child(phase_engine, db_url, fake.url, opts)
        server_after_engine = fake.stats()
        print("baseline: per-entity requests and upserts ...", flush=True)
        fake.reset()
        baseline = in_child(phase_baseline, db_url, fake.url, opts)
    figures["engine"], figures["engine_noop"], figures["baseline"] = engine["full"], engine["noop"], baseline
    figures["engine_noop_rows_compared"] = engine["noop_rows_compared"]
    figures["server_seen_by_engine_runs"] = server_after_engine
    figures["ratio_engine_to_baseline"] = _ratio(engine["full"]["entities_per_s"], baseline["entities_per_s"])
    figures["noop_fraction_of_full"] = round(engine["noop"]["wall_s"] / engine["full"]["wall_s"], 4)
    figures["noop_rows_compared_fraction_of_full"] = round(
        engine["noop_rows_compared"]["wall_s"] / engine["full"]["wall_s"], 4
    )

    if args.tpm:
        tpm = args.tpm
        rows = min(args.n, math.ceil(args.tpm_minutes * tpm / mean_tokens))
        if rows == args.n and args.n * mean_tokens < args.tpm_minutes * tpm:  # too little data: lower the limit
            tpm = int(args.n * mean_tokens / args.tpm_minutes)
            print(f"(only {args.n} issues: TPM limit lowered to {tpm} so the phase spans {args.tpm_minutes} min)")
        print(f"TPM phase: limit {tpm} tokens/min, {rows} issues ...", flush=True)
        with FakeServer(**server, tpm=tpm, rpm=args.rpm) as fake:
            figures["tpm"] = in_child(phase_tpm, db_url, fake.url, {**opts, "tpm": tpm, "tpm_rows": rows})
            figures["tpm"]["server"] = fake.stats()
            accepted = fake.timeline()
        figures["tpm"]["sustained_fraction_of_tpm"] = sustained(accepted, tpm)
        span = accepted[-1][0] - accepted[0][0] if len(accepted) > 1 else 0.0
        figures["tpm"]["tokens_per_minute_first_to_last_request"] = (
            round(sum(n for _, n in accepted[:-1]) / (span / 60)) if span else None
        )

    if args.pacing_seconds > 0 and args.n * mean_tokens >= 1_000_000 * args.pacing_seconds / 60:
        figures["pacing"] = run_pacing(db_url, server, opts, mean_tokens, args.pacing_seconds)

    if args.scale:
        big = f"{TENANT}x{args.scale}"
        print(f"loading {args.scale * args.n} issues for the RSS phase ...", flush=True)
        figures["data"]["scaled_load"] = copy_issues(db_url, TENANT, big, args.scale)
        # Exact token counts matter where the server enforces a TPM; here they would only
        # slow the server down.
        with FakeServer(**server, exact_tokens=False) as fake:
            # Side by side, to save time: each is its own process, so its peak RSS is its own;
            # their entities/s share two cores and are not throughput figures.
            print(f"RSS phase: N and {args.scale} x N into discarding sinks, side by side ...", flush=True)
            at_n, at_scaled = in_children(
                (phase_rss, (db_url, fake.url, opts, TENANT)), (phase_rss, (db_url, fake.url, opts, big))
            )
        figures["rss"] = {
            "n": at_n,
            "scaled": at_scaled,
            "side_by_side": True,
            "ratio": _ratio(at_scaled["peak_rss_mb"], at_n["peak_rss_mb"]),
        }

    figures["total_wall_s"] = round(time.perf_counter() - started, 1)
    figures["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = report(figures)
    if figures.get("pacing"):
        text += "\n\npacing against each limiter:\n" + pacing_table(figures["pacing"])
    print()
    print(text)
    print(
        f"\ntotal {figures['total_wall_s']} s; load average (1, 5, 15 min) at start "
        f"{figures['machine']['load_average_at_start']}, at end {figures['machine']['load_average_at_end']}"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"figures written to {out}")
    if tmp is not None:
        tmp.cleanup()


def pacing_main(args: argparse.Namespace, db_url: str, started: float) -> None:
    """Phase 5 alone: enough issues for the largest run, then the four limiter runs."""
    n = math.ceil(1_000_000 * args.pacing_seconds / 60 / 150)  # more than needed (issues average > 150 tokens)
    print(f"loading {n} issues into {db_url} ...", flush=True)
    load_issues(db_url, TENANT, n, args.seed)
    mean_tokens = _mean_tokens(db_url, TENANT, sample=2000)
    server = {
        "dimensions": args.dimensions,
        "latency_s": args.latency_ms / 1000,
        "per_token_s": args.per_token_us / 1e6,
    }
    opts = {"n": n, "dimensions": args.dimensions, "concurrency": args.concurrency, "store": "memory"}
    rows = run_pacing(db_url, server, opts, mean_tokens, args.pacing_seconds)
    figures = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {**vars(args), "mean_tokens": round(mean_tokens, 1)},
        "pacing": rows,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print()
    print(
        f"server: {args.latency_ms} ms + {args.per_token_us} us/token per request; engine concurrency "
        f"{args.concurrency}; issues of {mean_tokens:.0f} tokens on average"
    )
    print(pacing_table(rows))
    print(f"\ntotal {figures['total_wall_s']} s; load average at end {figures['load_average_at_end']}")
    out = Path(args.json).with_name("bench_vectorize_pacing.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"figures written to {out}")


def _mean_tokens(db_url: str, tenant: str, sample: int) -> float:
    from etl_assets.core.sources.jira.specs import ISSUES
    from etl_assets.core.store import ops
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.vectorsync import row_text

    engine = make_engine(db_url, create=False)
    try:
        rows = next(ops.iter_rows(engine, ISSUES, tenant, page_size=sample))
    finally:
        engine.dispose()
    return sum(_exact_tokens(row_text(ISSUES, r)) for r in rows) / len(rows)


if __name__ == "__main__":
    main()
