"""Gateways and a fallback that never mixes models (issue 11, part 3).

Two fake OpenAI-compatible servers on loopback: the primary (failing in the ways a real one
fails: 5xx, a closed port) and the fallback. Extra headers carry secrets from the
environment; those values must never show in logs, metadata, errors or run config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.base import EmbeddingError
from etl_assets.core.embeddings.factory import EmbeddingConfigError, EmbeddingSettings, open_embedder
from etl_assets.core.embeddings.openai_provider import FALLBACK_AFTER_FAILURES, open_openai_embedder
from etl_assets.defs.resources import EmbeddingsResource
from etl_assets.fakes.loopback import Fault, LoopbackServer, Response
from etl_assets.fakes.openai_server import FakeEmbeddings, fake_vector
from etl_assets_tests.conftest import TEST_DIMENSIONS, secret_forms, secret_hits
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, read_points

MODEL = "text-embedding-3-small"
DIMS = 16
GATEWAY_SECRET = "gw-SECRET-7f3a9c1e5b"
FALLBACK_KEY = "sk-fallback-SECRET-42"
EMBEDDINGS = "/v1/embeddings"
VECTOR_NODES = tuple(f"vectors__{s.name}_vectors" for s in CATALOGUE)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def fakes():
    servers = [FakeEmbeddings(dimensions=DIMS).start() for _ in range(2)]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def dead_url() -> str:
    """The base URL of a port nothing listens on any more."""
    server = LoopbackServer(lambda request: Response(200)).start()
    url = server.url + "/v1"
    server.stop()
    return url


@contextlib.asynccontextmanager
async def embedder(primary: str, fallback: str | None, **kwargs: Any):
    async with open_openai_embedder(
        api_key="sk-test",
        model=MODEL,
        dimensions=DIMS,
        base_url=primary,
        fallback_base_url=fallback,
        fallback_api_key=FALLBACK_KEY if fallback else None,
        max_retries=2,
        timeout_s=2.0,
        **kwargs,
    ) as e:
        yield e


# -- headers and query parameters -------------------------------------------------------------------


def test_gateway_headers_come_from_the_environment_and_query_params_are_sent(fakes, monkeypatch):
    primary, _ = fakes
    monkeypatch.setenv("GW_KEY_FOR_TEST", GATEWAY_SECRET)
    settings = EmbeddingSettings.from_env(
        {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": primary.url,
            "EMBEDDING_DIMENSIONS": str(DIMS),
            "EMBEDDING_HEADERS": "X-Gateway-Key=GW_KEY_FOR_TEST",
            "EMBEDDING_QUERY_PARAMS": "api-version=2024-02-01",
        }
    )
    assert GATEWAY_SECRET not in repr(settings) and GATEWAY_SECRET not in str(settings.model_dump())

    async def go():
        async with open_embedder(settings) as e:
            return await e.embed(["hello"])

    assert asyncio.run(go()) == [fake_vector("hello", DIMS)]
    assert primary.header_log[-1].get("x-gateway-key") == GATEWAY_SECRET
    assert primary.query_log[-1] == {"api-version": "2024-02-01"}


def test_a_header_variable_that_is_not_set_is_a_one_line_error(fakes, monkeypatch):
    monkeypatch.delenv("GW_KEY_MISSING", raising=False)
    settings = EmbeddingSettings(
        provider="openai", api_key="sk-test", base_url=fakes[0].url, headers="X-Gateway-Key=GW_KEY_MISSING"
    )

    async def go():
        async with open_embedder(settings):
            pass

    with pytest.raises(EmbeddingConfigError, match="^EMBEDDING_HEADERS names GW_KEY_MISSING for header X-Gateway-Key"):
        asyncio.run(go())


# -- the fallback -------------------------------------------------------------------------------------


def test_repeated_5xx_move_requests_to_the_fallback_and_back_when_the_primary_recovers(fakes):
    primary, fallback = fakes

    async def go():
        async with embedder(primary.url, fallback.url) as e:
            e_probe = (primary.requests, fallback.requests)
            primary.faults.extend(
                Fault.respond(503, "overloaded", path=EMBEDDINGS) for _ in range(FALLBACK_AFTER_FAILURES)
            )
            first = await e.embed(["one"])
            stats_after_switch = e.stats.copy()
            second = await e.embed(["two"])  # still on the fallback: the primary is not retried yet
            e._next_primary_try = 0.0  # the retry interval has passed
            third = await e.embed(["three"])  # the primary answers: back to it
            fourth = await e.embed(["four"])
            return e_probe, (first, second, third, fourth), stats_after_switch, e.stats.copy()

    probe, vectors, after_switch, stats = asyncio.run(go())
    assert probe == (1, 1), "each endpoint is probed once at the start"
    assert vectors == tuple([fake_vector(t, DIMS)] for t in ("one", "two", "three", "four"))
    assert after_switch.fallback_switches == 1 and after_switch.fallback_requests == 1
    assert (stats.fallback_switches, stats.fallback_requests, stats.primary_recoveries) == (1, 2, 1)
    assert fallback.input_log == ["etl-assets endpoint probe", "one", "two"]
    assert primary.input_log == ["etl-assets endpoint probe", "three", "four"]
    assert not primary.faults


def test_a_fallback_serving_another_dimension_is_refused_at_start(fakes):
    primary, _ = fakes
    with FakeEmbeddings(
        dimensions=DIMS, served_model="text-embedding-3-large", model_dimensions={"text-embedding-3-large": 24}
    ) as other:

        async def go():
            async with embedder(primary.url, other.url):
                pass

        with pytest.raises(EmbeddingError) as info:
            asyncio.run(go())
    text = str(info.value)
    assert "refusing the fallback" in text and "EMBEDDING_FALLBACK_BASE_URL=" in text and "24-dimension" in text
    assert "\n" not in text and FALLBACK_KEY not in text


def test_a_fallback_serving_another_model_of_the_same_size_is_refused(fakes):
    primary, _ = fakes
    with FakeEmbeddings(dimensions=DIMS, served_model="some-other-embedder") as other:

        async def go():
            async with embedder(primary.url, other.url):
                pass

        with pytest.raises(
            EmbeddingError, match="serves some-other-embedder, the primary serves text-embedding-3-small"
        ):
            asyncio.run(go())


def test_a_fallback_whose_vectors_differ_is_refused_even_if_it_names_the_model(fakes):
    primary, _ = fakes
    with FakeEmbeddings(dimensions=DIMS, served_model=MODEL) as renamed:  # seeds by model: other vectors

        async def go():
            async with embedder(primary.url, renamed.url):
                pass

        with pytest.raises(EmbeddingError, match=r"differs from the primary's \(cosine"):
            asyncio.run(go())


def test_a_primary_down_at_start_starts_on_the_fallback(fakes):
    _, fallback = fakes

    async def go():
        async with embedder(dead_url(), fallback.url) as e:
            vectors = await e.embed(["x"])
            return vectors, e.stats.copy()

    vectors, stats = asyncio.run(go())
    assert vectors == [fake_vector("x", DIMS)]
    assert stats.fallback_switches == 1 and stats.fallback_requests == 1


def test_an_unreachable_fallback_is_not_used(fakes):
    primary, _ = fakes

    async def go():
        async with embedder(primary.url, dead_url()) as e:
            return e.fallback

    assert asyncio.run(go()) is None


# -- the graph: fallback, and no secret anywhere ----------------------------------------------------------


def _resources(env, **overrides: Any) -> dict[str, Any]:
    base = {
        "provider": "openai",
        "api_key": "sk-test-embeddings-secret",
        "base_url": env.embeddings.url,
        "dimensions": TEST_DIMENSIONS,
        "max_retries": 2,
        "timeout_s": 2.0,
        "headers": "X-Gateway-Key=GW_KEY_FOR_TEST",
    }
    return {"embeddings": EmbeddingsResource(**{**base, **overrides})}


def _everything_said(result, caplog) -> str:
    parts = [caplog.text]
    for event in result.all_events:
        parts.append(repr(event))
    parts += [str(v) for v in failure_texts(result).values()]
    parts.append(repr(result.dagster_run.run_config))
    return "\n".join(parts)


def test_a_step_runs_on_the_fallback_while_the_primary_is_down_and_no_secret_leaks(env, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GW_KEY_FOR_TEST", GATEWAY_SECRET)
    with FakeEmbeddings(dimensions=1536) as fallback:
        fallback.token_counter = env.embeddings.token_counter
        result = materialize(
            env,
            "1",
            resources=_resources(
                env, base_url=dead_url(), fallback_base_url=fallback.url, fallback_api_key=FALLBACK_KEY
            ),
        )
        assert result.success, failure_texts(result)
        metas = [m.metadata for n in VECTOR_NODES for m in result.asset_materializations_for_node(n)]
        assert len(metas) == len(VECTOR_NODES)
        assert all(m["embedding_endpoint"].value == "fallback" for m in metas)
        probes = fallback.input_log.count("etl-assets endpoint probe")
        assert probes >= 1 and sum(m["embedding_fallback_requests"].value for m in metas) == fallback.requests - probes
        assert sum(m["embedding_fallback_requests"].value for m in metas) > 0
        assert all(h.get("x-gateway-key") == GATEWAY_SECRET for h in fallback.header_log)
        assert all(a == f"Bearer {FALLBACK_KEY}" for a in fallback.auth_headers)
    assert env.embeddings.requests == 0
    assert_converged(env, "1")
    needles = {"gateway header": secret_forms(GATEWAY_SECRET), "fallback key": secret_forms(FALLBACK_KEY)}
    assert not secret_hits(_everything_said(result, caplog), needles)


def test_a_refusal_echoing_the_gateway_secret_is_reported_without_it(env, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GW_KEY_FOR_TEST", GATEWAY_SECRET)
    assert env.materialize("1", "group:jira_raw or group:tables").success
    env.embeddings.faults.append(
        Fault.respond(
            403, {"error": {"message": f"header X-Gateway-Key={GATEWAY_SECRET} not allowed"}}, path=EMBEDDINGS
        )
    )
    result = materialize(env, "1", "key:vectors/projects_vectors", resources=_resources(env))
    assert not result.success
    text = failure_texts(result)["vectors__projects_vectors"]
    assert "HTTP 403" in text and "X-Gateway-Key=***" in text, text
    assert not secret_hits(_everything_said(result, caplog), {"gateway header": secret_forms(GATEWAY_SECRET)})
    assert materialize(env, "1", resources=_resources(env)).success
    assert env.embeddings.header_log and all(
        h.get("x-gateway-key") == GATEWAY_SECRET for h in env.embeddings.header_log
    )
    assert_converged(env, "1")


def test_a_fallback_of_another_model_fails_the_step_and_writes_nothing(env, monkeypatch):
    monkeypatch.setenv("GW_KEY_FOR_TEST", GATEWAY_SECRET)
    assert env.materialize("1", "group:jira_raw or group:tables").success
    with FakeEmbeddings(
        dimensions=1536, served_model="text-embedding-3-large", model_dimensions={"text-embedding-3-large": 3072}
    ) as other:
        result = materialize(
            env, "1", "key:vectors/projects_vectors", resources=_resources(env, fallback_base_url=other.url)
        )
    assert not result.success
    line = failure_texts(result)["vectors__projects_vectors"].splitlines()[0]
    assert "refusing the fallback" in line and "a collection is never filled from two models" in line
    assert not read_points(env, with_vectors=False).get("client_1_projects", {"points": []})["points"]
