"""Regenerates the earlier releases' databases that ``test_migrations.py`` upgrades.

    .venv/bin/python etl_assets_tests/data/make_previous_releases.py

For each file below it extracts that release's ``etl_assets`` package with ``git archive``
into a temporary folder and runs this script again (``--worker``) with only that folder
added to ``PYTHONPATH``, so the schema and the rows come from that release's own code:

- ``previous_release.sqlite`` — 6fa6683 (the last release before schema versions):
  ``make_engine`` (its ``create_schema``), then a few batches landed and built with its
  ``land_raw``/``build_table``: live, deleted and quarantined rows, raw history, sync state.
  Stored with 1 KiB pages and vacuumed, so the file stays small.
- ``previous_release_postgresql.sql`` — 6fa6683: the DDL its ``create_all`` sends PostgreSQL.
- ``pre_bigint_postgresql.sql`` — ce1ad33^ (before 64-bit keys): the same, with 32-bit
  serial keys, for migration 2.

The files are committed rather than made at test time because the tests must not depend on
git history being present (a shallow clone, an sdist) or on extracting old code per run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

OUTPUTS = (
    ("6fa6683", "sqlite", "previous_release.sqlite"),
    ("6fa6683", "pg-ddl", "previous_release_postgresql.sql"),
    ("ce1ad33^", "pg-ddl", "pre_bigint_postgresql.sql"),
)

FETCHED_AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _listing(*items: dict) -> list[dict]:
    return list(items)


def _issue(n: int, summary: str, updated: str) -> dict:
    return {
        "id": str(n),
        "key": f"OLD-{n - 99}",
        "fields": {
            "summary": summary,
            "updated": updated,
            "created": "2026-11-01T08:00:00.000+0000",
            "project": {"id": "10", "key": "OLD"},
            "issuetype": {"id": "1", "name": "Bug"},
            "status": {"id": "3", "name": "Done", "statusCategory": {"key": "done", "name": "Done"}},
            "labels": ["legacy"],
        },
    }


def _worker_sqlite(out: Path) -> None:
    from etl_assets.core.entities import ISSUES, PROJECTS, STATUSES, WITS
    from etl_assets.core.jira.client import RawPage

    from etl_assets.core.store import ops
    from etl_assets.core.store.db import make_engine

    def page(path: str, body: object) -> RawPage:
        return RawPage("GET", path, {}, 200, json.dumps(body), FETCHED_AT)

    def projects(*pairs: tuple[str, str]) -> RawPage:
        values = [{"id": i, "key": k, "name": f"{k} project"} for i, k in pairs]
        return page("/rest/api/3/project/search", {"values": values, "isLast": True})

    out.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{out}")
    # Tenant "legacy": one project vanishes in the second full listing (a deleted row).
    ops.land_raw(engine, PROJECTS, "legacy", [projects(("10", "OLD"), ("11", "GONE"))], kind="full")
    ops.build_table(engine, PROJECTS, "legacy")
    ops.land_raw(engine, PROJECTS, "legacy", [projects(("10", "OLD"))], kind="full")
    ops.build_table(engine, PROJECTS, "legacy")
    ops.land_raw(engine, WITS, "legacy", [page("/rest/api/3/issuetype", [{"id": "1", "name": "Bug"}])], kind="full")
    ops.build_table(engine, WITS, "legacy")
    done = {"id": "3", "name": "Done", "statusCategory": {"key": "done", "name": "Done"}}
    ops.land_raw(engine, STATUSES, "legacy", [page("/rest/api/3/status", [done])], kind="full")
    ops.build_table(engine, STATUSES, "legacy")
    issues = [
        _issue(100, "Crash on login", "2026-11-20T10:00:00.000+0000"),
        _issue(101, "Ünïcode summary ✓", "2026-11-21T10:00:00.000+0000"),
        {"key": "OLD-X", "fields": {"summary": "no id"}},  # quarantined
    ]
    ops.land_raw(engine, ISSUES, "legacy", [page("/rest/api/3/search/jql", {"issues": issues})], kind="incremental")
    ops.build_table(engine, ISSUES, "legacy")
    # Tenant "1" (a tenant the tests' fake site serves): a project its site no longer lists.
    ops.land_raw(engine, PROJECTS, "1", [projects(("999", "ZOMBIE"))], kind="full")
    ops.build_table(engine, PROJECTS, "1")
    engine.dispose()

    conn = sqlite3.connect(out)
    conn.execute("PRAGMA journal_mode=DELETE")  # page_size cannot change in WAL mode
    conn.execute("PRAGMA page_size=1024")
    conn.execute("VACUUM")
    conn.close()


def _worker_pg_ddl(out: Path) -> None:
    from sqlalchemy import create_mock_engine

    from etl_assets.core.store import schema

    statements: list[str] = []

    def collect(sql, *_args, **_kwargs) -> None:  # type: ignore[no-untyped-def]
        ddl = str(sql.compile(dialect=engine.dialect)).strip()
        statements.append("\n".join(line.rstrip() for line in ddl.splitlines()) + ";")

    engine = create_mock_engine("postgresql+psycopg2://", collect)
    schema.metadata.create_all(engine, checkfirst=False)
    out.write_text("\n\n".join(statements) + "\n")


def _release_tree(rev: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "etl_assets"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("sqlite", "pg-ddl"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        import etl_assets

        # The point of the exercise: never let the current tree's package stand in for the old one.
        assert not Path(etl_assets.__file__).resolve().is_relative_to(REPO), etl_assets.__file__
        (_worker_sqlite if args.worker == "sqlite" else _worker_pg_ddl)(args.out)
        return
    for rev, kind, name in OUTPUTS:
        with tempfile.TemporaryDirectory(prefix="etl-release-") as tmp:
            _release_tree(rev, Path(tmp))
            env = {**os.environ, "PYTHONPATH": tmp}
            subprocess.run(
                [sys.executable, __file__, "--worker", kind, "--out", str(HERE / name)],
                check=True,
                env=env,
                cwd=tmp,
            )
        sys.stderr.write(f"{name}: {(HERE / name).stat().st_size} bytes from {rev}\n")


if __name__ == "__main__":
    main()
