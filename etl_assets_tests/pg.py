"""The database a test runs against: SQLite by default, PostgreSQL when ETL_TEST_DATABASE selects it."""

from __future__ import annotations

from pathlib import Path


def database_url_for_test(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'etl.db'}"
