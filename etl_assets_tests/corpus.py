"""Locate the shared Jira corpus (real captures and the v3 spec) without copying it.

CI lays ``shared/`` beside the clone, so the corpus sits at ``<repo>/../shared/jira-corpus``;
``JIRA_CORPUS_DIR`` overrides that. Tests that need it call :func:`corpus_path`, which
skips with a reason naming the missing path — except under ``CI=true``, where a missing
corpus is a failure: CI has it, so its absence means the tests are not running what they should.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    override = os.environ.get("JIRA_CORPUS_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "jira-corpus"


def running_in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() in ("true", "1")


def corpus_path(*parts: str) -> Path:
    """Path inside the corpus; when it is absent, skip the calling test (fail it under CI=true)."""
    path = corpus_dir().joinpath(*parts)
    if not path.exists():
        message = f"Jira corpus file not found: {path} (set JIRA_CORPUS_DIR to its folder)"
        if running_in_ci():
            pytest.fail(f"{message} — CI=true, and CI must run the tests that read the corpus", pytrace=False)
        pytest.skip(message)
    return path


def load_corpus_json(*parts: str) -> Any:
    return json.loads(corpus_path(*parts).read_text(encoding="utf-8"))
