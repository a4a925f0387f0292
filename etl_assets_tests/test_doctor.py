"""``etl-assets doctor`` over loopback servers: a fake Jira site, a fake OpenAI endpoint, the
loopback Qdrant server and a real SQLite database.

Each test asserts the exact outcome of the rows it is about and the exit code; the command
line runs in a child process under ``python -W error`` (a leaked client's ResourceWarning or
"Event loop is closed" would fail it), and the Jira requests it sends are checked against
Atlassian's OpenAPI spec.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.doctor import Check, DoctorTargets, run_doctor
from etl_assets.core.settings import Settings
from etl_assets.core.sources.jira.doctor import jira_checks
from etl_assets.core.sources.jira.sample import generate_sample_site
from etl_assets.core.sources.jira.sample.permissions import site_permission_fixture
from etl_assets.core.store.db import make_engine
from etl_assets.core.store.migrations import HEAD_VERSION
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs import names
from etl_assets.defs.build import build_definitions
from etl_assets.defs.resources import DatabaseResource, EmbeddingsResource, QdrantResource, SourceResource
from etl_assets.fakes.loopback import LoopbackServer, Request, Response
from etl_assets.fakes.openai_server import FakeEmbeddings
from etl_assets.fakes.qdrant_server import FakeQdrant
from etl_assets_tests.conftest import JIRA_EMAIL, jira_handler, secret_forms
from etl_assets_tests.corpus import load_corpus_json

REPO = Path(__file__).resolve().parents[1]
MODEL = "text-embedding-3-small"
DIMS = 64
TOKEN = "jira-token-doctor-SECRETVALUE"
OPENAI_KEY = "sk-doctor-embeddings-SECRET"
QDRANT_KEY = "qdrant-doctor-key-SECRET"
INSECURE_KEY = "Api key is used with an insecure connection"


@dataclass
class Stack:
    tmp: Path
    jira: LoopbackServer
    jira_requests: list[Request]
    embeddings: FakeEmbeddings
    qdrant: FakeQdrant
    database_url: str
    environ: dict[str, str] = field(default_factory=dict)
    site: Any = None  # the Jira sample site the loopback server serves

    def tenants_file(self, *, token_env: str = "T1_JIRA_TOKEN", projects: list[str] | None = None) -> Path:
        jira: dict[str, Any] = {"url": self.jira.url, "email_env": "T1_JIRA_EMAIL", "token_env": token_env}
        if projects:
            jira["projects"] = projects
        path = self.tmp / f"tenants-{token_env}-{'-'.join(projects or [])}.yaml"
        path.write_text(yaml.safe_dump({"tenants": [{"id": "1", "jira": jira}]}))
        return path

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "ETL_TENANTS_FILE": str(self.tenants_file()),
            "ETL_DATA_DIR": str(self.tmp / "data"),
            "DATABASE_URL": self.database_url,
            "QDRANT_URL": self.qdrant.url,
            "QDRANT_API_KEY": QDRANT_KEY,
            "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": self.embeddings.url,
            "EMBEDDING_MODEL": MODEL,
            "EMBEDDING_DIMENSIONS": str(DIMS),
            "T1_JIRA_EMAIL": JIRA_EMAIL,
            "T1_JIRA_TOKEN": TOKEN,
            "T1_WRONG_TOKEN": "jira-token-WRONG-SECRETVALUE",
        }
        env.update(overrides)
        return env

    def doctor(self, **overrides: str) -> list[Check]:
        env = self.env(**overrides)
        settings = Settings.load(env)
        registry = TenantRegistry.load(settings.tenants_file)
        targets = DoctorTargets.from_settings(settings)
        return run_doctor(registry, targets, source_checks=[jira_checks(environ=env)], environ=env)

    def cli(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDDING_", "QDRANT_", "OPENAI_"))}
        env.update(self.env(**overrides))
        env["PYTHONPATH"] = str(REPO)
        env["PYTHONIOENCODING"] = "utf-8"  # the table marks rows ✓/✗ (ok/FAILED on an ASCII terminal)
        return subprocess.run(
            # Every warning is an error, but qdrant-client's own notice that the test's API key
            # travels over plain http (the loopback server): a deployment over http sees it too.
            [
                sys.executable,
                "-W",
                "error",
                "-W",
                f"ignore:{INSECURE_KEY}:UserWarning",
                "-m",
                "etl_assets.cli",
                "doctor",
            ]
            + list(args),
            cwd=self.tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )


pytestmark = pytest.mark.filterwarnings(f"ignore:{INSECURE_KEY}:UserWarning")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    site = generate_sample_site(seed=7, n_projects=6, n_issues=20)
    site_permission_fixture(site, seed=7)  # a site with access rules, as every real one has
    seen: list[Request] = []
    handle = jira_handler(site, (JIRA_EMAIL, TOKEN))

    def recording(req: Request) -> Response:
        seen.append(req)
        return handle(req)

    database_url = f"sqlite:///{tmp_path / 'etl.db'}"
    make_engine(database_url).dispose()  # a database as a sync leaves it: schema at HEAD_VERSION
    with (
        LoopbackServer(recording) as jira,
        FakeEmbeddings(dimensions=1536) as embeddings,
        FakeQdrant(tmp_path / "qdrant-server", api_key=QDRANT_KEY) as qdrant,
    ):
        yield Stack(tmp_path, jira, seen, embeddings, qdrant, database_url, site=site)


def rows(checks: list[Check]) -> dict[tuple[str, str], Check]:
    return {(c.tenant, c.name): c for c in checks}


def table_rows(stdout: str) -> dict[tuple[str, str], str]:
    """(tenant, check) -> ✓ or ✗, from the printed table."""
    out = {}
    for line in stdout.splitlines():
        match = re.match(r"^(\S+)\s+(\S+(?: \S+)*)\s{2,}([✓✗])(?:\s|$)", line)
        if match:
            out[(match.group(1), match.group(2))] = match.group(3)
    return out


def make_collection(url: str, name: str, *, model: str, size: int) -> None:
    async def create() -> None:
        client = AsyncQdrantClient(url=url, api_key=QDRANT_KEY)
        try:
            await client.create_collection(
                name,
                vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE),
                metadata={"embedding_model": model, "dimensions": size},
            )
        finally:
            await client.close()

    asyncio.run(create())


ALL_ROWS = {
    ("*", "database"),
    ("*", "embeddings"),
    ("*", "qdrant"),
    ("1", "jira site"),
    ("1", "jira projects"),
    ("1", "jira search"),
    ("1", "jira permissions"),
    ("1", "vector collections"),
}


@pytest.mark.slow
def test_all_green_under_W_error_exit_0_and_nothing_left_behind(stack: Stack) -> None:
    make_collection(stack.qdrant.url, "client_1_issues", model=MODEL, size=DIMS)
    before = len(stack.qdrant.log)
    result = stack.cli()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # -W error: no warning, no "Event loop is closed", nothing unraisable
    assert table_rows(result.stdout) == {key: "✓" for key in ALL_ROWS}
    assert "every check passed" in result.stdout
    assert f"schema version {HEAD_VERSION} (current)" in result.stdout
    assert f"model {MODEL}, {DIMS} dimensions" in result.stdout
    # one collection was built; every other entity of the catalogue has none yet
    assert f"1 match text-embedding-3-small/64, {len(CATALOGUE) - 1} not created yet" in result.stdout
    # Nothing written: Qdrant saw reads only, one embedding request, no file appeared.
    methods = {(method, path) for method, path, *_ in stack.qdrant.log[before:]}
    assert methods and all(method == "GET" for method, _ in methods), methods
    assert stack.embeddings.requests == 1
    assert not (stack.tmp / "data").exists()
    for secret in (TOKEN, OPENAI_KEY, QDRANT_KEY):
        assert not any(form in result.stdout + result.stderr for form in secret_forms(secret))


def test_jira_401_is_a_cross_with_the_credentials_fix(stack: Stack) -> None:
    tenants = stack.tenants_file(token_env="T1_WRONG_TOKEN")
    checks = stack.doctor(ETL_TENANTS_FILE=str(tenants))
    got = rows(checks)
    site = got[("1", "jira site")]
    assert not site.ok
    assert "HTTP 401" in site.detail
    assert "T1_WRONG_TOKEN" in site.fix and "T1_JIRA_EMAIL" in site.fix
    # Nothing else of Jira is asked once the credentials are refused; the other services still pass.
    assert ("1", "jira projects") not in got and ("1", "jira search") not in got
    assert [c.name for c in checks if not c.ok] == ["jira site"]
    text = "\n".join(f"{c.detail} {c.fix}" for c in checks)
    assert not any(form in text for form in secret_forms("jira-token-WRONG-SECRETVALUE"))


def test_jira_401_exits_1_on_the_command_line(stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from etl_assets.cli import main

    env = stack.env(ETL_TENANTS_FILE=str(stack.tenants_file(token_env="T1_WRONG_TOKEN")))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    Settings.clear_cache()
    try:
        code = main(["doctor", "--tenant", "1"])
    finally:
        Settings.clear_cache()
    out = capsys.readouterr().out
    assert code == 1
    assert table_rows(out)[("1", "jira site")] == "✗"
    assert "fix: set T1_JIRA_EMAIL" in out
    assert "1 of 5 checks failed" in out  # projects and search are not asked without credentials


def test_a_project_the_account_cannot_see_fails_the_search_row(stack: Stack) -> None:
    tenants = stack.tenants_file(projects=["NOPE"])
    got = rows(stack.doctor(ETL_TENANTS_FILE=str(tenants)))
    assert got[("1", "jira site")].ok and got[("1", "jira projects")].ok
    search = got[("1", "jira search")]
    assert not search.ok and "HTTP 400" in search.detail and "jira.projects" in search.fix


def test_an_account_that_may_not_read_permission_schemes_is_told_its_issues_fail_safe(stack: Stack) -> None:
    assert stack.site.permissions is not None
    stack.site.permissions.api_user_is_admin = False
    got = rows(stack.doctor())
    assert got[("1", "jira site")].ok and got[("1", "jira projects")].ok
    perms = got[("1", "jira permissions")]
    assert not perms.ok and "HTTP 403" in perms.detail and "operators only" in perms.detail
    assert "Administer Jira" in perms.fix


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_closed_qdrant_port_is_a_cross_and_exit_1_under_W_error(stack: Stack) -> None:
    port = _closed_port()
    result = stack.cli(QDRANT_URL=f"http://127.0.0.1:{port}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""
    got = table_rows(result.stdout)
    assert got[("*", "qdrant")] == "✗"
    assert ("1", "vector collections") not in got  # cannot be judged without Qdrant
    assert {k: v for k, v in got.items() if k != ("*", "qdrant")} == {
        k: "✓" for k in ALL_ROWS - {("*", "qdrant"), ("1", "vector collections")}
    }
    assert f"cannot connect to 127.0.0.1:{port}" in result.stdout
    assert "fix: start the Qdrant server, or correct QDRANT_URL" in result.stdout
    assert "1 of 7 checks failed" in result.stdout


def test_an_endpoint_returning_the_wrong_dimension_is_a_cross(stack: Stack, tmp_path: Path) -> None:
    # A model the client sends no "dimensions" for: the endpoint answers its native 32.
    with FakeEmbeddings(dimensions=32) as small:
        checks = stack.doctor(OPENAI_BASE_URL=small.url, EMBEDDING_MODEL="in-house-embedder")
        assert small.requests == 1
    emb = rows(checks)[("*", "embeddings")]
    assert not emb.ok
    assert "32 dimensions" in emb.detail and "EMBEDDING_DIMENSIONS=64" in emb.detail
    assert "set EMBEDDING_DIMENSIONS=32" in emb.fix
    assert [c.name for c in checks if not c.ok] == ["embeddings"]


def test_rate_limit_headers_and_a_refused_key_are_reported(stack: Stack) -> None:
    with FakeEmbeddings(dimensions=1536, rpm=1000, tpm=1_000_000) as limited:
        emb = rows(stack.doctor(OPENAI_BASE_URL=limited.url))[("*", "embeddings")]
    assert emb.ok and "x-ratelimit-limit-requests" in emb.detail and "x-ratelimit-remaining-tokens" in emb.detail

    def refuse(req: Request) -> Response:
        return Response.json({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, 401)

    with LoopbackServer(refuse) as server:
        emb = rows(stack.doctor(OPENAI_BASE_URL=server.url + "/v1"))[("*", "embeddings")]
    assert not emb.ok and "HTTP 401" in emb.detail and "OPENAI_API_KEY" in emb.fix
    assert OPENAI_KEY not in emb.detail + emb.fix


# -- the fallback endpoint -------------------------------------------------------------------------

FALLBACK_KEY = "sk-doctor-fallback-SECRET"


@pytest.mark.slow
def test_a_fallback_is_probed_on_its_own_row_under_W_error(stack: Stack) -> None:
    with FakeEmbeddings(dimensions=1536, rpm=1000, tpm=1_000_000) as fallback:
        url = fallback.url
        result = stack.cli(EMBEDDING_FALLBACK_BASE_URL=url, EMBEDDING_FALLBACK_API_KEY=FALLBACK_KEY)
        assert fallback.requests == 1 and fallback.auth_headers == [f"Bearer {FALLBACK_KEY}"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert table_rows(result.stdout) == {key: "✓" for key in ALL_ROWS | {("*", "embeddings fallback")}}
    assert stack.embeddings.requests == 1  # the primary's probe only: nothing probed twice at opening
    (line,) = [line for line in result.stdout.splitlines() if "embeddings fallback" in line]
    assert f"fallback {MODEL} at {url}" in line and f"model {MODEL}, {DIMS} dimensions" in line
    assert re.search(r"\d+ ms", line) and "x-ratelimit-limit-requests" in line
    for secret in (FALLBACK_KEY, OPENAI_KEY):
        assert not any(form in result.stdout + result.stderr for form in secret_forms(secret))


@pytest.mark.slow
def test_an_unreachable_fallback_is_a_cross_and_exit_1_under_W_error(stack: Stack) -> None:
    port = _closed_port()
    result = stack.cli(EMBEDDING_FALLBACK_BASE_URL=f"http://127.0.0.1:{port}/v1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""  # the failed connection's client was closed in its loop too
    got = table_rows(result.stdout)
    assert got == {**{key: "✓" for key in ALL_ROWS}, ("*", "embeddings fallback"): "✗"}
    assert f"cannot reach 127.0.0.1:{port}" in result.stdout
    assert "fix: check EMBEDDING_FALLBACK_BASE_URL and that the endpoint is running" in result.stdout


@pytest.mark.parametrize(
    ("fallback", "seen"),
    [
        # another size: a deployment of another model, whatever "dimensions" asks for
        (
            {"served_model": "text-embedding-3-large", "model_dimensions": {"text-embedding-3-large": 24}},
            "model text-embedding-3-large, 24 dimensions",
        ),
        # the same size, another model by name
        ({"served_model": "some-other-embedder", "dimensions": DIMS}, "it serves some-other-embedder, the primary"),
        # the same size and name, other vectors: not the same model
        ({"served_model": MODEL, "dimensions": DIMS}, "differs from the primary's (cosine"),
    ],
    ids=["dimension", "model", "vectors"],
)
def test_a_fallback_of_another_model_is_a_cross_with_the_fix(stack: Stack, fallback: dict[str, Any], seen: str) -> None:
    fallback.setdefault("dimensions", 1536)
    with FakeEmbeddings(**fallback) as other:
        checks = stack.doctor(EMBEDDING_FALLBACK_BASE_URL=other.url, EMBEDDING_FALLBACK_API_KEY=FALLBACK_KEY)
        assert other.requests == 1
    got = rows(checks)
    assert got[("*", "embeddings")].ok
    row = got[("*", "embeddings fallback")]
    assert not row.ok and seen in row.detail, row.detail
    assert row.detail.startswith(f"fallback {MODEL} at http://127.0.0.1:")
    assert "point EMBEDDING_FALLBACK_BASE_URL at an endpoint serving text-embedding-3-small with 64" in row.fix
    assert [c.name for c in checks if not c.ok] == ["embeddings fallback"]


def test_a_refused_fallback_key_names_its_setting_and_is_never_shown(stack: Stack) -> None:
    def refuse(req: Request) -> Response:
        said = f"Incorrect API key provided: {req.headers.get('authorization', '')[7:]}"
        return Response.json({"error": {"message": said, "type": "invalid_request_error"}}, 401)

    with LoopbackServer(refuse) as server:
        checks = stack.doctor(EMBEDDING_FALLBACK_BASE_URL=server.url + "/v1", EMBEDDING_FALLBACK_API_KEY=FALLBACK_KEY)
    row = rows(checks)[("*", "embeddings fallback")]
    assert not row.ok and "HTTP 401" in row.detail and "EMBEDDING_FALLBACK_API_KEY" in row.fix
    text = "\n".join(f"{c.detail} {c.fix}" for c in checks)
    assert not any(form in text for form in secret_forms(FALLBACK_KEY))


def test_a_fallback_probed_from_dagster_closes_its_connections(stack: Stack) -> None:
    # The doctor job's embeddings resource opens the embedder (its own probes drop an unreachable
    # fallback for syncs); the doctor still probes the configured fallback and reports it.
    registry = TenantRegistry.load(stack.tenants_file())
    env = stack.env()
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    with FakeEmbeddings(dimensions=1536) as fallback:
        resources: dict[str, Any] = {
            "jira": SourceResource(source="jira", max_attempts=2, max_wait_s=0.1),
            "database": DatabaseResource(url=stack.database_url),
            "qdrant": QdrantResource(url=stack.qdrant.url, api_key=QDRANT_KEY),
        }
        os.environ.update({k: env[k] for k in ("T1_JIRA_EMAIL", "T1_JIRA_TOKEN")})
        try:
            outcome = {}
            for name, url in (("good", fallback.url), ("dead", dead)):
                resources["embeddings"] = EmbeddingsResource(
                    provider="openai",
                    api_key=OPENAI_KEY,
                    base_url=stack.embeddings.url,
                    model=MODEL,
                    dimensions=DIMS,
                    fallback_base_url=url,
                    fallback_api_key=FALLBACK_KEY,
                )
                defs = build_definitions(registry=registry, resources=resources, env=env)
                job = defs.resolve_job_def(names.DOCTOR_JOB)
                outcome[name] = job.execute_in_process(
                    raise_on_error=False, run_config={"ops": {names.DOCTOR_OP: {"config": {"tenant": "1"}}}}
                )
        finally:
            for k in ("T1_JIRA_EMAIL", "T1_JIRA_TOKEN"):
                os.environ.pop(k, None)
        assert fallback.requests == 2  # the resource's probe at opening, and the doctor's
        deadline = time.monotonic() + 5
        while fallback.server.connections_active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fallback.server.connections_active == 0
    assert outcome["good"].success
    assert not outcome["dead"].success
    failure = outcome["dead"].get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "tenant * embeddings fallback" in failure.message
    assert "EMBEDDING_FALLBACK_BASE_URL" in failure.message and FALLBACK_KEY not in failure.message


def test_a_collection_built_with_another_model_is_a_cross(stack: Stack) -> None:
    make_collection(stack.qdrant.url, "client_1_projects", model="text-embedding-3-large", size=256)
    got = rows(stack.doctor())
    vc = got[("1", "vector collections")]
    assert not vc.ok
    assert "client_1_projects (text-embedding-3-large, 256 dimensions)" in vc.detail
    assert "reindex" in vc.fix
    assert got[("*", "qdrant")].ok


def test_database_unreachable_and_newer_are_crosses(stack: Stack, tmp_path: Path) -> None:
    missing_dir = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'etl.db'}"
    db = rows(stack.doctor(DATABASE_URL=missing_dir))[("*", "database")]
    assert db.ok and "not created yet" in db.detail
    assert not (tmp_path / "no").exists()  # the doctor created nothing

    bad = f"postgresql+psycopg2://etl:pw-SECRET-9@127.0.0.1:{_closed_port()}/etl"
    db = rows(stack.doctor(DATABASE_URL=bad))[("*", "database")]
    assert not db.ok and "cannot be opened" in db.detail and "DATABASE_URL" in db.fix
    assert "pw-SECRET-9" not in db.detail + db.fix


# -- the Jira requests against Atlassian's OpenAPI spec --------------------------------------------


def _operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not an operation of the Jira v3 spec")


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return _resolve(spec, spec["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema


_JSON_TYPES = {"integer": int, "string": str, "array": list, "boolean": bool, "object": dict}


def assert_valid_against_spec(spec: dict[str, Any], req: Request) -> None:
    op = _operation(spec, req.method, req.path)
    declared = {p["name"]: p for p in op.get("parameters", []) if p.get("in") == "query"}
    for name, value in req.query.items():
        assert name in declared, f"{req.method} {req.path}: query parameter {name!r} is not in the spec"
        if declared[name].get("schema", {}).get("type") == "integer":
            assert value.lstrip("-").isdigit(), f"{name}={value!r} is not an integer"
    for name, param in declared.items():
        assert not param.get("required") or name in req.query, f"{req.method} {req.path}: {name} is required"
    if req.body:
        assert "requestBody" in op, f"{req.method} {req.path} takes no body"
        schema = _resolve(spec, op["requestBody"]["content"]["application/json"]["schema"])
        body = req.json()
        props = schema.get("properties", {})
        assert set(body) <= set(props), f"{req.method} {req.path}: {set(body) - set(props)} not in the spec"
        for name, value in body.items():
            kind = _JSON_TYPES.get(_resolve(spec, props[name]).get("type", ""))
            assert kind is None or isinstance(value, kind), f"{name}={value!r} is not a {kind}"
    else:
        assert not op.get("requestBody", {}).get("required"), f"{req.method} {req.path} needs a body"


def test_every_jira_request_of_the_doctor_is_valid_against_the_spec(stack: Stack) -> None:
    spec = load_corpus_json("jira-platform-swagger-v3.v3.json")
    checks = stack.doctor(ETL_TENANTS_FILE=str(stack.tenants_file(projects=["PAY"])))
    assert all(c.ok for c in checks if c.name.startswith("jira")), checks
    sent = {(r.method, r.path) for r in stack.jira_requests}
    assert sent == {
        ("GET", "/rest/api/3/myself"),
        ("GET", "/rest/api/3/project/search"),
        ("POST", "/rest/api/3/search/jql"),
        ("GET", "/rest/api/3/project/PAY/permissionscheme"),  # the tenant's first project
    }
    for req in stack.jira_requests:
        assert_valid_against_spec(spec, req)


def test_the_spec_check_refuses_a_request_jira_does_not_take(stack: Stack) -> None:
    # The validator above must be able to fail: a wrong body key, a wrong type, an unknown path.
    spec = load_corpus_json("jira-platform-swagger-v3.v3.json")
    bad = [
        Request("POST", "/rest/api/3/search/jql", {}, {}, b'{"jql": "x", "limit": 1}'),
        Request("POST", "/rest/api/3/search/jql", {}, {}, b'{"jql": "x", "maxResults": "1"}'),
        Request("GET", "/rest/api/3/project/search", {"pageSize": "1"}, {}, b""),
        Request("GET", "/rest/api/3/whoami", {}, {}, b""),
    ]
    for req in bad:
        with pytest.raises(AssertionError):
            assert_valid_against_spec(spec, req)


# -- Dagster ---------------------------------------------------------------------------------------


def test_the_doctor_job_runs_from_dagster_and_fails_on_a_cross(stack: Stack) -> None:
    registry = TenantRegistry.load(stack.tenants_file())
    env = stack.env()

    def resources(base_url: str) -> dict[str, Any]:
        return {
            "jira": SourceResource(source="jira", max_attempts=2, max_wait_s=0.1),
            "database": DatabaseResource(url=stack.database_url),
            "embeddings": EmbeddingsResource(
                provider="openai", api_key=OPENAI_KEY, base_url=base_url, model=MODEL, dimensions=DIMS
            ),
            "qdrant": QdrantResource(url=stack.qdrant.url, api_key=QDRANT_KEY),
        }

    os.environ.update({k: env[k] for k in ("T1_JIRA_EMAIL", "T1_JIRA_TOKEN")})
    try:
        defs = build_definitions(registry=registry, resources=resources(stack.embeddings.url), env=env)
        job = defs.resolve_job_def(names.DOCTOR_JOB)
        ok = job.execute_in_process(run_config={"ops": {names.DOCTOR_OP: {"config": {"tenant": "1"}}}})
        assert ok.success
        meta = ok.get_step_success_events()[0]  # the step passed: metadata carries the table
        assert meta.step_key == names.DOCTOR_OP
        with FakeEmbeddings(dimensions=32) as small:
            defs = build_definitions(registry=registry, resources=resources(small.url), env=env)
            bad_job = defs.resolve_job_def(names.DOCTOR_JOB)
            bad = bad_job.execute_in_process(
                raise_on_error=False,
                run_config={"ops": {names.DOCTOR_OP: {"config": {}}}},
            )
    finally:
        for k in ("T1_JIRA_EMAIL", "T1_JIRA_TOKEN"):
            os.environ.pop(k, None)
    assert not bad.success
    failure = bad.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "tenant * embeddings" in failure.message
    assert isinstance(bad.dagster_run, dg.DagsterRun)


def test_every_connection_is_closed_when_the_doctor_returns(stack: Stack) -> None:
    # The command line's process exits before a leaked client could be noticed there; in this
    # process a pool left open keeps its connection to the server open, which the servers count.
    import gc
    import time
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = stack.doctor()
        gc.collect()
    assert all(c.ok for c in checks), checks
    servers = {"qdrant": stack.qdrant.server, "embeddings": stack.embeddings.server, "jira": stack.jira}
    deadline = time.monotonic() + 5
    while any(s.connections_active for s in servers.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {name: s.connections_active for name, s in servers.items()} == {"qdrant": 0, "embeddings": 0, "jira": 0}
    assert all(s.connections_opened for s in servers.values())
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning) or "loop" in str(w.message)]
    assert leaks == []
