"""Locate the shared Jira corpus (real captures and the v3 spec) without copying it.

CI lays ``shared/`` beside the clone, so the corpus sits at ``<repo>/../shared/jira-corpus``;
``JIRA_CORPUS_DIR`` overrides that. Tests that need it call :func:`corpus_path`, which
skips with a reason naming the missing folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    override = os.environ.get("JIRA_CORPUS_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "jira-corpus"


def corpus_path(*parts: str) -> Path:
    """Path inside the corpus, or skip the calling test when it is absent."""
    path = corpus_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"Jira corpus file not found: {path} (set JIRA_CORPUS_DIR to its folder)")
    return path


def load_corpus_json(*parts: str) -> Any:
    return json.loads(corpus_path(*parts).read_text(encoding="utf-8"))
