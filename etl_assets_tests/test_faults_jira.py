"""Jira misbehaving: each fault either is absorbed by bounded retries or fails its step
with a message naming tenant, site and request (never the token); and one more
materialization after the fault cleared converges exactly.

The faults come from the loopback Jira server (``server.faults``) or from a handler
wrapper for faults that depend on what was served before (a project vanishing between
pages). ``SourceResource(source="jira", max_attempts=3, max_wait_s=0.2, timeout_s=1)`` keeps waits short.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import create_engine, func, select

from etl_assets.core.sources.jira.client import JiraError
from etl_assets.core.store import schema
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs.resources import SourceResource
from etl_assets.fakes.loopback import Fault, LoopbackServer, Request, Response
from etl_assets_tests.conftest import JIRA_EMAIL, basic_auth_value, jira_secret_needles, secret_forms, secret_hits
from etl_assets_tests.convergence import assert_converged, failure_texts, materialize, steps

PROJECTS = "/rest/api/3/project/search"
WITS = "/rest/api/3/issuetype"
STATUSES = "/rest/api/3/status"
SEARCH = "/rest/api/3/search/jql"
RAW_STEP = {
    PROJECTS: "jira__raw__raw_jira_projects",
    WITS: "jira__raw__raw_jira_wits",
    STATUSES: "jira__raw__raw_jira_statuses",
    SEARCH: "jira__raw__raw_jira_issues",
}
ENTITY = {PROJECTS: "projects", WITS: "wits", STATUSES: "statuses", SEARCH: "issues"}
BROKEN_JSON = '{"isLast": true, "values": [{"id": "10000", "key": "PAY"'


@pytest.fixture
def backend() -> str:
    # The database is not what these faults are about; the graph and store tests run both backends.
    return "sqlite"


def _jira(**overrides: object) -> dict[str, object]:
    return {
        "jira": SourceResource(source="jira", **{"max_attempts": 3, "max_wait_s": 0.2, "timeout_s": 1.0, **overrides})
    }


def _meta(result: dg.ExecuteInProcessResult, step: str) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node(step)[0].metadata.items()}


def _batches(env, entity: str) -> int:
    engine = create_engine(env.database_url)
    b = schema.raw_batches
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).where(b.c.tenant_id == "1", b.c.entity == entity)).scalar_one()
    engine.dispose()
    return n


def _assert_clear(text: str, env, *fragments: str) -> None:
    """The error names the tenant, the site and what went wrong, and carries no secret."""
    assert "tenant '1'" in text and env.tenants["1"].url in text, text
    for fragment in fragments:
        assert fragment in text, text
    assert secret_hits(text, jira_secret_needles(env.tenants.values())) == [], text
    assert "SECRETVALUE" not in text


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every Python log record of the test, down to DEBUG (httpx, tenacity, ours)."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An instance whose event log the test reads back: context.log lines are stored only there."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _assert_no_secret_logged(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, logged: pytest.LogCaptureFixture, env
) -> None:
    """No log line of the run — Dagster's event log (messages, metadata, errors) or Python's
    logging — holds a Jira token or a Basic authorization value, in any encoding."""
    stored = "\n".join(
        f"{e.user_message}\n{dg.serialize_value(e.dagster_event) if e.dagster_event else ''}"
        for e in instance.all_logs(result.run_id)
    )
    assert ": landed " in stored or "HTTP 4" in stored, "the scan must read the run's own log lines"
    needles = jira_secret_needles(env.tenants.values())
    assert secret_hits(stored, needles) == [], "a secret in the run's event log"
    assert secret_hits(logged.text, needles) == [], "a secret in a Python log line"


# Two runs, each absorbing several faults: at most one per listing and attempt, so each
# listing stays within its budget of 3 attempts (two faults on the issue search: 2 retries).
TRANSIENT = [
    pytest.param(
        [
            Fault.respond(429, {"errorMessages": ["Rate limit exceeded."]}, {"Retry-After": "0"}, path=SEARCH),
            Fault.respond(500, {"errorMessages": ["Internal server error"]}, path=WITS),
            Fault.respond(502, "<html>Bad Gateway</html>", path=STATUSES),
            Fault.reset(path=PROJECTS),
        ],
        id="429-with-retry-after+500+502+connection-reset",
    ),
    pytest.param(
        [
            Fault.respond(429, "Too Many Requests", path=WITS),
            Fault.delay(3.0, path=SEARCH),  # longer than the 1 s read timeout
            Fault.respond(503, "Service Unavailable", {"Retry-After": "0"}, path=SEARCH),
            Fault.truncate(path=PROJECTS),
            Fault.respond(200, BROKEN_JSON, {"content-type": "application/json"}, path=STATUSES),
        ],
        id="429-without-retry-after+read-timeout+503+truncated-body+malformed-json",
    ),
]


@pytest.mark.parametrize("faults", TRANSIENT)
def test_transient_faults_are_absorbed_by_bounded_retries(env, faults, logged, instance):
    server = env.tenants["1"].server
    server.faults.extend(faults)
    result = materialize(env, "1", resources=_jira(), instance=instance)
    assert result.success, failure_texts(result)
    _assert_no_secret_logged(instance, result, logged, env)
    assert not server.faults, "a fault never fired"
    for path, step in RAW_STEP.items():
        mine = [f for f in faults if f.path == path]
        meta = _meta(result, step)
        assert meta["jira_retries"] == len(mine), (path, meta)
        assert meta["jira_429s"] == sum(f.kind == "respond" and f.status == 429 for f in mine), (path, meta)
    assert_converged(env, "1")


def test_retry_after_is_honoured_and_capped(env):
    server = env.tenants["1"].server
    server.faults.append(Fault.respond(429, "slow down", {"Retry-After": "1"}, path=WITS))
    result = materialize(env, "1", "key:jira/raw/raw_jira_wits", resources=_jira(max_wait_s=5.0))
    assert result.success
    assert _meta(result, RAW_STEP[WITS])["duration_s"] >= 1.0, "Retry-After: 1 was not waited for"
    # A Retry-After beyond the cap is cut to max_wait_s: a site cannot park the run for an hour.
    server.faults.append(Fault.respond(429, "slow down", {"Retry-After": "3600"}, path=WITS))
    result = materialize(env, "1", "key:jira/raw/raw_jira_wits", resources=_jira(max_wait_s=0.2))
    assert result.success
    meta = _meta(result, RAW_STEP[WITS])
    assert meta["jira_429s"] == 1 and meta["duration_s"] < 3.0, meta


EXHAUSTING = [
    pytest.param(WITS, lambda: Fault.respond(503, "Service Unavailable", path=WITS), "HTTP 503", id="503"),
    pytest.param(SEARCH, lambda: Fault.delay(3.0, path=SEARCH), "timed out", id="read-timeouts"),
    pytest.param(STATUSES, lambda: Fault.reset(path=STATUSES), "connection failed", id="resets"),
    pytest.param(STATUSES, lambda: Fault.respond(200, BROKEN_JSON, path=STATUSES), "not valid JSON", id="bad-json"),
]


@pytest.mark.parametrize(("path", "make_fault", "reason"), EXHAUSTING)
def test_fault_outlasting_the_retry_budget_fails_the_step_clearly_then_converges(env, path, make_fault, reason):
    server = env.tenants["1"].server
    server.faults.extend(make_fault() for _ in range(4))  # one more than there are attempts
    entity = ENTITY[path]
    result = materialize(env, "1", f"key:jira/raw/raw_jira_{entity} or key:tables/{entity}_table", resources=_jira())
    assert not result.success
    step = RAW_STEP[path]
    texts = failure_texts(result)
    assert set(texts) == {step}, texts
    _assert_clear(texts[step], env, path, reason, "gave up after 3 attempts")
    assert len(server.faults) == 1, "the attempts made differ from the budget of 3"
    server.faults.clear()
    assert _batches(env, ENTITY[path]) == 0, "a failed listing must not land a partial batch"
    assert f"tables__{entity}_table" not in steps(result, dg.DagsterEventType.STEP_START)
    assert materialize(env, "1", resources=_jira()).success
    assert_converged(env, "1")


@pytest.mark.parametrize(
    ("status", "path", "message"),
    [(401, PROJECTS, "Client must be authenticated"), (403, SEARCH, "You do not have permission to browse")],
)
def test_refused_credentials_fail_fast_without_retrying(env, status, path, message, logged, instance):
    server = env.tenants["1"].server
    server.faults.extend(Fault.respond(status, {"errorMessages": [message]}, path=path) for _ in range(2))
    result = materialize(env, "1", f"key:jira/raw/raw_jira_{ENTITY[path]}", resources=_jira(), instance=instance)
    assert not result.success
    _assert_no_secret_logged(instance, result, logged, env)
    assert len(server.faults) == 1, "a refused credential must not be retried"
    texts = failure_texts(result)
    assert set(texts) == {RAW_STEP[path]}
    _assert_clear(texts[RAW_STEP[path]], env, f"HTTP {status}", message, path)
    server.faults.clear()
    assert materialize(env, "1", resources=_jira()).success
    assert_converged(env, "1")


def test_wrong_token_fails_every_fetch_at_once_and_never_shows_it(env, monkeypatch, logged, instance):
    wrong = "jira-token-1-WRONG-SECRETVALUE"
    monkeypatch.setenv("T1_JIRA_TOKEN", wrong)
    server = env.tenants["1"].server
    before = server.requests_received
    result = materialize(env, "1", resources=_jira(), instance=instance)
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == set(RAW_STEP.values())
    assert server.requests_received - before == len(RAW_STEP), "one request per listing, no retries"
    wrong_needles = {
        "wrong token": secret_forms(wrong),
        "its basic auth": secret_forms(basic_auth_value(JIRA_EMAIL, wrong)),
    }
    for text in texts.values():
        _assert_clear(text, env, "HTTP 401")
        assert secret_hits(text, wrong_needles) == [], text
    _assert_no_secret_logged(instance, result, logged, env)
    assert secret_hits(logged.text, wrong_needles) == []
    monkeypatch.setenv("T1_JIRA_TOKEN", env.tenants["1"].token)
    assert materialize(env, "1", resources=_jira()).success
    assert_converged(env, "1")


def test_project_vanishing_between_pages_fails_the_listing_then_converges(env):
    """Page 1 of the issue search is served, then the project is deleted and page 2 is a 404."""
    tenant = env.tenants["1"]
    site, server = tenant.site, tenant.server
    original = server.handler
    victim = site.issues[0]["fields"]["project"]
    searches = 0

    def vanish_after_first_page(req: Request) -> Response:
        nonlocal searches
        if req.path == SEARCH:
            searches += 1
            if searches == 2:
                site.delete_project(victim["id"])
                return Response.json(
                    {"errorMessages": [f"No project could be found with key '{victim['key']}'."], "errors": {}},
                    status=404,
                )
        return original(req)

    server.handler = vanish_after_first_page
    try:
        result = materialize(env, "1", resources=_jira(page_size=10))
    finally:
        server.handler = original
    assert not result.success and searches == 2
    texts = failure_texts(result)
    assert set(texts) == {RAW_STEP[SEARCH]}
    _assert_clear(texts[RAW_STEP[SEARCH]], env, "HTTP 404", f"No project could be found with key '{victim['key']}'")
    assert _batches(env, "issues") == 0, "page 1 alone must not be taken for the whole listing"
    result = materialize(env, "1", resources=_jira(page_size=10))
    assert result.success
    assert _meta(result, RAW_STEP[SEARCH])["pages"] >= 2
    assert victim["id"] not in {p["id"] for p in site.projects}
    assert_converged(env, "1")


# -- the client alone (fast) ---------------------------------------------------------------------------

FAST_TOKEN = "jira-token-fast-SECRETVALUE"


@pytest.mark.parametrize(("status", "attempts"), [(401, 1), (403, 1), (500, 2)])
def test_a_refused_or_failed_request_names_no_token_and_no_basic_header(monkeypatch, status, attempts):
    """The error a Jira failure raises (and its whole chain, as Dagster would print it) carries
    neither the token nor the base64 ``Basic`` value httpx built from it."""
    seen: list[str] = []

    def refuse(req: Request) -> Response:
        seen.append(req.headers.get("authorization", ""))
        return Response.json({"errorMessages": ["Client must be authenticated"]}, status=status)

    monkeypatch.setenv("FAST_JIRA_EMAIL", JIRA_EMAIL)
    monkeypatch.setenv("FAST_JIRA_TOKEN", FAST_TOKEN)
    with LoopbackServer(refuse) as server:
        site = server.url
        registry = TenantRegistry.from_mapping(
            {
                "tenants": [
                    {
                        "id": "fast",
                        "jira": {"url": server.url, "email_env": "FAST_JIRA_EMAIL", "token_env": "FAST_JIRA_TOKEN"},
                    }
                ]
            },
            source="test",
        )
        resource = SourceResource(source="jira", max_attempts=2, max_wait_s=0.01)
        with resource.open(registry.get("fast")) as client, pytest.raises(JiraError) as raised:
            client.request("GET", PROJECTS)
    basic = basic_auth_value(JIRA_EMAIL, FAST_TOKEN)
    assert seen == [f"Basic {basic}"] * attempts, "the credentials must really have been sent"
    error = raised.value
    printed = "".join(traceback.format_exception(error))
    text = f"{error}\n{error!r}\n{printed}"
    assert f"HTTP {status}" in str(error) and site in str(error) and "Client must be authenticated" in str(error)
    needles = {"token": secret_forms(FAST_TOKEN), "basic auth": secret_forms(basic)}
    assert secret_hits(text, needles) == [], text


@pytest.mark.parametrize("status", [400, 401, 502])
def test_an_error_body_echoing_the_authorization_header_is_redacted(monkeypatch, status):
    """Some proxies echo the request headers in their error page: the JiraError must not carry them."""

    def echo(req: Request) -> Response:
        auth = req.headers.get("authorization", "")
        decoded = base64.b64decode(auth.partition(" ")[2]).decode()
        return Response.json({"errorMessages": [f"bad request; you sent {auth} ({decoded})"]}, status=status)

    monkeypatch.setenv("ECHO_JIRA_EMAIL", JIRA_EMAIL)
    monkeypatch.setenv("ECHO_JIRA_TOKEN", FAST_TOKEN)
    with LoopbackServer(echo) as server:
        registry = TenantRegistry.from_mapping(
            {
                "tenants": [
                    {
                        "id": "echo",
                        "jira": {"url": server.url, "email_env": "ECHO_JIRA_EMAIL", "token_env": "ECHO_JIRA_TOKEN"},
                    }
                ]
            },
            source="test",
        )
        with (
            SourceResource(source="jira", max_attempts=1, max_wait_s=0.01).open(registry.get("echo")) as client,
            pytest.raises(JiraError) as raised,
        ):
            client.request("GET", PROJECTS)
    text = "".join(traceback.format_exception(raised.value))
    assert "bad request; you sent ***" in str(raised.value), str(raised.value)
    needles = {"token": secret_forms(FAST_TOKEN), "basic auth": secret_forms(basic_auth_value(JIRA_EMAIL, FAST_TOKEN))}
    assert secret_hits(text, needles) == [], text


ODD_BUT_READABLE = [
    pytest.param('{"total": NaN, "values": []}', id="nan"),
    pytest.param('{"summary": "half an emoji \\ud83d", "values": []}', id="lone-surrogate"),
]


@contextlib.contextmanager
def _client_answering(body: str, *, max_attempts: int) -> Iterator[tuple[Any, list[str]]]:
    """A Jira client whose site answers every request 200 with ``body``, and the paths it served."""
    import httpx

    from etl_assets.core.sources.jira.client import JiraClient

    served: list[str] = []

    def answer(req: Request) -> Response:
        served.append(req.path)
        return Response(200, {"content-type": "application/json"}, body.encode())

    with LoopbackServer(answer) as server, httpx.Client(base_url=server.url) as http:
        yield JiraClient(http, "odd", server.url, max_attempts=max_attempts, sleep=lambda _s: None), served


@pytest.mark.parametrize("body", ODD_BUT_READABLE)
def test_an_answer_the_fast_parser_refuses_is_read_as_the_standard_library_reads_it(body):
    """The fetch parses with orjson; what only the standard library reads is still read, not retried."""
    import json

    with _client_answering(body, max_attempts=2) as (client, served):
        page, parsed = client.request_parsed("GET", STATUSES)
    assert served == [STATUSES], "read at the first attempt"
    assert page.body == body
    assert json.dumps(parsed) == json.dumps(json.loads(body))


def test_an_answer_nested_beyond_the_standard_library_fails_once_with_a_reason():
    body = "[" * 100_000 + "]" * 100_000
    with _client_answering(body, max_attempts=3) as (client, served):
        with pytest.raises(JiraError, match="nests too deeply"):
            client.request("GET", STATUSES)
    assert served == [STATUSES], "deterministic: not retried"
