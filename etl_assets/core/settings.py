"""Where the embedded defaults keep their data (``ETL_DATA_DIR``, default ``<project>/.data``)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("ETL_DATA_DIR") or PROJECT_ROOT / ".data")
DEFAULT_DATABASE_URL = f"sqlite:///{DATA_DIR / 'etl.db'}"
DEFAULT_QDRANT_PATH = str(DATA_DIR / "qdrant")
