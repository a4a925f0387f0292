"""What a mutation audit found the suite could not tell apart, now told apart quickly.

* Hypothesis runs derandomized under CI (a failure found by a random example passed or
  failed by luck), and a missing Jira corpus fails CI instead of skipping.
* A 429 without ``retry-after`` waits for the reset its headers announce: measured with the
  budget deaf to headers, since the shared budget (which also reads them) made the wait look
  right even when the 429 handling ignored the hint.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from hypothesis import settings

from etl_assets.core.embeddings.base import EmbeddingStats
from etl_assets.core.embeddings.openai_provider import open_openai_embedder
from etl_assets.core.embeddings.ratelimit import RateLimiter, RateLimitInfo
from etl_assets.fakes.loopback import Fault
from etl_assets.fakes.openai_server import FakeEmbeddings, fake_vector
from etl_assets_tests.conftest import hypothesis_profile
from etl_assets_tests.corpus import corpus_path, running_in_ci

# -- hypothesis profiles -----------------------------------------------------------------------------


def test_ci_runs_hypothesis_derandomized_and_a_variable_can_choose_the_profile():
    assert hypothesis_profile({"CI": "true"}) == "ci"
    assert hypothesis_profile({"CI": "true", "HYPOTHESIS_PROFILE": "dev"}) == "dev"
    assert hypothesis_profile({"HYPOTHESIS_PROFILE": "ci"}) == "ci"
    assert hypothesis_profile({}) == hypothesis_profile({"CI": "false"}) == "dev"
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.deadline is None and ci.print_blob and ci.max_examples == 100
    assert not settings.get_profile("dev").derandomize
    # The profile loaded for this session reaches the suite's own @settings (they set no derandomize).
    from etl_assets_tests.test_bad_input import PROPERTY

    loaded = settings.get_profile(hypothesis_profile(os.environ))
    assert PROPERTY.derandomize == settings.default.derandomize == loaded.derandomize


# -- the shared corpus ----------------------------------------------------------------------------------


def _outcome_of_missing_corpus() -> BaseException:
    # Caught here, both kinds: a skip escaping this test would hide exactly the failure it is about.
    try:
        corpus_path("go-jira", "all_projects.json")
    except (pytest.fail.Exception, pytest.skip.Exception) as exc:
        return exc
    raise AssertionError("corpus_path returned a path that does not exist")


def test_a_missing_corpus_fails_under_ci_naming_the_path_and_skips_elsewhere(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("JIRA_CORPUS_DIR", str(tmp_path / "no-corpus"))
    missing = tmp_path / "no-corpus" / "go-jira" / "all_projects.json"
    monkeypatch.setenv("CI", "true")
    assert running_in_ci()
    failed = _outcome_of_missing_corpus()
    assert isinstance(failed, pytest.fail.Exception), f"CI=true must fail, not {type(failed).__name__}"
    assert str(missing) in str(failed) and "JIRA_CORPUS_DIR" in str(failed)
    monkeypatch.delenv("CI")
    skipped = _outcome_of_missing_corpus()
    assert isinstance(skipped, pytest.skip.Exception) and str(missing) in str(skipped)


# -- a 429 without retry-after ---------------------------------------------------------------------------

DIMS = 8
MODEL = "text-embedding-3-small"
RESET_S = 1.0  # longer than any first backoff (at most 0.5 s), so only the hint can explain the wait
FIRST_BACKOFF_MAX_S = 0.5


class _DeafBudget(RateLimiter):
    """The real budget, deaf to response headers: whatever waits after a 429 is the 429 handling's
    own decision (the budget reads x-ratelimit-* too, and its pause hid whether that decision did)."""

    def observe(self, info: RateLimitInfo) -> None:
        return None


def _wait_after_one_429(headers: dict[str, str]) -> tuple[float, EmbeddingStats]:
    with FakeEmbeddings(dimensions=DIMS) as fake:
        body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        fake.faults.append(Fault.respond(429, body, headers))

        async def go() -> tuple[float, EmbeddingStats]:
            async with open_openai_embedder(
                api_key="sk-test", model=MODEL, dimensions=DIMS, base_url=fake.url, limiter=_DeafBudget(margin_s=0.0)
            ) as embedder:
                embedder.count_tokens("warm up")  # loads the tokenizer outside the measured wait
                started = time.monotonic()
                assert await embedder.embed(["x"]) == [fake_vector("x", DIMS)]
                return time.monotonic() - started, embedder.stats.copy()

        return asyncio.run(go())


def test_429_without_retry_after_waits_for_the_exhausted_reset_not_a_backoff():
    hinted, stats = _wait_after_one_429(
        {
            "x-ratelimit-limit-requests": "1000",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{int(RESET_S * 1000)}ms",
        }
    )
    assert (stats.rate_limited, stats.retries, stats.requests) == (1, 1, 1)
    assert RESET_S - 0.02 <= hinted < RESET_S + 1.5, f"waited {hinted:.3f}s, the reset said {RESET_S}s"
    # Without any hint the same 429 is retried after the first backoff: a wait the hint cannot be mistaken for.
    unhinted, stats = _wait_after_one_429({})
    assert stats.rate_limited == 1
    assert unhinted < FIRST_BACKOFF_MAX_S + 0.25 < RESET_S - 0.02, f"waited {unhinted:.3f}s without a hint"
