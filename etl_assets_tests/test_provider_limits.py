"""Requests a provider calls too large are split, never fatal (issue 11, part 1).

Against the fake OpenAI-compatible server in the modes real gateways have: one that counts
characters/4 (not cl100k) and caps tokens per request, one that refuses more than 32
inputs with 413 or 422 like text-embeddings-inference, one with a small context window.
With default settings every point lands; only an input the provider refuses even as a
single token fails, naming tenant, entity, Jira key and chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient
from sqlalchemy import create_engine

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.base import EmbeddingError, InputTooLargeError
from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
from etl_assets.core.embeddings.openai_provider import (
    DEFAULT_BATCH_TOKENS,
    OPENAI_MAX_BATCH_TOKENS,
    open_openai_embedder,
    too_large_kind,
)
from etl_assets.core.embeddings.ratelimit import RateLimiter
from etl_assets.core.embeddings.tokens import cl100k
from etl_assets.core.search import search
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.store import ops
from etl_assets.core.vectorstore import Collection, open_qdrant, point_id
from etl_assets.core.vectorsync import row_text, sync_vectors
from etl_assets.fakes.openai_server import FakeEmbeddings, count_tokens, fake_vector
from etl_assets_tests.conftest import TEST_DIMENSIONS
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, read_points

MODEL = "text-embedding-3-small"
DIMS = 16
VECTOR_NODES = tuple(f"vectors__{s.name}_vectors" for s in CATALOGUE)


@pytest.fixture
def backend() -> str:
    return "sqlite"  # what is split is the provider's business, not the database's


def exact(text: str) -> int:
    return len(cl100k().encode(text))


@contextlib.asynccontextmanager
async def embedder_for(fake: FakeEmbeddings, **kwargs: Any):
    kwargs.setdefault("limiter", RateLimiter())
    async with open_openai_embedder(
        api_key="sk-test", model=MODEL, dimensions=DIMS, base_url=fake.url, **kwargs
    ) as embedder:
        yield embedder


@pytest.fixture
def fake():
    server = FakeEmbeddings(dimensions=DIMS).start()  # counts characters/4, as gateways estimate
    try:
        yield server
    finally:
        server.stop()


def _vectors(texts: list[str]) -> np.ndarray:
    return np.asarray([fake_vector(t, DIMS) for t in texts], dtype="<f4")


# -- what counts as "too large" ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "code", "kind"),
    [
        (400, "max 300000 tokens per request", None, "tokens"),
        (400, "The inputs total 312000 tokens; the maximum is 300000 per request.", "max_tokens_per_request", "tokens"),
        (413, "batch size 64 > maximum allowed batch size 32", None, "inputs"),
        (422, "batch size 64 > maximum allowed batch size 32", None, "inputs"),
        (413, "Payload Too Large", None, "tokens"),
        (400, "'input[3]' has 9000 tokens; the maximum is 8192 per input.", "context_length_exceeded", "input"),
        (400, "This model's maximum context length is 512 tokens", None, "input"),
        (400, "'dimensions' is 4000 but text-embedding-3-small produces at most 1536 dimensions.", None, None),
        (400, "'input[0]' must not be an empty string.", None, None),
        (401, "Incorrect API key provided", None, None),
    ],
)
def test_which_refusals_say_too_large(status, message, code, kind):
    assert too_large_kind(status, message, code) == kind


def test_requests_are_packed_with_a_margin_by_default():
    assert DEFAULT_BATCH_TOKENS < OPENAI_MAX_BATCH_TOKENS


# -- the provider, through the real client --------------------------------------------------------


def test_a_request_over_the_gateways_token_cap_is_halved_and_the_cap_learned(fake):
    fake.max_request_tokens = 200  # characters/4, its own count
    texts = [f"issue number {i} about the login page " * 3 for i in range(40)]

    async def go():
        async with embedder_for(fake) as e:
            first = await e.embed_counted(texts, [exact(t) for t in texts])
            refused_after_learning = fake.requests
            splits = e.stats.splits
            second = await e.embed_counted(texts, [exact(t) for t in texts])
            return first, second, e, splits, refused_after_learning

    first, second, e, splits, requests_first = asyncio.run(go())
    assert np.array_equal(first, _vectors(texts)) and np.array_equal(second, _vectors(texts))
    assert splits > 0 and e.learned_batch_tokens is not None
    assert e.max_batch_tokens == e.learned_batch_tokens < sum(exact(t) for t in texts)
    assert e.stats.splits == splits, "the learned cap did not spare the second call its refusals"
    assert fake.requests - requests_first >= 2  # sent in groups below the learned cap
    assert fake.inputs == 2 * len(texts)


@pytest.mark.parametrize("status", [413, 422])
def test_text_embeddings_inference_input_cap_is_learned_from_its_message(fake, status):
    fake.max_inputs, fake.too_many_inputs_status = 32, status
    texts = [f"row {i}" for i in range(100)]

    async def go():
        async with embedder_for(fake) as e:
            vectors = await e.embed(texts)
            return vectors, e

    vectors, e = asyncio.run(go())
    assert np.array_equal(np.asarray(vectors, dtype="<f4"), _vectors(texts))
    assert e.learned_batch_inputs == 32 and e.max_batch_inputs == 32  # the number in the message
    assert e.stats.splits == 1 and e.stats.requests == 4  # 100 = 32 + 32 + 32 + 4 after one refusal


def test_a_single_input_over_the_context_window_is_handed_back_with_a_smaller_input_size(fake):
    fake.max_input_tokens = 50  # characters/4
    text = " ".join(f"word{i}" for i in range(120))  # ~180 by characters/4, ~240 by cl100k

    async def go():
        async with embedder_for(fake) as e:
            vectors, refused = await e.embed_or_refuse([text, "short"])
            with pytest.raises(InputTooLargeError) as info:  # a caller that cannot cut its record
                await e.embed_counted(["fine", text])
            return vectors, refused, e, info.value

    vectors, refused, e, error = asyncio.run(go())
    # Handed back, not averaged: the caller cuts the record into chunks of the size learned.
    assert refused == [0] and e.stats.refused_inputs == 2 and e.stats.splits >= 2
    assert not vectors[0].any() and np.array_equal(vectors[1], _vectors(["short"])[0])
    assert e.learned_input_tokens is not None and e.max_input_tokens == e.learned_input_tokens < exact(text)
    pieces = e.split_counted(text, e.learned_input_tokens)
    # Learned from the numbers in the refusal ("has N tokens; the maximum is 50"), not halved
    # blindly; each piece must then fit the provider's own count.
    assert len(pieces) > 1 and all(count_tokens(p) <= 50 for p, _ in pieces)
    assert "".join(p for p, _ in pieces) == text
    assert error.index == 1 and f"at most {e.learned_input_tokens} tokens per input" in str(error)
    assert "\n" not in str(error)


# -- the engine: a refused chunk's row is cut again ------------------------------------------------


class _Rows:
    """Issue rows served a page at a time, as the database would."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {r["external_id"]: r for r in rows}

    def pages(self):
        rows = list(self.rows.values())
        for start in range(0, len(rows), 4):
            yield rows[start : start + 4]

    async def live_ids(self, ids: list[str]) -> set[str]:
        return {i for i in ids if i in self.rows}

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted((k, row_text(ISSUES, r)) for k, r in self.rows.items())).encode()).hexdigest()


def _issue(i: int, description: str) -> dict[str, Any]:
    return {
        "id": i + 1,
        "external_id": str(20_000 + i),
        "key": f"P-{i}",
        "summary": f"Issue {i}",
        "description": description,
        "project_key": "P",
        "wit_name": "Bug",
        "status_name": "Open",
        "status_category": "new",
        "priority": "High",
        "labels": [],
        "components": [],
        "updated": datetime(2026, 1, 1, tzinfo=UTC),
    }


async def _sync(fake: FakeEmbeddings, client: AsyncQdrantClient, rows: _Rows, **kwargs: Any):
    collection = Collection(client, "client_t_issues", "t", "issues", local=True)
    async with embedder_for(fake) as e:
        result = await sync_vectors(
            spec=ISSUES,
            tenant_id="t",
            pages=rows.pages,
            live_ids=rows.live_ids,
            embedder=e,
            collection=collection,
            fingerprint=rows.fingerprint,
            **kwargs,
        )
        return result, e.stats.copy(), e.learned_input_tokens


async def _points_by_row(client: AsyncQdrantClient) -> dict[str, list[Any]]:
    points, _ = await client.scroll("client_t_issues", limit=10_000, with_payload=True, with_vectors=True)
    by_row: dict[str, list[Any]] = {}
    for p in points:
        by_row.setdefault(p.payload["external_id"], []).append(p)
    return {k: sorted(v, key=lambda p: p.payload["chunk"]) for k, v in by_row.items()}


def _assert_cut_exactly(points: list[Any], text: str, ext: str, max_fake_tokens: int) -> None:
    """The row's points are chunks of its text, in order, each embedded on its own and within the limit."""
    assert [p.payload["chunk"] for p in points] == list(range(len(points)))
    assert {p.payload["chunks"] for p in points} == {len(points)}
    assert all(str(p.id) == point_id("t", "issues", ext, p.payload["chunk"]) for p in points)
    texts = [p.payload["text"] for p in points]
    assert all(len(t) < 2000 for t in texts), "payload texts are cut at 2,000 characters: the test needs whole chunks"
    assert "".join(texts) == text, "the chunks do not add up to the row's text"
    assert all(count_tokens(t) <= max_fake_tokens for t in texts)
    for p, t in zip(points, texts, strict=True):  # each chunk's own vector, not an average of pieces
        assert np.allclose(p.vector["dense"], fake_vector(t, DIMS), atol=1e-6)


def test_a_refused_chunk_cuts_its_whole_row_again_and_a_rerun_embeds_nothing(fake):
    """A provider with a small context window by its own count (characters/4, at most 150) and
    rows cut at 200 cl100k tokens: the long row's first chunks pass (one-token words) and are
    written, its third (15-character words) is refused. The whole row is cut again at the size
    the refusal taught; every chunk is its own point, the stale first-cut points are replaced,
    the size is recorded on the collection, and the next runs embed nothing, or, for a changed
    row, cut it small from the start without a refusal."""
    fake.max_input_tokens = 150
    long_text = " a" * 300 + " authentication" * 300
    rows = _Rows([_issue(0, long_text), *(_issue(i, f"short text number {i}") for i in range(1, 6))])
    first_text = row_text(ISSUES, rows.rows["20000"])
    client = AsyncQdrantClient(location=":memory:")

    async def go():
        first = await _sync(fake, client, rows, max_chunk_tokens=200, max_batch_inputs=1, concurrency=1)
        after_first = await _points_by_row(client)
        limits = await Collection(client, "client_t_issues", "t", "issues").read_provider_limits()
        requests = fake.requests
        second = await _sync(fake, client, rows, max_chunk_tokens=200)
        repeat = fake.requests - requests
        rows.rows["20000"] = _issue(0, long_text + " a" * 50)
        third = await _sync(fake, client, rows, max_chunk_tokens=200)
        after_third = await _points_by_row(client)
        await client.close()
        return first, after_first, limits, repeat, second, third, after_third

    first, after_first, limits, repeat, second, third, after_third = asyncio.run(go())
    result, stats, learned = first
    assert stats.refused_inputs >= 1 and result.rows_rechunked == 1
    assert learned is not None and learned < 200 and result.chunk_tokens == learned
    assert limits == {"model": MODEL, "endpoint": fake.url, "input_tokens": learned}
    assert len(after_first) == 6 and all(len(after_first[f"2000{i}"]) == 1 for i in range(1, 6))
    long_points = after_first["20000"]
    assert len(long_points) > 3  # more chunks than the three it was first cut into
    _assert_cut_exactly(long_points, first_text, "20000", 150)
    # Chunks of the first cut were written before the refusal came (then replaced, same ids).
    assert result.points_upserted > len(long_points) + 5
    assert result.sweep == "skipped"  # the collection held exactly the points the rows call for

    # The next run starts at the recorded size: same state, nothing embedded, not even compared.
    second_result, second_stats, _ = second
    assert repeat == 0, "the re-run embedded again"
    assert second_result.change_detection == "fingerprint" and second_result.chunk_tokens == learned
    assert second_stats.http_requests == 0

    # A changed long row is cut at the recorded size from the start: no refusal, no second cut.
    third_result, third_stats, _ = third
    assert third_result.rows_changed == 1 and third_result.rows_rechunked == 0
    assert third_stats.splits == 0 and third_stats.refused_inputs == 0
    _assert_cut_exactly(after_third["20000"], row_text(ISSUES, rows.rows["20000"]), "20000", 150)


def test_an_input_refused_even_as_one_token_fails_naming_its_position(fake):
    fake.max_input_tokens = 0

    async def go():
        async with embedder_for(fake) as e:
            await e.embed_counted(["ok", "four tokens here now", "x"], [1, 4, 1])

    with pytest.raises(InputTooLargeError) as info:
        asyncio.run(go())
    assert info.value.index == 0  # the first one, which is refused first
    assert "too large even in the smallest pieces" in str(info.value) and "\n" not in str(info.value)


def test_other_refusals_still_fail_at_once(fake):
    fake.model_dimensions = {MODEL: 8}

    async def go():
        async with embedder_for(fake) as e:
            await e.embed(["a", "b"])

    with pytest.raises(EmbeddingError, match="EMBEDDING_DIMENSIONS") as info:
        asyncio.run(go())
    assert not isinstance(info.value, InputTooLargeError)


# -- the graph, default settings ------------------------------------------------------------------------


def _meta(result, node: str) -> dict[str, Any]:
    (meta,) = [m.metadata for m in result.asset_materializations_for_node(node)]
    return {k: v.value for k, v in meta.items()}


def _sum(result, key: str) -> int:
    return sum(_meta(result, n).get(key, 0) for n in VECTOR_NODES)


def test_gateway_counting_characters_over_four_lands_every_point(env):
    """The reported failure: a gateway estimating characters/4 with its own per-request cap
    refused the engine's requests and every re-run failed the same way. With default
    settings, every point lands now, long issues included, and the re-run is a no-op."""
    gateway = env.embeddings
    gateway.token_counter = count_tokens  # characters/4: more than cl100k for this prose
    gateway.max_request_tokens = 3000
    result = materialize(env, "1")
    assert result.success, failure_texts(result)
    issues = _meta(result, "vectors__issues_vectors")
    assert issues["embedding_splits"] > 0
    assert issues["embedding_learned_batch_tokens"] < 3000
    assert issues["embedding_refused_inputs"] > 0 and issues["embedding_learned_input_tokens"] < 8192
    assert issues["rows_rechunked"] > 0 and issues["chunk_tokens"] == issues["embedding_learned_input_tokens"]
    long_keys = set(env.tenants["1"].site.long_issue_keys)
    assert long_keys and long_keys <= {p.payload["key"] for p in read_points(env)["client_1_issues"]["points"]}
    assert_converged(env, "1")
    requests = gateway.requests
    again = materialize(env, "1")
    assert again.success, failure_texts(again)
    assert gateway.requests == requests, "the re-run embedded again"


def test_a_small_context_window_lands_long_issues_as_several_searchable_points(env):
    """A server that takes at most 300 tokens per input (a local model's context window), with
    default settings: every long issue lands as several points, each chunk of its text embedded
    on its own, the last chunk found by search, and the re-run embeds nothing."""
    env.embeddings.max_input_tokens = 300  # counted like ours (cl100k), so chunks fit once cut to size
    result = materialize(env, "1")
    assert result.success, failure_texts(result)
    issues = _meta(result, "vectors__issues_vectors")
    learned = issues["embedding_learned_input_tokens"]
    assert issues["rows_rechunked"] > 0 and issues["embedding_refused_inputs"] > 0
    assert learned < 300 and issues["chunk_tokens"] == learned
    stored = read_points(env)["client_1_issues"]
    assert stored["metadata"]["embedding_provider_limits"]["input_tokens"] == learned
    by_key: dict[str, list[Any]] = {}
    for p in stored["points"]:
        by_key.setdefault(p.payload["key"], []).append(p)
    engine = create_engine(env.database_url)
    try:
        # An issue is chunked part by part (its text, its history digest: ISSUES.sections), none
        # spanning two: its chunks add up to its parts, without the blank lines that join them.
        assert ISSUES.sections is not None
        texts = {
            r["key"]: "".join(p.strip() for p in ISSUES.sections(r))
            for page in ops.iter_rows(engine, ISSUES, "1")
            for r in page
        }
    finally:
        engine.dispose()
    long_keys = env.tenants["1"].site.long_issue_keys
    assert long_keys
    for key in long_keys:
        points = sorted(by_key[key], key=lambda p: p.payload["chunk"])
        assert len(points) > 1 and {p.payload["chunks"] for p in points} == {len(points)}
        chunk_texts = [p.payload["text"] for p in points]
        assert max(len(t) for t in chunk_texts) < 2000  # whole chunks in the payload: they can be joined
        assert "".join(chunk_texts) == texts[key], f"{key}: the chunks do not add up to the issue's text"
        assert max(exact(t) for t in chunk_texts) <= 300
    assert_converged(env, "1")  # among others: each point holds its own chunk's vector

    key = long_keys[0]
    tail = max(by_key[key], key=lambda p: p.payload["chunk"]).payload

    async def find() -> list[Any]:
        settings = EmbeddingSettings(
            provider="openai", api_key="sk-test", base_url=env.embeddings.url, dimensions=TEST_DIMENSIONS
        )
        async with open_embedder(settings) as embedder, open_qdrant(None, None, env.qdrant_path) as client:
            return await search(client, embedder, tail["text"], tenant_id="1", access=None, k=3)

    hits = asyncio.run(find())
    assert hits and hits[0].key == key and hits[0].payload["chunk"] == tail["chunk"] > 0

    requests = env.embeddings.requests
    again = materialize(env, "1")
    assert again.success, failure_texts(again)
    assert env.embeddings.requests == requests, "the re-run embedded again"
    assert _meta(again, "vectors__issues_vectors")["change_detection"] == "fingerprint"


@pytest.mark.sites(n_issues=80)
@pytest.mark.parametrize("status", [413, 422])
def test_text_embeddings_inference_batch_cap_lands_every_point(env, status):
    env.embeddings.max_inputs, env.embeddings.too_many_inputs_status = 32, status
    result = materialize(env, "1")
    assert result.success, failure_texts(result)
    assert _meta(result, "vectors__issues_vectors")["embedding_learned_batch_inputs"] == 32
    assert _sum(result, "embedding_splits") >= 1
    assert_converged(env, "1")


def test_only_an_unsplittable_input_fails_naming_tenant_entity_key_and_chunk(env):
    assert env.materialize("1", "group:jira_raw or group:tables").success
    env.embeddings.max_input_tokens = 0  # refuses any input, however small
    result = materialize(env, "1", "key:vectors/projects_vectors")
    assert not result.success
    text = failure_texts(result)["vectors__projects_vectors"].splitlines()[0]  # the Failure's one line
    keys = {p["key"] for p in env.tenants["1"].site.projects}
    assert "tenant 1, entity projects, Jira key " in text and ", chunk 0" in text, text
    assert any(f"Jira key {k}," in text for k in keys), text
    assert "too large even in the smallest pieces" in text
    assert (
        "client_1_projects" not in read_points(env, with_vectors=False)
        or not read_points(env, with_vectors=False)["client_1_projects"]["points"]
    ), "a point was written although its batch failed"
    env.embeddings.max_input_tokens = 8192
    assert materialize(env, "1").success
    assert_converged(env, "1")
