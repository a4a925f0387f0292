"""Configuration errors fail before any work, with a message that names the setting.

Most are refused while the definitions load (nothing can run at all); the rest when the
run starts, before a step fetched, wrote or embedded anything: a tenant's missing Jira
credentials, an unusable DATABASE_URL, an unknown partition, and an embedding model or
dimension that disagrees with the collection it would write to.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from etl_assets.core.embeddings.factory import EmbeddingConfigError
from etl_assets.core.tenants import TenantConfigError
from etl_assets.defs.build import build_definitions
from etl_assets_tests.conftest import TEST_DIMENSIONS
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, read_points, steps

SECRETS = ("sk-test-embeddings-secret", "SECRETVALUE")


@pytest.fixture
def backend() -> str:
    return "sqlite"  # settings are checked before any database work, on either backend


def _environment(env, **overrides: str | None) -> dict[str, str]:
    """The variables a deployment would set for the env fixture's fakes, with some changed."""
    base = {
        "ETL_TENANTS_FILE": str(env.tenants_yaml()),
        "DATABASE_URL": env.database_url,
        "QDRANT_PATH": env.qdrant_path,
        "EMBEDDING_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-embeddings-secret",
        "OPENAI_BASE_URL": env.embeddings.url,
        "EMBEDDING_DIMENSIONS": str(TEST_DIMENSIONS),
    }
    merged = {**base, **overrides}
    return {k: v for k, v in merged.items() if v is not None}


def _nothing_happened(env) -> None:
    for tenant in env.tenants.values():
        assert tenant.server.requests_received == 0, f"tenant {tenant.id}'s Jira was asked"
    assert env.embeddings.requests == 0 and env.embeddings.server.requests_received == 0
    assert not Path(env.qdrant_path).exists(), "no collection may be touched"


LOAD_TIME = [
    pytest.param(
        {"OPENAI_API_KEY": None},
        EmbeddingConfigError,
        ["EMBEDDING_PROVIDER=openai", "OPENAI_API_KEY"],
        id="openai-without-api-key",
    ),
    pytest.param(
        {"EMBEDDING_PROVIDER": "cohere"},
        EmbeddingConfigError,
        ["EMBEDDING_PROVIDER", "'cohere'"],
        id="unknown-provider",
    ),
    pytest.param(
        {"OPENAI_BASE_URL": "localhost:8080/v1"},
        EmbeddingConfigError,
        ["OPENAI_BASE_URL", "localhost:8080"],
        id="malformed-openai-base-url",
    ),
    pytest.param(
        {"QDRANT_URL": "qdrant.internal:6333"},
        ValueError,
        ["QDRANT_URL", "qdrant.internal:6333"],
        id="malformed-qdrant-url",
    ),
    pytest.param(
        {"EMBEDDING_DIMENSIONS": "sixty-four"},
        EmbeddingConfigError,
        ["EMBEDDING_DIMENSIONS", "sixty-four"],
        id="dimensions-not-a-number",
    ),
    pytest.param(
        {"EMBEDDING_DIMENSIONS": "-64"}, EmbeddingConfigError, ["EMBEDDING_DIMENSIONS", "-64"], id="dimensions-negative"
    ),
    pytest.param(
        {"EMBEDDING_CHUNK_TOKENS": "lots"},
        EmbeddingConfigError,
        ["EMBEDDING_CHUNK_TOKENS", "lots"],
        id="chunk-tokens-not-a-number",
    ),
    pytest.param(
        {"EMBEDDING_CONCURRENCY": "-1"}, EmbeddingConfigError, ["EMBEDDING_CONCURRENCY"], id="concurrency-negative"
    ),
    pytest.param(
        {"EMBEDDING_CONCURRENCY": "0"}, EmbeddingConfigError, ["EMBEDDING_CONCURRENCY", "got 0"], id="concurrency-zero"
    ),
    pytest.param(
        {"EMBEDDING_POOL_LIMIT": "0"}, EmbeddingConfigError, ["EMBEDDING_POOL_LIMIT", "got 0"], id="pool-limit-zero"
    ),
    pytest.param(
        {"EMBEDDING_BATCH_TOKENS": "0"},
        EmbeddingConfigError,
        ["EMBEDDING_BATCH_TOKENS", "got 0"],
        id="batch-tokens-zero",
    ),
    pytest.param({"ETL_EXECUTOR": "threads"}, ValueError, ["ETL_EXECUTOR", "'threads'"], id="unknown-executor"),
]


@pytest.mark.parametrize(("overrides", "error", "named"), LOAD_TIME)
def test_bad_setting_is_refused_when_the_definitions_load(env, overrides, error, named):
    with pytest.raises(error) as err:
        build_definitions(env=_environment(env, **overrides))
    message = str(err.value)
    for fragment in named:
        assert fragment in message, message
    assert not any(secret in message for secret in SECRETS)
    _nothing_happened(env)


TENANT_FILES = [
    pytest.param("tenants: [\n  - id: 1\n", ["not valid YAML"], id="does-not-parse"),
    pytest.param(
        "tenants:\n  - id: '../2'\n    jira: {url: sample://x}\n",
        ["tenants[0].id", "'../2'", "not a valid tenant id"],
        id="id-that-is-not-a-collection-name",
    ),
    pytest.param(
        "tenants:\n  - id: 'client_2 issues'\n    jira: {url: sample://x}\n",
        ["tenants[0].id", "not a valid tenant id"],
        id="id-with-a-space",
    ),
    pytest.param(
        "tenants:\n  - id: acme\n    jira: {url: 'htps//acme.atlassian.net', email_env: E, token_env: T}\n",
        ["tenant 'acme'", "jira.url", "htps//acme.atlassian.net"],
        id="malformed-jira-url",
    ),
    pytest.param(
        "tenants:\n  - id: acme\n    jira: {url: 'https://acme.atlassian.net'}\n",
        ["tenant 'acme'", "jira.email_env and jira.token_env"],
        id="live-site-without-credential-names",
    ),
    pytest.param(None, ["cannot be read"], id="missing-file"),
]


@pytest.mark.parametrize(("body", "named"), TENANT_FILES)
def test_bad_tenants_file_is_refused_when_the_definitions_load(env, body, named):
    path = env.tmp / "bad-tenants.yaml"
    if body is not None:
        path.write_text(body)
    with pytest.raises(TenantConfigError) as err:
        build_definitions(env=_environment(env, ETL_TENANTS_FILE=str(path)))
    message = str(err.value)
    assert str(path) in message, "the message names the file"
    for fragment in named:
        assert fragment in message, message
    _nothing_happened(env)


def test_missing_jira_credentials_fail_the_tenant_before_any_request(env, monkeypatch):
    monkeypatch.delenv("T1_JIRA_TOKEN")
    result = env.materialize("1", raise_on_error=False)
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == {f"jira__raw__raw_jira_{e}" for e in ("projects", "wits", "statuses", "issues")}
    for message in texts.values():
        assert "tenant '1'" in message and "T1_JIRA_TOKEN" in message and "jira.token_env" in message, message
    assert not steps(result, dg.DagsterEventType.STEP_SUCCESS)
    assert env.tenants["1"].server.requests_received == 0
    assert env.embeddings.requests == 0
    # The other tenant's credentials are there: its runs are not affected.
    assert env.materialize("2").success
    assert_converged(env, "2")


def test_unusable_database_url_fails_the_run_before_any_step_works(env, monkeypatch):
    for name, value in _environment(env).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgres//nowhere")
    defs = build_definitions(registry=env.registry, env={**_environment(env), "DATABASE_URL": "postgres//nowhere"})
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(partition_key="1", raise_on_error=False)
    assert not result.success
    texts = failure_texts(result)
    assert texts and all("DATABASE_URL" in t and "not a valid SQLAlchemy URL" in t for t in texts.values()), texts
    assert not steps(result, dg.DagsterEventType.STEP_SUCCESS)
    _nothing_happened(env)


def test_unknown_partition_is_refused_naming_it_and_the_known_ones(env):
    job = env.definitions().resolve_implicit_global_asset_job_def()
    with pytest.raises(dg.DagsterError) as err:
        job.execute_in_process(partition_key="nope")
    assert "nope" in str(err.value)
    # Below Dagster, the registry refuses too, listing what it knows (a partition from a stale UI).
    from etl_assets.core.tenants import UnknownTenantError

    with pytest.raises(UnknownTenantError) as err:
        env.registry.get("nope")
    assert "'nope'" in str(err.value) and "1, 2" in str(err.value)
    _nothing_happened(env)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {"dimensions": TEST_DIMENSIONS // 2},
            [f"({TEST_DIMENSIONS} dimensions)", f"({TEST_DIMENSIONS // 2} dimensions)"],
        ),
        ({"model": "text-embedding-3-large"}, ["'text-embedding-3-small'", "'text-embedding-3-large'"]),
    ],
    ids=["dimension", "model"],
)
def test_embeddings_that_disagree_with_an_existing_collection_are_refused_before_embedding(env, overrides, named):
    assert env.materialize("1").success
    before = read_points(env)
    embedded = env.embeddings.requests
    env.tenants["1"].site.touch_issue(env.tenants["1"].site.issues[0]["key"], summary="Changed, so there is work")
    result = materialize(env, "1", "group:jira_raw or group:tables")
    assert result.success
    from etl_assets.defs.resources import EmbeddingsResource

    emb = {
        "provider": "openai",
        "api_key": "sk-test-embeddings-secret",
        "base_url": env.embeddings.url,
        "dimensions": TEST_DIMENSIONS,
        "max_retries": 2,
        **overrides,
    }
    result = materialize(env, "1", "group:vectors", resources={"embeddings": EmbeddingsResource(**emb)})
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == {
        "vectors__projects_vectors",
        "vectors__wits_vectors",
        "vectors__statuses_vectors",
        "vectors__issues_vectors",
    }
    for step, message in texts.items():
        assert f"collection client_1_{step.split('__')[1].removesuffix('_vectors')} was built with" in message
        for fragment in named:
            assert fragment in message, message
    assert env.embeddings.requests == embedded, "nothing may be embedded for a collection that would refuse it"
    after = read_points(env)
    assert {n: sorted((str(p.id), p.payload["content_hash"]) for p in c["points"]) for n, c in after.items()} == {
        n: sorted((str(p.id), p.payload["content_hash"]) for p in c["points"]) for n, c in before.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("partition", "unset", "named"),
    [("nope", None, ["nope"]), ("1", "OPENAI_API_KEY", ["OPENAI_API_KEY"])],
    ids=["unknown-partition", "missing-api-key"],
)
def test_the_dagster_cli_refuses_a_misconfiguration_before_any_work(env, partition, unset, named):
    home = env.tmp / "dagster_home"
    home.mkdir()
    proc = env.run_cli(home, partition, unset=unset)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for fragment in named:
        assert fragment in output, output[-3000:]
    assert not any(secret in output for secret in SECRETS)
    assert "RUN_START" not in output and "STEP_START" not in output
    _nothing_happened(env)
