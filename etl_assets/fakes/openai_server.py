"""A fake OpenAI-compatible embeddings server on a real loopback socket.

Serves ``POST /v1/embeddings`` the way the OpenAI API documents it (see
``shared/openai/openai_embeddings.md``), so the real ``openai``/``httpx`` clients can be used
against it::

    with FakeEmbeddings(dimensions=8) as fake:
        with openai.OpenAI(api_key="sk-test", base_url=fake.url, max_retries=0) as client:
            client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])

Behaviour:

* Vectors come from :func:`fake_vector`: deterministic, unit length, seeded by the text (not
  by the model). With ``dimensions=d`` the vector is the re-normalised first ``d`` values of
  the same random sequence, like the real API's shortened embeddings.
* ``encoding_format="float"`` (the default) prints every float32 component with 9 significant
  digits (enough to round-trip float32), ``"base64"`` sends the little-endian float32 bytes.
  So ``np.float32(float_response) == base64_decoded == np.float32(fake_vector(...))`` exactly.
* Tokens: ``ceil(len(text) / 4)`` per string (OpenAI's rule of thumb, no tokenizer) unless
  ``token_counter=`` is given; the array length for a token-array input. The same count
  feeds ``usage``, the 8192-token per-input limit, the 300,000-token per-request limit, the
  TPM limit and ``per_token_s``. English prose averages nearer 5 characters per cl100k
  token, so the default over-counts: a client that splits at 8192 real tokens should pass
  an exact counter, or its longest inputs are refused here although OpenAI would take them.
* Errors answer ``{"error": {"message", "type", "param", "code"}}``: 401 without an
  ``Authorization: Bearer ...`` header, 400 for malformed requests (bad JSON, unknown or
  missing fields, empty input, more than 2048 inputs, token limits, ``dimensions`` above the
  model's size or given for ``text-embedding-ada-002``), 404/405 for other paths/methods.
  The messages are this fake's own wording, not copies of OpenAI's.
* ``rpm`` / ``tpm``: sliding 60 s window over successful requests (rejected ones do not
  count). Over the limit: 429 with ``retry-after`` (whole seconds, at least 1),
  ``retry-after-ms`` and the ``x-ratelimit-*`` headers; the same ``x-ratelimit-*`` headers
  (only for the limits that are set) accompany successful responses. ``reset-*`` is the
  time until the window is empty again ("resets to its initial state"), as a Go-style
  duration (``"12ms"``, ``"1s"``, ``"59.5s"``, ``"6m0s"``). A request larger than ``tpm``
  gets a 429 without ``retry-after`` (waiting would not help).
* Latency: successful responses wait ``latency_s + per_token_s * tokens`` (non-blocking);
  errors are answered at once.
* Counters (``requests``, ``inputs``, ``tokens``, ``rate_limited``, ``input_log``,
  ``auth_headers``) are updated under a lock when a request is handled, i.e. before any
  latency has elapsed. ``input_log`` holds each embedded text; a token-array input is logged
  as ``"tokens:1,2,3"`` (the string its vector is seeded from).
* ``clock`` (default ``time.monotonic``) may be replaced to test the rate-limit window
  without waiting.
* ``limiter="bucket"`` enforces ``rpm``/``tpm`` as per-second token buckets instead of the
  60 s window (OpenAI documents that per-minute limits may be enforced over shorter periods):
  each refills at ``limit / 60`` per second and holds ``burst_s`` seconds of it (default 2).
  ``x-ratelimit-remaining-*`` is then what the bucket holds, ``reset-*`` the time until it is
  full; a 429's ``retry-after-ms`` is the time until the request fits.
* Gateways that refuse what OpenAI takes: ``max_request_tokens`` (e.g. a proxy counting
  characters/4 with its own cap, answering 400 ``max N tokens per request``), ``max_inputs``
  with ``too_many_inputs_status`` 413 or 422 (text-embeddings-inference refuses more than 32
  inputs by default), ``max_input_tokens`` (a small context window).
* ``served_model``: the model the server really runs, whatever is asked for (a gateway
  routed to another deployment): it is named in the answer, seeds the vectors (so they
  differ from the asked-for model's) and sets their size (its native one; ``dimensions``
  in the request is ignored).
* ``header_log`` / ``query_log``: the extra request headers (``x-*`` other than the SDK's
  ``x-stainless-*``) and the query parameters of each embeddings request.
"""

from __future__ import annotations

import base64
import collections
import functools
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from etl_assets.fakes.loopback import Fault, LoopbackServer, Request, Response

__all__ = ["FakeEmbeddings", "count_tokens", "fake_vector", "go_duration"]

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
WINDOW_S = 60.0
EMBEDDINGS_PATH = "/v1/embeddings"
_ALLOWED_FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}
_NO_DIMENSIONS_MODELS = {"text-embedding-ada-002"}


def count_tokens(text: str) -> int:
    """Approximate token count: ``ceil(len(text) / 4)`` (0 for the empty string)."""
    return (len(text) + 3) // 4


def _unit_vector32(key: str, dimensions: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    vec = np.random.default_rng(seed).standard_normal(dimensions)
    vec /= np.linalg.norm(vec)
    return vec.astype("<f4")


@functools.lru_cache(maxsize=16)
def _float_array_format(dimensions: int) -> str:
    # One %-format for the whole array is ~1.5x faster than formatting floats one by one.
    return "[" + ",".join(["%.9g"] * dimensions) + "]"


def fake_vector(text: str, dimensions: int) -> list[float]:
    """Deterministic unit vector (float32 values as Python floats) for ``text``."""
    if dimensions < 1:
        raise ValueError("dimensions must be >= 1")
    return _unit_vector32(text, dimensions).tolist()


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String`` at millisecond precision: 12ms, 1s, 6m0s."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers or {}

    def response(self) -> Response:
        return Response.json(self.body, self.status, self.headers)


@dataclass
class _Parsed:
    model: str
    keys: list[str]  # text per input (token arrays as "tokens:1,2,3")
    token_counts: list[int]
    encoding_format: str
    dimensions: int


class _SlidingWindow:
    """Requests and tokens accepted during the last 60 s."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.entries: collections.deque[tuple[float, int]] = collections.deque()
        self.used_tokens = 0

    def _prune(self, now: float) -> None:
        while self.entries and self.entries[0][0] + WINDOW_S <= now:
            _, tokens = self.entries.popleft()
            self.used_tokens -= tokens

    def _reset_in(self, now: float) -> float:
        return self.entries[-1][0] + WINDOW_S - now if self.entries else 0.0

    def headers(self, now: float) -> dict[str, str]:
        reset = go_duration(self._reset_in(now))
        out: dict[str, str] = {}
        if self.rpm is not None:
            out["x-ratelimit-limit-requests"] = str(self.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, self.rpm - len(self.entries)))
            out["x-ratelimit-reset-requests"] = reset
        if self.tpm is not None:
            out["x-ratelimit-limit-tokens"] = str(self.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm - self.used_tokens))
            out["x-ratelimit-reset-tokens"] = reset
        return out

    def admit(self, now: float, tokens: int, model: str) -> dict[str, str]:
        """Record the request, or raise a 429 :class:`_ApiError`; returns headers."""
        self._prune(now)
        if self.rpm is not None and len(self.entries) >= self.rpm:
            wait = self.entries[len(self.entries) - self.rpm][0] + WINDOW_S - now
            self._reject(now, wait, "requests", "RPM", self.rpm, len(self.entries), 1, model)
        if self.tpm is not None and tokens > self.tpm:
            message = (
                f"Request too large for {model} on tokens per min (TPM): Limit {self.tpm}, "
                f"Requested {tokens}. Reduce the input size of this request."
            )
            raise _ApiError(429, message, type="tokens", code="rate_limit_exceeded", headers=self.headers(now))
        if self.tpm is not None and self.used_tokens + tokens > self.tpm:
            freed, wait = 0, 0.0
            for stamp, spent in self.entries:
                freed += spent
                wait = stamp + WINDOW_S - now
                if self.used_tokens - freed + tokens <= self.tpm:
                    break
            self._reject(now, wait, "tokens", "TPM", self.tpm, self.used_tokens, tokens, model)
        self.entries.append((now, tokens))
        self.used_tokens += tokens
        return self.headers(now)

    def _reject(
        self, now: float, wait: float, kind: str, unit: str, limit: int, used: int, asked: int, model: str
    ) -> None:
        wait = max(wait, 0.001)
        headers = self.headers(now)
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        message = (
            f"Rate limit reached for {model} on {kind} per min ({unit}): Limit {limit}, Used {used}, "
            f"Requested {asked}. Please try again in {go_duration(wait)}."
        )
        raise _ApiError(429, message, type=kind, code="rate_limit_exceeded", headers=headers)


class _TokenBuckets:
    """Requests and tokens as buckets refilled every moment at ``limit / 60`` per second."""

    def __init__(self, rpm: int | None, tpm: int | None, burst_s: float, now: float) -> None:
        self.rpm, self.tpm, self.burst_s = rpm, tpm, burst_s
        self.levels = {k: self._capacity(v) for k, v in (("requests", rpm), ("tokens", tpm)) if v is not None}
        self.updated = now

    def _capacity(self, limit: int) -> float:
        return max(1.0, limit / WINDOW_S * self.burst_s)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        for kind, limit in (("requests", self.rpm), ("tokens", self.tpm)):
            if limit is not None:
                self.levels[kind] = min(self._capacity(limit), self.levels[kind] + elapsed * limit / WINDOW_S)

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind, limit in (("requests", self.rpm), ("tokens", self.tpm)):
            if limit is not None:
                level = self.levels[kind]
                out[f"x-ratelimit-limit-{kind}"] = str(limit)
                out[f"x-ratelimit-remaining-{kind}"] = str(int(level))
                out[f"x-ratelimit-reset-{kind}"] = go_duration((self._capacity(limit) - level) / (limit / WINDOW_S))
        return out

    def admit(self, now: float, tokens: int, model: str) -> dict[str, str]:
        self._refill(now)
        asks = (("requests", self.rpm, 1, "RPM"), ("tokens", self.tpm, tokens, "TPM"))
        for kind, limit, asked, unit in asks:
            if limit is None:
                continue
            if asked > self._capacity(limit):
                message = f"Request too large for {model} on {kind} per min ({unit}): Limit {limit}, Requested {asked}."
                raise _ApiError(429, message, type=kind, code="rate_limit_exceeded", headers=self.headers())
            if self.levels[kind] < asked:
                wait = max(0.001, (asked - self.levels[kind]) / (limit / WINDOW_S))
                headers = self.headers()
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
                message = (
                    f"Rate limit reached for {model} on {kind} per min ({unit}): Limit {limit}, "
                    f"Requested {asked}. Please try again in {go_duration(wait)}."
                )
                raise _ApiError(429, message, type=kind, code="rate_limit_exceeded", headers=headers)
        for kind, limit, asked, _ in asks:
            if limit is not None:
                self.levels[kind] -= asked
        return self.headers()


class FakeEmbeddings:
    def __init__(
        self,
        *,
        dimensions: int = 1536,
        latency_s: float = 0.0,
        per_token_s: float = 0.0,
        rpm: int | None = None,
        tpm: int | None = None,
        model_dimensions: dict[str, int] | None = None,
        token_counter: Callable[[str], int] | None = None,
        limiter: str = "window",
        burst_s: float = 2.0,
        max_inputs: int = MAX_INPUTS,
        too_many_inputs_status: int = 400,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        max_request_tokens: int = MAX_REQUEST_TOKENS,
        served_model: str | None = None,
    ) -> None:
        """``dimensions``: native size of every model not listed in ``model_dimensions``.

        ``token_counter`` replaces :func:`count_tokens` (e.g. an exact cl100k count, so that
        inputs a client split at 8192 real tokens are not refused by the approximation).
        """
        self.dimensions = dimensions
        self.latency_s = latency_s
        self.per_token_s = per_token_s
        self.rpm = rpm
        self.tpm = tpm
        self.model_dimensions = dict(model_dimensions or {})
        self.token_counter: Callable[[str], int] = token_counter or count_tokens
        if limiter not in ("window", "bucket"):
            raise ValueError(f"limiter must be 'window' or 'bucket', got {limiter!r}")
        self.limiter, self.burst_s = limiter, burst_s
        self.max_inputs, self.too_many_inputs_status = max_inputs, too_many_inputs_status
        self.max_input_tokens, self.max_request_tokens = max_input_tokens, max_request_tokens
        self.served_model = served_model
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()
        self._window: _SlidingWindow | _TokenBuckets = self._new_limiter()
        self._server = LoopbackServer(self._handle)
        self.reset_counters()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``, ending in ``/v1``."""
        return self._server.url + "/v1"

    @property
    def server(self) -> LoopbackServer:
        return self._server

    @property
    def faults(self) -> collections.deque[Fault]:
        return self._server.faults

    @property
    def connections_opened(self) -> int:
        return self._server.connections_opened

    def start(self) -> FakeEmbeddings:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeEmbeddings:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FakeEmbeddings {self._server!r} dimensions={self.dimensions}>"

    # -- counters --------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero the counters and logs and empty the rate-limit window."""
        with self._lock:
            self._requests = 0
            self._inputs = 0
            self._tokens = 0
            self._rate_limited = 0
            self._input_log: list[str] = []
            self._auth_headers: list[str] = []
            self._header_log: list[dict[str, str]] = []
            self._query_log: list[dict[str, str]] = []
            self._window = self._new_limiter()

    def _new_limiter(self) -> _SlidingWindow | _TokenBuckets:
        if self.limiter == "bucket":
            return _TokenBuckets(self.rpm, self.tpm, self.burst_s, self.clock())
        return _SlidingWindow(self.rpm, self.tpm)

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def inputs(self) -> int:
        with self._lock:
            return self._inputs

    @property
    def tokens(self) -> int:
        with self._lock:
            return self._tokens

    @property
    def rate_limited(self) -> int:
        with self._lock:
            return self._rate_limited

    @property
    def input_log(self) -> list[str]:
        with self._lock:
            return list(self._input_log)

    @property
    def auth_headers(self) -> list[str]:
        with self._lock:
            return list(self._auth_headers)

    @property
    def header_log(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._header_log)

    @property
    def query_log(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._query_log)

    # -- request handling --------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        try:
            return self._embeddings(request)
        except _ApiError as err:
            return err.response()

    def _embeddings(self, request: Request) -> Response:
        if request.path.rstrip("/") != EMBEDDINGS_PATH:
            raise _ApiError(404, f"Invalid URL ({request.method} {request.path})")
        if request.method != "POST":
            raise _ApiError(405, f"Method not allowed ({request.method} {request.path}); use POST")
        authorization = request.headers.get("authorization")
        extra = {k: v for k, v in request.headers.items() if k.startswith("x-") and not k.startswith("x-stainless")}
        with self._lock:
            self._header_log.append(extra)
            self._query_log.append(dict(request.query))
            if authorization is not None:
                self._auth_headers.append(authorization)
        scheme, _, key = (authorization or "").partition(" ")
        if authorization is None:
            raise _ApiError(401, "No API key provided: send an 'Authorization: Bearer <key>' header.")
        if scheme.lower() != "bearer" or not key.strip():
            raise _ApiError(401, "Malformed Authorization header; expected 'Bearer <key>'.", code="invalid_api_key")
        parsed = self._parse(request.body)
        total_tokens = sum(parsed.token_counts)

        with self._lock:
            try:
                rate_headers = self._window.admit(self.clock(), total_tokens, parsed.model)
            except _ApiError:
                self._rate_limited += 1
                raise
            self._requests += 1
            self._inputs += len(parsed.keys)
            self._tokens += total_tokens
            self._input_log.extend(parsed.keys)

        delay = self.latency_s + self.per_token_s * total_tokens
        if self.served_model is not None:  # what the deployment really runs: its model, its own size
            parsed.model = self.served_model
            parsed.keys = [f"{self.served_model}\x1f{k}" for k in parsed.keys]
            parsed.dimensions = self.model_dimensions.get(self.served_model, self.dimensions)
        body = self._render(parsed, total_tokens)
        headers = {
            "content-type": "application/json",
            "openai-model": parsed.model,
            "openai-processing-ms": str(round(delay * 1000)),
            "openai-version": "2020-10-01",
            "x-request-id": f"req_{uuid.uuid4().hex}",
            **rate_headers,
        }
        return Response(200, headers, body, delay_s=delay)

    def _parse(self, raw: bytes) -> _Parsed:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise _ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - _ALLOWED_FIELDS)
        if unknown:
            raise _ApiError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])

        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "'model' is required and must be a non-empty string.", param="model")
        if "input" not in body:
            raise _ApiError(400, "'input' is a required property.", param="input")
        keys, counts = self._parse_input(body["input"])

        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise _ApiError(
                400, f"'encoding_format' must be 'float' or 'base64', got {encoding_format!r}.", param="encoding_format"
            )

        native = self.model_dimensions.get(model, self.dimensions)
        dimensions = body.get("dimensions")
        if dimensions is None:
            dimensions = native
        elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise _ApiError(400, "'dimensions' must be an integer >= 1.", param="dimensions")
        elif model in _NO_DIMENSIONS_MODELS:
            raise _ApiError(400, f"The model {model} does not support specifying dimensions.", param="dimensions")
        elif dimensions > native:
            raise _ApiError(
                400,
                f"'dimensions' is {dimensions} but {model} produces at most {native} dimensions.",
                param="dimensions",
            )
        return _Parsed(model, keys, counts, encoding_format, dimensions)

    def _parse_input(self, value: Any) -> tuple[list[str], list[int]]:
        def is_token(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool) and x >= 0

        if isinstance(value, str):
            items: list[Any] = [value]
        elif isinstance(value, list) and value and all(is_token(x) for x in value):
            items = [value]  # a single token array
        elif isinstance(value, list):
            items = value
        else:
            raise _ApiError(400, "'input' must be a string, an array of strings or of token arrays.", param="input")
        if not items:
            raise _ApiError(400, "'input' must not be empty.", param="input")
        if len(items) > self.max_inputs:
            if self.too_many_inputs_status != 400:  # worded like a text-embeddings-inference validation error
                raise _ApiError(
                    self.too_many_inputs_status,
                    f"batch size {len(items)} > maximum allowed batch size {self.max_inputs}",
                    type="Validation",
                )
            raise _ApiError(
                400, f"'input' has {len(items)} items; at most {self.max_inputs} inputs are allowed.", param="input"
            )
        keys: list[str] = []
        counts: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                if not item:
                    raise _ApiError(400, f"'input[{i}]' must not be an empty string.", param="input")
                keys.append(item)
                counts.append(self.token_counter(item))
            elif isinstance(item, list) and item and all(is_token(x) for x in item):
                keys.append("tokens:" + ",".join(map(str, item)))
                counts.append(len(item))
            else:
                raise _ApiError(
                    400, f"'input[{i}]' must be a non-empty string or a non-empty token array.", param="input"
                )
            if counts[-1] > self.max_input_tokens:
                raise _ApiError(
                    400,
                    f"'input[{i}]' has {counts[-1]} tokens; the maximum is {self.max_input_tokens} per input.",
                    param="input",
                    code="context_length_exceeded",
                )
        if sum(counts) > self.max_request_tokens:
            if self.max_request_tokens != MAX_REQUEST_TOKENS:  # a gateway's own wording: the cap, not the count
                raise _ApiError(400, f"max {self.max_request_tokens} tokens per request", param="input")
            raise _ApiError(
                400,
                f"The inputs total {sum(counts)} tokens; the maximum is {self.max_request_tokens} per request.",
                param="input",
                code="max_tokens_per_request",
            )
        return keys, counts

    @staticmethod
    def _render(parsed: _Parsed, total_tokens: int) -> bytes:
        items = []
        for index, key in enumerate(parsed.keys):
            vec = _unit_vector32(key, parsed.dimensions)
            if parsed.encoding_format == "base64":
                value = '"' + base64.b64encode(vec.tobytes()).decode("ascii") + '"'
            else:
                value = _float_array_format(parsed.dimensions) % tuple(vec.tolist())
            items.append(f'{{"object":"embedding","index":{index},"embedding":{value}}}')
        usage = f'{{"prompt_tokens":{total_tokens},"total_tokens":{total_tokens}}}'
        text = f'{{"object":"list","data":[{",".join(items)}],"model":{json.dumps(parsed.model)},"usage":{usage}}}'
        return text.encode("utf-8")
