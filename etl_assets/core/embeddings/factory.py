"""Open the configured embedding provider as an async context manager."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from etl_assets.core.embeddings.base import Embedder

# The settings are declared (and read from the environment) in core.settings; importers of
# this module keep finding them here, next to the factory that consumes them.
from etl_assets.core.settings import (
    DEFAULT_OPENAI_DIMENSIONS,
    DEFAULT_OPENAI_MODEL,
    EmbeddingConfigError,
    EmbeddingSettings,
)

__all__ = [
    "DEFAULT_OPENAI_DIMENSIONS",
    "DEFAULT_OPENAI_MODEL",
    "EmbeddingConfigError",
    "EmbeddingSettings",
    "open_embedder",
]


@contextlib.asynccontextmanager
async def open_embedder(settings: EmbeddingSettings, *, check_endpoints: bool = True) -> AsyncIterator[Embedder]:
    """The provider's embedder, opened in the running loop and closed (with its pool) on exit.

    ``settings`` were checked when built (an invalid EmbeddingSettings cannot exist). With a
    fallback endpoint, both endpoints are probed before the embedder is handed out unless
    ``check_endpoints`` is False (the doctor probes each itself, to report each on its own row).
    """
    if settings.provider == "local":
        from etl_assets.core.embeddings.local_provider import LocalEmbedder
        from etl_assets.core.embeddings.multilingual_provider import MULTILINGUAL_MODEL_NAME, MultilingualEmbedder

        local: LocalEmbedder | MultilingualEmbedder
        local = MultilingualEmbedder() if settings.model == MULTILINGUAL_MODEL_NAME else LocalEmbedder()
        if settings.dimensions not in (None, local.dimensions):
            raise EmbeddingConfigError(
                f"EMBEDDING_DIMENSIONS={settings.dimensions} is not allowed with EMBEDDING_PROVIDER=local: "
                f"the local model has {local.dimensions} dimensions (unset it, or set {local.dimensions})"
            )
        yield local
        return
    from etl_assets.core.embeddings.openai_provider import open_openai_embedder

    async with open_openai_embedder(
        api_key=settings.api_key or "",
        model=settings.model_name,
        dimensions=settings.dimensions or DEFAULT_OPENAI_DIMENSIONS,
        base_url=settings.base_url,
        timeout_s=settings.timeout_s,
        max_retries=settings.max_retries,
        max_connections=max(4, settings.concurrency * 2),
        rpm=settings.step_rpm,
        tpm=settings.step_tpm,
        headers=settings.header_values(),
        query=settings.query,
        fallback_base_url=settings.fallback_base_url,
        fallback_api_key=settings.fallback_api_key,
        check_endpoints=check_endpoints,
    ) as embedder:
        if settings.batch_inputs:
            embedder.max_batch_inputs = min(settings.batch_inputs, embedder.max_batch_inputs)
        if settings.batch_tokens:
            embedder.max_batch_tokens = min(settings.batch_tokens, embedder.max_batch_tokens)
        yield embedder
