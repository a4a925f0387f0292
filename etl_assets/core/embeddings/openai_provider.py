"""Embeddings from OpenAI or any OpenAI-compatible endpoint, through AsyncOpenAI.

The client and its httpx pool are created by :func:`open_openai_embedder`, an async
context manager, so they are opened and closed inside the event loop that uses them.

Retries are ours, not the SDK's (its ``max_retries`` is 0): a 429 has to pause every
request that shares the budget, not only the one that got it, and the waits and counts
have to reach the asset's metadata. Each request reserves its place in a
:class:`~etl_assets.core.embeddings.ratelimit.RateLimiter` first; the raw response gives
us the ``x-ratelimit-*`` headers that keep that budget in step with the server (errors
arrive as the SDK's exceptions, which carry the response and its headers too).

We ask for base64 vectors (a quarter of the bytes of decimal floats and no float
parsing) and accept float lists from servers that ignore ``encoding_format``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np
import openai

from etl_assets.core.embeddings.base import EmbeddingError, EmbeddingStats, check_vectors, cut_points
from etl_assets.core.embeddings.ratelimit import (
    RateLimiter,
    RateLimitInfo,
    backoff_s,
    retry_delay_s,
    shared_limiter,
)
from etl_assets.core.embeddings.tokens import cl100k
from etl_assets.core.http import display_url, host_port, one_line, parse_retry_after, transport_reason

log = logging.getLogger(__name__)

OPENAI_MAX_INPUT_TOKENS = 8192
OPENAI_MAX_BATCH_INPUTS = 2048
OPENAI_MAX_BATCH_TOKENS = 300_000
DEFAULT_RATE_LIMIT_TIMEOUT_S = 600.0
# Statuses worth asking again (429 has its own path, paced by the shared budget):
# 408 the server gave up waiting for our request; 500, 502, 503 and 504 an overloaded or
# restarting server or gateway. Everything else fails at once, because asking again gets
# the same answer: 400/422 a request the model refuses, 401/403 the key, 404/405/501 a base
# URL that is not an embeddings API (a 501 used to be retried six times), 413 a request too
# large. 409 is not retried either: OpenAI's SDK retries it for lock timeouts on stateful
# endpoints, but an embedding request creates nothing to conflict over. A server may still
# decide either way with ``x-should-retry: true|false`` (the convention the SDK follows).
RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})
MAX_HINTED_WAIT_S = 60.0  # a 5xx's retry-after beyond this is not worth holding a step for


class _BadBody(Exception):
    """A 200 whose body we cannot read (a gateway hiccup): worth another attempt."""


class OpenAIEmbedder:
    """One model on one OpenAI-compatible endpoint; see the module docstring."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        dimensions: int,
        *,
        send_dimensions: bool = True,  # text-embedding-3-* accept "dimensions"; ada-002 and many gateways do not
        limiter: RateLimiter | None = None,
        stats: EmbeddingStats | None = None,
        max_retries: int = 6,  # transient failures (5xx, timeouts, resets) per request
        rate_limit_timeout_s: float = DEFAULT_RATE_LIMIT_TIMEOUT_S,  # 429 waits per request before giving up
        max_input_tokens: int = OPENAI_MAX_INPUT_TOKENS,
        max_batch_inputs: int = OPENAI_MAX_BATCH_INPUTS,
        max_batch_tokens: int = OPENAI_MAX_BATCH_TOKENS,
    ) -> None:
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.send_dimensions = send_dimensions
        self.limiter = limiter or RateLimiter()
        self.stats = stats or EmbeddingStats()
        self.max_retries = max_retries
        self.rate_limit_timeout_s = rate_limit_timeout_s
        self.max_input_tokens = max_input_tokens
        self.max_batch_inputs = max_batch_inputs
        self._batch_tokens = max_batch_tokens

    @property
    def where(self) -> str:
        """The endpoint for messages: host and port, and the setting that chose it (no credentials)."""
        base = str(self.client.base_url)  # the SDK adds a trailing slash the setting did not have
        return f"the provider at {host_port(base)} (OPENAI_BASE_URL={display_url(base).rstrip('/')})"

    @property
    def max_batch_tokens(self) -> int:
        """Tokens per request: the configured cap, lowered to a slice of the TPM once one is known."""
        cap = self.limiter.request_token_cap()
        return self._batch_tokens if cap is None else min(self._batch_tokens, cap)

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int) -> None:
        self._batch_tokens = value

    # -- tokens ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(cl100k().encode(text))

    def split(self, text: str, max_tokens: int) -> list[str]:
        return [piece for piece, _ in self.split_counted(text, max_tokens)]

    def split_counted(self, text: str, max_tokens: int) -> list[tuple[str, int]]:
        """Pieces of at most ``max_tokens`` tokens with their counts, from one encoding pass."""
        enc = cl100k()
        tokens = enc.encode(text)
        if len(tokens) <= max_tokens:
            return [(text, len(tokens))]
        out, start = [], 0
        for end in cut_points(
            len(tokens), max_tokens, lambda i: enc.decode_single_token_bytes(tokens[i]).endswith(b"\n")
        ):
            out.append((enc.decode(tokens[start:end]), end - start))
            start = end
        return out

    # -- embedding ---------------------------------------------------------------------

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = await self.embed_counted(texts)
        return vectors.astype(float).tolist()

    async def embed_counted(self, texts: Sequence[str], token_counts: Sequence[int] | None = None) -> np.ndarray:
        """Vectors for ``texts`` as a float32 array, one row per text, in order.

        ``token_counts`` (the caller usually has them) spare a second tokenization; they
        size the reservation in the rate budget.
        """
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dimensions), dtype="<f4")
        counts = list(token_counts) if token_counts is not None else [self.count_tokens(t) for t in texts]
        if len(counts) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(counts)} token counts")
        parts = [await self._request(texts[a:b], counts[a:b]) for a, b in self._groups(counts)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _groups(self, counts: list[int]) -> list[tuple[int, int]]:
        # Normally one group: the engine packs below max_batch_tokens. A batch packed before
        # the server announced its TPM may be larger than what is worth sending now.
        cap = self.limiter.request_token_cap()
        tpm = self.limiter.effective_tpm
        if tpm is not None and max(counts) > tpm:
            raise EmbeddingError(
                f"model {self.model}: an input of {max(counts)} tokens exceeds the rate limit of {tpm} tokens "
                "per minute; lower EMBEDDING_CHUNK_TOKENS or raise the limit"
            )
        if cap is None or sum(counts) <= cap:
            return [(0, len(counts))]
        groups, start, tokens = [], 0, 0
        for i, n in enumerate(counts):
            if i > start and tokens + n > cap:
                groups.append((start, i))
                start, tokens = i, 0
            tokens += n
        groups.append((start, len(counts)))
        return groups

    async def _request(self, texts: list[str], counts: list[int]) -> np.ndarray:
        tokens = sum(counts)
        extra = {"dimensions": self.dimensions} if self.send_dimensions else {}
        transient = 0  # failed attempts other than 429
        throttled = 0  # 429 answers for this request
        throttled_s = 0.0
        while True:
            cap = self.limiter.request_token_cap()
            if len(texts) > 1 and cap is not None and tokens > cap:
                # Packed before the server announced its TPM: as one request it would wait for a
                # whole window to drain, or never fit. Slices are what the budget can pace.
                return await self.embed_counted(texts, counts)
            try:
                reservation = await self.limiter.acquire(tokens)
            except ValueError as exc:  # one input larger than the whole TPM
                raise EmbeddingError(f"model {self.model}: {exc}; lower EMBEDDING_CHUNK_TOKENS") from None
            self.stats.waited_s += reservation.waited_s
            self.stats.http_requests += 1
            try:
                # The SDK's plain POST (its documented way to reach any endpoint) returns the
                # raw httpx response: headers for the budget, and a body we decode ourselves.
                # embeddings.create would walk every input through its type transform and
                # build pydantic objects for thousands of vectors we only turn into arrays.
                raw = await self.client.post(
                    "/embeddings",
                    cast_to=httpx.Response,
                    body={"model": self.model, "input": texts, "encoding_format": "base64", **extra},
                )
                self.limiter.observe(RateLimitInfo.from_headers(raw.headers))
                vectors, usage_tokens = _decode_body(raw.content, len(texts))
            except openai.RateLimitError as exc:
                # Refused requests do not count on OpenAI-compatible servers we know; if they
                # do, the next response's x-ratelimit-remaining books them again.
                self.limiter.cancel(reservation.entry)
                self.stats.rate_limited += 1
                info = RateLimitInfo.from_headers(exc.response.headers)
                self.limiter.observe(info)
                if _error_code(exc) == "insufficient_quota":
                    raise EmbeddingError(
                        f"model {self.model}: {self.where} reports the quota of the key in OPENAI_API_KEY is "
                        f"used up (HTTP 429 insufficient_quota): {self._said(exc)}"
                    ) from None
                cap = self.limiter.request_token_cap()
                if len(texts) > 1 and cap is not None and tokens > cap:
                    self.stats.retries += 1
                    continue  # the 429 announced a TPM this request is too large for: sliced above
                if info.limit_tokens is not None and tokens > info.limit_tokens:
                    raise EmbeddingError(
                        f"model {self.model}: one input of {tokens} tokens exceeds the provider's limit of "
                        f"{info.limit_tokens:.0f} tokens per minute"
                    ) from None
                delay, source = retry_delay_s(info, throttled, tokens=tokens)
                throttled += 1
                throttled_s += delay
                if throttled_s > self.rate_limit_timeout_s:
                    raise EmbeddingError(
                        f"model {self.model}: still rate limited (HTTP 429) after {throttled} attempts and "
                        f"{throttled_s - delay:.0f}s of waiting at {self.where}: {self._said(exc)}"
                    ) from None
                log.debug("429 from %s; pausing %.3fs (%s)", self.model, delay, source)
                self.limiter.pause(delay)  # every request of this budget waits, not only this one
                self.stats.retries += 1
                continue
            except openai.APIStatusError as exc:
                self.limiter.cancel(reservation.entry)
                if not _retryable(exc):
                    raise self._status_error(exc) from None
                hint = parse_retry_after(exc.response.headers)
                failure = f"HTTP {exc.status_code} from {self.where}: {self._said(exc)}"
            except openai.APITimeoutError:  # the server may have counted it
                failure = f"no answer from {self.where} within EMBEDDING_TIMEOUT_S={self._timeout_s()}"
                hint = None
            except openai.APIConnectionError as exc:
                failure = f"cannot reach {self.where}: {transport_reason(exc)}"
                hint = None
            except _BadBody as exc:
                failure = f"unreadable response from {self.where}: {exc}"
                hint = None
            else:
                check_vectors(vectors, len(texts), self.dimensions, self.model)  # type: ignore[arg-type]
                self.stats.requests += 1
                self.stats.inputs += len(texts)
                self.stats.tokens += usage_tokens if usage_tokens is not None else tokens
                return np.asarray(vectors)
            transient += 1
            self.stats.transient_errors += 1
            if transient > self.max_retries:
                # from None: the message holds the cause; the chain would only add the SDK's frames.
                raise EmbeddingError(f"model {self.model}: {failure} (after {self.max_retries} retries)") from None
            delay = min(hint, MAX_HINTED_WAIT_S) if hint is not None else backoff_s(transient - 1)
            log.debug("embedding attempt failed (%s); retrying in %.3fs", failure, delay)
            self.stats.retries += 1
            self.stats.waited_s += delay
            await asyncio.sleep(delay)

    # -- errors ----------------------------------------------------------------------------

    def _timeout_s(self) -> str:
        seconds = getattr(self.client.timeout, "read", self.client.timeout)  # a float or a Timeout
        return f"{seconds:g}s" if isinstance(seconds, int | float) else "?"

    def _said(self, exc: openai.APIStatusError) -> str:
        """The provider's own message, on one line, with the key taken out should it echo it."""
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else body if isinstance(body, str) else None
        text = one_line(str(message or exc.response.reason_phrase or "no message"))
        key = self.client.api_key
        return text.replace(key, "***") if key and len(key) >= 8 else text

    def _status_error(self, exc: openai.APIStatusError) -> EmbeddingError:
        """One line naming the status, the host and the setting to look at; never a setting's secret value."""
        status, model = exc.status_code, self.model
        head = f"model {model}: {self.where}"
        if status == 401:  # the provider's message may quote part of the key: not repeated
            return EmbeddingError(f"{head} refused the API key (HTTP 401); check OPENAI_API_KEY")
        said = self._said(exc)
        if status == 403:
            return EmbeddingError(
                f"{head} denied access (HTTP 403): {said}; check that OPENAI_API_KEY may use EMBEDDING_MODEL={model}"
            )
        if status == 404 and (_error_code(exc) == "model_not_found" or "model" in said.lower()):
            return EmbeddingError(f"{head} does not know this model (HTTP 404): {said}; check EMBEDDING_MODEL")
        if status in (404, 405, 501):
            return EmbeddingError(
                f"{head} does not serve POST {self.client.base_url.path.rstrip('/')}/embeddings (HTTP {status}: "
                f"{said}); check OPENAI_BASE_URL, which names the API root of an OpenAI-compatible server "
                "(usually ending in /v1)"
            )
        if status == 413:
            return EmbeddingError(
                f"{head} refused a request as too large (HTTP 413); lower EMBEDDING_BATCH_TOKENS or "
                "EMBEDDING_BATCH_INPUTS"
            )
        if status in (400, 422):
            lowered = said.lower()
            if "dimension" in lowered:
                setting = "EMBEDDING_DIMENSIONS"
            elif "token" in lowered or "context length" in lowered:
                setting = "EMBEDDING_CHUNK_TOKENS"
            else:
                setting = "EMBEDDING_MODEL and EMBEDDING_DIMENSIONS"
            return EmbeddingError(f"{head} refused the request (HTTP {status}): {said}; check {setting}")
        return EmbeddingError(f"{head} answered HTTP {status}: {said}")


def _retryable(exc: openai.APIStatusError) -> bool:
    """Whether asking again may get another answer (see ``RETRY_STATUSES``)."""
    hint = exc.response.headers.get("x-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    return exc.status_code in RETRY_STATUSES


def _error_code(exc: openai.APIStatusError) -> str | None:
    code: object = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return str(code)
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    return error.get("code") if isinstance(error, dict) else None


def _decode_body(body: bytes, expected: int) -> tuple[np.ndarray | list[Any], int | None]:
    """Rows in input order, decoded from base64 float32 or from float lists."""
    try:
        doc = json.loads(body)
        data = sorted(doc["data"], key=lambda d: d["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _BadBody(f"{type(exc).__name__}: {exc}") from None
    if len(data) != expected or not data:
        return [d.get("embedding") for d in data], None  # check_vectors names the mismatch
    rows = [_decode(d.get("embedding")) for d in data]
    width = {len(r) for r in rows}
    vectors: np.ndarray | list[Any] = np.stack(rows) if len(width) == 1 else rows
    usage = doc.get("usage") if isinstance(doc, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return vectors, total if isinstance(total, int) else None


def _decode(value: object) -> np.ndarray:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EmbeddingError(f"embedding is not valid base64: {exc}") from None
        if len(raw) % 4:
            raise EmbeddingError(f"embedding is {len(raw)} bytes, not a whole number of float32 values")
        return np.frombuffer(raw, dtype="<f4")
    if isinstance(value, list):
        try:
            return np.asarray(value, dtype="<f4")
        except (TypeError, ValueError) as exc:
            raise EmbeddingError(f"embedding is not a list of numbers: {exc}") from None
    raise EmbeddingError(f"embedding has unexpected type {type(value).__name__}")


def limiter_key(base_url: str | None, api_key: str, model: str) -> tuple[str, str, str]:
    """Budgets are per endpoint, key and model (OpenAI limits per organisation and model)."""
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return (base_url or "https://api.openai.com/v1", fingerprint, model)


@contextlib.asynccontextmanager
async def open_openai_embedder(
    *,
    api_key: str,
    model: str,
    dimensions: int,
    base_url: str | None = None,
    timeout_s: float = 60.0,
    max_retries: int = 6,
    max_connections: int = 16,
    send_dimensions: bool | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    rate_limit_timeout_s: float = DEFAULT_RATE_LIMIT_TIMEOUT_S,
    limiter: RateLimiter | None = None,
) -> AsyncIterator[OpenAIEmbedder]:
    """Open an AsyncOpenAI client (and its pool) for this event loop and close both on exit.

    ``rpm``/``tpm`` are this embedder's client-side budget; embedders of one process with
    the same endpoint, key, model and budget share it (pass ``limiter`` to choose).
    """
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    # openai 3.x annotates http_client with its vendored httpx2 types; an httpx.AsyncClient is what it
    # accepts at run time (and what lets us own, size and close the pool in this loop).
    client = openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        http_client=http,  # type: ignore[arg-type]
        timeout=timeout_s,
    )
    if send_dimensions is None:
        send_dimensions = model.startswith("text-embedding-3")
    if limiter is None:
        limiter = shared_limiter(limiter_key(base_url, api_key, model), rpm=rpm, tpm=tpm)
    embedder = OpenAIEmbedder(
        client,
        model,
        dimensions,
        send_dimensions=send_dimensions,
        limiter=limiter,
        max_retries=max_retries,
        rate_limit_timeout_s=rate_limit_timeout_s,
    )
    try:
        yield embedder
    finally:
        await client.close()  # closes the httpx pool we passed in, in this loop
        if not http.is_closed:
            await http.aclose()
