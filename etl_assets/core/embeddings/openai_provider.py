"""Embeddings from OpenAI or any OpenAI-compatible endpoint, through AsyncOpenAI.

The client and its httpx pool are created by :func:`open_openai_embedder`, an async
context manager, so they are opened and closed inside the event loop that uses them.
Retries are the SDK's own (it honours ``retry-after``/``retry-after-ms``); we count
every HTTP attempt and every 429 through httpx event hooks.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import openai

from etl_assets.core.embeddings.base import EmbeddingError, EmbeddingStats, check_vectors
from etl_assets.core.embeddings.tokens import cl100k

log = logging.getLogger(__name__)

OPENAI_MAX_INPUT_TOKENS = 8192
OPENAI_MAX_BATCH_INPUTS = 2048
OPENAI_MAX_BATCH_TOKENS = 300_000


@dataclass
class OpenAIEmbedder:
    client: openai.AsyncOpenAI
    model: str
    dimensions: int
    send_dimensions: bool = True  # text-embedding-3-* accept "dimensions"; ada-002 and many gateways do not
    max_input_tokens: int = OPENAI_MAX_INPUT_TOKENS
    max_batch_inputs: int = OPENAI_MAX_BATCH_INPUTS
    max_batch_tokens: int = OPENAI_MAX_BATCH_TOKENS
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)

    def count_tokens(self, text: str) -> int:
        return len(cl100k().encode(text))

    def split(self, text: str, max_tokens: int) -> list[str]:
        enc = cl100k()
        tokens = enc.encode(text)
        if len(tokens) <= max_tokens:
            return [text]
        return [enc.decode(tokens[i : i + max_tokens]) for i in range(0, len(tokens), max_tokens)]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        extra = {"dimensions": self.dimensions} if self.send_dimensions else {}
        try:
            response = await self.client.embeddings.create(
                model=self.model, input=texts, encoding_format="base64", **extra
            )
        except openai.BadRequestError as exc:
            raise EmbeddingError(f"model {self.model}: the provider refused the request: {exc.message}") from None
        except openai.AuthenticationError:
            raise EmbeddingError(
                f"model {self.model}: the provider refused the API key (HTTP 401); check OPENAI_API_KEY"
            ) from None
        except openai.APIStatusError as exc:
            raise EmbeddingError(
                f"model {self.model}: HTTP {exc.status_code} from the provider after retries: {exc.message}"
            ) from None
        except openai.APIConnectionError as exc:
            raise EmbeddingError(f"model {self.model}: cannot reach the provider after retries: {exc}") from None
        data = sorted(response.data, key=lambda d: d.index)
        vectors = [_decode(d.embedding) for d in data]
        check_vectors(vectors, len(texts), self.dimensions, self.model)
        self.stats.requests += 1
        self.stats.inputs += len(texts)
        usage = getattr(response, "usage", None)
        self.stats.tokens += getattr(usage, "total_tokens", 0) or sum(self.count_tokens(t) for t in texts)
        return vectors


def _decode(value: object) -> list[float]:
    # Servers that ignore encoding_format send floats; the SDK may already have decoded base64.
    if isinstance(value, str):
        try:
            return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(float).tolist()
        except (ValueError, TypeError) as exc:
            raise EmbeddingError(f"embedding is not valid base64 float32: {exc}") from None
    if isinstance(value, list):
        return [float(v) for v in value]
    raise EmbeddingError(f"embedding has unexpected type {type(value).__name__}")


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
) -> AsyncIterator[OpenAIEmbedder]:
    """Open an AsyncOpenAI client (and its pool) for this event loop and close both on exit."""
    stats = EmbeddingStats()

    async def on_response(response: httpx.Response) -> None:
        stats.http_requests += 1
        if response.status_code == 429:
            stats.rate_limited += 1

    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        event_hooks={"response": [on_response]},
    )
    client = openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, max_retries=max_retries, http_client=http, timeout=timeout_s
    )
    if send_dimensions is None:
        send_dimensions = model.startswith("text-embedding-3")
    embedder = OpenAIEmbedder(client=client, model=model, dimensions=dimensions, send_dimensions=send_dimensions,
                              stats=stats)  # fmt: skip
    try:
        yield embedder
    finally:
        stats.retries = max(0, stats.http_requests - stats.requests)
        await client.close()  # closes the httpx pool we passed in, in this loop
        if not http.is_closed:
            await http.aclose()
