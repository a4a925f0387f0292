"""Schema versions: databases made by earlier releases upgrade themselves on first use.

The earlier databases are files in ``data/`` made by those releases' own code (see
``data/make_previous_releases.py``): a SQLite database with rows from 6fa6683, and the
PostgreSQL DDL of 6fa6683 and of the release before 64-bit keys.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, event, inspect, select, text

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.permissions import RESTRICTED, Holder, PermissionSnapshot, compute_access
from etl_assets.core.records import RawPage
from etl_assets.core.sources.jira.parsers import parse_issue
from etl_assets.core.sources.jira.permission_tables import issue_facts
from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS
from etl_assets.core.store import migrations, ops, schema
from etl_assets.core.store.db import make_engine
from etl_assets.core.store.migrations import HEAD_VERSION, Migration, schema_version
from etl_assets.fakes.github_server import expected_rows
from etl_assets_tests.conftest import running_fakes
from etl_assets_tests.pg import database_url_for_test, test_backends

# About the database itself: every backend runs it, even when the test matrix is split (conftest.py).
pytestmark = pytest.mark.both_backends

DATA = Path(__file__).parent / "data"
# The tables of release 6fa6683: every row in them must survive the upgrade unchanged.
PREVIOUS_TABLES = (
    "raw_batches",
    "raw_jira_pages",
    "rejected_records",
    "sync_state",
    "projects",
    "wits",
    "statuses",
    "issues",
)
INT32_MAX = 2**31 - 1


def previous_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "previous.sqlite"
    shutil.copy(DATA / "previous_release.sqlite", path)
    return f"sqlite:///{path}"


def postgres_url(tmp_path: Path, label: str) -> str:
    if "postgres" not in test_backends():
        pytest.skip("PostgreSQL is not among ETL_TEST_BACKENDS")
    return database_url_for_test(tmp_path, "postgres", label)


def run_ddl(url: str, ddl_file: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in (DATA / ddl_file).read_text().split(";\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    engine.dispose()


V3_ISSUE_COLUMNS = (
    "links",
    "attachments",
    "history",
    "resolved_at",
    "status_changed_at",
    "custom_fields",
    "comments_total",
    "comments_incomplete",
)
# Version 4: why a long changelog arrived incomplete; version 5: what access depends on.
ADDED_ISSUE_COLUMNS = (*V3_ISSUE_COLUMNS, "history_incomplete", "access_facts")


def without_v3(snap: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``snap`` without the issue columns versions 3 and 4 added (to compare with the previous release's rows)."""
    return {
        name: [{k: v for k, v in row.items() if name != "issues" or k not in ADDED_ISSUE_COLUMNS} for row in rows]
        for name, rows in snap.items()
    }


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the previous release's tables, as reflected from the database itself."""
    out = {}
    with engine.connect() as conn:
        for name in PREVIOUS_TABLES:
            table = Table(name, MetaData(), autoload_with=conn)
            rows = conn.execute(select(table).order_by(*table.primary_key.columns))
            out[name] = [dict(r._mapping) for r in rows]
    return out


def history(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(schema.schema_version.c.version).order_by(schema.schema_version.c.version)).scalars()
        )


def page(body: object) -> RawPage:
    return RawPage("GET", "/x", {}, 200, json.dumps(body), datetime.now(UTC))


def land_rows(engine: Engine, tenant_id: str, first_issue: int) -> None:
    projects = [{"id": "10", "key": "OLD", "name": "Old"}, {"id": "11", "key": "TWO", "name": "Two"}]
    ops.land_raw(engine, PROJECTS, tenant_id, [page({"values": projects, "isLast": True})], kind="full")
    ops.build_table(engine, PROJECTS, tenant_id)
    issues = [
        {
            "id": str(n),
            "key": f"OLD-{n}",
            "fields": {"summary": f"issue {n}", "updated": "2026-11-20T10:00:00.000+0000"},
        }
        for n in range(first_issue, first_issue + 3)
    ]
    # The previous release's issues: its table as the database has it, without comments.
    with engine.connect() as conn:
        old_table = Table("issues", MetaData(), autoload_with=conn)
    columns = set(old_table.c.keys())
    old_issues = dataclasses.replace(
        ISSUES,
        table=old_table,
        children=(),
        parts=(),
        parse=lambda record: {k: v for k, v in parse_issue(record).items() if k in columns},
    )
    ops.land_raw(engine, old_issues, tenant_id, [page({"issues": issues})], kind="incremental")
    ops.build_table(engine, old_issues, tenant_id)


class StatementLog:
    """The SQL an engine sends, to show that a second upgrade only reads."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        self.statements.append(statement)

    def writes(self) -> list[str]:
        verbs = ("CREATE", "ALTER", "INSERT", "UPDATE", "DELETE", "DROP", "BEGIN")
        return [s for s in self.statements if s.lstrip().upper().startswith(verbs) or "advisory" in s]


# -- SQLite: the file the previous release made -----------------------------------------------


def test_previous_release_sqlite_upgrades_and_keeps_every_row(tmp_path):
    url = previous_sqlite(tmp_path)
    plain = make_engine(url, create=False)
    assert schema_version(plain) == migrations.BASELINE_VERSION
    assert not inspect(plain).has_table("schema_version")
    before = snapshot(plain)
    assert len(before["projects"]) == 3 and len(before["issues"]) == 2 and len(before["rejected_records"]) == 1
    plain.dispose()

    engine = make_engine(url)
    assert schema_version(engine) == HEAD_VERSION
    assert history(engine) == [m.version for m in migrations.MIGRATIONS]
    after = snapshot(engine)
    # Versions 3 to 5 added issue columns (links, history, comment counts, access facts): NULL on the old rows.
    added = set(after["issues"][0]) - set(before["issues"][0])
    assert added == set(ADDED_ISSUE_COLUMNS)
    assert all(row[c] is None for row in after["issues"] for c in added)
    after["issues"] = [{k: v for k, v in row.items() if k not in added} for row in after["issues"]]
    assert after == before
    assert inspect(engine).has_table("comments")
    assert ops.count_rows(engine, PROJECTS, "legacy") == 1
    assert ops.count_rows(engine, PROJECTS, "legacy", live=False) == 1
    assert ops.read_sync_state(engine, "legacy", "issues").watermark == datetime(2026, 11, 21, 10, tzinfo=UTC)

    log = StatementLog(engine)
    assert migrations.upgrade(engine) == []
    assert log.statements, "the check must have read the database"
    assert log.writes() == [], "an up-to-date database must be left alone, without taking the lock"
    assert history(engine) == [m.version for m in migrations.MIGRATIONS]
    engine.dispose()


def test_previous_release_sqlite_syncs_and_vectorizes_after_the_upgrade(tmp_path, monkeypatch):
    """The whole graph for a tenant on the upgraded file: its old rows converge, others stay."""
    url = previous_sqlite(tmp_path)
    plain = make_engine(url, create=False)
    legacy_before = {
        name: [r for r in rows if r.get("tenant_id") == "legacy"] for name, rows in snapshot(plain).items()
    }
    plain.dispose()
    with running_fakes(tmp_path, url, sizes=((4, 8), (2, 3))) as env:
        for name, value in env.environ.items():
            monkeypatch.setenv(name, value)
        result = env.materialize("1")
        assert result.success
        site = env.tenants["1"].site
    engine = make_engine(url, create=False)
    assert schema_version(engine) == HEAD_VERSION
    expected = {"projects": len(site.projects), "wits": len(site.issue_types), "statuses": len(site.statuses)}
    expected["issues"] = len(site.issues)
    github = env.tenants["1"].github
    expected |= {s.name: len(expected_rows(github, s.name)) for s in CATALOGUE if s.source == "github"}
    comments = [c for i in site.issues for c in i["fields"]["comment"]["comments"]]
    expected["comments"] = len(comments)  # restricted ones too: their access list limits who finds them
    for spec in CATALOGUE:
        if spec.parent is not None:  # committed by its parent's table step
            vector_meta = result.asset_materializations_for_node(f"vectors__{spec.name}_vectors")[0].metadata
            assert ops.count_rows(engine, spec, "1") == vector_meta["rows_live"].value == expected[spec.name]
            continue
        table_meta = result.asset_materializations_for_node(f"tables__{spec.name}_table")[0].metadata
        vector_meta = result.asset_materializations_for_node(f"vectors__{spec.name}_vectors")[0].metadata
        assert ops.count_rows(engine, spec, "1") == expected[spec.name], spec.name
        assert vector_meta["rows_live"].value == table_meta["live_rows"].value == expected[spec.name], spec.name
    # The project only the old database had is gone from tenant 1's site: marked deleted, kept.
    projects = spec_rows(engine, "projects", "1")
    assert projects["999"]["deleted_at"] is not None
    after = without_v3(snapshot(engine))
    assert {name: [r for r in rows if r.get("tenant_id") == "legacy"] for name, rows in after.items()} == legacy_before
    engine.dispose()


def spec_rows(engine: Engine, table: str, tenant_id: str) -> dict[str, dict[str, Any]]:
    t = schema.metadata.tables[table]
    with engine.connect() as conn:
        return {r.external_id: dict(r._mapping) for r in conn.execute(select(t).where(t.c.tenant_id == tenant_id))}


# -- PostgreSQL: the previous releases' DDL ----------------------------------------------------


def sequence_types(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            table: conn.execute(
                text(
                    "SELECT format_type(seqtypid, NULL) FROM pg_sequence "
                    "WHERE seqrelid = to_regclass(pg_get_serial_sequence(:t, 'id'))"
                ),
                {"t": table},
            ).scalar_one()
            for table in ("raw_batches", "raw_jira_pages", "rejected_records", "projects", "wits", "statuses", "issues")
        }


HAND_ALTER = """ALTER TABLE raw_batches ALTER COLUMN id TYPE bigint;
ALTER TABLE raw_jira_pages ALTER COLUMN id TYPE bigint, ALTER COLUMN batch_id TYPE bigint;
ALTER TABLE rejected_records ALTER COLUMN id TYPE bigint, ALTER COLUMN batch_id TYPE bigint;
ALTER TABLE projects ALTER COLUMN id TYPE bigint;
ALTER TABLE wits ALTER COLUMN id TYPE bigint;
ALTER TABLE statuses ALTER COLUMN id TYPE bigint;
ALTER TABLE issues ALTER COLUMN id TYPE bigint"""


@pytest.mark.parametrize(
    ("ddl_file", "hand_altered"),
    [
        ("previous_release_postgresql.sql", False),
        ("pre_bigint_postgresql.sql", False),
        # What docs/deploy.md told operators to run: columns widened, sequences still 32-bit.
        ("pre_bigint_postgresql.sql", True),
    ],
    ids=["6fa6683", "pre-bigint", "pre-bigint-hand-altered"],
)
def test_previous_postgresql_schemas_upgrade_to_64_bit_keys(tmp_path, ddl_file, hand_altered):
    url = postgres_url(tmp_path, f"mig-{ddl_file[:8]}-{hand_altered}")
    run_ddl(url, ddl_file)
    plain = make_engine(url, create=False)
    land_rows(plain, "legacy", 100)
    if hand_altered:
        with plain.begin() as conn:
            for statement in HAND_ALTER.split(";\n"):
                conn.exec_driver_sql(statement)
    # The next issue key is past 32 bits: only a BIGINT column fed by a bigint sequence takes it.
    with plain.begin() as conn:
        conn.execute(text("SELECT setval(pg_get_serial_sequence('issues', 'id'), :v)"), {"v": INT32_MAX})
    before = snapshot(plain)
    assert schema_version(plain) == migrations.BASELINE_VERSION
    plain.dispose()

    engine = make_engine(url)
    assert schema_version(engine) == HEAD_VERSION
    assert history(engine) == [m.version for m in migrations.MIGRATIONS]
    assert without_v3(snapshot(engine)) == before
    keys = {(t, c) for t, cols in migrations._V2_KEY_COLUMNS.items() for c in cols}
    insp = inspect(engine)
    for table, column in keys:
        types = {c["name"]: str(c["type"]) for c in insp.get_columns(table)}
        assert types[column] == "BIGINT", (table, column)
    assert set(sequence_types(engine).values()) == {"bigint"}

    land_rows(engine, "legacy", 200)
    ids = {r["external_id"]: r["id"] for r in spec_rows(engine, "issues", "legacy").values()}
    assert min(ids[str(n)] for n in (200, 201, 202)) > INT32_MAX
    assert len(ids) == 6

    log = StatementLog(engine)
    assert migrations.upgrade(engine) == []
    assert log.writes() == []
    engine.dispose()


# -- both backends -------------------------------------------------------------------------------


@pytest.fixture
def fresh_url(tmp_path, backend, request) -> str:
    return database_url_for_test(tmp_path, backend, f"mig-{request.node.name[:40]}")


def test_a_fresh_database_is_created_at_the_head_version(fresh_url):
    plain = make_engine(fresh_url, create=False)
    assert schema_version(plain) == 0
    plain.dispose()
    engine = make_engine(fresh_url)
    assert schema_version(engine) == HEAD_VERSION
    assert history(engine) == [m.version for m in migrations.MIGRATIONS]
    assert set(schema.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_parallel_first_starts_upgrade_once(tmp_path, backend):
    """Step processes start together on an old database: one migrates, the rest find it done."""
    if backend == "sqlite":
        url = previous_sqlite(tmp_path)
    else:
        url = postgres_url(tmp_path, "mig-parallel")
        run_ddl(url, "pre_bigint_postgresql.sql")
        plain = make_engine(url, create=False)
        land_rows(plain, "legacy", 100)
        plain.dispose()
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    applied: list[list[int]] = []

    def first_start() -> None:
        engine = create_engine(url) if backend == "postgres" else make_engine(url, create=False)
        try:
            start.wait()
            applied.append(migrations.upgrade(engine))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=first_start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(applied, key=len) == [[], [], [], [m.version for m in migrations.MIGRATIONS]]
    engine = make_engine(url, create=False)
    assert history(engine) == [m.version for m in migrations.MIGRATIONS]
    engine.dispose()


def test_a_new_migration_adds_a_column_to_tables_with_rows(fresh_url):
    """The recipe in docs/deploy.md: append a Migration that adds a column (and an index)."""
    engine = make_engine(fresh_url)
    land_rows(engine, "t", 1)

    def add_source(conn) -> None:  # type: ignore[no-untyped-def]
        migrations.add_column_if_missing(
            conn, "projects", Column("source", String(32), nullable=False, server_default="jira")
        )
        migrations.add_column_if_missing(conn, "not_created_yet", Column("source", String(32)))
        migrations.create_index_if_missing(conn, "projects", "ix_projects_source", "tenant_id", "source")

    later = (*migrations.MIGRATIONS, Migration(HEAD_VERSION + 1, "test: projects.source", add_source))
    assert migrations.upgrade(engine, migrations=later) == [HEAD_VERSION + 1]
    assert schema_version(engine) == HEAD_VERSION + 1
    with engine.connect() as conn:
        sources = conn.execute(text("SELECT source FROM projects ORDER BY id")).scalars().all()
    assert sources == ["jira", "jira"]
    assert "ix_projects_source" in {ix["name"] for ix in inspect(engine).get_indexes("projects")}
    assert not inspect(engine).has_table("not_created_yet")
    assert migrations.upgrade(engine, migrations=later) == []
    # Repeating the migration itself (a recorded version lost, a hand-run change) changes nothing.
    with engine.begin() as conn:
        add_source(conn)
    engine.dispose()


def test_v5_adds_access_facts_and_rows_from_before_it_fail_safe(fresh_url):
    """Version 5: issues.access_facts and comments.access_facts. A database at version 4 keeps its
    rows; their facts read as unknown (security not known: access fails safe) until the issue
    sync writes the issue again."""
    engine = make_engine(fresh_url)
    issue = {
        "id": "1",
        "key": "OLD-1",
        "fields": {
            "summary": "issue 1",
            "updated": "2026-11-20T10:00:00.000+0000",
            "project": {"id": "10", "key": "OLD"},
            "security": {"id": "3000", "name": "Internal"},
            "reporter": {"accountId": "acc-r", "displayName": "R"},
            "comment": {
                "comments": [
                    {"id": "7", "body": "fine", "visibility": {"type": "group", "identifier": "g-1", "value": "eng"}},
                    {"id": "8", "body": "open"},
                ],
                "total": 2,
            },
        },
    }
    ops.land_raw(engine, ISSUES, "t", [page({"issues": [issue]})], kind="incremental")
    ops.build_table(engine, ISSUES, "t")
    # Back to version 4: the columns gone and the row hashes without them (as a version-4 release
    # left them), version 5 unrecorded.
    with engine.begin() as conn:
        for table in ("issues", "comments"):
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN access_facts")
            conn.exec_driver_sql(f"UPDATE {table} SET content_hash = 'hash of a version-4 row'")
        conn.execute(schema.schema_version.delete().where(schema.schema_version.c.version == 5))
    assert schema_version(engine) == 4

    assert migrations.upgrade(engine) == [5]
    assert schema_version(engine) == HEAD_VERSION
    for table in ("issues", "comments"):
        assert "access_facts" in {c["name"] for c in inspect(engine).get_columns(table)}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT access_facts FROM issues")).scalars().all() == [None]
        assert conn.execute(text("SELECT access_facts FROM comments")).scalars().all() == [None, None]
        old = issue_facts(conn, "t")
    assert [(f.key, f.project_id, f.security_known, f.security_level_id) for f in old] == [("OLD-1", "10", False, None)]
    # the comment's visibility still comes from the version-3 column, by name
    assert [(c.id, c.visibility_type, c.visibility_value) for c in old[0].comments] == [
        ("7", "group", "eng"),
        ("8", None, None),
    ]
    # fail safe: a level that may exist unseen restricts the issue and its comments to operators
    snap = PermissionSnapshot(project_schemes={"10": "s"}, schemes={"s": [("BROWSE_PROJECTS", Holder("anyone"))]})
    assert {k: a.principals for k, a in compute_access(snap, old).items()} == {
        "issue:1": (RESTRICTED,),
        "comment:7": (RESTRICTED,),
        "comment:8": (RESTRICTED,),
    }

    # the next sync of the issue writes its facts (the rows change; nothing else does)
    ops.land_raw(engine, ISSUES, "t", [page({"issues": [issue]})], kind="incremental")
    ops.build_table(engine, ISSUES, "t")
    with engine.connect() as conn:
        new = issue_facts(conn, "t")
    assert [(f.security_known, f.security_level_id, f.reporter) for f in new] == [(True, "3000", "acc-r")]
    assert [(c.id, c.visibility_type, c.visibility_id) for c in new[0].comments] == [
        ("7", "group", "g-1"),
        ("8", None, None),
    ]
    assert migrations.upgrade(engine) == []
    with engine.begin() as conn:  # repeating the migration changes nothing
        migrations.MIGRATIONS[4].apply(conn)
    engine.dispose()


def test_a_failed_migration_leaves_the_previous_version(fresh_url):
    engine = make_engine(fresh_url)
    land_rows(engine, "t", 1)

    def half_done(conn) -> None:  # type: ignore[no-untyped-def]
        migrations.add_column_if_missing(conn, "projects", Column("source", String(32)))
        raise RuntimeError("migration failed half-way")

    later = (*migrations.MIGRATIONS, Migration(HEAD_VERSION + 1, "test: fails", half_done))
    with pytest.raises(RuntimeError, match="half-way"):
        migrations.upgrade(engine, migrations=later)
    assert schema_version(engine) == HEAD_VERSION
    assert "source" not in {c["name"] for c in inspect(engine).get_columns("projects")}
    assert ops.count_rows(engine, PROJECTS, "t") == 2
    engine.dispose()


def test_a_column_without_a_default_is_refused_for_existing_rows(fresh_url):
    engine = make_engine(fresh_url)
    with engine.begin() as conn, pytest.raises(ValueError, match="projects.source"):
        migrations.add_column_if_missing(conn, "projects", Column("source", String(32), nullable=False))
    engine.dispose()


def test_a_database_newer_than_the_code_is_left_alone(fresh_url, caplog):
    engine = make_engine(fresh_url)
    with engine.begin() as conn:
        conn.execute(
            schema.schema_version.insert().values(
                version=HEAD_VERSION + 1, description="future", applied_at=datetime.now(UTC)
            )
        )
    log = StatementLog(engine)
    with caplog.at_level(logging.WARNING, logger="etl_assets.core.store.migrations"):
        assert migrations.upgrade(engine) == []
    assert log.writes() == []
    assert "newer than this code's" in caplog.text
    assert schema_version(engine) == HEAD_VERSION + 1
    engine.dispose()
