"""The vectorization engine: packing, rate-limit headers, the shared budget, retries on
429 through the real AsyncOpenAI client against the loopback fake, base64/float answers,
no-op re-runs, memory-bounded paging and convergence after a failed request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.embeddings.base import EmbeddingError, EmbeddingStats
from etl_assets.core.embeddings.factory import EmbeddingConfigError, EmbeddingSettings, open_embedder
from etl_assets.core.embeddings.openai_provider import DEFAULT_BATCH_TOKENS, open_openai_embedder
from etl_assets.core.embeddings.ratelimit import (
    TPM_REQUEST_SHARE,
    RateLimiter,
    RateLimitInfo,
    backoff_s,
    parse_duration,
    retry_delay_s,
    shared_limiter,
)
from etl_assets.core.embeddings.tokens import cl100k
from etl_assets.core.http import parse_retry_after
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.vectorstore import (
    EDGE_UPSERT_MAX_POINTS,
    UPSERT_MAX_POINTS,
    Collection,
    point_id,
    upsert_batches,
)
from etl_assets.core.vectorsync import Packer, PlannedChunk, content_hash, row_text, sync_vectors
from etl_assets.fakes.loopback import Fault, Request
from etl_assets.fakes.openai_server import FakeEmbeddings, fake_vector

DIMS = 16
MODEL = "text-embedding-3-small"


def exact_tokens(text: str) -> int:
    return len(cl100k().encode(text))


# -- header parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1s", 1.0),
        ("59.5s", 59.5),
        ("1h2m3s", 3723.0),
        ("1m30.5s", 90.5),
        ("250us", 0.00025),
        ("0s", 0.0),
        ("2", 2.0),
        ("0.25", 0.25),
        (" 7s ", 7.0),
    ],
)
def test_go_durations_parse(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "5 s", "1x", "-1", "s", "1s2", "nan"])
def test_unparsable_durations_are_none(value):
    assert parse_duration(value) is None


def test_retry_after_prefers_milliseconds_and_reads_dates():
    assert parse_retry_after({"retry-after": "3", "retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2026 07:28:10 GMT"}, now=lambda: 1792567680.0) == 10.0
    assert parse_retry_after({"retry-after": "whenever"}) is None
    assert parse_retry_after({}) is None


def test_rate_limit_headers_with_azure_minus_one_and_exhaustion():
    info = RateLimitInfo.from_headers(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "-1",
            "x-ratelimit-remaining-tokens": "-1",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert (info.limit_requests, info.remaining_requests, info.reset_requests_s) == (60, 0, 1.0)
    assert info.limit_tokens is None and info.remaining_tokens is None and info.reset_tokens_s == 360.0
    assert info.exhausted_reset_s() == 1.0
    assert RateLimitInfo.from_headers({"content-type": "application/json"}).empty


def test_retry_delay_uses_the_best_hint_available():
    assert retry_delay_s(RateLimitInfo(retry_after_s=2.5), 0) == (2.5, "retry-after")
    exhausted = RateLimitInfo(remaining_tokens=100, reset_tokens_s=0.75)
    assert retry_delay_s(exhausted, 0, tokens=500) == (0.75, "x-ratelimit-reset")
    delay, source = retry_delay_s(RateLimitInfo(), 3)
    assert source == "backoff" and 0 <= delay <= 4.0
    assert retry_delay_s(RateLimitInfo(retry_after_s=86400), 0)[0] == 120.0  # a silly hint is capped


def test_backoff_is_exponential_with_full_jitter():
    import random

    rng = random.Random(1)
    samples = [[backoff_s(a, base_s=1.0, cap_s=8.0, rng=rng) for _ in range(300)] for a in range(5)]
    assert all(0 <= s <= min(8.0, 2**a) for a, row in enumerate(samples) for s in row)
    assert max(samples[3]) > 4.0 and max(samples[0]) <= 1.0  # grows, and spreads over the whole range


# -- the budget -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_budget_spaces_requests_by_rpm_and_tokens_by_tpm():
    clock = Clock()
    budget = RateLimiter(rpm=2, tpm=1000, margin_s=0.0, clock=clock)
    assert budget.reserve(100)[1] == 0
    clock.t += 10
    assert budget.reserve(100)[1] == 0
    assert budget.reserve(100)[1] == pytest.approx(50.0)  # third request: when the first leaves the window
    budget2 = RateLimiter(tpm=1000, margin_s=0.0, clock=clock)
    budget2.reserve(600)
    clock.t += 5
    assert budget2.reserve(300)[1] == 0
    assert budget2.reserve(300)[1] == pytest.approx(55.0)  # 600 must expire first
    with pytest.raises(ValueError, match="never fit"):
        budget2.reserve(1001)


def test_budget_is_first_come_first_served_and_cancel_gives_back():
    clock = Clock()
    budget = RateLimiter(tpm=1000, margin_s=0.0, clock=clock)
    budget.reserve(900)
    big, delay_big = budget.reserve(800)
    small, delay_small = budget.reserve(10)
    assert delay_big == pytest.approx(60.0) and delay_small >= delay_big  # the small one does not jump the queue
    budget.cancel(big)
    budget.cancel(small)
    assert budget.reserve(100)[1] == 0


def test_a_429_pauses_every_request_of_the_budget():
    clock = Clock()
    budget = RateLimiter(margin_s=0.0, clock=clock)
    assert budget.reserve(10)[1] == 0
    budget.pause(2.5)
    assert budget.reserve(10)[1] == pytest.approx(2.5)
    assert budget.pause_remaining() == pytest.approx(2.5)


def test_budget_learns_limits_and_foreign_usage_from_headers():
    clock = Clock()
    budget = RateLimiter(margin_s=0.0, clock=clock)
    budget.reserve(1000)
    budget.observe(
        RateLimitInfo(limit_tokens=10_000, remaining_tokens=6_000, limit_requests=100, remaining_requests=98)
    )
    assert (budget.learned_tpm, budget.learned_rpm) == (10_000, 100)
    assert budget.foreign_tokens == 3_000  # the server saw 4,000 tokens, we sent 1,000
    assert budget.used() == (2, 4_000)
    assert budget.request_token_cap() == 10_000 // TPM_REQUEST_SHARE
    assert budget.reserve(6_100)[1] == pytest.approx(60.0)  # only 6,000 left until the window moves
    configured = RateLimiter(tpm=2_000, clock=clock)
    configured.observe(RateLimitInfo(limit_tokens=10_000, remaining_tokens=10_000))
    assert configured.effective_tpm == 2_000  # the lower of configured and announced


def test_remaining_without_limit_waits_for_the_reset():
    clock = Clock()
    budget = RateLimiter(clock=clock)
    budget.observe(RateLimitInfo(remaining_requests=0, reset_requests_s=0.8))
    assert budget.reserve(1)[1] == pytest.approx(0.8)


def test_one_budget_serves_event_loops_in_several_threads():
    budget = RateLimiter(rpm=4, window_s=0.4, margin_s=0.0)
    sent: list[float] = []

    def worker() -> None:
        async def go() -> None:
            for _ in range(3):
                await budget.acquire(1)
                sent.append(time.monotonic())

        asyncio.run(go())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent.sort()
    assert len(sent) == 6
    assert sent[4] - sent[0] >= 0.39  # the fifth request waited for the first to leave the window


def test_shared_limiters_are_per_key_and_budget():
    a = shared_limiter(("u", "k", "m"), tpm=100)
    assert shared_limiter(("u", "k", "m"), tpm=100) is a
    assert shared_limiter(("u", "k", "other"), tpm=100) is not a


def test_settings_divide_the_budget_by_the_pool_limit():
    s = EmbeddingSettings.from_env({"EMBEDDING_RPM": "3000", "EMBEDDING_TPM": "1000000", "EMBEDDING_POOL_LIMIT": "4"})
    assert (s.step_rpm, s.step_tpm) == (750, 250_000)
    assert EmbeddingSettings.from_env({}).step_tpm is None
    with pytest.raises(EmbeddingConfigError, match="EMBEDDING_TPM='0' is not allowed: use a whole number of 1 or more"):
        EmbeddingSettings(tpm=0).validate()
    with pytest.raises(EmbeddingConfigError, match="EMBEDDING_RPM='lots' is not allowed"):
        EmbeddingSettings.from_env({"EMBEDDING_RPM": "lots"})


# -- packing and Qdrant batches ---------------------------------------------------------------------


def chunk(i: int, tokens: int) -> PlannedChunk:
    return PlannedChunk(str(i), f"t{i}", tokens, {})


def pack(chunks: list[PlannedChunk], *, max_inputs: int, max_tokens: int) -> list[list[PlannedChunk]]:
    """The requests the engine's packer makes of ``chunks``, limits fixed."""
    packer = Packer()
    closed = [packer.add(c, max_inputs=max_inputs, max_tokens=max_tokens) for c in chunks]
    last, _ = packer.take()
    return [batch for batch, _ in filter(None, closed)] + ([last] if last else [])


def test_pack_respects_inputs_and_tokens():
    chunks = [chunk(i, 100) for i in range(10)] + [chunk(10, 5000), chunk(11, 1)]
    batches = pack(chunks, max_inputs=4, max_tokens=350)
    assert [len(b) for b in batches] == [3, 3, 3, 1, 1, 1]
    assert all(sum(c.tokens for c in b) <= 350 or len(b) == 1 for b in batches)
    assert [c.id for b in batches for c in b] == [c.id for c in chunks]  # order kept
    assert [len(b) for b in pack(chunks[:9], max_inputs=4, max_tokens=10**6)] == [4, 4, 1]


def test_the_packer_takes_new_limits_from_the_next_chunk_on():
    packer = Packer()
    assert packer.add(chunk(0, 100), max_inputs=10, max_tokens=1000) is None
    assert packer.add(chunk(1, 100), max_inputs=10, max_tokens=1000) is None
    closed = packer.add(chunk(2, 100), max_inputs=10, max_tokens=250)  # a TPM was learned meanwhile
    assert closed is not None and [c.id for c in closed[0]] == ["0", "1"] and closed[1] == 200
    assert packer.take() == ([chunk(2, 100)], 100) and packer.take() == ([], 0)


def test_upserts_are_cut_by_point_count_and_bytes():
    points = [models.PointStruct(id=i, vector=[0.0] * 100, payload={"text": "x" * 500}) for i in range(1000)]
    sizes = [len(b) for b in upsert_batches(points, max_points=256)]
    assert sizes == [256, 256, 256, 232]
    sizes = [len(b) for b in upsert_batches(points, max_points=1000, max_bytes=50_000)]
    assert max(sizes) * (1200 + 500) <= 50_000 + 2000 and sum(sizes) == 1000
    sizes = [len(b) for b in upsert_batches(points, max_points=300, max_bytes=None)]  # the embedded engine's
    assert sizes == [300, 300, 300, 100]


# -- the provider against the loopback fake, through the real AsyncOpenAI client ---------------------


@pytest.fixture
def fake():
    server = FakeEmbeddings(dimensions=DIMS, token_counter=exact_tokens).start()
    try:
        yield server
    finally:
        server.stop()


def record_bodies(fake: FakeEmbeddings) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    handler = fake.server.handler

    def recording(req: Request):
        bodies.append(json.loads(req.body))
        return handler(req)

    fake.server.handler = recording
    return bodies


@contextlib.asynccontextmanager
async def embedder_for(fake: FakeEmbeddings, **kwargs: Any):
    kwargs.setdefault("limiter", RateLimiter())
    async with open_openai_embedder(
        api_key="sk-test", model=MODEL, dimensions=DIMS, base_url=fake.url, **kwargs
    ) as embedder:
        yield embedder


def rate_limit_body(code: str = "rate_limit_exceeded") -> dict[str, Any]:
    return {"error": {"message": "Rate limit reached", "type": "tokens", "param": None, "code": code}}


def test_asks_for_base64_and_decodes_exactly(fake):
    bodies = record_bodies(fake)

    async def go():
        async with embedder_for(fake) as e:
            return await e.embed_counted(["alpha", "beta gamma"]), await e.embed(["delta"]), e.stats.copy()

    array, floats, stats = asyncio.run(go())
    assert bodies[0]["encoding_format"] == "base64" and bodies[0]["dimensions"] == DIMS
    assert array.dtype == np.float32 and array.shape == (2, DIMS)
    assert np.array_equal(array[1], np.float32(fake_vector("beta gamma", DIMS)))
    assert floats[0] == fake_vector("delta", DIMS)
    assert (stats.requests, stats.inputs, stats.http_requests, stats.retries) == (2, 3, 2, 0)
    assert stats.tokens == exact_tokens("alpha") + exact_tokens("beta gamma") + exact_tokens("delta")


def test_accepts_float_lists_from_servers_that_ignore_base64(fake):
    vectors = [fake_vector("one", DIMS), fake_vector("two", DIMS)]
    body = {
        "object": "list",
        "model": MODEL,
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
        "data": [
            {"object": "embedding", "index": 1, "embedding": vectors[1]},
            {"object": "embedding", "index": 0, "embedding": vectors[0]},
        ],
    }
    fake.faults.append(Fault.respond(200, body))

    async def go():
        async with embedder_for(fake) as e:
            return await e.embed(["one", "two"])

    assert asyncio.run(go()) == vectors  # in input order, although the server sent them reversed


def test_429s_are_retried_after_retry_after_ms_and_counted(fake):
    for _ in range(2):
        fake.faults.append(Fault.respond(429, rate_limit_body(), {"retry-after": "1", "retry-after-ms": "150"}))

    async def go():
        async with embedder_for(fake) as e:
            started = time.monotonic()
            vectors = await e.embed(["hello"])
            return vectors, time.monotonic() - started, e.stats.copy()

    vectors, elapsed, stats = asyncio.run(go())
    assert vectors == [fake_vector("hello", DIMS)]
    assert (stats.rate_limited, stats.retries, stats.http_requests, stats.requests) == (2, 2, 3, 1)
    assert elapsed >= 0.29 and stats.waited_s >= 0.29  # two 150 ms waits, not the whole second
    assert fake.requests == 1


def test_429_for_a_request_larger_than_the_tpm_splits_it(fake):
    texts = [f"text number {i} " * 5 for i in range(6)]
    counts = [exact_tokens(t) for t in texts]
    limit = sum(counts) * 2 // 3  # the whole batch can never pass, a third of it can
    headers = {"x-ratelimit-limit-tokens": str(limit), "x-ratelimit-remaining-tokens": str(limit)}
    fake.faults.append(Fault.respond(429, rate_limit_body(), headers))

    async def go():
        async with embedder_for(fake, limiter=RateLimiter(window_s=0.2, margin_s=0.0)) as e:
            return await e.embed_counted(texts, counts), e.stats.copy()

    array, stats = asyncio.run(go())
    assert [list(map(float, row)) for row in array] == [fake_vector(t, DIMS) for t in texts]
    assert stats.rate_limited == 1 and fake.requests > 1 and fake.inputs == len(texts)


def test_quota_exhaustion_and_bad_requests_fail_at_once(fake):
    fake.faults.append(Fault.respond(429, rate_limit_body("insufficient_quota"), {"retry-after": "1"}))

    async def go(texts):
        async with embedder_for(fake) as e:
            try:
                await e.embed(texts)
            finally:
                stats = e.stats.copy()
        return stats

    with pytest.raises(EmbeddingError, match="quota"):
        asyncio.run(go(["a"]))
    with pytest.raises(EmbeddingError, match="refused the request"):
        asyncio.run(go([""]))  # the fake answers 400 for an empty input
    assert fake.requests == 0


def test_server_errors_and_resets_are_retried_with_backoff(fake):
    fake.faults.extend([Fault.respond(503, "busy"), Fault.reset(), Fault.truncate()])

    async def go():
        async with embedder_for(fake) as e:
            vectors = await e.embed(["z"])
            return vectors, e.stats.copy()

    vectors, stats = asyncio.run(go())
    assert vectors == [fake_vector("z", DIMS)]
    assert (stats.transient_errors, stats.retries, stats.rate_limited) == (3, 3, 0)


def test_gives_up_clearly_when_errors_outlast_the_retries(fake):
    fake.faults.extend([Fault.respond(502, "bad gateway")] * 3)

    async def go():
        async with embedder_for(fake, max_retries=2) as e:
            await e.embed(["z"])

    with pytest.raises(EmbeddingError, match=r"HTTP 502 .* \(after 2 retries\)"):
        asyncio.run(go())


def test_server_headers_teach_the_budget_and_cap_requests(fake):
    fake.tpm = 200_000
    fake.rpm = 10_000
    fake.reset_counters()

    async def go():
        async with embedder_for(fake) as e:
            before = e.max_batch_tokens
            await e.embed(["learn"])
            return before, e.max_batch_tokens, e.limiter.learned_rpm

    before, after, rpm = asyncio.run(go())
    assert before == DEFAULT_BATCH_TOKENS and after == 200_000 // TPM_REQUEST_SHARE and rpm == 10_000


def test_the_factory_passes_the_step_share_of_the_budget(fake):
    settings = EmbeddingSettings(
        provider="openai",
        api_key="sk-x",
        base_url=fake.url,
        model=MODEL,
        dimensions=DIMS,
        rpm=600,
        tpm=90_000,
        pool_limit=3,
    )

    async def go():
        async with open_embedder(settings) as e:
            return e.limiter.rpm, e.limiter.tpm, e.max_batch_tokens

    assert asyncio.run(go()) == (200, 30_000, 30_000 // TPM_REQUEST_SHARE)


# -- the engine, with real Qdrant local mode ------------------------------------------------------------


def issue_row(i: int, words: int = 40, marker: str = "") -> dict[str, Any]:
    return {
        "id": i + 1,
        "external_id": str(10_000 + i),
        "key": f"P-{i}",
        "summary": f"Issue {i} {marker}",
        "description": " ".join(f"word{(i * 7 + j) % 97}" for j in range(words)),
        "project_key": "P",
        "wit_name": "Bug",
        "status_name": "Open",
        "status_category": "new",
        "priority": "High",
        "labels": ["a"],
        "components": [],
        "updated": datetime(2026, 1, 1, tzinfo=UTC),
    }


class Table:
    """Rows in pages, counting how far reading has run ahead."""

    def __init__(self, rows: list[dict[str, Any]], page_size: int = 10) -> None:
        self.rows = {r["external_id"]: r for r in rows}
        self.page_size = page_size
        self.pages_read = 0
        self.threads: set[str] = set()
        self.fail_at_page: int | None = None

    def pages(self):
        rows = list(self.rows.values())
        for start in range(0, len(rows), self.page_size):
            if self.fail_at_page is not None and self.pages_read == self.fail_at_page:
                raise RuntimeError("database went away")
            self.threads.add(threading.current_thread().name)
            self.pages_read += 1
            yield rows[start : start + self.page_size]

    async def live_ids(self, ids: list[str]) -> set[str]:
        return {i for i in ids if i in self.rows}


class Run:
    """One engine run against a fresh in-memory Qdrant that survives between runs."""

    def __init__(self, fake: FakeEmbeddings) -> None:
        self.fake = fake
        self.client: AsyncQdrantClient | None = None
        self.unretrieved: list[dict[str, Any]] = []

    async def sync(self, table: Table, **kwargs: Any):
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: self.unretrieved.append(ctx))
        self.client = self.client or AsyncQdrantClient(location=":memory:")
        collection = Collection(self.client, "client_t_issues", "t", "issues", local=True)
        async with embedder_for(self.fake) as embedder:
            kwargs.setdefault("concurrency", 3)
            return await sync_vectors(
                spec=ISSUES,
                tenant_id="t",
                pages=table.pages,
                live_ids=table.live_ids,
                embedder=embedder,
                collection=collection,
                **kwargs,
            )

    async def points(self) -> list[Any]:
        assert self.client is not None
        points, _ = await self.client.scroll("client_t_issues", limit=10_000, with_payload=True, with_vectors=True)
        return points


def converged(points: list[Any], table: Table) -> None:
    by_row: dict[str, list[Any]] = {}
    for p in points:
        by_row.setdefault(p.payload["external_id"], []).append(p)
    assert set(by_row) == set(table.rows)
    for ext, pts in by_row.items():
        text = row_text(ISSUES, table.rows[ext])
        digest = content_hash(MODEL, DIMS, text)
        assert sorted(p.payload["chunk"] for p in pts) == list(range(pts[0].payload["chunks"]))
        assert {p.payload["content_hash"] for p in pts} == {digest}
        assert all(str(p.id) == point_id("t", "issues", ext, p.payload["chunk"]) for p in pts)
        if len(pts) == 1:
            assert np.allclose(pts[0].vector["dense"], fake_vector(text, DIMS), atol=1e-6)


def test_full_sync_then_a_no_op_rerun_sends_no_request(fake):
    table = Table([issue_row(i) for i in range(120)])
    run = Run(fake)

    async def go():
        first = await run.sync(table, max_batch_inputs=25)
        requests = fake.requests
        second = await run.sync(table)
        return first, requests, second, await run.points()

    first, requests, second, points = asyncio.run(go())
    assert first.rows_changed == 120 and first.points_upserted == 120 and first.embedding_batches == 5
    assert requests == 5 and fake.inputs == 120
    assert fake.requests == requests, "a no-op re-run must not embed anything"
    assert second.rows_unchanged == 120 and second.rows_changed == 0 and second.sweep == "skipped"
    converged(points, table)
    assert table.threads and "MainThread" not in table.threads  # pages are read off the event loop
    assert not run.unretrieved


def test_requests_are_packed_across_pages_up_to_the_token_budget(fake):
    table = Table([issue_row(i) for i in range(60)], page_size=7)
    bodies = record_bodies(fake)
    per_row = max(exact_tokens(row_text(ISSUES, r)) for r in table.rows.values())

    asyncio.run(Run(fake).sync(table, max_batch_tokens=per_row * 20))
    sizes = [len(b["input"]) for b in bodies]
    assert sum(sizes) == 60 and max(sizes) > 7  # a request spans pages
    assert all(sum(exact_tokens(t) for t in b["input"]) <= per_row * 20 for b in bodies)


def test_only_changed_and_new_rows_are_embedded_and_deleted_rows_leave(fake):
    table = Table([issue_row(i) for i in range(30)])
    run = Run(fake)

    async def go():
        await run.sync(table)
        fake.reset_counters()
        table.rows["10003"] = issue_row(3, marker="edited")
        table.rows["20000"] = issue_row(99)
        table.rows["20000"]["external_id"] = "20000"
        del table.rows["10005"]
        result = await run.sync(table)
        return result, await run.points()

    result, points = asyncio.run(go())
    assert fake.inputs == 2 and result.rows_changed == 2 and result.rows_unchanged == 28
    assert result.points_deleted == 1 and result.sweep == "full"
    converged(points, table)


def test_surplus_chunks_leave_when_a_row_shrinks(fake):
    table = Table([issue_row(0, words=600), issue_row(1)])
    run = Run(fake)

    async def go():
        first = await run.sync(table, max_chunk_tokens=100)
        table.rows["10000"] = issue_row(0, words=10)
        second = await run.sync(table, max_chunk_tokens=100)
        return first, second, await run.points()

    first, second, points = asyncio.run(go())
    long_chunks = first.points_upserted - len([p for p in points if p.payload["external_id"] == "10001"])
    assert long_chunks > 5
    assert second.surplus_chunks_deleted == long_chunks - 1
    converged(points, table)


def test_a_multi_chunk_row_missing_a_chunk_is_embedded_again(fake):
    table = Table([issue_row(0, words=600)])
    run = Run(fake)

    async def go():
        await run.sync(table, max_chunk_tokens=100)
        await run.client.delete(
            "client_t_issues", points_selector=models.PointIdsList(points=[point_id("t", "issues", "10000", 2)])
        )
        fake.reset_counters()
        result = await run.sync(table, max_chunk_tokens=100)
        return result, await run.points()

    result, points = asyncio.run(go())
    assert result.rows_changed == 1 and fake.requests >= 1
    converged(points, table)


def test_the_sweep_removes_garbage_a_failed_run_could_leave(fake):
    table = Table([issue_row(i) for i in range(5)])
    run = Run(fake)

    async def go():
        await run.sync(table)
        stale = {"external_id": "10001", "chunk": 1, "chunks": 2, "content_hash": "old", "tenant_id": "t"}
        await run.client.upsert(
            "client_t_issues",
            points=[
                models.PointStruct(
                    id=point_id("t", "issues", "10001", 1), vector={"dense": [1.0] * DIMS}, payload=stale
                ),
                models.PointStruct(
                    id="00000000-0000-0000-0000-000000000001",
                    vector={"dense": [1.0] * DIMS},
                    payload={**stale, "chunk": 0},
                ),
            ],
        )
        result = await run.sync(table)
        return result, await run.points()

    result, points = asyncio.run(go())
    assert result.points_deleted == 2 and result.rows_changed == 0
    converged(points, table)


def test_reading_stays_a_bounded_distance_ahead_of_embedding(fake):
    fake.latency_s = 0.03
    table = Table([issue_row(i) for i in range(400)], page_size=5)
    lead: list[int] = []
    pages = table.pages

    def watched():
        for page in pages():
            lead.append(table.pages_read - fake.inputs // 5)  # pages read but not yet sent to the server
            yield page

    table.pages = watched  # type: ignore[method-assign]
    result = asyncio.run(Run(fake).sync(table, concurrency=2, max_batch_inputs=5, prefetch_pages=2))
    assert result.rows_changed == 400 and table.pages_read == 80
    assert max(lead) <= 12, f"reading ran {max(lead)} pages ahead of embedding"


def test_requests_overlap_up_to_the_concurrency(fake):
    fake.latency_s = 0.1
    table = Table([issue_row(i) for i in range(40)])
    active = peak = 0

    import etl_assets.core.vectorsync as vs

    real = vs.embed_or_refuse

    async def counting(embedder, texts, counts):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            return await real(embedder, texts, counts)
        finally:
            active -= 1

    vs.embed_or_refuse = counting
    try:
        result = asyncio.run(Run(fake).sync(table, concurrency=4, max_batch_inputs=4))
    finally:
        vs.embed_or_refuse = real
    assert result.embedding_batches == 10 and peak == 4


def test_a_failed_request_raises_itself_and_the_next_run_converges(fake):
    table = Table([issue_row(i) for i in range(50)])
    fake.faults.extend(
        [
            Fault.respond(
                400, {"error": {"message": "nope", "type": "invalid_request_error", "param": None, "code": None}}
            )
        ]
    )
    run = Run(fake)

    async def go():
        with pytest.raises(EmbeddingError, match="refused the request.*nope"):
            await run.sync(table, max_batch_inputs=10, concurrency=2)
        gc.collect()
        await asyncio.sleep(0)
        after_failure = len(await run.points())
        result = await run.sync(table, max_batch_inputs=10)
        return after_failure, result, await run.points()

    after_failure, result, points = asyncio.run(go())
    assert after_failure < 50
    assert result.rows_changed == 50 - after_failure
    converged(points, table)
    assert not run.unretrieved, run.unretrieved


def test_a_database_error_mid_read_propagates(fake):
    table = Table([issue_row(i) for i in range(50)])
    table.fail_at_page = 3
    run = Run(fake)

    async def go():
        with pytest.raises(RuntimeError, match="database went away"):
            await run.sync(table)
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(go())
    assert not run.unretrieved


def test_stats_keep_their_public_shape():
    before = EmbeddingStats(requests=2, retries=1, waited_s=0.5)
    after = before.copy()
    after.requests += 3
    after.rate_limited += 2
    after.waited_s += 1.25
    delta = after.since(before)
    assert (delta.requests, delta.rate_limited, delta.retries) == (3, 2, 0)
    meta = delta.metadata()
    assert meta["embedding_waited_s"] == 1.25 and meta["embedding_rate_limited"] == 2
    assert "embedding_transient_errors" in meta


# -- the fingerprint shortcut -----------------------------------------------------------------------


def fingerprint_of(table: Table):
    def fingerprint() -> str:
        import hashlib

        digest = hashlib.sha256()
        for ext, row in table.rows.items():
            digest.update(f"{ext}\x1f{json.dumps(row, default=str, sort_keys=True)}\x1e".encode())
        return digest.hexdigest()

    return fingerprint


def test_a_recorded_fingerprint_makes_a_no_op_read_one_page_only(fake):
    table = Table([issue_row(i) for i in range(100)])
    run = Run(fake)

    async def go():
        first = await run.sync(table, fingerprint=fingerprint_of(table))
        pages_before, requests = table.pages_read, fake.requests
        second = await run.sync(table, fingerprint=fingerprint_of(table))
        spot_pages = table.pages_read - pages_before
        table.rows["10007"] = issue_row(7, marker="changed")
        third = await run.sync(table, fingerprint=fingerprint_of(table))
        return first, requests, second, spot_pages, third, await run.points()

    first, requests, second, spot_pages, third, points = asyncio.run(go())
    assert first.change_detection == "rows" and first.rows_changed == 100
    assert second.change_detection == "fingerprint" and second.rows_unchanged == 100 and spot_pages == 1
    assert fake.requests == requests + 1  # only the third run, for the one changed row
    assert third.change_detection == "rows" and third.rows_changed == 1
    converged(points, table)


def test_the_shortcut_is_not_trusted_when_points_or_the_text_changed(fake):
    import dataclasses

    import etl_assets.core.vectorsync as vs

    table = Table([issue_row(i) for i in range(30)])
    run = Run(fake)

    async def go():
        await run.sync(table, fingerprint=fingerprint_of(table))
        await run.client.delete(
            "client_t_issues", points_selector=models.PointIdsList(points=[point_id("t", "issues", "10004", 0)])
        )
        repaired = await run.sync(table, fingerprint=fingerprint_of(table))
        return repaired, await run.points()

    repaired, points = asyncio.run(go())
    assert repaired.change_detection == "rows" and repaired.rows_changed == 1
    converged(points, table)

    # Same rows, same fingerprint, but the text of every row changes (a new text format):
    # the first page's spot check sees it and the whole table is compared and re-embedded.
    reformatted = dataclasses.replace(ISSUES, text=lambda r: "v2 " + ISSUES.text(r))

    async def again():
        collection = Collection(run.client, "client_t_issues", "t", "issues", local=True)
        async with embedder_for(fake) as embedder:
            return await vs.sync_vectors(
                spec=reformatted,
                tenant_id="t",
                pages=table.pages,
                live_ids=table.live_ids,
                embedder=embedder,
                collection=collection,
                fingerprint=fingerprint_of(table),
            )

    result = asyncio.run(again())
    assert result.change_detection == "rows" and result.rows_changed == 30


def test_a_failed_run_clears_the_record(fake):
    table = Table([issue_row(i) for i in range(20)])
    run = Run(fake)

    async def go():
        await run.sync(table, fingerprint=fingerprint_of(table))
        collection = Collection(run.client, "client_t_issues", "t", "issues", local=True)
        assert (await collection.read_marker())["points"] == 20
        table.rows["10001"] = issue_row(1, marker="new")
        fake.faults.append(Fault.respond(400, {"error": {"message": "no", "type": "x", "param": None, "code": None}}))
        with pytest.raises(EmbeddingError):
            await run.sync(table, fingerprint=fingerprint_of(table))
        return await collection.read_marker()

    assert asyncio.run(go()) is None


def test_the_pool_size_of_a_deployment_is_the_default_share_count():
    s = EmbeddingSettings.from_env({"EMBEDDING_TPM": "900000", "ETL_POOL_EMBEDDINGS": "3"})
    assert (s.pool_limit, s.step_tpm) == (3, 300_000)
    assert EmbeddingSettings.from_env({"ETL_POOL_EMBEDDINGS": "3", "EMBEDDING_POOL_LIMIT": "2"}).pool_limit == 2


def test_a_server_that_stamps_late_is_not_taken_for_someone_else():
    clock = Clock()
    budget = RateLimiter(tpm=1000, margin_s=0.0, clock=clock)
    budget.reserve(600)
    clock.t += 61  # out of our window; the server stamped it 2 s after us and still counts it
    budget.observe(RateLimitInfo(limit_tokens=1000, remaining_tokens=400))
    assert budget.foreign_tokens == 0
    assert budget.used() == (0, 0)
    assert budget.reserve(1000)[1] == 0


def test_a_request_packed_before_a_limit_was_learned_is_sliced_before_it_is_sent(fake):
    texts = [f"row {i} " * 30 for i in range(8)]
    counts = [exact_tokens(t) for t in texts]
    limiter = RateLimiter(window_s=0.2, margin_s=0.0)
    share = TPM_REQUEST_SHARE // 4  # a cap of two of these texts
    limiter.observe(RateLimitInfo(limit_tokens=sum(counts) * share, remaining_tokens=sum(counts) * share))
    bodies = record_bodies(fake)

    async def go():
        async with embedder_for(fake, limiter=limiter) as e:
            # one group, as if packed before the limit was known
            return await e._embed_group(texts, counts), e.stats.copy()

    (array, refused), stats = asyncio.run(go())
    cap = sum(counts) * share // TPM_REQUEST_SHARE
    assert array.shape == (8, DIMS) and not refused and len(bodies) > 1 and stats.rate_limited == 0
    assert all(sum(exact_tokens(t) for t in b["input"]) <= cap for b in bodies)


@pytest.mark.parametrize(
    ("engine", "slow"), [("edge", "writer"), ("local", "writer"), ("edge", "embedder"), ("local", "embedder")]
)
def test_answered_requests_are_written_by_group_commit(fake, tmp_path, engine, slow):
    """A writer takes everything answered since the last write, in calls of at most the engine's write
    size (4,096 points on Qdrant Edge, 256 on local mode and a server; 60 here when asked). While the
    writer is the bottleneck its writes grow past one request; while the embedder is, each request is
    written as it is answered, so a run stopped midway has written what was answered before it.
    Either way every row converges."""
    table = Table([issue_row(i) for i in range(300)])
    calls: list[int] = []
    base: type[AsyncQdrantClient] = EdgeQdrantClient if engine == "edge" else AsyncQdrantClient
    method = "upsert_parts" if engine == "edge" else "upsert"  # how Collection.write reaches each engine

    async def record(self: Any, collection_name: str, points: Any, **kwargs: Any) -> Any:
        calls.append(len(points))
        if slow == "writer":  # long enough for the requests alive to be answered meanwhile
            await asyncio.sleep(0.5)
        return await getattr(base, method)(self, collection_name, points, **kwargs)

    Recording = type("Recording", (base,), {method: record})

    async def go():
        client = Recording(tmp_path / "store") if engine == "edge" else Recording(location=":memory:")
        try:
            collection = Collection(client, "client_t_issues", "t", "issues", local=True)
            async with embedder_for(fake) as embedder:
                result = await sync_vectors(
                    spec=ISSUES,
                    tenant_id="t",
                    pages=table.pages,
                    live_ids=table.live_ids,
                    embedder=embedder,
                    collection=collection,
                    max_batch_inputs=25,
                    concurrency=4 if slow == "writer" else 1,
                    upsert_batch_points=60 if slow == "writer" else None,
                )
            points, _ = await client.scroll("client_t_issues", limit=10_000, with_payload=True, with_vectors=True)
            return collection.upsert_points, result, points
        finally:
            await client.close()

    if slow == "embedder":
        fake.latency_s = 0.1
    try:
        size, result, points = asyncio.run(go())
    finally:
        fake.latency_s = 0.0
    assert size == (EDGE_UPSERT_MAX_POINTS if engine == "edge" else UPSERT_MAX_POINTS)
    assert result.embedding_batches == 12 and result.points_upserted == 300 and sum(calls) == 300
    if slow == "writer":
        assert max(calls) == 60 and len(calls) < 12, calls  # gathered, and cut at the size asked
    else:
        assert calls == [25] * 12  # one write per request, as it was answered
    converged(points, table)
