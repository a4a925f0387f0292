"""Configuration errors fail before any work, with a message that names the setting.

Most are refused while the definitions load (nothing can run at all); the rest when the
run starts, before a step fetched, wrote or embedded anything: a tenant's missing Jira
credentials, an unusable DATABASE_URL, an unknown partition, and an embedding model or
dimension that disagrees with the collection it would write to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.factory import EmbeddingConfigError
from etl_assets.core.errors import ConfigError
from etl_assets.core.settings import EmbeddingSettings, Settings, SettingsError
from etl_assets.core.tenants import TenantConfigError
from etl_assets.defs.build import build_definitions
from etl_assets_tests.conftest import TEST_DIMENSIONS
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, read_points, steps

SECRETS = ("sk-test-embeddings-secret", "SECRETVALUE")
WHOLE = "use a whole number of 1 or more, or leave it empty for the default"  # the one rule for counts


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
        "EMBEDDING_PROVIDER=openai but OPENAI_API_KEY is not set: set it, or use EMBEDDING_PROVIDER=local",
        id="openai-without-api-key",
    ),
    pytest.param(
        {"EMBEDDING_PROVIDER": "cohere"},
        EmbeddingConfigError,
        "EMBEDDING_PROVIDER='cohere' is not allowed: use openai or local",
        id="unknown-provider",
    ),
    pytest.param(
        {"OPENAI_BASE_URL": "localhost:8080/v1"},
        EmbeddingConfigError,
        "OPENAI_BASE_URL='localhost:8080/v1' is not allowed: use an http(s) URL such as https://gateway.example/v1",
        id="malformed-openai-base-url",
    ),
    pytest.param(
        {"QDRANT_URL": "qdrant.internal:6333"},
        SettingsError,
        "QDRANT_URL='qdrant.internal:6333' is not allowed: "
        "use the http(s) URL of a Qdrant server, or unset it to use the local folder QDRANT_PATH",
        id="malformed-qdrant-url",
    ),
    pytest.param(
        {"QDRANT_URL": "etl:SECRETVALUE@qdrant.internal:6333"},
        SettingsError,
        "QDRANT_URL='***@qdrant.internal:6333' is not allowed",
        id="qdrant-url-with-a-password-is-masked",
    ),
    pytest.param(
        {"EMBEDDING_DIMENSIONS": "sixty-four"},
        EmbeddingConfigError,
        f"EMBEDDING_DIMENSIONS='sixty-four' is not allowed: {WHOLE}",
        id="dimensions-not-a-number",
    ),
    pytest.param(
        {"EMBEDDING_DIMENSIONS": "-64"},
        EmbeddingConfigError,
        f"EMBEDDING_DIMENSIONS='-64' is not allowed: {WHOLE}",
        id="dimensions-negative",
    ),
    pytest.param(
        {"EMBEDDING_CHUNK_TOKENS": "lots"},
        EmbeddingConfigError,
        f"EMBEDDING_CHUNK_TOKENS='lots' is not allowed: {WHOLE}",
        id="chunk-tokens-not-a-number",
    ),
    pytest.param(
        {"EMBEDDING_CONCURRENCY": "-1"},
        EmbeddingConfigError,
        f"EMBEDDING_CONCURRENCY='-1' is not allowed: {WHOLE}",
        id="concurrency-negative",
    ),
    pytest.param(
        {"EMBEDDING_CONCURRENCY": "0"},
        EmbeddingConfigError,
        f"EMBEDDING_CONCURRENCY='0' is not allowed: {WHOLE}",
        id="concurrency-zero",
    ),
    pytest.param(
        {"EMBEDDING_POOL_LIMIT": "0"},
        EmbeddingConfigError,
        f"EMBEDDING_POOL_LIMIT='0' is not allowed: {WHOLE}",
        id="pool-limit-zero",
    ),
    pytest.param(
        {"ETL_POOL_EMBEDDINGS": "0"},
        EmbeddingConfigError,
        f"ETL_POOL_EMBEDDINGS='0' is not allowed: {WHOLE}",
        id="pool-size-zero",
    ),
    pytest.param(
        {"EMBEDDING_BATCH_TOKENS": "0"},
        EmbeddingConfigError,
        f"EMBEDDING_BATCH_TOKENS='0' is not allowed: {WHOLE}",
        id="batch-tokens-zero",
    ),
    pytest.param(
        {"EMBEDDING_TPM": "2", "EMBEDDING_POOL_LIMIT": "3"},
        EmbeddingConfigError,
        "EMBEDDING_TPM=2 is not allowed with EMBEDDING_POOL_LIMIT=3",
        id="budget-smaller-than-the-pool",
    ),
    pytest.param(
        {"ETL_FIRST_SYNC_EXECUTOR": "multiprocess"},
        SettingsError,
        "ETL_FIRST_SYNC_EXECUTOR=multiprocess is not allowed without QDRANT_URL: the embedded store's folder",
        id="first-sync-multiprocess-with-the-embedded-store",
    ),
    pytest.param(
        {"ETL_EXECUTOR": "threads"},
        SettingsError,
        "ETL_EXECUTOR='threads' is not allowed: use in_process or multiprocess",
        id="unknown-executor",
    ),
    pytest.param(
        {"ETL_SYNC_CRON": "every hour"},
        SettingsError,
        "ETL_SYNC_CRON='every hour' is not allowed: use a cron expression of five fields, e.g. '0 * * * *'",
        id="sync-cron-not-cron",
    ),
    pytest.param(
        {"ETL_RECONCILE_CRON": "30 3 * *"},
        SettingsError,
        "ETL_RECONCILE_CRON='30 3 * *' is not allowed",
        id="reconcile-cron-four-fields",
    ),
    pytest.param(
        {"ETL_CHANGE_SENSOR_INTERVAL_S": "0"},
        SettingsError,
        f"ETL_CHANGE_SENSOR_INTERVAL_S='0' is not allowed: {WHOLE}",
        id="sensor-interval-zero",
    ),
    pytest.param(
        {"ETL_AUTOMATION_INTERVAL_S": "30s\nrm -rf"},
        SettingsError,
        f"ETL_AUTOMATION_INTERVAL_S='30s\\nrm -rf' is not allowed: {WHOLE}",
        id="automation-interval-with-a-newline",
    ),
]


@pytest.mark.parametrize(("overrides", "error", "expected"), LOAD_TIME)
def test_bad_setting_is_refused_when_the_definitions_load(env, overrides, error, expected):
    with pytest.raises(error) as err:
        build_definitions(env=_environment(env, **overrides))
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert "\n" not in message, "one line"
    assert message.startswith(expected), message
    assert not any(secret in message for secret in SECRETS)
    _nothing_happened(env)


TENANT_FILES = [
    pytest.param("tenants: [\n  - id: 1\n", 2, ["not valid YAML"], id="does-not-parse"),
    pytest.param(
        "tenants:\n  - id: '../2'\n    jira: {url: sample://x}\n",
        2,
        ["tenants[0].id", "'../2'", "not a valid tenant id"],
        id="id-that-is-not-a-collection-name",
    ),
    pytest.param(
        "tenants:\n  - id: 'client_2 issues'\n    jira: {url: sample://x}\n",
        2,
        ["tenants[0].id", "not a valid tenant id"],
        id="id-with-a-space",
    ),
    pytest.param(
        "tenants:\n  - id: acme\n    jira: {url: 'htps//acme.atlassian.net', email_env: E, token_env: T}\n",
        3,
        ["tenant 'acme'", "jira.url", "htps//acme.atlassian.net"],
        id="malformed-jira-url",
    ),
    pytest.param(
        "tenants:\n  - id: acme\n    jira:\n      projects: [A]\n",
        3,
        ["tenant 'acme'", "jira.url is required"],
        id="missing-jira-url",
    ),
    pytest.param(
        "tenants:\n  - id: acme\n    jira: {url: 'https://acme.atlassian.net'}\n",
        3,
        ["tenant 'acme'", "jira.email_env and jira.token_env"],
        id="live-site-without-credential-names",
    ),
    pytest.param(
        "tenants:\n  - id: acme\n    jira:\n      url: sample://x\n      projets: [A]\n",
        5,
        ["unknown key 'projets' under jira (allowed: url, email_env, token_env, projects, jql, custom_fields)"],
        id="misspelt-key",
    ),
    pytest.param("tenants:\n  id: acme\n", 1, ["expected a top-level 'tenants:' list"], id="misshapen"),
]


@pytest.mark.parametrize(("body", "line", "named"), TENANT_FILES)
def test_bad_tenants_file_is_refused_when_the_definitions_load(env, body, line, named):
    path = env.tmp / "bad-tenants.yaml"
    path.write_text(body)
    with pytest.raises(TenantConfigError) as err:
        build_definitions(env=_environment(env, ETL_TENANTS_FILE=str(path)))
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message
    assert message.startswith(f"{path} line {line}: "), "the message names the file and line: " + message
    for fragment in named:
        assert fragment in message, message
    _nothing_happened(env)


def test_a_missing_tenants_file_is_named(env):
    path = env.tmp / "absent.yaml"
    with pytest.raises(TenantConfigError) as err:
        build_definitions(env=_environment(env, ETL_TENANTS_FILE=str(path)))
    assert str(err.value) == f"tenants file {path}: cannot be read (No such file or directory); set ETL_TENANTS_FILE"
    _nothing_happened(env)


def test_missing_jira_credentials_fail_the_tenant_before_any_request(env, monkeypatch):
    monkeypatch.delenv("T1_JIRA_TOKEN")
    result = env.materialize("1", raise_on_error=False)
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == {f"jira__raw__raw_jira_{e}" for e in ("projects", "wits", "statuses", "issues")}
    for message in texts.values():
        assert "tenant '1'" in message and "T1_JIRA_TOKEN" in message and "jira.token_env" in message, message
    # The tenant's other source (its GitHub org, with its own token) is not affected; no Jira step ran.
    jira = {s.name for s in CATALOGUE if s.source == "jira"}
    succeeded = steps(result, dg.DagsterEventType.STEP_SUCCESS)
    jira_steps = {last for n in jira for last in (f"raw_jira_{n}", f"{n}_table", f"{n}_vectors")}
    assert not {step for step in succeeded if step.split("__")[-1] in jira_steps}, succeeded
    assert {step for step in succeeded if "github" in step}, "the GitHub steps should have run"
    assert env.tenants["1"].server.requests_received == 0
    assert not {n for n in read_points(env) if n.startswith("client_1_") and n.removeprefix("client_1_") in jira}
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
    # Every collection the first run built refuses (tenant 1 indexes its Jira site and a GitHub org).
    assert set(texts) == {f"vectors__{spec.name}_vectors" for spec in CATALOGUE}
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


# -- the settings object ---------------------------------------------------------------------------


@pytest.fixture
def fresh_process_settings():
    Settings.clear_cache()
    yield
    Settings.clear_cache()  # the next test reads its own environment


def test_the_process_environment_is_read_once(monkeypatch, fresh_process_settings):
    monkeypatch.setenv("ETL_SYNC_CRON", "5 * * * *")
    first = Settings.load()
    assert first.sync_cron == "5 * * * *"
    monkeypatch.setenv("ETL_SYNC_CRON", "hourly")  # would be refused if it were read again
    assert Settings.load() is first
    assert EmbeddingSettings.from_env() is first.embedding
    Settings.clear_cache()
    with pytest.raises(SettingsError, match=r"^ETL_SYNC_CRON='hourly' is not allowed"):
        Settings.load()


def test_an_empty_variable_is_unset_and_a_given_mapping_is_all_that_is_read(monkeypatch):
    monkeypatch.setenv("EMBEDDING_CONCURRENCY", "0")  # in the process environment, not in the mapping
    settings = Settings.load({"EMBEDDING_CONCURRENCY": "", "ETL_EXECUTOR": "", "EMBEDDING_RPM": " 600 "})
    assert (settings.embedding.concurrency, settings.executor_kind, settings.embedding.rpm) == (4, "in_process", 600)
    # With a Qdrant server, runs choose (in process unless a first sync asks); ETL_EXECUTOR forces one.
    assert Settings.load({"QDRANT_URL": "https://q.example:6333"}).executor_kind == "per_run"
    forced = Settings.load({"QDRANT_URL": "https://q.example:6333", "ETL_EXECUTOR": "multiprocess"})
    assert forced.executor_kind == "multiprocess"
    pooled = Settings.load({"ETL_POOL_EMBEDDINGS": "3", "EMBEDDING_TPM": "900"}).embedding
    assert (pooled.pool_limit, pooled.step_tpm) == (3, 300)
    assert Settings.load({"OPENAI_API_KEY": "sk-x"}).embedding.provider == "openai"


def test_defaults_do_not_depend_on_the_source_tree(tmp_path):
    """Installed from a wheel, the package lives in site-packages: the defaults must still make
    sense. A copy of the package outside this checkout, run from an empty directory, keeps its
    data under that directory and finds its bundled tenants file next to its own code."""
    import shutil
    import subprocess
    import sys

    import etl_assets

    site = tmp_path / "site-packages"
    shutil.copytree(Path(etl_assets.__file__).parent, site / "etl_assets", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    program = (
        "import json, etl_assets; from etl_assets.core.settings import Settings; s = Settings.load(); "
        "print(json.dumps([etl_assets.__file__, str(s.data_dir), s.database, s.qdrant.path, str(s.tenants_file)]))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "DATABASE_URL", "QDRANT_"))}
    proc = subprocess.run(
        [sys.executable, "-c", program],
        cwd=work,
        env={**environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    package, data_dir, database, qdrant_path, tenants_file = json.loads(proc.stdout)
    assert Path(package).parent == site / "etl_assets", "the copy was imported, not the checkout"
    assert data_dir == str(work / ".data")
    assert database == f"sqlite:///{work / '.data' / 'etl.db'}"
    assert qdrant_path == str(work / ".data" / "qdrant")
    assert tenants_file == str(site / "etl_assets" / "tenants.yaml")
    checkout = str(Path(etl_assets.__file__).parents[1])
    assert not any(value.startswith(checkout) for value in (data_dir, database, qdrant_path, tenants_file))


def test_a_relative_data_dir_is_fixed_when_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.load({"ETL_DATA_DIR": "state"})
    monkeypatch.chdir("/")
    assert settings.data_dir == tmp_path / "state"
    assert settings.database == f"sqlite:///{tmp_path / 'state' / 'etl.db'}"


def test_secrets_reach_the_resources_as_env_vars_and_never_as_values(env):
    environment = _environment(
        env,
        DATABASE_URL="postgresql+psycopg2://etl:SECRETVALUE@db.internal/etl",
        QDRANT_URL="https://qdrant.internal:6333",
        QDRANT_API_KEY="qdrant-SECRETVALUE",
    )
    settings = Settings.load(environment)
    assert not any(secret in repr(settings) for secret in SECRETS)
    resources = build_definitions(env=environment).resources
    bound = {
        "DATABASE_URL": resources["database"].url,
        "OPENAI_API_KEY": resources["embeddings"].api_key,
        "QDRANT_API_KEY": resources["qdrant"].api_key,
    }
    for name, value in bound.items():
        assert isinstance(value, dg.EnvVar) and value.env_var_name == name, name
    # Everything else is a plain value, taken from the one settings object.
    assert resources["embeddings"].settings().model_dump(exclude={"api_key"}) == settings.embedding.model_dump(
        exclude={"api_key"}
    )
    assert (resources["qdrant"].url, resources["qdrant"].path) == (settings.qdrant.url, settings.qdrant.path)


def test_the_resource_and_the_core_share_one_declaration_of_the_embedding_settings():
    from etl_assets.defs.resources import EmbeddingsResource

    assert EmbeddingsResource.model_fields.keys() == EmbeddingSettings.model_fields.keys()
    for name, field in EmbeddingSettings.model_fields.items():
        assert EmbeddingsResource.model_fields[name].description == field.description
        assert EmbeddingsResource.model_fields[name].default == field.default
    # The resource refuses what the environment would, with the same one line.
    with pytest.raises(EmbeddingConfigError) as err:
        EmbeddingsResource(concurrency=0)
    assert str(err.value) == f"EMBEDDING_CONCURRENCY='0' is not allowed: {WHOLE}"
    with pytest.raises(EmbeddingConfigError) as err:
        EmbeddingsResource(provider="openai", api_key=["sk-test-embeddings-secret"])
    assert str(err.value) == "OPENAI_API_KEY=<hidden> is not allowed: it should be a valid string"
