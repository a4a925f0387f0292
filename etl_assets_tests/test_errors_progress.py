"""Errors that name their setting and host, retries only where asking again can help, and
progress lines at a steady cadence.

Everything runs against the loopback fakes (the real AsyncOpenAI, httpx and qdrant-client
clients), or against a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import AsyncQdrantClient

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.base import EmbeddingError
from etl_assets.core.embeddings.openai_provider import RETRY_STATUSES, open_openai_embedder
from etl_assets.core.embeddings.ratelimit import RateLimiter
from etl_assets.core.http import display_url, host_port, parse_retry_after, transport_reason
from etl_assets.core.progress import Progress, ProgressLog, counted
from etl_assets.core.sources.jira.client import JiraClient, JiraError
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.vectorstore import Collection, QdrantServerError, open_qdrant, server_errors_named
from etl_assets.core.vectorsync import sync_vectors
from etl_assets.defs.resources import QdrantResource
from etl_assets.fakes.loopback import Fault, LoopbackServer, Response
from etl_assets.fakes.openai_server import FakeEmbeddings
from etl_assets.fakes.qdrant_server import FakeQdrant
from etl_assets_tests.convergence import failure_texts, materialize

DIMS = 16
MODEL = "text-embedding-3-small"
API_KEY = "sk-test-errors-SECRETKEY"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chained(exc: BaseException) -> list[BaseException]:
    """``exc`` and the causes and contexts a traceback print would show under it."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return out


def chained_text(exc: BaseException) -> tuple[str, int]:
    """The messages of the chain under ``exc`` (itself included) and how many frames it adds.

    ``exc``'s own frames are the caller's business (the test's, or Dagster's); what the chain
    under it adds is what used to fill ~150 lines per failed step.
    """
    below = chained(exc)
    text = "".join("".join(traceback.format_exception_only(e)) for e in below)
    return text, sum(len(traceback.extract_tb(e.__traceback__)) for e in below[1:])


# -- the shared Retry-After reader ----------------------------------------------------------------


def test_retry_after_reads_seconds_dates_and_milliseconds():
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2026 07:28:10 GMT"}, now=lambda: now) == 10.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2026 07:28:10 -0000"}, now=lambda: now) == 10.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2026 07:27:00 GMT"}, now=lambda: now) == 0.0  # past
    assert parse_retry_after({"retry-after": "1", "retry-after-ms": "250"}) == 0.25
    assert parse_retry_after(httpx.Headers({"Retry-After-Ms": "40"})) == 0.04
    for junk in ({"retry-after": "soon"}, {"retry-after": "-3"}, {"retry-after": "nan"}, {}):
        assert parse_retry_after(junk) is None


def test_the_jira_client_waits_what_retry_after_says():
    answers = iter([Response.json({"message": "slow down"}, 429, {"Retry-After": "7"}), Response.json({"ok": 1})])
    waits: list[float] = []
    with LoopbackServer(lambda req: next(answers)) as server, httpx.Client(base_url=server.url) as http:
        client = JiraClient(http, "t1", server.url, sleep=waits.append, max_wait_s=60)
        assert client.request("GET", "/rest/api/3/myself").json() == {"ok": 1}
    assert waits == [7.0] and client.stats.throttled == 1


@pytest.mark.parametrize(("status", "attempts"), [(408, 3), (502, 3), (404, 1), (409, 1), (501, 1)])
def test_the_jira_client_retries_only_what_may_change(status, attempts):
    with LoopbackServer(lambda req: Response.json({"errorMessages": ["nope"]}, status)) as server:
        with httpx.Client(base_url=server.url) as http:
            client = JiraClient(http, "t1", server.url, max_attempts=3, sleep=lambda s: None)
            with pytest.raises(JiraError, match=f"HTTP {status}"):
                client.request("GET", "/rest/api/3/project/search")
        assert server.requests_received == attempts


# -- the embeddings provider ----------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeEmbeddings]:
    server = FakeEmbeddings(dimensions=DIMS).start()
    try:
        yield server
    finally:
        server.stop()


async def _embed(base_url: str, *, max_retries: int = 2, texts: list[str] | None = None) -> Any:
    async with open_openai_embedder(
        api_key=API_KEY,
        model=MODEL,
        dimensions=DIMS,
        base_url=base_url,
        max_retries=max_retries,
        timeout_s=2.0,
        limiter=RateLimiter(),
    ) as embedder:
        vectors = await embedder.embed(texts or ["hello"])
        return vectors, embedder.stats.copy()


def _assert_one_clear_line(message: str, *fragments: str) -> None:
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert API_KEY not in message and "SECRET" not in message and "hunter2" not in message, message


def test_an_unreachable_base_url_names_the_setting_and_the_host():
    port = closed_port()
    with pytest.raises(EmbeddingError) as err:
        asyncio.run(_embed(f"http://bot:hunter2@127.0.0.1:{port}/v1", max_retries=1))
    _assert_one_clear_line(
        str(err.value),
        f"OPENAI_BASE_URL=http://127.0.0.1:{port}/v1",
        f"127.0.0.1:{port}",
        "ConnectError",
        "after 1 retries",
    )
    assert chained(err.value) == [err.value], "the SDK's and httpx's chain adds nothing the message lacks"


@pytest.mark.parametrize(
    ("status", "setting"),
    [
        (400, "EMBEDDING_MODEL"),
        (401, "OPENAI_API_KEY"),
        (403, "OPENAI_API_KEY"),
        (404, "OPENAI_BASE_URL"),
        (405, "OPENAI_BASE_URL"),
        (409, "OPENAI_BASE_URL"),
        (413, "EMBEDDING_BATCH_TOKENS"),
        (422, "EMBEDDING_MODEL"),
        (501, "OPENAI_BASE_URL"),
    ],
)
def test_a_status_that_will_not_change_fails_at_once_naming_setting_host_and_status(fake, status, setting):
    fake.faults.append(Fault.respond(status, {"error": {"message": f"said {status}", "type": "x"}}))
    with pytest.raises(EmbeddingError) as err:
        asyncio.run(_embed(fake.url))
    assert fake.server.requests_received == 1, "asked again although the answer cannot change"
    _assert_one_clear_line(str(err.value), f"HTTP {status}", setting, host_port(fake.url), MODEL)


def test_the_retried_statuses_are_the_transient_ones():
    assert RETRY_STATUSES == {408, 500, 502, 503, 504}


def test_a_503_then_an_answer_is_retried_and_succeeds(fake):
    fake.faults.append(Fault.respond(503, "overloaded", {"retry-after": "0"}))
    vectors, stats = asyncio.run(_embed(fake.url))
    assert len(vectors) == 1 and len(vectors[0]) == DIMS
    assert fake.server.requests_received == 2
    assert (stats.transient_errors, stats.retries, stats.requests) == (1, 1, 1)


def test_x_should_retry_overrides_the_status(fake):
    fake.faults.append(Fault.respond(409, "lock timeout", {"x-should-retry": "true"}))
    asyncio.run(_embed(fake.url))
    assert fake.server.requests_received == 2
    fake.faults.append(Fault.respond(503, "going away", {"x-should-retry": "false"}))
    with pytest.raises(EmbeddingError, match="HTTP 503"):
        asyncio.run(_embed(fake.url))
    assert fake.server.requests_received == 3


def test_giving_up_on_a_5xx_names_the_host_and_keeps_the_message_short(fake):
    fake.faults.extend(Fault.respond(502, "<html>\n<body>Bad gateway</body>\n</html>") for _ in range(3))
    with pytest.raises(EmbeddingError) as err:
        asyncio.run(_embed(fake.url, max_retries=2))
    _assert_one_clear_line(str(err.value), "HTTP 502", host_port(fake.url), "Bad gateway", "after 2 retries")


# -- Qdrant -----------------------------------------------------------------------------------------


def test_urls_in_messages_lose_their_credentials():
    assert display_url("https://u:p@q.example:6333/x?api-key=SECRET") == "https://q.example:6333/x"
    assert host_port("https://q.example/x") == "q.example:443" and host_port("http://[::1]:6333") == "[::1]:6333"


async def _sync_against(url: str, api_key: str | None = None) -> None:
    async with open_qdrant(url, api_key, "unused") as client, server_errors_named(url):
        collection = Collection(client, "client_t_issues", "t", "issues")
        fake_rows: list[list[dict[str, Any]]] = []

        async def live_ids(ids: list[str]) -> set[str]:
            return set()

        await sync_vectors(
            spec=ISSUES,
            tenant_id="t",
            pages=lambda: iter(fake_rows),
            live_ids=live_ids,
            embedder=_NeverEmbeds(),
            collection=collection,
        )


class _NeverEmbeds:
    """The store fails first; an embedder that is asked anything is a failed test."""

    model, dimensions, max_input_tokens, max_batch_inputs, max_batch_tokens = MODEL, DIMS, 8192, 16, 1000

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the embedder was used ({name}) although the store is unreachable")


def test_a_closed_qdrant_port_fails_the_sync_with_one_short_error():
    port = closed_port()
    url = f"http://admin:hunter2@127.0.0.1:{port}"
    with pytest.raises(QdrantServerError) as err:
        asyncio.run(_sync_against(url, api_key="QDRANT-SECRET"))
    message = str(err.value)
    _assert_one_clear_line(message, f"QDRANT_URL=http://127.0.0.1:{port}", f"cannot connect to 127.0.0.1:{port}")
    assert "ConnectError" in message
    text, frames = chained_text(err.value)
    # qdrant-client's, httpx's and httpcore's frames made this ~150 lines per step.
    assert frames == 0 and len(text.splitlines()) <= 3, text
    assert "QDRANT-SECRET" not in text and "hunter2" not in text


def test_a_qdrant_http_error_is_one_line_with_the_servers_reason(tmp_path: Path):
    with FakeQdrant(tmp_path / "q") as qdrant:
        body = {"status": {"error": "Service internal error:\n disk full"}, "time": 0.0}
        qdrant.faults.append(Fault.respond(500, body, path="/collections/"))
        url = qdrant.url
        with pytest.raises(QdrantServerError) as err:
            asyncio.run(_sync_against(url))
    _assert_one_clear_line(str(err.value), f"QDRANT_URL={url}", "HTTP 500", host_port(url), "disk full")


def test_local_mode_errors_pass_through_unchanged():
    async def local() -> None:
        client = AsyncQdrantClient(location=":memory:")
        try:
            async with server_errors_named(None):
                await client.get_collection("missing")
        finally:
            await client.close()

    with pytest.raises(ValueError, match="not found"):
        asyncio.run(local())


def test_transport_reason_is_the_innermost_httpx_error():
    try:
        try:
            raise httpx.ConnectError("All connection attempts failed")
        except httpx.ConnectError as inner:
            raise RuntimeError("Connection error.") from inner
    except RuntimeError as outer:
        assert transport_reason(outer) == "ConnectError: All connection attempts failed"


# -- progress ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_come_every_interval_and_every_share_whichever_is_rarer():
    clock, lines = Clock(), list[str]()
    log = ProgressLog(lines.append, interval_s=10, min_fraction=0.10, clock=clock)
    for second in range(1, 121):  # 1,000 rows over two minutes, reported every second
        clock.now = second
        log(Progress("client_1_issues", done=second * 1000 // 120, total=1000, elapsed_s=second))
    # Time decides (a tenth of the rows takes 12 s, so every 12 s), then the final line.
    assert len(lines) == 10, lines
    assert lines[0] == "client_1_issues: 100/1,000 rows (10%), 8.3 rows/s, ETA 1m48s"
    assert lines[-1] == "client_1_issues: 1,000/1,000 rows (100%), 8.3 rows/s, done in 2m00s"

    fast, few = Clock(), list[str]()
    quick = ProgressLog(few.append, interval_s=10, min_fraction=0.25, clock=fast)
    for second in range(1, 101):  # 100 s, but the share moves slower than the clock
        fast.now = second
        quick(Progress("x", done=second, total=400, elapsed_s=second))
    assert [line.split(",")[0] for line in few] == ["x: 100/400 rows (25%)"]


def test_a_short_step_stays_silent_and_an_unknown_total_is_paced_by_time():
    clock, lines = Clock(), list[str]()
    log = ProgressLog(lines.append, interval_s=10, clock=clock)
    clock.now = 3
    log(Progress("quick", 50, 50, 3.0))
    assert lines == []
    clock.now, out = 0.0, list[str]()
    timed = ProgressLog(out.append, interval_s=10, clock=clock)
    seen: list[int] = []
    for page in counted(range(30), timed, "issues of tenant 1", size=lambda _: 50, unit="records", clock=clock):
        seen.append(page)
        clock.now += 1  # landing a page takes a second
    assert seen == list(range(30))
    assert out == [
        "issues of tenant 1: 500 records, 50 records/s",
        "issues of tenant 1: 1,000 records, 50 records/s",
        "issues of tenant 1: 1,500 records, 50 records/s",
    ]


def test_progress_goes_to_a_logger(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("etl_assets.tests.progress")
    clock = Clock()
    log = ProgressLog(logger, interval_s=1, clock=clock)
    clock.now = 5
    with caplog.at_level(logging.INFO, logger=logger.name):
        log(Progress("c", 5, 10, 5.0))
    assert [r.getMessage() for r in caplog.records] == ["c: 5/10 rows (50%), 1.0 rows/s, ETA 5s"]


def _issue(i: int) -> dict[str, Any]:
    return {
        "id": i + 1,
        "external_id": str(10_000 + i),
        "key": f"P-{i}",
        "summary": f"Issue {i}",
        "description": f"words of issue {i} " * 5,
        "project_key": "P",
        "wit_name": "Bug",
        "status_name": "Open",
        "status_category": "new",
        "priority": "High",
        "labels": [],
        "components": [],
        "updated": datetime(2026, 1, 1, tzinfo=UTC),
    }


def test_the_vector_sync_reports_rows_in_place_up_to_the_total(fake):
    rows = [_issue(i) for i in range(60)]
    runs: list[list[Progress]] = []
    lines: list[str] = []
    log = ProgressLog(lines.append, interval_s=0, min_fraction=0.25)

    def both(p: Progress) -> None:
        runs[-1].append(p)
        log(p)

    async def go() -> None:
        client = AsyncQdrantClient(location=":memory:")
        try:
            async with open_openai_embedder(
                api_key=API_KEY, model=MODEL, dimensions=DIMS, base_url=fake.url, limiter=RateLimiter()
            ) as embedder:
                for _ in range(2):  # the second run finds every row unchanged
                    runs.append([])
                    await sync_vectors(
                        spec=ISSUES,
                        tenant_id="t",
                        pages=lambda: (rows[i : i + 10] for i in range(0, len(rows), 10)),
                        live_ids=_all,
                        embedder=embedder,
                        collection=Collection(client, "client_t_issues", "t", "issues", local=True),
                        max_batch_inputs=7,
                        progress=both,
                        total_rows=lambda: len(rows),
                    )
        finally:
            await client.close()

    asyncio.run(go())
    assert all(p.total == 60 and p.what == "client_t_issues" for run in runs for p in run)
    first, second = ([p.done for p in run] for run in runs)
    assert first == sorted(first) and first[0] == 0 and first[-1] == 60, "rows in place only grow, from none"
    assert second == [10, 20, 30, 40, 50, 60, 60], "unchanged rows are in place once compared"
    # A line per quarter at most (batches of 7 rows: 21 or so, 42 or so), then the final one;
    # the second run adds none: that ProgressLog had already written its final line.
    assert 3 <= len(lines) <= 4 and lines[-1].startswith("client_t_issues: 60/60 rows (100%)"), lines


async def _all(ids: list[str]) -> set[str]:
    return set(ids)


# -- the vector steps of a run against a closed Qdrant port ----------------------------------------


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the store is not what this is about


def test_every_vector_step_fails_with_a_short_error_naming_qdrant_url(env):
    port = closed_port()
    qdrant = QdrantResource(url=f"http://admin:hunter2@127.0.0.1:{port}", api_key="QDRANT-SECRET")
    result = materialize(env, "1", "group:vectors", resources={"qdrant": qdrant})
    assert not result.success
    texts = failure_texts(result)
    assert set(texts) == {f"vectors__{s.name}_vectors" for s in CATALOGUE}
    for text in texts.values():
        lines = text.splitlines()
        named = [line for line in lines if f"QDRANT_URL=http://127.0.0.1:{port}" in line]
        assert len(named) == 1 and f"cannot connect to 127.0.0.1:{port}" in named[0], text
        # Dagster's own frames are most of it; the chain under our error adds two lines.
        assert len(lines) < 60, text
        assert "hunter2" not in text and "QDRANT-SECRET" not in text
    assert env.embeddings.requests == 0, "nothing was embedded for a store that cannot take it"
