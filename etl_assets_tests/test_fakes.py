"""The loopback fakes behave like real servers for the real httpx and openai clients."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from etl_assets.fakes.loopback import Fault, LoopbackServer, Request, Response
from etl_assets.fakes.openai_server import FakeEmbeddings, count_tokens, fake_vector, go_duration

API_KEY = "sk-test-fake"
MODEL = "text-embedding-3-small"
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def echo(request: Request) -> Response:
    return Response.json({"method": request.method, "path": request.path, "query": request.query})


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(echo) as srv:
        yield srv
    assert srv.handler_errors == []


@pytest.fixture
def fake() -> Iterator[FakeEmbeddings]:
    with FakeEmbeddings(dimensions=16) as fk:
        yield fk
    assert fk.server.handler_errors == []


@pytest.fixture
def client(fake: FakeEmbeddings) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=fake.url, max_retries=0) as cl:
        yield cl


def post_embeddings(fake: FakeEmbeddings, body: object, *, key: str | None = API_KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    with httpx.Client(timeout=10) as http:
        return http.post(fake.url + "/embeddings", json=body, headers=headers)


# -- LoopbackServer -------------------------------------------------------------------------


def test_loopback_serves_handler_and_pools_connections(server: LoopbackServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    with httpx.Client() as http:
        for _ in range(20):
            response = http.get(server.url + "/some/path?a=1&b=")
    assert response.json() == {"method": "GET", "path": "/some/path", "query": {"a": "1", "b": ""}}
    assert server.requests_received == 20
    assert server.connections_opened == 1
    assert wait_until(lambda: server.connections_active == 0)


def test_loopback_start_stop_repeatedly() -> None:
    started = time.monotonic()
    for _ in range(5):
        with LoopbackServer(echo) as srv, httpx.Client() as http:
            assert http.get(srv.url + "/x").status_code == 200
    reused = LoopbackServer(echo)
    for _ in range(5):
        reused.start()
        with httpx.Client() as http:
            assert http.get(reused.url + "/x").status_code == 200
        reused.stop()
    reused.stop()  # idempotent
    assert not reused.running
    assert reused.connections_opened == 5
    with pytest.raises(RuntimeError):
        _ = reused.url
    assert time.monotonic() - started < 10


def test_loopback_async_handler_and_concurrent_delays() -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0)
        return Response(200, {"content-type": "text/plain"}, request.path.encode(), delay_s=0.3)

    async def fire(url: str) -> list[str]:
        async with httpx.AsyncClient() as http:
            responses = await asyncio.gather(*(http.get(f"{url}/{i}") for i in range(20)))
        return [r.text for r in responses]

    with LoopbackServer(slow) as srv:
        started = time.monotonic()
        texts = asyncio.run(fire(srv.url))
        elapsed = time.monotonic() - started
    assert texts == [f"/{i}" for i in range(20)]
    assert elapsed < 2.0  # 20 x 0.3 s would be 6 s if the delays blocked


def test_loopback_respond_fault_fires_once_and_matches_path_and_method(server: LoopbackServer) -> None:
    server.faults.append(Fault.respond(503, {"error": "busy"}, {"retry-after": "1"}, path="/api", method="POST"))
    with httpx.Client() as http:
        assert http.post(server.url + "/other").status_code == 200  # path does not match
        assert http.get(server.url + "/api/x").status_code == 200  # method does not match
        faulted = http.post(server.url + "/api/x")
        assert faulted.status_code == 503
        assert faulted.json() == {"error": "busy"}
        assert faulted.headers["retry-after"] == "1"
        assert http.post(server.url + "/api/x").status_code == 200
    assert not server.faults


def test_loopback_delay_fault_triggers_read_timeout(server: LoopbackServer) -> None:
    server.faults.append(Fault.delay(5.0))
    with httpx.Client(timeout=httpx.Timeout(0.3)) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(server.url + "/slow")
        assert http.get(server.url + "/fast").status_code == 200


def test_loopback_stop_does_not_wait_for_pending_delays() -> None:
    srv = LoopbackServer(echo).start()
    srv.faults.append(Fault.delay(30.0))
    with httpx.Client(timeout=0.2) as http, pytest.raises(httpx.ReadTimeout):
        http.get(srv.url + "/hang")
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2.0


def test_loopback_reset_truncate_and_malformed_faults(server: LoopbackServer) -> None:
    server.faults.extend(
        [
            Fault.reset(path="/reset"),
            Fault.truncate(path="/truncate", keep_bytes=5),
            Fault.respond(200, b'{"object": "li', {"content-type": "application/json"}, path="/malformed"),
        ]
    )
    with httpx.Client() as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            http.get(server.url + "/reset")
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            http.get(server.url + "/truncate")
        malformed = http.get(server.url + "/malformed")
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            malformed.json()
        assert http.get(server.url + "/reset").status_code == 200
    assert server.connections_opened == 3  # reset and truncate each cost a connection


def test_loopback_handler_error_becomes_500() -> None:
    def broken(request: Request) -> Response:
        raise KeyError("boom")

    with LoopbackServer(broken) as srv, httpx.Client() as http:
        response = http.get(srv.url + "/")
    assert response.status_code == 500
    assert "KeyError" in response.text
    assert len(srv.handler_errors) == 1


# -- FakeEmbeddings -------------------------------------------------------------------------


def test_fake_vector_is_deterministic_unit_and_prefix_consistent() -> None:
    a, b, c = fake_vector("hello", 64), fake_vector("hello", 64), fake_vector("other", 64)
    assert a == b and a != c
    assert abs(np.linalg.norm(a) - 1) < 1e-6
    prefix = np.asarray(fake_vector("hello", 1536)[:64], dtype=np.float64)
    assert np.allclose(prefix / np.linalg.norm(prefix), a, atol=1e-6)


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0, 0.012, 1, 59.5, 360, 3723)] == ["0s", "12ms", "1s", "59.5s", "6m0s", "1h2m3s"]


def test_float_base64_and_default_encodings_agree(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    texts = ["hello world", "second input"]
    as_float = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    as_b64 = client.embeddings.create(model=MODEL, input=texts, encoding_format="base64")
    default = client.embeddings.create(model=MODEL, input=texts)  # SDK asks base64, decodes it
    for i, text in enumerate(texts):
        expected = np.asarray(fake_vector(text, 16), dtype=np.float32)
        raw = as_b64.data[i].embedding
        assert isinstance(raw, str)  # explicit base64: openai 3.x hands back the string
        decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
        assert np.array_equal(decoded, expected)
        assert np.array_equal(np.asarray(as_float.data[i].embedding, dtype=np.float32), expected)
        assert np.array_equal(np.asarray(default.data[i].embedding, dtype=np.float32), expected)
        assert as_float.data[i].index == i and as_float.data[i].object == "embedding"
    assert as_float.object == "list" and as_float.model == MODEL


def test_usage_and_counters(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    texts = ["a", "four words in here", "x" * 41]
    result = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    expected_tokens = sum(count_tokens(t) for t in texts)
    assert expected_tokens == 1 + 5 + 11
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected_tokens
    client.embeddings.create(model=MODEL, input="single")
    assert fake.requests == 2
    assert fake.inputs == 4
    assert fake.tokens == expected_tokens + count_tokens("single")
    assert fake.input_log == [*texts, "single"]
    assert fake.auth_headers == [f"Bearer {API_KEY}"] * 2
    fake.reset_counters()
    assert (fake.requests, fake.inputs, fake.tokens, fake.input_log) == (0, 0, 0, [])


def test_token_array_inputs(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    result = client.embeddings.create(model=MODEL, input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert len(result.data) == 2 and result.usage.prompt_tokens == 5
    single = client.embeddings.create(model=MODEL, input=[7, 8], encoding_format="float")
    assert len(single.data) == 1
    assert fake.input_log == ["tokens:1,2,3", "tokens:4,5", "tokens:7,8"]


def test_default_size_dimensions_and_model_dimensions() -> None:
    with (
        FakeEmbeddings(model_dimensions={"text-embedding-3-large": 3072}) as fake,
        openai.OpenAI(api_key=API_KEY, base_url=fake.url, max_retries=0) as client,
    ):
        assert len(client.embeddings.create(model=MODEL, input="t").data[0].embedding) == 1536
        large = client.embeddings.create(model="text-embedding-3-large", input="t")
        assert len(large.data[0].embedding) == 3072
        short = client.embeddings.create(model=MODEL, input="t", dimensions=256, encoding_format="float")
        assert np.array_equal(np.float32(short.data[0].embedding), np.float32(fake_vector("t", 256)))
        with pytest.raises(openai.BadRequestError) as too_big:
            client.embeddings.create(model=MODEL, input="t", dimensions=1537)
        assert too_big.value.body["param"] == "dimensions"
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="text-embedding-ada-002", input="t", dimensions=8)


def test_too_many_inputs_rejected(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=["x"] * 2049)
    assert err.value.status_code == 400
    assert err.value.body["type"] == "invalid_request_error"
    assert err.value.body["param"] == "input"
    assert set(err.value.body) == {"message", "type", "param", "code"}
    assert fake.requests == 0
    assert len(client.embeddings.create(model=MODEL, input=["x"] * 2048).data) == 2048


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "input": ""},
        {"model": MODEL, "input": []},
        {"model": MODEL, "input": ["ok", ""]},
        {"model": MODEL, "input": [[]]},
        {"model": MODEL, "input": "x" * (8192 * 4 + 1)},
        {"model": MODEL, "input": ["x" * 8192 * 4] * 37},  # 303,104 tokens in one request
        {"model": MODEL},
        {"input": "no model"},
        {"model": MODEL, "input": "t", "encoding_format": "int8"},
        {"model": MODEL, "input": "t", "dimensions": 0},
        {"model": MODEL, "input": "t", "temperature": 1},
    ],
)
def test_invalid_requests_get_400(fake: FakeEmbeddings, body: dict) -> None:
    response = post_embeddings(fake, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == 0


def test_auth_required_and_unknown_routes(fake: FakeEmbeddings) -> None:
    missing = post_embeddings(fake, {"model": MODEL, "input": "t"}, key=None)
    assert missing.status_code == 401
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert fake.auth_headers == []
    with httpx.Client() as http:
        assert http.get(fake.url + "/embeddings", headers={"authorization": "Bearer k"}).status_code == 405
        assert http.post(fake.url + "/chat/completions", json={}).status_code == 404
        not_json = http.post(fake.url + "/embeddings", content=b"{", headers={"authorization": "Bearer k"})
        assert not_json.status_code == 400
    assert fake.requests == 0


def test_rpm_limit_returns_429_with_headers() -> None:
    body = {"model": MODEL, "input": "t"}
    with FakeEmbeddings(dimensions=8, rpm=2, tpm=1000) as fake:
        first, second, third = (post_embeddings(fake, body) for _ in range(3))
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        assert first.headers["x-ratelimit-remaining-tokens"] == "999"
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
            assert GO_DURATION.match(first.headers[name]), first.headers[name]
        retry_after = int(third.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert 0 < int(third.headers["retry-after-ms"]) <= 60_000
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        assert GO_DURATION.match(third.headers["x-ratelimit-reset-requests"])
        error = third.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert (fake.requests, fake.rate_limited) == (2, 1)
        with (
            openai.OpenAI(api_key=API_KEY, base_url=fake.url, max_retries=0) as client,
            pytest.raises(openai.RateLimitError),
        ):
            client.embeddings.create(model=MODEL, input="t")
        assert fake.rate_limited == 2


def test_tpm_window_slides_with_clock() -> None:
    now = [1000.0]
    with FakeEmbeddings(dimensions=8, tpm=10) as fake:
        fake.clock = lambda: now[0]
        eight_tokens = {"model": MODEL, "input": "x" * 32}
        assert post_embeddings(fake, eight_tokens).status_code == 200
        limited = post_embeddings(fake, eight_tokens)
        assert limited.status_code == 429
        assert limited.json()["error"]["type"] == "tokens"
        assert limited.headers["retry-after"] == "60"
        now[0] += 30
        assert post_embeddings(fake, eight_tokens).headers["retry-after"] == "30"
        now[0] += 31
        assert post_embeddings(fake, eight_tokens).status_code == 200
        too_large = post_embeddings(fake, {"model": MODEL, "input": "x" * 44})  # 11 > tpm
        assert too_large.status_code == 429 and "retry-after" not in too_large.headers
        assert fake.rate_limited == 3


def test_async_client_reuses_connections_and_closes_them(fake: FakeEmbeddings) -> None:
    async def run() -> list[int]:
        sizes = []
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.url, max_retries=0) as client:
            for i in range(20):
                result = await client.embeddings.create(model=MODEL, input=[f"text {i}"])
                sizes.append(len(result.data[0].embedding))
        return sizes

    assert asyncio.run(run()) == [16] * 20
    assert fake.requests == 20
    assert fake.connections_opened <= 2
    assert wait_until(lambda: fake.server.connections_active == 0)  # the pool was closed


def test_sync_client_reuses_connections(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    for i in range(20):
        client.embeddings.create(model=MODEL, input=f"text {i}")
    assert fake.connections_opened <= 2


def test_latency_is_non_blocking_for_concurrent_requests() -> None:
    async def run(url: str) -> None:
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=url, max_retries=0) as client:
            await asyncio.gather(*(client.embeddings.create(model=MODEL, input=f"t{i}") for i in range(10)))

    with FakeEmbeddings(dimensions=8, latency_s=0.3, per_token_s=0.01) as fake:
        started = time.monotonic()
        asyncio.run(run(fake.url))
        elapsed = time.monotonic() - started
        assert fake.requests == 10
    assert 0.3 <= elapsed < 2.0  # sequential would be >= 3.1 s


def test_queued_503_is_served_once(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    error_body = {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}}
    fake.faults.append(Fault.respond(503, error_body, path="/v1/embeddings"))
    with pytest.raises(openai.InternalServerError) as err:
        client.embeddings.create(model=MODEL, input="t")
    assert err.value.status_code == 503
    assert len(client.embeddings.create(model=MODEL, input="t").data) == 1
    assert fake.requests == 1
    assert not fake.faults


def test_openai_client_timeout_and_reset_faults(client: openai.OpenAI, fake: FakeEmbeddings) -> None:
    fake.faults.append(Fault.delay(5.0))
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).embeddings.create(model=MODEL, input="t")
    fake.faults.append(Fault.reset())
    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(model=MODEL, input="t")
    fake.faults.append(Fault.truncate())
    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(model=MODEL, input="t")
    assert len(client.embeddings.create(model=MODEL, input="t").data) == 1


def test_custom_token_counter() -> None:
    long_text = "word " * 8000  # 40,000 chars: 10,000 approximate tokens, over the limit
    with (
        FakeEmbeddings(dimensions=8, token_counter=lambda text: len(text.split())) as fake,
        openai.OpenAI(api_key=API_KEY, base_url=fake.url, max_retries=0) as client,
    ):
        result = client.embeddings.create(model=MODEL, input=[long_text, "two words"])
        assert result.usage.total_tokens == 8002
        assert fake.tokens == 8002
