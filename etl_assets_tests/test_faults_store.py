"""The stores failing: Qdrant unreachable or failing in the middle of an upsert batch, the
database unreachable or refusing a transaction (while landing raw pages, and at COMMIT).
Each fails the steps that need the store, loses no committed row, and one more
materialization after the fault converges exactly.

Qdrant faults run against :class:`FakeQdrant`, a loopback Qdrant REST server over
qdrant-client's local engine, so the real REST client, its errors and the server-only
code paths (payload indexes) are exercised; the store's refusals are real database
errors, raised by triggers the tests install.
"""

from __future__ import annotations

import re
import socket

import dagster as dg
import pytest
from sqlalchemy import create_engine, select, text

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.store import schema
from etl_assets.core.store.db import make_engine
from etl_assets.defs.resources import DatabaseResource, EmbeddingsResource, QdrantResource
from etl_assets.fakes.loopback import Fault
from etl_assets.fakes.qdrant_server import FakeQdrant
from etl_assets_tests.conftest import TEST_DIMENSIONS
from etl_assets_tests.convergence import (
    assert_converged,
    convergence_problems,
    failure_texts,
    materialize,
    read_points,
    steps,
)

VECTOR_STEPS = {f"vectors__{s.name}_vectors" for s in CATALOGUE}
TABLE_STEPS = {f"tables__{s.name}_table" for s in CATALOGUE if s.parent is None}  # children: their parent's step
DB_PASSWORD = "db-password-SECRETVALUE"

# Store faults are about the database itself: every backend runs them, even when the test matrix is
# split (conftest.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),
    pytest.mark.both_backends,
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_batches(env) -> dict[str, object]:
    # Many small embedding requests, so an issues sync makes many upserts to fail between.
    return {
        "embeddings": EmbeddingsResource(
            provider="openai",
            api_key="sk-test-embeddings-secret",
            base_url=env.embeddings.url,
            dimensions=TEST_DIMENSIONS,
            max_retries=2,
            batch_inputs=3,
            concurrency=2,
        )
    }


# -- Qdrant ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # the database is not what this fault is about
def test_qdrant_unreachable_fails_the_vector_steps_and_loses_no_row(env):
    url = f"http://127.0.0.1:{_closed_port()}"
    result = materialize(env, "1", resources={"qdrant": QdrantResource(url=url)})
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == VECTOR_STEPS
    for message in texts.values():
        assert f"QDRANT_URL={url}" in message and "connection attempts failed" in message.lower(), message
        assert "ResponseHandlingException" in message, message  # qdrant-client's error, kept as the cause
    assert steps(result, dg.DagsterEventType.STEP_SUCCESS) >= TABLE_STEPS
    assert env.embeddings.requests == 0, "nothing may be embedded for a store that cannot take it"
    table_problems = [p for p in convergence_problems(env, "1") if not p.startswith("client_1_")]
    assert table_problems == [], "the tables must be exact although Qdrant was down"
    assert env.materialize("1").success  # Qdrant back (here: the local folder)
    assert_converged(env, "1")


def _fail_issue_upsert(fake: FakeQdrant, kind: str, after: int):
    def verdict(collection: str, before: int) -> bool:
        if collection != "client_1_issues" or before < after:
            return False
        if kind == "503":
            return True
        if before == after:  # the next upsert of this collection loses its connection
            fake.faults.append(Fault.reset(path=f"/collections/{collection}/points", method="PUT"))
        return False

    return verdict


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("kind", ["503", "reset"])
def test_qdrant_failing_mid_upsert_leaves_only_valid_points_then_converges(env, kind):
    with FakeQdrant(env.tmp / "qdrant-server", api_key="qdrant-key-SECRETVALUE") as fake:
        qdrant = {"qdrant": QdrantResource(url=fake.url, api_key="qdrant-key-SECRETVALUE")}
        fake.fail_upsert = _fail_issue_upsert(fake, kind, after=3)
        result = materialize(env, "1", resources={**qdrant, **_small_batches(env)})
        assert not result.success
        texts = failure_texts(result)
        assert set(texts) == {"vectors__issues_vectors"}, texts
        message = texts["vectors__issues_vectors"]
        assert f"QDRANT_URL={fake.url}" in message, message
        if kind == "503":
            assert "UnexpectedResponse" in message and "503" in message and "update queue is full" in message, message
        else:  # the transport error under qdrant-client's wrapper reaches the message
            assert "failed: ResponseHandlingException (ReadError)" in message, message
        assert "qdrant-key-SECRETVALUE" not in message
        assert fake.upserts["client_1_issues"] > 3

        # What was written before the failure is valid; only points are missing.
        stored = read_points(env, qdrant_url=fake.url, qdrant_api_key="qdrant-key-SECRETVALUE")
        assert 0 < len(stored["client_1_issues"]["points"])
        problems = convergence_problems(env, "1", qdrant_url=fake.url, qdrant_api_key="qdrant-key-SECRETVALUE")
        assert problems
        # Only points are missing: whole rows, or the last chunks of a row whose write failed part way.
        missing = re.compile(
            r"^client_1_issues: (live row \d+ has no point|row \d+ is missing chunks \[[\d, ]+\] of \d+)$"
        )
        assert [p for p in problems if not missing.match(p)] == []

        fake.fail_upsert = None
        assert materialize(env, "1", resources=qdrant).success
        assert_converged(env, "1", qdrant_url=fake.url, qdrant_api_key="qdrant-key-SECRETVALUE")
        assert {c for c in fake.collections_touched()} == {f"client_1_{s.name}" for s in CATALOGUE}


# -- the database ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # the unreachable database is given by each case
@pytest.mark.parametrize("kind", ["postgres-closed-port", "sqlite-folder-that-cannot-be-made"])
def test_unreachable_database_fails_before_any_work(env, kind):
    if kind == "postgres-closed-port":
        port = _closed_port()
        url, where = f"postgresql+psycopg2://etl:{DB_PASSWORD}@127.0.0.1:{port}/etl", f"127.0.0.1:{port}"
    else:
        blocker = env.tmp / "not-a-folder"
        blocker.write_text("a file where the database folder should be")
        url, where = f"sqlite:///{blocker}/sub/etl.db", str(blocker)
    jira_before = env.tenants["1"].server.requests_received
    result = materialize(env, "1", resources={"database": DatabaseResource(url=url)})
    assert not result.success
    texts = failure_texts(result)
    assert texts
    for message in texts.values():
        assert "DATABASE_URL" in message and "cannot be opened" in message and where in message, message
        assert DB_PASSWORD not in message
    assert env.tenants["1"].server.requests_received == jira_before, "nothing may be fetched without a database"
    assert not steps(result, dg.DagsterEventType.STEP_SUCCESS)
    assert env.materialize("1").success
    assert_converged(env, "1")


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def _refuse_commit_of_issues(url: str) -> tuple[str, str]:
    """A refusal that comes at COMMIT, after every statement of the table transaction ran."""
    if url.startswith("sqlite"):
        # A deferred foreign key is checked at COMMIT; the trigger breaks one when the table
        # step marks its batch consumed (its last write).
        _execute(
            url,
            "CREATE TABLE fault_parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE fault_child (parent_id INTEGER REFERENCES fault_parent(id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER fault_refuse_commit AFTER UPDATE OF consumed_at ON raw_batches "
            "WHEN NEW.entity = 'issues' BEGIN INSERT INTO fault_child VALUES (-1); END",
        )
        return "FOREIGN KEY constraint failed", "DROP TRIGGER fault_refuse_commit"
    _execute(
        url,
        "CREATE FUNCTION fault_refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected: the database refused the commit'; END $$",
        "CREATE CONSTRAINT TRIGGER fault_refuse_commit AFTER UPDATE ON raw_batches DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW WHEN (NEW.entity = 'issues') EXECUTE FUNCTION fault_refuse_commit()",
    )
    return "injected: the database refused the commit", "DROP TRIGGER fault_refuse_commit ON raw_batches"


def _refuse_raw_pages_of_projects(url: str) -> tuple[str, str]:
    if url.startswith("sqlite"):
        _execute(
            url,
            "CREATE TRIGGER fault_refuse_landing BEFORE INSERT ON raw_jira_pages WHEN NEW.entity = 'projects' "
            "BEGIN SELECT RAISE(ABORT, 'injected: the database refused the raw pages'); END",
        )
        return "injected: the database refused the raw pages", "DROP TRIGGER fault_refuse_landing"
    _execute(
        url,
        "CREATE FUNCTION fault_refuse_landing() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected: the database refused the raw pages'; END $$",
        "CREATE TRIGGER fault_refuse_landing BEFORE INSERT ON raw_jira_pages FOR EACH ROW "
        "WHEN (NEW.entity = 'projects') EXECUTE FUNCTION fault_refuse_landing()",
    )
    return "injected: the database refused the raw pages", "DROP TRIGGER fault_refuse_landing ON raw_jira_pages"


def _snapshot(url: str, table, tenant_id: str = "1") -> dict[str, tuple]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = {
            r.external_id: (r.content_hash, r.deleted_at, r.synced_at, r.summary)
            for r in conn.execute(select(table).where(table.c.tenant_id == tenant_id))
        }
        s = schema.sync_state
        state = conn.execute(select(s).where(s.c.tenant_id == tenant_id, s.c.entity == table.name)).all()
        batches = conn.execute(
            select(schema.raw_batches.c.id, schema.raw_batches.c.entity, schema.raw_batches.c.consumed_at)
        ).all()
    engine.dispose()
    return {"rows": rows, "state": sorted(map(tuple, state)), "batches": batches}


def _assert_refused_at(result, step: str, refusal: str, *, downstream: str) -> None:  # type: ignore[no-untyped-def]
    """The run failed at ``step`` alone, with the database's refusal, and ``downstream`` never started."""
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == {step}
    assert refusal in texts[step]
    assert downstream not in steps(result, dg.DagsterEventType.STEP_START)


def test_commit_refused_by_the_database_leaves_the_table_as_it_was_then_converges(env):
    assert env.materialize("1").success
    site = env.tenants["1"].site
    site.touch_issue(site.issues[0]["key"], summary="Changed before the refused commit")
    added = site.add_issue(site.issues[0]["fields"]["project"]["key"], summary="Added before the refused commit")
    before = _snapshot(env.database_url, ISSUES.table)
    refusal, undo = _refuse_commit_of_issues(env.database_url)
    embedded_before = env.embeddings.requests

    _assert_refused_at(
        env.materialize("1", raise_on_error=False),
        "tables__issues_table",
        refusal,
        downstream="vectors__issues_vectors",
    )
    after = _snapshot(env.database_url, ISSUES.table)
    assert after["rows"] == before["rows"], "a refused commit must leave every row as it was"
    assert after["state"] == before["state"], "the watermark belongs to the same transaction"
    pending = [b for b in after["batches"] if b.entity == "issues" and b.consumed_at is None]
    assert len(pending) == 1, "the landed batch stays pending for the next run"
    assert added["id"] not in after["rows"]
    assert env.embeddings.requests == embedded_before

    _execute(env.database_url, undo)
    assert env.materialize("1").success
    assert_converged(env, "1")


def test_raw_landing_refused_by_the_database_lands_nothing_then_converges(env):
    make_engine(env.database_url).dispose()  # the schema, for the trigger to attach to
    refusal, undo = _refuse_raw_pages_of_projects(env.database_url)
    _assert_refused_at(
        env.materialize("1", raise_on_error=False),
        "jira__raw__raw_jira_projects",
        refusal,
        downstream="tables__projects_table",
    )
    landed = _snapshot(env.database_url, ISSUES.table)["batches"]
    assert not [b for b in landed if b.entity == "projects"], "the batch row and its pages go together, or neither"
    _execute(env.database_url, undo)
    assert env.materialize("1").success
    assert_converged(env, "1")
