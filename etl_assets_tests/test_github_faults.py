"""GitHub faults: rate limits (primary and secondary) honoured without hammering, transient
faults absorbed, a failed listing leaves nothing half-landed and the next run converges, bad
records are quarantined alone, and the token never shows in logs, metadata or errors."""

from __future__ import annotations

import logging
import time

import dagster as dg
import pytest
from sqlalchemy import create_engine, select

from etl_assets.core.sources.github.specs import ISSUES
from etl_assets.core.store import ops, schema
from etl_assets.fakes.loopback import Fault
from etl_assets_tests.convergence import assert_converged, failure_texts, steps
from etl_assets_tests.github_env import GITHUB_ENTITIES, GITHUB_TOKEN, github_for, rows, run

RAW_ISSUES = "github__raw__raw_github_github_issues"
ISSUES_PATH = "/api/v3/repos/acme/auth-service/issues"
ISSUES_ONLY = " or ".join(
    f'key:"{k}"'
    for k in ("github/raw/raw_github_github_issues", "tables/github_issues_table", "vectors/github_issues_vectors")
)


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the faults are about HTTP; test_github_sync runs both databases


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _stored_logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        f"{e.user_message}\n{dg.serialize_value(e.dagster_event) if e.dagster_event else ''}"
        for e in instance.all_logs(result.run_id)
    )


def test_transient_faults_and_a_secondary_rate_limit_are_absorbed(env, monkeypatch, instance, caplog):
    caplog.set_level(logging.DEBUG)
    with github_for(env, monkeypatch) as gh:
        gh.faults.extend(
            [
                Fault.respond(
                    403,
                    {
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
                    },
                    {"retry-after": "0"},
                    path=ISSUES_PATH,
                ),
                Fault.respond(502, "Bad Gateway", path="/api/v3/repos/acme/search-service/pulls"),
                Fault.reset(path="/api/v3/orgs/acme/repos"),
                Fault.truncate(path="/api/v3/repos/acme/billing-service/issues/comments"),
            ]
        )
        result = run(env, gh, instance=instance)
        assert result.success, failure_texts(result)
        assert not gh.faults, "every fault was met"
        raw = [s for s in steps(result, dg.DagsterEventType.ASSET_MATERIALIZATION) if s.startswith("github__raw")]
        metas = [{k: v.value for k, v in result.asset_materializations_for_node(s)[0].metadata.items()} for s in raw]
        assert sum(m["github_429s"] for m in metas) == 1 and sum(m["github_retries"] for m in metas) >= 4
        assert_converged(env, "1", entities=GITHUB_ENTITIES)
        stored = _stored_logs(instance, result)
        assert "landed" in stored
        assert GITHUB_TOKEN not in stored and GITHUB_TOKEN not in caplog.text


def test_an_exhausted_primary_rate_limit_fails_clearly_without_hammering(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        reset = int(time.time()) + 3600
        limited = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset), "x-ratelimit-limit": "5000"}
        gh.faults.append(
            Fault.respond(403, {"message": "API rate limit exceeded for installation."}, limited, path=ISSUES_PATH)
        )
        asked, received = gh.handler.requests, gh.server.requests_received
        result = run(env, gh, selection='key:"github/raw/raw_github_github_issues"')
        assert not result.success
        text = failure_texts(result)[RAW_ISSUES]
        assert "rate limit" in text and "run again after" in text and "tenant '1'" in text, text
        assert GITHUB_TOKEN not in text
        # The organisation's repository listing, then the refused request, which was not asked
        # again before the reset.
        assert gh.handler.requests - asked == 1
        assert gh.server.requests_received - received == 2


def test_a_request_waits_for_the_primary_reset_when_it_is_near(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        reset = int(time.time())  # now: the client waits until one second past it
        limited = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
        gh.faults.append(Fault.respond(403, {"message": "API rate limit exceeded"}, limited, path=ISSUES_PATH))
        result = run(env, gh, github={"max_wait_s": 3.0})
        assert result.success, failure_texts(result)
        assert_converged(env, "1", entities=GITHUB_ENTITIES)


def test_a_listing_failing_for_good_lands_nothing_and_the_next_run_converges(env, monkeypatch):
    with github_for(env, monkeypatch, n_items=90) as gh:  # several pages of 20 per repository
        # Page 2 of one repository's issues fails three times: the retry budget.
        page2 = [Fault.respond(500, "boom", path=ISSUES_PATH) for _ in range(3)]
        gh.faults.append(Fault.delay(0, path=ISSUES_PATH))  # page 1 passes
        engine = create_engine(env.database_url)
        ops.create_schema(engine)
        b = schema.raw_batches
        with engine.connect() as conn:
            before = conn.execute(select(b.c.id).where(b.c.entity == ISSUES.name)).all()
        gh.faults.extend(page2)
        result = run(env, gh, selection=ISSUES_ONLY, github={"page_size": 20})
        assert not result.success
        assert not gh.faults
        assert "page=2" in failure_texts(result)[RAW_ISSUES]
        assert "gave up after 3 attempts" in failure_texts(result)[RAW_ISSUES]
        with engine.connect() as conn:
            after = conn.execute(select(b.c.id).where(b.c.entity == ISSUES.name)).all()
        engine.dispose()
        assert after == before, "no half listing was landed"
        assert f"tables__{ISSUES.name}_table" not in steps(result, dg.DagsterEventType.STEP_SUCCESS)
        assert run(env, gh).success
        assert_converged(env, "1", entities=GITHUB_ENTITIES)


def test_a_bad_record_is_quarantined_and_the_others_are_committed(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        bad = next(i for i in gh.site.items.values() if not i.is_pr)
        bad.state = "weird"
        result = run(env, gh)
        assert result.success
        engine = create_engine(env.database_url)
        r = schema.rejected_records
        with engine.connect() as conn:
            rejected = conn.execute(select(r.c.external_id, r.c.reason).where(r.c.entity == ISSUES.name)).all()
        engine.dispose()
        assert [x.external_id for x in rejected] == [str(bad.id)]
        assert "state" in rejected[0].reason and f"#{bad.number}" in rejected[0].reason
        assert_converged(env, "1", entities=GITHUB_ENTITIES, skip={ISSUES.name: {str(bad.id)}})
        assert len(rows(env, ISSUES)) == sum(1 for i in gh.site.items.values() if not i.is_pr) - 1


def test_a_wrong_token_fails_at_once_and_is_never_shown(env, monkeypatch, instance, caplog):
    caplog.set_level(logging.DEBUG)
    with github_for(env, monkeypatch) as gh:
        wrong = "ghp_WRONGtoken_SECRETVALUE_999"
        monkeypatch.setenv("T1_GITHUB_TOKEN", wrong)
        result = run(env, gh, instance=instance)
        assert not result.success
        texts = failure_texts(result)
        assert all("HTTP 401" in t and "token was refused" in t for t in texts.values()), texts
        assert gh.handler.requests == 0, "refused at the door, asked once per step, never retried"
        assert len([r for r in gh.seen]) == len(GITHUB_ENTITIES)
        stored = _stored_logs(instance, result)
        for secret in (wrong, GITHUB_TOKEN):
            assert secret not in stored and secret not in caplog.text and secret not in str(texts)


def test_an_error_body_echoing_the_token_is_redacted(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        gh.faults.append(
            Fault.respond(422, {"message": f"Validation failed for Bearer {GITHUB_TOKEN}"}, path=ISSUES_PATH)
        )
        result = run(env, gh, selection='key:"github/raw/raw_github_github_issues"')
        text = failure_texts(result)[RAW_ISSUES]
        assert "HTTP 422" in text and "***" in text and GITHUB_TOKEN not in text
