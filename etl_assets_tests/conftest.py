"""Shared fixtures: loopback fake Jira sites and embeddings server, a fresh database and
Qdrant folder per test, and a helper that materializes the graph for a tenant."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from hypothesis import settings as hypothesis_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# pytest imports GNU readline (capture.py's workaround), and readline exports the terminal's size as
# LINES and COLUMNS (80x24 when there is none) into the C environment, unseen by os.environ: every
# child started with the inherited environment gets them, pytest-xdist's workers included, whose
# os.environ then hands COLUMNS=80 to the CLIs the tests run (search cuts its titles to fit). The
# user's own values stay; readline's invented ones go.
for _name in ("COLUMNS", "LINES"):
    if _name not in os.environ:
        os.unsetenv(_name)

# Under pytest-xdist every worker runs its own torch (the local model): an OpenMP pool per worker as
# large as the machine oversubscribes the cores, and its threads spin (two workers on two cores encoded
# at half the speed, with 70% more CPU). Each worker, and what it starts, gets its share of the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

from etl_assets.core.sources.github.sample import GitHubSite, generate_sample_org  # noqa: E402
from etl_assets.core.sources.jira.sample import JiraSite, JiraSiteHandler, generate_sample_site  # noqa: E402
from etl_assets.core.sources.jira.sample.permissions import site_permission_fixture  # noqa: E402
from etl_assets.core.tenants import TenantRegistry  # noqa: E402
from etl_assets.defs.build import build_definitions  # noqa: E402
from etl_assets.defs.resources import DatabaseResource, EmbeddingsResource, QdrantResource, SourceResource  # noqa: E402
from etl_assets.fakes.loopback import LoopbackServer, Request, Response  # noqa: E402
from etl_assets.fakes.openai_server import FakeEmbeddings  # noqa: E402
from etl_assets_tests.corpus import running_in_ci  # noqa: E402
from etl_assets_tests.pg import database_url_for_test, test_backends  # noqa: E402

# CI must be reproducible: a failure found by a random example used to pass or fail by luck.
# "ci" draws the same examples on every run (derandomize) and prints the blob that replays a
# failure; "dev" explores at random and remembers failures locally. A test's own @settings still
# sets its max_examples; the profile decides what it leaves unset.
hypothesis_settings.register_profile(
    "ci", derandomize=True, max_examples=100, deadline=None, print_blob=True, database=None
)
hypothesis_settings.register_profile("dev", derandomize=False)


def hypothesis_profile(environ: Mapping[str, str]) -> str:
    """HYPOTHESIS_PROFILE if set, else "ci" under CI=true, else "dev"."""
    if environ.get("HYPOTHESIS_PROFILE"):
        return environ["HYPOTHESIS_PROFILE"]
    return "ci" if running_in_ci(environ) else "dev"


hypothesis_settings.load_profile(hypothesis_profile(os.environ))

TEST_DIMENSIONS = 64
JIRA_EMAIL = "bot@example.test"


# -- finding secrets in text ---------------------------------------------------------------------


def secret_forms(secret: str) -> set[str]:
    """The secret as it could be written: plain, URL-encoded, and inside base64."""
    out = {secret, urllib.parse.quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}
    # base64 of a longer string holding the secret: any of the three alignments.
    for pad in range(3):
        encoded = base64.b64encode(b"x" * pad + secret.encode()).decode()
        out.add(encoded[(pad * 4 + 2) // 3 + 1 : -3])  # only characters of the secret's own bits
    return {f for f in out if len(f) >= 8}


def basic_auth_value(email: str, token: str) -> str:
    """What follows ``Basic `` in the Authorization header httpx sends for these credentials."""
    return base64.b64encode(f"{email}:{token}".encode()).decode()


def jira_secret_needles(tenants: Iterable[FakeTenant]) -> dict[str, set[str]]:
    """Each tenant's Jira token and its Basic authorization value, in every form a leak could take."""
    needles: dict[str, set[str]] = {}
    for t in tenants:
        needles[f"jira token of tenant {t.id}"] = secret_forms(t.token)
        needles[f"basic auth of tenant {t.id}"] = secret_forms(basic_auth_value(JIRA_EMAIL, t.token))
    return needles


def secret_hits(haystack: bytes | str, needles: Mapping[str, set[str]]) -> list[str]:
    """Names of the secrets found in ``haystack`` (empty: none of them, in none of their forms)."""
    data = haystack.encode("utf-8", "replace") if isinstance(haystack, str) else haystack
    return [name for name, forms in needles.items() if any(f.encode() in data for f in forms)]


def jira_handler(site: JiraSite, expected_auth: tuple[str, str] | None = None):
    handler = JiraSiteHandler(site)

    def handle(req: Request) -> Response:
        if expected_auth is not None:
            token = base64.b64encode(f"{expected_auth[0]}:{expected_auth[1]}".encode()).decode()
            if req.headers.get("authorization") != f"Basic {token}":
                return Response.json({"errorMessages": ["Client must be authenticated"]}, status=401)
        status, headers, body = handler.handle(req.method, req.path, req.query, req.body)
        return Response(status=status, headers=headers, body=body)

    return handle


# The sample GitHub org of every env tenant: its sizes, and the same as sample:// URL parameters.
SAMPLE_GITHUB_SIZES = {"n_repos": 2, "n_items": 6, "n_comments": 4}
SAMPLE_GITHUB = "repos=2&items=6&comments=4"


@dataclass
class FakeTenant:
    id: str
    site: JiraSite
    server: LoopbackServer
    token: str
    url: str = ""  # kept after the server stops, so a test can point a tenant at a dead site
    github: GitHubSite | None = None  # the tenant's small sample GitHub org (sample:// transport)

    @property
    def github_entry(self) -> dict[str, Any]:
        return {"github": {"url": f"sample://t{self.id}?{SAMPLE_GITHUB}", "org": f"t{self.id}"}} if self.github else {}


@dataclass
class Env:
    """Everything one test's graph runs against."""

    tmp: Path
    tenants: dict[str, FakeTenant]
    embeddings: FakeEmbeddings
    database_url: str
    qdrant_path: str
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def registry(self) -> TenantRegistry:
        return TenantRegistry.from_mapping(
            {
                "tenants": [
                    {
                        "id": t.id,
                        "jira": {"url": t.url, "email_env": f"T{t.id}_JIRA_EMAIL", "token_env": f"T{t.id}_JIRA_TOKEN"},
                        **t.github_entry,
                    }
                    for t in self.tenants.values()
                ]
            },
            source="test",
        )

    def tenants_yaml(self) -> Path:
        import yaml

        path = self.tmp / "tenants.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "tenants": [
                        {
                            "id": t.id,
                            "jira": {
                                "url": t.url,
                                "email_env": f"T{t.id}_JIRA_EMAIL",
                                "token_env": f"T{t.id}_JIRA_TOKEN",
                            },
                            **t.github_entry,
                        }
                        for t in self.tenants.values()
                    ]
                }
            )
        )
        return path

    def resources(self, **embedding_overrides: Any) -> dict[str, Any]:
        emb = {
            "provider": "openai",
            "api_key": "sk-test-embeddings-secret",
            "base_url": self.embeddings.url,
            "dimensions": TEST_DIMENSIONS,
            "max_retries": 2,
            **embedding_overrides,
        }
        return {
            "jira": SourceResource(source="jira", max_attempts=3, max_wait_s=0.2),
            "database": DatabaseResource(url=self.database_url),
            "embeddings": EmbeddingsResource(**emb),
            "qdrant": QdrantResource(path=self.qdrant_path),
        }

    def process_env(self) -> dict[str, str]:
        """Environment for a subprocess (dagster CLI) running the same graph."""
        env = {**os.environ, **self.environ}
        env.update(
            {
                "ETL_TENANTS_FILE": str(self.tenants_yaml()),
                "DATABASE_URL": self.database_url,
                "QDRANT_PATH": self.qdrant_path,
                "EMBEDDING_PROVIDER": "openai",
                "OPENAI_API_KEY": "sk-test-embeddings-secret",
                "OPENAI_BASE_URL": self.embeddings.url,
                "EMBEDDING_DIMENSIONS": str(TEST_DIMENSIONS),
            }
        )
        return env

    def run_cli(
        self, home: Path, partition: str, *, extra: dict[str, str] | None = None, unset: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``dagster asset materialize --select '*' --partition`` in a child process on ``home``."""
        process_env = {**self.process_env(), "DAGSTER_HOME": str(home), **(extra or {})}
        if unset:
            process_env.pop(unset, None)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-m",
                "etl_assets.definitions",
                "--select",
                "*",
                "--partition",
                partition,
            ],
            cwd=Path(__file__).resolve().parents[1],
            env=process_env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    def definitions(self, **embedding_overrides: Any) -> dg.Definitions:
        return build_definitions(
            registry=self.registry,
            resources=self.resources(**embedding_overrides),
            env={"DATABASE_URL": self.database_url},
        )

    def materialize(
        self,
        tenant_id: str,
        selection: str | None = None,
        *,
        raise_on_error: bool = True,
        run_config: dict | None = None,
        instance: dg.DagsterInstance | None = None,
        **embedding_overrides: Any,
    ) -> dg.ExecuteInProcessResult:
        """Materialize ``selection`` (Dagster selection syntax; default everything) for one tenant, in process."""
        defs = self.definitions(**embedding_overrides)
        job = defs.resolve_implicit_global_asset_job_def()
        keys = None
        if selection:
            keys = list(dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph()))
        return job.execute_in_process(
            partition_key=tenant_id,
            asset_selection=keys,
            raise_on_error=raise_on_error,
            run_config=run_config,
            instance=instance,
        )


def _start_tenant(tenant_id: str, seed: int, n_projects: int, n_issues: int, id_offset: int = 0) -> FakeTenant:
    site = generate_sample_site(seed=seed, n_projects=n_projects, n_issues=n_issues, id_offset=id_offset)
    # Access rules, as every sample:// site has them: the graph's permission stage reads them.
    site_permission_fixture(site, seed=seed)
    token = f"jira-token-{tenant_id}-SECRETVALUE"
    server = LoopbackServer(jira_handler(site, (JIRA_EMAIL, token))).start()
    # Every tenant also has a small GitHub org (the sample one, in process), so that every entity
    # of the catalogue has rows: the GitHub-specific tests use a loopback server instead.
    github = generate_sample_org(f"t{tenant_id}", **SAMPLE_GITHUB_SIZES)
    return FakeTenant(tenant_id, site, server, token, server.url, github=github)


def _cl100k_tokens(text: str) -> int:
    from etl_assets.core.embeddings.tokens import cl100k

    return len(cl100k().encode(text))


@pytest.fixture(params=test_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The database every graph test runs on: SQLite and, where it can start, PostgreSQL."""
    return request.param


@contextlib.contextmanager
def running_fakes(
    tmp: Path,
    database_url: str,
    *,
    sizes: tuple[tuple[int, int], tuple[int, int]] = ((8, 30), (5, 12)),
    token_counter: Callable[[str], int] | None = None,
) -> Iterator[Env]:
    """Two fake Jira sites (tenants 1 and 2, ``sizes`` = (projects, issues) each) and a fake
    embeddings server on loopback, stopped on exit; ``Env.environ`` holds their credentials."""
    tenants: dict[str, FakeTenant] = {}
    fake = None
    try:
        for tenant_id, seed, (n_projects, n_issues) in zip(("1", "2"), (7, 11), sizes, strict=True):
            tenants[tenant_id] = _start_tenant(tenant_id, seed=seed, n_projects=n_projects, n_issues=n_issues)
        fake = FakeEmbeddings(dimensions=1536, token_counter=token_counter).start()
        environ = {}
        for t in tenants.values():
            environ[f"T{t.id}_JIRA_EMAIL"] = JIRA_EMAIL
            environ[f"T{t.id}_JIRA_TOKEN"] = t.token
        yield Env(
            tmp=tmp,
            tenants=tenants,
            embeddings=fake,
            database_url=database_url,
            qdrant_path=str(tmp / "qdrant"),
            environ=environ,
        )
    finally:
        if fake is not None:
            fake.stop()
        for t in tenants.values():
            t.server.stop()


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, backend: str) -> Iterator[Env]:
    """Two fake tenants (small sites), a fake embeddings server, a fresh database and Qdrant folder."""
    marker = request.node.get_closest_marker("sites")
    spec = marker.kwargs if marker else {}
    n_issues = spec.get("n_issues", 30)
    sizes = ((spec.get("n_projects", 8), n_issues), (5, min(n_issues, 12)))
    url = database_url_for_test(tmp_path, backend, request.node.name)
    with running_fakes(tmp_path, url, sizes=sizes, token_counter=_cl100k_tokens) as env:
        for name, value in env.environ.items():
            monkeypatch.setenv(name, value)
        yield env


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sites(**kwargs): sizes of the fake Jira sites for the env fixture")
    config.addinivalue_line(
        "markers", "both_backends: about the database itself; runs on every backend even when the matrix is split"
    )


def split_backends(items: list[pytest.Item], backends: list[str]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected): each test parametrized over the database backends keeps one of them,
    chosen by a stable hash of its id without the backend, so that a run covers both backends
    across the graph tests at half the cost. Tests marked ``both_backends`` (the database's own
    behaviour: migrations, quarantine, crash and resume, store faults) keep every backend, and a
    test parametrized with one backend only keeps it."""
    groups: dict[str, list[tuple[pytest.Item, str]]] = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        if backend is not None and not item.get_closest_marker("both_backends"):
            key = item.nodeid.split("[", 1)[0] + repr(
                sorted((k, str(v)) for k, v in callspec.params.items() if k != "backend")
            )
            groups.setdefault(key, []).append((item, backend))
    dropped: set[int] = set()
    for key, members in groups.items():
        present = [b for b in backends if b in {backend for _, backend in members}]
        if len(present) < 2:
            continue
        chosen = present[zlib.crc32(key.encode()) % len(present)]
        dropped.update(id(item) for item, backend in members if backend != chosen)
    return [i for i in items if id(i) not in dropped], [i for i in items if id(i) in dropped]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``ETL_TEST_MATRIX`` (``split`` by default, or ``full``): split, each graph test runs on one
    of the backends (see :func:`split_backends`); full, on every one. Then, under pytest-xdist
    (``./dev.sh test``: whole files per worker, in collection order), the files with slow tests go
    first, the most tests first: a long one started last would leave the other workers idle at the
    end. Each file's own tests keep their order; a run in one process keeps pytest's order."""
    matrix = os.environ.get("ETL_TEST_MATRIX", "split")
    if matrix not in ("split", "full"):
        raise pytest.UsageError(f"ETL_TEST_MATRIX={matrix!r}: expected 'split' or 'full'")
    if matrix == "split":
        kept, deselected = split_backends(items, test_backends())
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
    if _WORKERS <= 1:
        return
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def cost(tests: list[pytest.Item]) -> tuple[bool, int]:
        return (not any(t.get_closest_marker("slow") for t in tests), -len(tests))

    items[:] = [item for tests in sorted(files.values(), key=cost) for item in tests]
