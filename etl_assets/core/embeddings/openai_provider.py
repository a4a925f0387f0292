"""Embeddings from OpenAI or any OpenAI-compatible endpoint, through AsyncOpenAI.

The client and its httpx pool are created by :func:`open_openai_embedder`, an async
context manager, so they are opened and closed inside the event loop that uses them. They are
created when the first request is made, not when the embedder opens: importing the OpenAI SDK
takes a second or two, which a step that finds nothing to embed (a no-change run) need not pay.

Retries are ours, not the SDK's (its ``max_retries`` is 0): a 429 has to pause every
request that shares the budget, not only the one that got it, and the waits and counts
have to reach the asset's metadata. Each request reserves its place in a
:class:`~etl_assets.core.embeddings.ratelimit.RateLimiter` first; the raw response gives
us the ``x-ratelimit-*`` headers that keep that budget in step with the server (errors
arrive as the SDK's exceptions, which carry the response and its headers too).

We ask for base64 vectors (a quarter of the bytes of decimal floats and no float
parsing) and accept float lists from servers that ignore ``encoding_format``.

Requests a provider calls too large are split, never fatal. Providers count and cap
differently from OpenAI (a gateway estimating characters/4, text-embeddings-inference taking
32 inputs, a local server with a small context window), so requests are packed with a margin
(``DEFAULT_BATCH_TOKENS``), and a 400/413/422 whose message says the request is too large is
answered by splitting: the request in halves (learning a lower cap on tokens or inputs per
request, from the numbers in the message when it gives them, which every later request of
this embedder respects); a single input refused alone is handed back to the caller
(:meth:`OpenAIEmbedder.embed_or_refuse`) after learning a lower input size, below its own:
the engine re-chunks the record it came from into chunks of that size, each its own point
(never an average of pieces standing in for one chunk). Only an input of one token that is
still refused fails, as :class:`InputTooLargeError`, which tells the caller which input it was.

An optional fallback endpoint (same model) takes over after ``FALLBACK_AFTER_FAILURES``
consecutive transient failures (5xx, timeouts, connection failures) of the primary; every
``PRIMARY_RETRY_S`` one request tries the primary again, and its success switches back. Both
are probed with one input when the embedder opens: a fallback that answers with another
model or dimension is refused, so that a collection is never filled from two models.
Extra headers (values from the environment, secrets) and query parameters go to both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from etl_assets.core.embeddings.base import (
    EmbeddingError,
    EmbeddingStats,
    InputTooLargeError,
    check_vectors,
    cut_points,
)
from etl_assets.core.embeddings.ratelimit import (
    RateLimiter,
    RateLimitInfo,
    backoff_s,
    retry_delay_s,
    shared_limiter,
)
from etl_assets.core.embeddings.tokens import cl100k
from etl_assets.core.http import display_url, host_port, one_line, parse_retry_after, transport_reason

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)


def _sdk() -> Any:
    """The OpenAI SDK, imported on first use (1-2 s of imports; see the module docstring)."""
    import openai

    return openai


OPENAI_MAX_INPUT_TOKENS = 8192
OPENAI_MAX_BATCH_INPUTS = 2048
OPENAI_MAX_BATCH_TOKENS = 300_000
# Pack below OpenAI's cap: gateways and proxies count tokens their own way (often
# characters/4, which exceeds cl100k for most prose), and a refusal costs a split.
DEFAULT_BATCH_TOKENS = OPENAI_MAX_BATCH_TOKENS * 4 // 5
# A cap learned from a refusal that names the provider's count and limit is set this far
# below the limit (converted to our count), so the next request does not land on the edge.
LEARNED_CAP_MARGIN = 0.95
FALLBACK_AFTER_FAILURES = 2  # consecutive transient failures of the primary before the fallback takes over
PRIMARY_RETRY_S = 15.0  # while on the fallback, one request tries the primary this often
PROBE_TEXT = "etl-assets endpoint probe"
PROBE_MIN_COSINE = 0.98  # the same model on two endpoints gives (nearly) the same vector
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


@dataclass
class _TooLarge(Exception):
    """A refusal that says the request is too large; ``kind`` says of what."""

    kind: str  # "tokens" (per request), "inputs" (per request) or "input" (one input's size)
    message: str  # the provider's own words, secrets taken out
    numbers: tuple[int, ...]
    status: int


_TOO_LARGE = re.compile(
    r"too (large|long|many|big)|maximum|\bmax\b|exceed|at most|context (length|window)|batch size|limit",
)
_PER_INPUT = re.compile(r"input\[\d+\]|per input|context (length|window)|maximum context|sequence length")
_INPUT_COUNT = re.compile(r"batch size|inputs|items|too many|array")


def too_large_kind(status: int, message: str, code: str | None) -> str | None:
    """What a 400/413/422 says is too large (``None``: it is about something else)."""
    if status not in (400, 413, 422):
        return None
    text = message.lower()
    if "dimension" in text or "rate limit" in text:
        return None
    if (
        status != 413
        and code not in ("context_length_exceeded", "max_tokens_per_request")
        and not _TOO_LARGE.search(text)
    ):
        return None  # e.g. "'input[0]' must not be an empty string"
    if code == "context_length_exceeded" or _PER_INPUT.search(text):
        return "input"
    if "token" in text:
        return "tokens"
    if _INPUT_COUNT.search(text):
        return "inputs"
    return "tokens"  # 413 "payload too large": the body's size follows its tokens


@dataclass
class Endpoint:
    """One OpenAI-compatible endpoint: its client, its rate budget, and the settings that name it.

    ``connect`` builds the client the first time it is needed (in the loop that then uses it).
    """

    role: str  # "primary" or "fallback"
    connect: Callable[[], openai.AsyncOpenAI]
    limiter: RateLimiter
    url_setting: str = "OPENAI_BASE_URL"
    key_setting: str = "OPENAI_API_KEY"
    _client: openai.AsyncOpenAI | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = self.connect()
        return self._client

    @property
    def where(self) -> str:
        base = str(self.client.base_url)  # the SDK adds a trailing slash the setting did not have
        return f"the provider at {host_port(base)} ({self.url_setting}={display_url(base).rstrip('/')})"


class OpenAIEmbedder:
    """One model on one OpenAI-compatible endpoint (and an optional fallback); see the module docstring."""

    def __init__(
        self,
        client: openai.AsyncOpenAI | None,
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
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        fallback: Endpoint | None = None,
        secrets: Sequence[str] = (),
        connect: Callable[[], openai.AsyncOpenAI] | None = None,
    ) -> None:
        """``client``, or ``connect`` to build it on first use (then ``secrets`` must hold its key)."""
        if client is not None:
            connect = lambda: client  # noqa: E731 - the given client, as a connect function
        if connect is None:
            raise ValueError("OpenAIEmbedder needs a client or a function that connects one")
        self.primary = Endpoint("primary", connect, limiter or RateLimiter())
        self.fallback = fallback
        # As configured, even when the step does not use it (its probe failed): the doctor probes it.
        self.configured_fallback = fallback
        self.model = model
        self.dimensions = dimensions
        self.send_dimensions = send_dimensions
        self.stats = stats or EmbeddingStats()
        self.max_retries = max_retries
        self.rate_limit_timeout_s = rate_limit_timeout_s
        self._input_tokens = max_input_tokens
        self._batch_inputs = max_batch_inputs
        self._batch_tokens = max_batch_tokens
        # Caps learned from refusals, for the rest of this embedder's life (one step).
        self.learned_batch_tokens: int | None = None
        self.learned_batch_inputs: int | None = None
        self.learned_input_tokens: int | None = None
        self._refusal: _TooLarge | None = None  # the last refusal as too large, for messages
        # Values that must never be repeated in a message: the keys and the gateway headers.
        key = client.api_key if client is not None else None
        self._secrets = sorted({x for x in (key, *secrets) if x and len(x) >= 4}, key=len, reverse=True)
        self._on_fallback = False
        self._primary_failures = 0  # consecutive transient failures of the primary
        self._next_primary_try = 0.0

    # -- endpoints -----------------------------------------------------------------------

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self.primary.client

    @property
    def limiter(self) -> RateLimiter:
        """The budget of the endpoint requests go to now."""
        return self.fallback.limiter if self._on_fallback and self.fallback is not None else self.primary.limiter

    @property
    def where(self) -> str:
        """The endpoint for messages: host and port, and the setting that chose it (no credentials)."""
        return self.primary.where

    @property
    def endpoint(self) -> str:
        """The primary endpoint's URL without credentials or query: what learned limits are
        recorded against (another endpoint may take more, or less)."""
        return display_url(str(self.client.base_url)).rstrip("/")

    def _endpoint(self) -> Endpoint:
        """Where the next attempt goes: the primary, unless it failed and has not been retried yet."""
        if self.fallback is None or not self._on_fallback:
            return self.primary
        if time.monotonic() >= self._next_primary_try:
            self._next_primary_try = time.monotonic() + PRIMARY_RETRY_S  # one trial at a time
            return self.primary
        return self.fallback

    def _succeeded(self, endpoint: Endpoint) -> None:
        if endpoint is self.primary:
            self._primary_failures = 0
            if self._on_fallback:
                self._on_fallback = False
                self.stats.primary_recoveries += 1
                log.info("embeddings: %s answers again; back from the fallback", self.primary.where)
        else:
            self.stats.fallback_requests += 1

    def _failed_transiently(self, endpoint: Endpoint) -> bool:
        """Count a transient failure; True when it moved requests to the fallback."""
        if endpoint is not self.primary or self.fallback is None:
            return False
        self._primary_failures += 1
        if self._primary_failures >= FALLBACK_AFTER_FAILURES and not self._on_fallback:
            self._on_fallback = True
            self._next_primary_try = time.monotonic() + PRIMARY_RETRY_S
            self.stats.fallback_switches += 1
            log.warning(
                "embeddings: %s failed %d times in a row; using %s until it recovers",
                self.primary.where,
                self._primary_failures,
                self.fallback.where,
            )
            return True
        return self._on_fallback  # a failed trial of the primary: straight back to the fallback

    # -- caps ----------------------------------------------------------------------------

    @property
    def max_batch_tokens(self) -> int:
        """Tokens per request: the configured cap, lowered to a slice of the TPM once one is known
        and to what the provider accepted after a refusal."""
        cap = _lowest(self._batch_tokens, self.limiter.request_token_cap(), self.learned_batch_tokens)
        return max(1, cap)

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int) -> None:
        self._batch_tokens = value

    @property
    def max_batch_inputs(self) -> int:
        return max(1, _lowest(self._batch_inputs, self.learned_batch_inputs))

    @max_batch_inputs.setter
    def max_batch_inputs(self, value: int) -> None:
        self._batch_inputs = value

    @property
    def max_input_tokens(self) -> int:
        """The model's input limit, lowered to what the provider accepted after refusing an input."""
        return max(1, _lowest(self._input_tokens, self.learned_input_tokens))

    @max_input_tokens.setter
    def max_input_tokens(self, value: int) -> None:
        self._input_tokens = value

    def step_metadata(self) -> dict[str, int | str]:
        """For the step's metadata: the caps learned from refusals (none if none was needed) and,
        with a fallback, the endpoint requests go to now."""
        learned = {
            "embedding_learned_batch_tokens": self.learned_batch_tokens,
            "embedding_learned_batch_inputs": self.learned_batch_inputs,
            "embedding_learned_input_tokens": self.learned_input_tokens,
        }
        out: dict[str, int | str] = {k: v for k, v in learned.items() if v is not None}
        if self.fallback is not None:
            out["embedding_endpoint"] = "fallback" if self._on_fallback else "primary"
        return out

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
        size the reservation in the rate budget. An input the provider refuses as too large
        even alone fails as :class:`InputTooLargeError`: a caller that can cut its record
        smaller uses :meth:`embed_or_refuse` instead.
        """
        texts = list(texts)
        counts = list(token_counts) if token_counts is not None else [self.count_tokens(t) for t in texts]
        vectors, refused = await self.embed_or_refuse(texts, counts)
        if refused:
            i = refused[0]
            said = f" (HTTP {self._refusal.status}: {self._refusal.message})" if self._refusal is not None else ""
            raise InputTooLargeError(
                f"model {self.model}: {self.where} refuses an input of {counts[i]} tokens as too large{said}; "
                f"it takes at most {self.max_input_tokens} tokens per input",
                index=i,
            )
        return vectors

    async def embed_or_refuse(
        self, texts: Sequence[str], token_counts: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """Vectors for ``texts``, and the positions of inputs refused as too large even alone.

        A refused input's row holds zeros, not a vector: the caller cuts the record it came
        from into chunks of at most :attr:`max_input_tokens` tokens (lowered below the refused
        input's size by the refusal) and embeds those. Only an input of one token, which
        cannot be cut, fails, as :class:`InputTooLargeError` naming its position.
        """
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dimensions), dtype="<f4"), []
        counts = list(token_counts) if token_counts is not None else [self.count_tokens(t) for t in texts]
        if len(counts) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(counts)} token counts")
        parts, refused = [], []
        for a, b in self._groups(counts):
            try:
                vectors, group_refused = await self._embed_group(texts[a:b], counts[a:b])
            except InputTooLargeError as exc:
                exc.index += a
                raise
            parts.append(vectors)
            refused += [a + i for i in group_refused]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), refused

    def _groups(self, counts: list[int]) -> list[tuple[int, int]]:
        # Normally one group: the engine packs below max_batch_tokens. A batch packed before
        # the server announced its TPM, or before a refusal taught a lower cap, may be larger
        # than what is worth sending now.
        tpm = self.limiter.effective_tpm
        if tpm is not None and max(counts) > tpm:
            raise EmbeddingError(
                f"model {self.model}: an input of {max(counts)} tokens exceeds the rate limit of {tpm} tokens "
                "per minute; lower EMBEDDING_CHUNK_TOKENS or raise the limit"
            )
        token_cap = _lowest(self.limiter.request_token_cap(), self.learned_batch_tokens)
        input_cap = self.max_batch_inputs
        if (token_cap is None or sum(counts) <= token_cap) and len(counts) <= input_cap:
            return [(0, len(counts))]
        groups, start, tokens = [], 0, 0
        for i, n in enumerate(counts):
            if i > start and ((token_cap is not None and tokens + n > token_cap) or i - start >= input_cap):
                groups.append((start, i))
                start, tokens = i, 0
            tokens += n
        groups.append((start, len(counts)))
        return groups

    async def _embed_group(self, texts: list[str], counts: list[int]) -> tuple[np.ndarray, list[int]]:
        """One request, or, if the provider calls it too large, its halves; an input refused
        alone is handed back (see :meth:`embed_or_refuse`)."""
        try:
            return await self._request(texts, counts), []
        except _Regroup:
            # Packed before the server announced its TPM (or before a refusal taught a lower
            # cap): as one request it would wait for a whole window to drain, or never fit.
            return await self.embed_or_refuse(texts, counts)
        except _TooLarge as refusal:
            self.stats.splits += 1
            self._refusal = refusal
            self._learn(refusal, counts)
            if len(texts) == 1:
                if counts[0] <= 1:
                    setting = {"tokens": "EMBEDDING_BATCH_TOKENS", "inputs": "EMBEDDING_BATCH_INPUTS"}.get(
                        refusal.kind, "EMBEDDING_CHUNK_TOKENS"
                    )
                    raise InputTooLargeError(
                        f"model {self.model}: {self.where} refuses an input of {counts[0]} token(s) as too large "
                        f"even in the smallest pieces (HTTP {refusal.status}: {refusal.message}); check {setting}"
                    ) from None
                self.stats.refused_inputs += 1
                log.info(
                    "embeddings: an input of %d tokens refused as too large (%s); inputs now at most %d tokens",
                    counts[0],
                    refusal.message,
                    self.max_input_tokens,
                )
                return np.zeros((1, self.dimensions), dtype="<f4"), [0]
            half = len(texts) // 2
            log.info(
                "embeddings: %d inputs (%d tokens) refused as too large (%s); splitting",
                len(texts),
                sum(counts),
                refusal.message,
            )
            first, refused_first = await self.embed_or_refuse(texts[:half], counts[:half])
            try:
                second, refused_second = await self.embed_or_refuse(texts[half:], counts[half:])
            except InputTooLargeError as exc:
                exc.index += half
                raise
            return np.concatenate([first, second]), refused_first + [half + i for i in refused_second]

    def _learn(self, refusal: _TooLarge, counts: list[int]) -> None:
        """Lower the cap the refusal is about, from its numbers if it gives them, else by half.

        A single input refused lowers the input size below its own, whatever the message
        says, so that cutting it at :attr:`max_input_tokens` always makes it smaller.
        """
        tokens, inputs = sum(counts), len(counts)
        numbers = sorted(set(refusal.numbers))
        if refusal.kind == "inputs" and inputs > 1:
            below = [n for n in numbers if 0 < n < inputs]
            cap = below[-1] if below else inputs // 2
            self.learned_batch_inputs = _lowest(self.learned_batch_inputs, max(1, cap))
        elif refusal.kind == "tokens" and inputs > 1:
            self.learned_batch_tokens = _lowest(self.learned_batch_tokens, max(1, _scaled_cap(tokens, numbers)))
        elif inputs == 1:
            cap = _scaled_cap(tokens, numbers) if refusal.kind in ("input", "tokens") else tokens // 2
            self.learned_input_tokens = _lowest(self.learned_input_tokens, max(1, cap))

    async def _request(self, texts: list[str], counts: list[int]) -> np.ndarray:
        openai = _sdk()  # a request is to be made: the SDK is needed now
        tokens = sum(counts)
        extra = {"dimensions": self.dimensions} if self.send_dimensions else {}
        transient = 0  # failed attempts other than 429 on the current endpoint
        throttled = 0  # 429 answers for this request
        throttled_s = 0.0
        while True:
            endpoint = self._endpoint()
            limiter = endpoint.limiter
            cap = _lowest(limiter.request_token_cap(), self.learned_batch_tokens)
            if (len(texts) > 1 and cap is not None and tokens > cap) or len(texts) > self.max_batch_inputs:
                raise _Regroup  # too large for the caps known now: regrouped by _embed_group
            try:
                reservation = await limiter.acquire(tokens)
            except ValueError as exc:  # one input larger than the whole TPM
                raise EmbeddingError(f"model {self.model}: {exc}; lower EMBEDDING_CHUNK_TOKENS") from None
            self.stats.waited_s += reservation.waited_s
            self.stats.http_requests += 1
            try:
                # The SDK's plain POST (its documented way to reach any endpoint) returns the
                # raw httpx response: headers for the budget, and a body we decode ourselves.
                # embeddings.create would walk every input through its type transform and
                # build pydantic objects for thousands of vectors we only turn into arrays.
                raw = await endpoint.client.post(
                    "/embeddings",
                    cast_to=httpx.Response,
                    body={"model": self.model, "input": texts, "encoding_format": "base64", **extra},
                )
                limiter.observe(RateLimitInfo.from_headers(raw.headers))
                vectors, usage_tokens, _ = _decode_body(raw.content, len(texts))
            except openai.RateLimitError as exc:
                # Refused requests do not count on OpenAI-compatible servers we know; if they
                # do, the next response's x-ratelimit-remaining books them again.
                limiter.cancel(reservation.entry)
                self.stats.rate_limited += 1
                info = RateLimitInfo.from_headers(exc.response.headers)
                limiter.observe(info)
                limiter.throttled()  # pace slower: multiplicative decrease
                if _error_code(exc) == "insufficient_quota":
                    raise EmbeddingError(
                        f"model {self.model}: {endpoint.where} reports the quota of the key in "
                        f"{endpoint.key_setting} is used up (HTTP 429 insufficient_quota): {self._said(exc)}"
                    ) from None
                cap = limiter.request_token_cap()
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
                        f"{throttled_s - delay:.0f}s of waiting at {endpoint.where}: {self._said(exc)}"
                    ) from None
                log.debug("429 from %s; pausing %.3fs (%s)", self.model, delay, source)
                limiter.pause(delay)  # every request of this budget waits, not only this one
                self.stats.retries += 1
                continue
            except openai.APIStatusError as exc:
                limiter.cancel(reservation.entry)
                limiter.observe(RateLimitInfo.from_headers(exc.response.headers))
                said = self._said(exc)
                kind = too_large_kind(exc.status_code, said, _error_code(exc))
                if kind is not None:
                    numbers = tuple(int(n) for n in re.findall(r"\d+", said))
                    raise _TooLarge(kind, said, numbers, exc.status_code) from None
                if not _retryable(exc):
                    raise self._status_error(exc, endpoint) from None
                hint = parse_retry_after(exc.response.headers)
                failure = f"HTTP {exc.status_code} from {endpoint.where}: {said}"
            except openai.APITimeoutError:  # the server may have counted it
                limiter.no_answer()
                failure = f"no answer from {endpoint.where} within EMBEDDING_TIMEOUT_S={self._timeout_s()}"
                hint = None
            except openai.APIConnectionError as exc:
                limiter.no_answer()
                failure = f"cannot reach {endpoint.where}: {self._redact(transport_reason(exc))}"
                hint = None
            except _BadBody as exc:
                failure = f"unreadable response from {endpoint.where}: {self._redact(str(exc))}"
                hint = None
            else:
                check_vectors(vectors, len(texts), self.dimensions, self.model)  # type: ignore[arg-type]
                limiter.answered()  # pace faster again: additive increase
                self._succeeded(endpoint)
                self.stats.requests += 1
                self.stats.inputs += len(texts)
                self.stats.tokens += usage_tokens if usage_tokens is not None else tokens
                return np.asarray(vectors)
            self.stats.transient_errors += 1
            if self._failed_transiently(endpoint):
                transient = 0  # a fresh budget of retries on the other endpoint
                log.debug("embedding attempt failed (%s); trying the fallback", failure)
                self.stats.retries += 1
                continue
            transient += 1
            if transient > self.max_retries:
                # from None: the message holds the cause; the chain would only add the SDK's frames.
                raise EmbeddingError(f"model {self.model}: {failure} (after {self.max_retries} retries)") from None
            delay = min(hint, MAX_HINTED_WAIT_S) if hint is not None else backoff_s(transient - 1)
            log.debug("embedding attempt failed (%s); retrying in %.3fs", failure, delay)
            self.stats.retries += 1
            self.stats.waited_s += delay
            await asyncio.sleep(delay)

    # -- the probe at step start -------------------------------------------------------------

    async def probe(self, endpoint: Endpoint) -> tuple[str | None, np.ndarray]:
        """One input through ``endpoint`` (no retries): the model it reports and the vector."""
        openai = _sdk()
        extra = {"dimensions": self.dimensions} if self.send_dimensions else {}
        reservation = await endpoint.limiter.acquire(8)
        self.stats.waited_s += reservation.waited_s
        self.stats.http_requests += 1
        try:
            raw = await endpoint.client.post(
                "/embeddings",
                cast_to=httpx.Response,
                body={"model": self.model, "input": [PROBE_TEXT], "encoding_format": "base64", **extra},
            )
        except openai.APIStatusError as exc:
            endpoint.limiter.cancel(reservation.entry)
            endpoint.limiter.observe(RateLimitInfo.from_headers(exc.response.headers))
            if _retryable(exc) or exc.status_code == 429:
                raise _Unavailable(f"HTTP {exc.status_code} from {endpoint.where}: {self._said(exc)}") from None
            raise self._status_error(exc, endpoint) from None
        except openai.APITimeoutError:
            endpoint.limiter.no_answer()
            raise _Unavailable(
                f"no answer from {endpoint.where} within EMBEDDING_TIMEOUT_S={self._timeout_s()}"
            ) from None
        except openai.APIConnectionError as exc:
            endpoint.limiter.no_answer()
            raise _Unavailable(f"cannot reach {endpoint.where}: {self._redact(transport_reason(exc))}") from None
        endpoint.limiter.observe(RateLimitInfo.from_headers(raw.headers))
        try:
            vectors, _, model = _decode_body(raw.content, 1)
        except _BadBody as exc:
            raise _Unavailable(f"unreadable response from {endpoint.where}: {self._redact(str(exc))}") from None
        if len(vectors) != 1:
            raise EmbeddingError(f"model {self.model}: {endpoint.where} answered the probe with {len(vectors)} vectors")
        return model, np.asarray(vectors[0], dtype="<f4")

    async def check_endpoints(self) -> None:
        """Probe the primary and the fallback; refuse a fallback serving another model or dimension.

        A primary that cannot be reached now starts the step on the fallback (still checked
        against the configured model and dimension); a fallback that cannot be reached is not
        used in this step (it was not verified).
        """
        fallback = self.fallback
        if fallback is None:
            return
        answers: dict[str, tuple[str | None, np.ndarray] | str] = {}
        for endpoint in (self.primary, fallback):
            try:
                answers[endpoint.role] = await self.probe(endpoint)
            except _Unavailable as exc:
                answers[endpoint.role] = str(exc)
        primary, second = answers["primary"], answers["fallback"]
        if isinstance(second, str):
            if isinstance(primary, str):
                raise EmbeddingError(f"model {self.model}: neither endpoint answers the probe: {primary}; {second}")
            log.warning("embeddings: fallback not used in this step, its probe failed: %s", second)
            self.fallback = None
            return
        model, vector = second
        head = f"model {self.model}: refusing the fallback {fallback.where}"
        if len(vector) != self.dimensions:
            raise EmbeddingError(
                f"{head}: it returns {len(vector)}-dimension vectors, the collection holds {self.dimensions} "
                "(EMBEDDING_DIMENSIONS); a collection is never filled from two models"
            )
        if isinstance(primary, str):
            if model is not None and model.lower() != self.model.lower():
                raise EmbeddingError(
                    f"{head}: it serves {model}, not EMBEDDING_MODEL={self.model}; a collection is never filled "
                    "from two models"
                )
            log.warning("embeddings: primary unavailable at step start (%s); starting on the fallback", primary)
            self._on_fallback = True
            self._next_primary_try = time.monotonic() + PRIMARY_RETRY_S
            self.stats.fallback_switches += 1
            return
        primary_model, primary_vector = primary
        if len(primary_vector) != self.dimensions:
            raise EmbeddingError(
                f"model {self.model}: {self.primary.where} returns {len(primary_vector)}-dimension vectors, "
                f"expected {self.dimensions}; check EMBEDDING_DIMENSIONS"
            )
        if primary_model is not None and model is not None and primary_model.lower() != model.lower():
            raise EmbeddingError(
                f"{head}: it serves {model}, the primary serves {primary_model}; a collection is never filled "
                "from two models"
            )
        cosine = _cosine(primary_vector, vector)
        if cosine < PROBE_MIN_COSINE:
            raise EmbeddingError(
                f"{head}: its vector for the same probe text differs from the primary's (cosine {cosine:.3f}), "
                "so it is not the same model; a collection is never filled from two models"
            )

    # -- errors ----------------------------------------------------------------------------

    def _timeout_s(self) -> str:
        seconds = getattr(self.client.timeout, "read", self.client.timeout)  # a float or a Timeout
        return f"{seconds:g}s" if isinstance(seconds, int | float) else "?"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _said(self, exc: openai.APIStatusError) -> str:
        """The provider's own message, on one line, with the keys and gateway headers taken out."""
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else body if isinstance(body, str) else None
        return self._redact(one_line(str(message or exc.response.reason_phrase or "no message")))

    def _status_error(self, exc: openai.APIStatusError, endpoint: Endpoint | None = None) -> EmbeddingError:
        """One line naming the status, the host and the setting to look at; never a setting's secret value."""
        endpoint = endpoint or self.primary
        status, model, key = exc.status_code, self.model, endpoint.key_setting
        head = f"model {model}: {endpoint.where}"
        if status == 401:  # the provider's message may quote part of the key: not repeated
            return EmbeddingError(f"{head} refused the API key (HTTP 401); check {key} (and EMBEDDING_HEADERS)")
        said = self._said(exc)
        if status == 403:
            return EmbeddingError(
                f"{head} denied access (HTTP 403): {said}; check that {key} may use EMBEDDING_MODEL={model}"
            )
        if status == 404 and (_error_code(exc) == "model_not_found" or "model" in said.lower()):
            return EmbeddingError(f"{head} does not know this model (HTTP 404): {said}; check EMBEDDING_MODEL")
        if status in (404, 405, 501):
            return EmbeddingError(
                f"{head} does not serve POST {endpoint.client.base_url.path.rstrip('/')}/embeddings (HTTP {status}: "
                f"{said}); check {endpoint.url_setting}, which names the API root of an OpenAI-compatible server "
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


class _Regroup(Exception):
    """A request larger than what the caps known now allow, to be regrouped before it is sent."""


class _Unavailable(Exception):
    """An endpoint that did not answer the probe for a reason that may pass (5xx, timeout, connection)."""


def _lowest(*values: int | None) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _scaled_cap(tokens: int, numbers: list[int]) -> int:
    """A lower cap, in our tokens, for a request of ``tokens`` that was refused.

    When the message gives the provider's count and its limit (two numbers), the cap is our
    count scaled by limit/count, less a margin; otherwise half of what was refused.
    """
    if len(numbers) >= 2 and 0 < numbers[-2] < numbers[-1]:
        limit, theirs = numbers[-2], numbers[-1]
        return min(tokens - 1, int(tokens * limit / theirs * LEARNED_CAP_MARGIN))
    return tokens // 2


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norms) if norms else 0.0


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


def _decode_body(body: bytes, expected: int) -> tuple[np.ndarray | list[Any], int | None, str | None]:
    """Rows in input order, decoded from base64 float32 or from float lists; the usage and model."""
    try:
        doc = json.loads(body)
        data = sorted(doc["data"], key=lambda d: d["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _BadBody(f"{type(exc).__name__}: {exc}") from None
    model = doc.get("model") if isinstance(doc, dict) and isinstance(doc.get("model"), str) else None
    if len(data) != expected or not data:
        return [d.get("embedding") for d in data], None, model  # check_vectors names the mismatch
    rows = [_decode(d.get("embedding")) for d in data]
    width = {len(r) for r in rows}
    vectors: np.ndarray | list[Any] = np.stack(rows) if len(width) == 1 else rows
    usage = doc.get("usage") if isinstance(doc, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return vectors, total if isinstance(total, int) else None, model


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


def _client(
    api_key: str,
    base_url: str | None,
    timeout_s: float,
    max_connections: int,
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> tuple[openai.AsyncOpenAI, httpx.AsyncClient]:
    sdk = _sdk()
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    # openai 3.x annotates http_client with its vendored httpx2 types; an httpx.AsyncClient is what it
    # accepts at run time (and what lets us own, size and close the pool in this loop).
    client: openai.AsyncOpenAI = sdk.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        http_client=http,
        timeout=timeout_s,
        default_headers=dict(headers) or None,
        default_query=dict(query) or None,
    )
    return client, http


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
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    fallback_base_url: str | None = None,
    fallback_api_key: str | None = None,
    check_endpoints: bool = True,
) -> AsyncIterator[OpenAIEmbedder]:
    """Open AsyncOpenAI clients (and their pools) for this event loop and close them on exit.

    ``rpm``/``tpm`` are this embedder's client-side budget; embedders of one process with
    the same endpoint, key, model and budget share it (pass ``limiter`` to choose).
    ``headers`` (values are secrets) and ``query`` go with every request, to both endpoints.
    With ``fallback_base_url``, both endpoints are probed before the embedder is handed out
    (see :meth:`OpenAIEmbedder.check_endpoints`) unless ``check_endpoints`` is False.
    """
    headers, query = dict(headers or {}), dict(query or {})
    opened: list[tuple[openai.AsyncOpenAI, httpx.AsyncClient]] = []

    def connector(key: str, url: str | None) -> Callable[[], openai.AsyncOpenAI]:
        # Called on the endpoint's first request, in the loop this context manager runs in; the
        # client is closed on exit below, in the same loop.
        def connect() -> openai.AsyncOpenAI:
            opened.append(_client(key, url, timeout_s, max_connections, headers, query))
            return opened[-1][0]

        return connect

    try:
        fallback = None
        if fallback_base_url:
            key = fallback_api_key or api_key
            fallback = Endpoint(
                "fallback",
                connector(key, fallback_base_url),
                shared_limiter(limiter_key(fallback_base_url, key, model), rpm=rpm, tpm=tpm),
                url_setting="EMBEDDING_FALLBACK_BASE_URL",
                key_setting="EMBEDDING_FALLBACK_API_KEY" if fallback_api_key else "OPENAI_API_KEY",
            )
        if send_dimensions is None:
            send_dimensions = model.startswith("text-embedding-3")
        if limiter is None:
            limiter = shared_limiter(limiter_key(base_url, api_key, model), rpm=rpm, tpm=tpm)
        embedder = OpenAIEmbedder(
            None,
            model,
            dimensions,
            send_dimensions=send_dimensions,
            limiter=limiter,
            max_retries=max_retries,
            rate_limit_timeout_s=rate_limit_timeout_s,
            fallback=fallback,
            secrets=[api_key, *headers.values(), fallback_api_key or ""],
            connect=connector(api_key, base_url),
        )
        if check_endpoints:
            await embedder.check_endpoints()
        yield embedder
    finally:
        for client, http in opened:
            await client.close()  # closes the httpx pool we passed in, in this loop
            if not http.is_closed:
                await http.aclose()
