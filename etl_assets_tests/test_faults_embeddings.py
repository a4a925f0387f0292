"""The embedding provider misbehaving: rate limits, 5xx, timeouts and resets are retried
within the budget; a refused request and an answer that does not fit (wrong dimension,
wrong number of vectors) fail the vector step with a clear error and write nothing of
that batch; and one more materialization after the fault converges exactly.

The faults come from the fake OpenAI-compatible server: its ``faults`` queue, its token
counter (a provider whose tokenizer disagrees with ours), or a handler wrapper that
corrupts otherwise good answers. ``EmbeddingsResource(max_retries=2)`` as in ``env``.
"""

from __future__ import annotations

import dataclasses
import json

import dagster as dg
import pytest

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.defs.resources import EmbeddingsResource
from etl_assets.fakes.loopback import Fault, Request, Response
from etl_assets_tests.conftest import TEST_DIMENSIONS
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, read_points, steps

EMBEDDINGS = "/v1/embeddings"
API_KEY = "sk-test-embeddings-secret"
VECTOR_STEPS = {f"vectors__{s.name}_vectors" for s in CATALOGUE}
ALL_TABLES = "group:jira_raw or group:tables"


@pytest.fixture
def backend() -> str:
    # The database is not what these faults are about; the graph and store tests run both backends.
    return "sqlite"


def _embeddings(env, **overrides: object) -> dict[str, object]:
    base = {
        "provider": "openai",
        "api_key": API_KEY,
        "base_url": env.embeddings.url,
        "dimensions": TEST_DIMENSIONS,
        "max_retries": 2,
        "timeout_s": 1.0,
    }
    return {"embeddings": EmbeddingsResource(**{**base, **overrides})}


def _vector_totals(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    totals: dict[str, int] = {}
    for step in VECTOR_STEPS:
        for m in result.asset_materializations_for_node(step):
            for k, v in m.metadata.items():
                if k.startswith("embedding_") and isinstance(v.value, int | float):
                    totals[k] = totals.get(k, 0) + v.value
    return totals


def _assert_clear(text: str, *fragments: str) -> None:
    assert "text-embedding-3-small" in text, text
    for fragment in fragments:
        assert fragment in text, text
    assert API_KEY not in text and "embeddings-secret" not in text


# Two runs, each absorbing four faults. Faults go to whichever requests come next, so one
# request may draw all four: the budget here is 4 retries, which bounds every request.
TRANSIENT = [
    pytest.param(
        [
            Fault.respond(
                429,
                {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                {"retry-after-ms": "20", "retry-after": "1"},
                path=EMBEDDINGS,
            ),
            Fault.respond(
                500, {"error": {"message": "The server had an error", "type": "server_error"}}, path=EMBEDDINGS
            ),
            Fault.respond(502, "<html>Bad gateway</html>", path=EMBEDDINGS),
            Fault.reset(path=EMBEDDINGS),
        ],
        id="429-with-retry-after+500+502+connection-reset",
    ),
    pytest.param(
        [
            Fault.respond(429, {"error": {"message": "Slow down", "type": "requests"}}, path=EMBEDDINGS),
            Fault.respond(503, "overloaded", {"retry-after": "0"}, path=EMBEDDINGS),
            Fault.delay(3.0, path=EMBEDDINGS),  # longer than the 1 s timeout
            Fault.truncate(path=EMBEDDINGS),
        ],
        id="429-without-hint+503+read-timeout+truncated-body",
    ),
]


@pytest.mark.parametrize("faults", TRANSIENT)
def test_transient_provider_faults_are_retried_within_budget(env, faults):
    env.embeddings.faults.extend(faults)
    result = materialize(env, "1", resources=_embeddings(env, max_retries=4))
    assert result.success, failure_texts(result)
    assert not env.embeddings.faults, "a fault never fired"
    totals = _vector_totals(result)
    assert totals["embedding_rate_limited"] == 1, totals
    assert totals["embedding_transient_errors"] == 3, totals
    assert totals["embedding_retries"] == 4, totals
    assert_converged(env, "1")


def test_provider_down_beyond_the_retry_budget_fails_the_vector_step_then_converges(env):
    assert env.materialize("1", ALL_TABLES).success
    requests = env.embeddings.requests
    env.embeddings.faults.extend(Fault.respond(503, "overloaded", path=EMBEDDINGS) for _ in range(4))
    result = materialize(env, "1", "key:vectors/projects_vectors", resources=_embeddings(env))
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == {"vectors__projects_vectors"}
    _assert_clear(
        texts["vectors__projects_vectors"], "HTTP 503", "after 2 retries", f"OPENAI_BASE_URL={env.embeddings.url}"
    )
    assert len(env.embeddings.faults) == 1, "attempts differ from the budget of 1 + 2 retries"
    assert env.embeddings.requests == requests, "no request got through, so nothing may have been embedded"
    env.embeddings.faults.clear()
    assert materialize(env, "1", resources=_embeddings(env)).success
    assert_converged(env, "1")


def test_key_refused_fails_at_once_naming_the_setting_not_the_key(env):
    env.embeddings.faults.extend(
        Fault.respond(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {API_KEY[:7]}***{API_KEY[-4:]}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            path=EMBEDDINGS,
        )
        for _ in range(2)
    )
    result = materialize(
        env,
        "1",
        "key:jira/raw/raw_jira_wits or key:tables/wits_table or key:vectors/wits_vectors",
        resources=_embeddings(env, concurrency=1),
    )
    assert not result.success
    assert len(env.embeddings.faults) == 1, "a refused key must not be retried"
    texts = failure_texts(result)
    assert set(texts) == {"vectors__wits_vectors"}
    _assert_clear(texts["vectors__wits_vectors"], "HTTP 401", "OPENAI_API_KEY", f"OPENAI_BASE_URL={env.embeddings.url}")
    env.embeddings.faults.clear()
    assert materialize(env, "1", resources=_embeddings(env)).success
    assert_converged(env, "1")


def test_over_long_input_is_rechunked_not_dropped(env):
    """The provider counts tokens differently from us (here: twice as many), so the longest
    issues, split at our 8,192-token limit, are over its limit: it answers 400. Such an input
    is handed back and its row cut again in smaller chunks, as are the rows split after it:
    every long issue gets its points, and the run reports the split and the input size it learned."""
    assert env.materialize("1", ALL_TABLES).success
    ours = env.embeddings.token_counter
    env.embeddings.token_counter = lambda text: 2 * ours(text)
    try:
        result = materialize(
            env, "1", "key:vectors/issues_vectors", resources=_embeddings(env, concurrency=1, batch_inputs=1)
        )
        assert result.success, failure_texts(result)
        (meta,) = [m.metadata for m in result.asset_materializations_for_node("vectors__issues_vectors")]
        assert meta["embedding_splits"].value > 0 and meta["embedding_refused_inputs"].value > 0
        assert meta["rows_rechunked"].value > 0
        assert 0 < meta["embedding_learned_input_tokens"].value < 8192
        long_keys = set(env.tenants["1"].site.long_issue_keys)
        assert long_keys
        stored = read_points(env, with_vectors=False)["client_1_issues"]["points"]
        assert long_keys <= {p.payload["key"] for p in stored}, "a refused input was dropped"
        assert materialize(env, "1", resources=_embeddings(env)).success
    finally:
        env.embeddings.token_counter = ours
    assert_converged(env, "1")


def _corrupting(env, change):
    """Serve good answers to altered requests: ``change(body) -> body`` before the fake sees it."""
    original = env.embeddings.server.handler

    def handler(req: Request) -> Response:
        if req.path == EMBEDDINGS:
            req = dataclasses.replace(req, body=json.dumps(change(json.loads(req.body))).encode())
        return original(req)

    env.embeddings.server.handler = handler
    return lambda: setattr(env.embeddings.server, "handler", original)


def _shorter_vectors(body: dict) -> dict:
    return {**body, "dimensions": TEST_DIMENSIONS // 2}


def _one_vector_fewer(body: dict) -> dict:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return {**body, "input": inputs[:-1] or ["x"]} if len(inputs) > 1 else {**body, "input": [*inputs, "extra"]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_shorter_vectors, f"has {TEST_DIMENSIONS // 2} dimensions, expected {TEST_DIMENSIONS}"),
        (_one_vector_fewer, "embeddings, got"),
    ],
    ids=["wrong-dimension", "wrong-count"],
)
def test_answer_that_does_not_fit_is_refused_and_nothing_is_written(env, change, reason):
    restore = _corrupting(env, change)
    try:
        result = materialize(env, "1", resources=_embeddings(env))
    finally:
        restore()
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == VECTOR_STEPS, "every vector step got unusable answers"
    for text in texts.values():
        _assert_clear(text, reason)
    assert steps(result, dg.DagsterEventType.STEP_SUCCESS) >= {
        f"tables__{s.name}_table" for s in CATALOGUE if s.parent is None
    }
    points = read_points(env, with_vectors=False)
    assert sum(len(c["points"]) for c in points.values()) == 0, "a vector that did not fit was stored"
    assert materialize(env, "1", resources=_embeddings(env)).success
    assert_converged(env, "1")


def test_misfit_answer_for_a_changed_row_leaves_its_old_point_in_place(env):
    assert env.materialize("1").success
    site = env.tenants["1"].site
    issue = site.issues[3]
    old_summary = issue["fields"]["summary"]
    site.touch_issue(issue["key"], summary="Rewritten after the first sync")
    assert env.materialize("1", "key:jira/raw/raw_jira_issues or key:tables/issues_table").success
    restore = _corrupting(env, _shorter_vectors)
    try:
        result = materialize(env, "1", "key:vectors/issues_vectors", resources=_embeddings(env))
    finally:
        restore()
    assert not result.success
    stored = [p for p in read_points(env)["client_1_issues"]["points"] if p.payload["external_id"] == issue["id"]]
    assert stored and all(
        p.payload["summary"] == old_summary and len(p.vector["dense"]) == TEST_DIMENSIONS for p in stored
    )
    assert materialize(env, "1", resources=_embeddings(env)).success
    assert_converged(env, "1")
