"""Secrets never land anywhere, and one tenant's run never touches another's data.

* The graph runs through the Dagster CLI with recognisable fake secrets (Jira tokens, the
  embeddings API key, the Qdrant API key, the database password), once succeeding after
  retried faults and once failing on refused credentials. Then everything Dagster stored
  and printed — the CLI's output, every file under DAGSTER_HOME (event log, run storage,
  captured logs), run configs, tags, events, metadata and error text — and the project's
  own database and Qdrant data are searched for each secret, also base64- and URL-encoded:
  zero hits (and a positive control shows the search reads what it should).
* Two tenants whose Jira ids overlap: a run for one binds no other tenant id in any SQL
  statement (audited on every statement SQLAlchemy executes), touches only its own
  collections (audited on the Qdrant server's request log), and leaves the other's rows and
  points byte for byte as they were — even when it deletes an object whose id they share.
* A crafted tenant id cannot name another tenant's collection.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event, make_url, select

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS
from etl_assets.core.store import schema
from etl_assets.core.tenants import TENANT_ID_PATTERN, TenantConfigError, TenantRegistry, validate_tenant_id
from etl_assets.core.vectorstore import collection_name, point_id
from etl_assets.defs.build import build_definitions
from etl_assets.defs.resources import QdrantResource
from etl_assets.fakes.loopback import Fault
from etl_assets.fakes.qdrant_server import FakeQdrant
from etl_assets_tests.conftest import jira_secret_needles, secret_forms, secret_hits
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, read_points

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")

QDRANT_KEY = "qdrant-key-SECRETVALUE"
EMBEDDINGS_KEY = "sk-test-embeddings-secret"


def _needles(env) -> dict[str, set[str]]:
    secrets = {"embeddings key": EMBEDDINGS_KEY, "qdrant key": QDRANT_KEY}
    password = make_url(env.database_url).password
    if password:
        secrets["database password"] = password
    # The Jira tokens, and the Authorization header a leak would most likely show.
    return {name: secret_forms(value) for name, value in secrets.items()} | jira_secret_needles(env.tenants.values())


def _run_cli(env, home: Path, partition: str, extra: dict[str, str]) -> str:
    proc = env.run_cli(home, partition, extra=extra)
    return proc.stdout + proc.stderr


def _database_dump(url: str) -> str:
    engine = create_engine(url)
    parts = []
    with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            parts += [repr(tuple(r)) for r in conn.execute(select(table))]
    engine.dispose()
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])  # SQLite has no password: PostgreSQL adds a secret to find
def test_no_secret_is_stored_or_printed_anywhere(env):
    home = env.tmp / "dagster_home"
    home.mkdir()
    jira, embeddings = env.tenants["1"].server, env.embeddings
    with FakeQdrant(env.tmp / "qdrant-server", api_key=QDRANT_KEY) as qdrant:
        server_mode = {"QDRANT_URL": qdrant.url, "QDRANT_API_KEY": QDRANT_KEY, "ETL_EXECUTOR": "in_process"}
        # One run with faults that are retried (their messages are logged) and credentials that are
        # refused (their error text is stored): Jira refuses the statuses listing, the provider the key.
        jira.faults.append(Fault.respond(429, "slow down", {"Retry-After": "0"}, path="/rest/api/3/project/search"))
        jira.faults.append(
            Fault.respond(401, {"errorMessages": ["Client must be authenticated"]}, path="/rest/api/3/status")
        )
        embeddings.faults.append(Fault.respond(503, "overloaded", {"retry-after": "0"}))
        embeddings.faults.append(
            Fault.respond(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
        )
        output = _run_cli(env, home, "1", server_mode)
        assert "RUN_FAILURE" in output and "HTTP 401" in output and "OPENAI_API_KEY" in output, output[-3000:]
        qdrant_data = "\n".join(
            repr(p.payload)
            for c in read_points(env, qdrant_url=qdrant.url, qdrant_api_key=QDRANT_KEY).values()
            for p in c["points"]
        )
    # The secrets really were used, and the faults fired, so finding none is meaningful.
    assert f"Bearer {EMBEDDINGS_KEY}" in embeddings.auth_headers
    assert not jira.faults and not embeddings.faults
    assert qdrant_data, "some vector steps succeeded and wrote points"

    needles = _needles(env)
    found: dict[str, list[str]] = {"output of the CLI run": secret_hits(output, needles)}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        found[str(path.relative_to(home))] = secret_hits(path.read_bytes(), needles)

    instance_text = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1
        for run in runs:
            instance_text.append(json.dumps(run.run_config, default=str) + json.dumps(run.tags))
            for entry in instance.all_logs(run.run_id):
                instance_text.append(entry.message or "")
                if entry.dagster_event is not None:
                    instance_text.append(dg.serialize_value(entry.dagster_event))
    everything_dagster_holds = "\n".join(instance_text)
    found["runs, run configs, tags and events (through the instance)"] = secret_hits(everything_dagster_holds, needles)
    found["the project's database"] = secret_hits(_database_dump(env.database_url), needles)
    found["the Qdrant points' payloads"] = secret_hits(qdrant_data, needles)
    leaks = {where: names for where, names in found.items() if names}
    assert leaks == {}, f"secrets found: {leaks}"

    # Positive control: the search does read the stored error text, metadata and captured logs.
    site_url = env.tenants["1"].url
    assert site_url in everything_dagster_holds and "HTTP 401" in everything_dagster_holds
    assert "jira_retries" in everything_dagster_holds and "embedding_transient_errors" in everything_dagster_holds
    assert any(site_url.encode() in p.read_bytes() for p in home.rglob("*") if p.is_file())


# -- isolation ---------------------------------------------------------------------------------------

# Every table that holds a tenant's data: derived from the schema, so a new source's tables are covered.
# (Sources declare their tables on import; CATALOGUE above has imported every source.)
TENANT_TABLES = tuple(t.name for t in schema.metadata.sorted_tables if "tenant_id" in t.c)
assert {spec.table.name for spec in CATALOGUE} <= set(TENANT_TABLES), "an entity table escaped the isolation check"
# Statements scoped by ids the run first read under its own tenant id, rather than by tenant id.
BY_OWN_IDS = (
    re.compile(r"^UPDATE raw_batches SET consumed_at=.* WHERE raw_batches\.id IN", re.S),
    re.compile(r"^DELETE FROM raw_jira_pages WHERE raw_jira_pages\.batch_id IN", re.S),
    re.compile(r"^DELETE FROM raw_batches WHERE raw_batches\.id IN", re.S),
    re.compile(
        r"^SELECT raw_jira_pages\.path, raw_jira_pages\.params, raw_jira_pages\.body\s+FROM raw_jira_pages\s+"
        r"WHERE raw_jira_pages\.batch_id = ",
        re.S,
    ),
)


class SqlAudit:
    """Every statement SQLAlchemy executes while open, with all the values bound to it."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[dict[str, Any]]]] = []

    def __enter__(self) -> SqlAudit:
        event.listen(Engine, "before_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_execute", self._record)

    def _record(self, conn, clause, multiparams, params, execution_options) -> None:  # type: ignore[no-untyped-def]
        try:
            compiled = clause.compile(dialect=conn.dialect)
            sql, bound = str(compiled).strip(), dict(compiled.params or {})
        except Exception:  # noqa: BLE001 - a text() or DDL element: keep its text
            sql, bound = str(clause).strip(), {}
        rows = list(multiparams or []) + ([params] if params else [])
        self.statements.append((sql, [bound, *[r for r in rows if isinstance(r, dict)]]))

    def tenant_values(self) -> set[Any]:
        return {
            v for _, dicts in self.statements for d in dicts for k, v in d.items() if "tenant_id" in k and v is not None
        }

    def unscoped(self) -> list[str]:
        """Statements on tenant data that bind no tenant id (DDL and catalog queries aside)."""
        out = []
        for sql, dicts in self.statements:
            if re.match(r"^(CREATE|PRAGMA|ALTER|DROP)\b", sql) or "sqlite_master" in sql or "pg_catalog" in sql:
                continue
            if not any(re.search(rf"\b{t}\b", sql) for t in TENANT_TABLES):
                continue
            if not any("tenant_id" in k for d in dicts for k in d) and "tenant_id IS NULL" not in sql:
                out.append(sql)
        return out

    def ids_bound(self) -> set[Any]:
        values: set[Any] = set()
        for sql, dicts in self.statements:
            if any(p.match(sql) for p in BY_OWN_IDS):
                for d in dicts:
                    for k, v in d.items():
                        if k.startswith(("id_", "batch_id")):
                            values.update(v if isinstance(v, list | tuple) else [v])
        return values


def _tenant_state(env, tenant_id: str, qdrant_url: str) -> dict[str, Any]:
    engine = create_engine(env.database_url)
    rows: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in (*(s.table for s in CATALOGUE), schema.sync_state, schema.raw_batches, schema.rejected_records):
            rows[table.name] = sorted(
                repr(tuple(r)) for r in conn.execute(select(table).where(table.c.tenant_id == tenant_id))
            )
    engine.dispose()
    points = read_points(env, qdrant_url=qdrant_url, qdrant_api_key=QDRANT_KEY)
    mine = {
        name: sorted((str(p.id), json.dumps(p.payload, sort_keys=True), repr(p.vector)) for p in c["points"])
        for name, c in points.items()
        if name in {collection_name(tenant_id, s.name) for s in CATALOGUE}
    }
    return {"rows": rows, "points": mine}


def _batch_ids(env, tenant_id: str) -> set[int]:
    engine = create_engine(env.database_url)
    with engine.connect() as conn:
        ids = {
            r[0]
            for r in conn.execute(select(schema.raw_batches.c.id).where(schema.raw_batches.c.tenant_id == tenant_id))
        }
    engine.dispose()
    return ids


# Issues are fetched incrementally: only a reconciling sync can see that one was deleted.
RECONCILE_ISSUES = {"ops": {"jira__raw__raw_jira_issues": {"config": {"reconcile": True}}}}


def _sync(env, tenant_id: str, resources: dict[str, Any], run_config: dict[str, Any] | None):
    defs = build_definitions(
        registry=env.registry, resources={**env.resources(), **resources}, env={"DATABASE_URL": env.database_url}
    )
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(partition_key=tenant_id, run_config=run_config, raise_on_error=False)


def _point_ids(env, qdrant_url: str, collection: str) -> set[str]:
    points = read_points(env, qdrant_url=qdrant_url, qdrant_api_key=QDRANT_KEY, with_vectors=False)
    return {str(p.id) for p in points[collection]["points"]}


def test_tenants_with_overlapping_jira_ids_never_touch_each_other(env):
    one, two = env.tenants["1"].site, env.tenants["2"].site
    shared_projects = {p["id"] for p in one.projects} & {p["id"] for p in two.projects}
    shared_issues = {i["id"] for i in one.issues} & {i["id"] for i in two.issues}
    assert shared_projects and shared_issues, "the fixture's sites must share Jira ids for this test to mean anything"
    gone_project = next(p for p in two.projects if p["id"] in shared_projects)
    gone_issue = next(
        i for i in two.issues if i["id"] in shared_issues and i["fields"]["project"]["id"] != gone_project["id"]
    )

    with FakeQdrant(env.tmp / "qdrant-server", api_key=QDRANT_KEY) as qdrant:
        server = {"qdrant": QdrantResource(url=qdrant.url, api_key=QDRANT_KEY)}
        # Both tenants hold a row and a point for each shared id before tenant 2 deletes any.
        assert materialize(env, "1", resources=server).success
        assert materialize(env, "2", resources=server).success
        for tenant_id in ("1", "2"):
            assert gone_project["id"] in {r[0] for r in _rows(env, PROJECTS, tenant_id)}
            assert gone_issue["id"] in {r[0] for r in _rows(env, ISSUES, tenant_id)}
            ids = _point_ids(env, qdrant.url, collection_name(tenant_id, "projects"))
            assert point_id(tenant_id, "projects", gone_project["id"]) in ids
        before = _tenant_state(env, "1", qdrant.url)
        batches_of_one = _batch_ids(env, "1")

        # Tenant 2 deletes a project and an issue whose ids tenant 1 also has, then syncs: once
        # reconciling (the deletions happen), once more (nothing to do). Tenant 1 must not move.
        two.delete_project(gone_project["id"])
        two.delete_issue(gone_issue["key"])
        for run_config in (RECONCILE_ISSUES, None):
            qdrant.log.clear()
            with SqlAudit() as audit:
                result = _sync(env, "2", server, run_config)
            assert result.success, failure_texts(result)
            assert audit.tenant_values() <= {"2", ""}, audit.tenant_values()  # "" : the rows-without-tenant check
            assert audit.unscoped() and all(any(p.match(s) for p in BY_OWN_IDS) for s in audit.unscoped()), (
                audit.unscoped()
            )
            assert not audit.ids_bound() & batches_of_one, "a statement addressed tenant 1's raw batches"
            assert qdrant.collections_touched() == {collection_name("2", s.name) for s in CATALOGUE}
            if run_config is RECONCILE_ISSUES:
                deleted = {
                    s.name: result.asset_materializations_for_node(f"tables__{s.name}_table")[0]
                    .metadata["deleted"]
                    .value
                    for s in (PROJECTS, ISSUES)
                }
                assert deleted["projects"] == 1 and deleted["issues"] >= 1, deleted

        # The deletions really happened in tenant 2: rows marked deleted, points gone ...
        assert gone_project["id"] not in {r[0] for r in _rows(env, PROJECTS, "2")}
        assert gone_issue["id"] not in {r[0] for r in _rows(env, ISSUES, "2")}
        assert point_id("2", "projects", gone_project["id"]) not in _point_ids(env, qdrant.url, "client_2_projects")
        assert point_id("2", "issues", gone_issue["id"]) not in _point_ids(env, qdrant.url, "client_2_issues")
        # ... and tenant 1's rows and points are byte for byte what they were, shared ids included.
        assert _tenant_state(env, "1", qdrant.url) == before, "tenant 2's deletions changed tenant 1's rows or points"
        assert gone_project["id"] in {r[0] for r in _rows(env, PROJECTS, "1")}
        assert gone_issue["id"] in {r[0] for r in _rows(env, ISSUES, "1")}
        assert point_id("1", "projects", gone_project["id"]) in _point_ids(env, qdrant.url, "client_1_projects")
        assert point_id("1", "issues", gone_issue["id"]) in _point_ids(env, qdrant.url, "client_1_issues")
        # The shared ids are distinct points, one per tenant, each in its own collection.
        assert not _point_ids(env, qdrant.url, "client_1_projects") & _point_ids(env, qdrant.url, "client_2_projects")
        assert_converged(env, "1", qdrant_url=qdrant.url, qdrant_api_key=QDRANT_KEY)
        assert_converged(env, "2", qdrant_url=qdrant.url, qdrant_api_key=QDRANT_KEY)


def _rows(env, spec, tenant_id: str) -> list[tuple]:
    engine = create_engine(env.database_url)
    t = spec.table
    with engine.connect() as conn:
        rows = [
            tuple(r)
            for r in conn.execute(select(t.c.external_id).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None)))
        ]
    engine.dispose()
    return rows


CRAFTED = [
    "../2",
    "2/..",
    "2/../1",
    "client_2_issues/points",
    "2 ",
    " 2",
    "",
    "２",
    "2\n",
    "2\x00",
    "*",
    "2;DROP TABLE issues",
    "%32",
    "2%2F..",
    "a" * 49,
    "2:issues",
    "2.issues",
    "ü",
]


@pytest.mark.parametrize("crafted", CRAFTED, ids=[repr(c)[:20] for c in CRAFTED])
def test_a_crafted_tenant_id_is_refused_by_the_registry_and_by_collection_naming(crafted):
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.from_mapping({"tenants": [{"id": crafted, "jira": {"url": "sample://x"}}]}, source="crafted")
    assert "not a valid tenant id" in str(err.value) and "tenants[0].id" in str(err.value)
    with pytest.raises(TenantConfigError):
        collection_name(crafted, "issues")


def test_tenant_ids_that_differ_only_by_case_are_refused():
    # Qdrant's local mode keeps a folder per collection: on a case-insensitive file system
    # client_Acme_issues and client_acme_issues would be one folder, shared by two tenants.
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.from_mapping(
            {"tenants": [{"id": "acme", "jira": {"url": "sample://a"}}, {"id": "ACME", "jira": {"url": "sample://b"}}]},
            source="t",
        )
    assert "'ACME'" in str(err.value) and "'acme'" in str(err.value) and "case" in str(err.value)


_entities = st.sampled_from([s.name for s in CATALOGUE])
_ids = st.from_regex(TENANT_ID_PATTERN, fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(_ids, _ids, _entities, _entities, st.sampled_from(["plain", "suffix", "prefix"]))
def test_distinct_tenants_never_share_a_collection_name(a, b, e, f, how):
    # Build near-misses on purpose: a tenant id that ends or starts with another's collection suffix.
    if how == "suffix" and len(b) + len(e) < 48:
        a = f"{b}_{e}"
    elif how == "prefix" and len(b) + len(e) < 48:
        a = f"{e}_{b}"
    validate_tenant_id(a)
    if (a, e) != (b, f):
        assert collection_name(a, e) != collection_name(b, f)


def test_a_valid_but_crafted_tenant_id_reaches_only_its_own_collections(env):
    """Tenant '2_issues' is legal; its collections are client_2_issues_<entity>, never
    tenant 2's client_2_issues, even though it reads the very same Jira site."""
    two = env.tenants["2"]
    registry = TenantRegistry.from_mapping(
        {
            "tenants": [
                {"id": "2", "jira": {"url": two.url, "email_env": "T2_JIRA_EMAIL", "token_env": "T2_JIRA_TOKEN"}},
                {
                    "id": "2_issues",
                    "jira": {"url": two.url, "email_env": "T2_JIRA_EMAIL", "token_env": "T2_JIRA_TOKEN"},
                },
            ]
        },
        source="crafted",
    )
    with FakeQdrant(env.tmp / "qdrant-server", api_key=QDRANT_KEY) as qdrant:
        server = {"qdrant": QdrantResource(url=qdrant.url, api_key=QDRANT_KEY)}
        assert materialize(env, "2", resources=server, registry=registry).success
        before = _tenant_state(env, "2", qdrant.url)
        qdrant.log.clear()
        with SqlAudit() as audit:
            assert materialize(env, "2_issues", resources=server, registry=registry).success
        assert qdrant.collections_touched() == {f"client_2_issues_{s.name}" for s in CATALOGUE}
        assert audit.tenant_values() <= {"2_issues", ""}
        assert _tenant_state(env, "2", qdrant.url) == before
