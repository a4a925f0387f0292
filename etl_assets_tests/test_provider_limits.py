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
from typing import Any

import numpy as np
import pytest

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.base import EmbeddingError, InputTooLargeError
from etl_assets.core.embeddings.openai_provider import (
    DEFAULT_BATCH_TOKENS,
    OPENAI_MAX_BATCH_TOKENS,
    open_openai_embedder,
    too_large_kind,
)
from etl_assets.core.embeddings.ratelimit import RateLimiter
from etl_assets.core.embeddings.tokens import cl100k
from etl_assets.fakes.openai_server import FakeEmbeddings, count_tokens, fake_vector
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


def test_a_single_input_over_the_context_window_is_embedded_in_pieces(fake):
    fake.max_input_tokens = 50  # characters/4
    text = " ".join(f"word{i}" for i in range(120))  # ~180 by characters/4, ~240 by cl100k

    async def go():
        async with embedder_for(fake) as e:
            return await e.embed_counted([text, "short"]), e

    vectors, e = asyncio.run(go())
    assert e.stats.rechunked_inputs == 1 and e.learned_input_tokens is not None
    assert e.max_input_tokens == e.learned_input_tokens < exact(text)
    pieces = e.split_counted(text, e.learned_input_tokens)
    # Learned from the numbers in the refusal ("has N tokens; the maximum is 50"), not halved
    # blindly; each piece must then fit the provider's own count.
    assert all(count_tokens(p) <= 50 for p, _ in pieces)
    assert np.array_equal(vectors[1], _vectors(["short"])[0])
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-5
    assert float(vectors[0] @ _vectors([text])[0]) < 0.99  # not the whole text's vector: the pieces' mean


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
    assert issues["embedding_rechunked_inputs"] > 0 and issues["embedding_learned_input_tokens"] < 8192
    long_keys = set(env.tenants["1"].site.long_issue_keys)
    assert long_keys and long_keys <= {p.payload["key"] for p in read_points(env)["client_1_issues"]["points"]}
    assert_converged(env, "1")
    requests = gateway.requests
    again = materialize(env, "1")
    assert again.success, failure_texts(again)
    assert gateway.requests == requests, "the re-run embedded again"


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
