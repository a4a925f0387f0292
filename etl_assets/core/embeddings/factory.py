"""Open the configured embedding provider as an async context manager."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.errors import ConfigError

DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
DEFAULT_OPENAI_DIMENSIONS = 1536


class EmbeddingConfigError(ConfigError):
    """A setting of the embedding provider is wrong; the message names the setting."""


@dataclass(frozen=True)
class EmbeddingSettings:
    provider: str = "local"
    model: str | None = None
    dimensions: int | None = None
    api_key: str | None = None
    base_url: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 6
    concurrency: int = 4
    batch_inputs: int | None = None
    batch_tokens: int | None = None
    # Client-side budget for the whole provider key (for gateways that send no rate-limit
    # headers, or to stay below the real limit). Divided by pool_limit: that many vector
    # steps may run at once (the Dagster pool "embeddings"), each gets its share.
    rpm: int | None = None
    tpm: int | None = None
    pool_limit: int = 1

    def validate(self) -> None:
        if self.provider not in ("openai", "local"):
            raise EmbeddingConfigError(f"EMBEDDING_PROVIDER must be 'openai' or 'local', got {self.provider!r}")
        if self.provider == "openai" and not self.api_key:
            raise EmbeddingConfigError("EMBEDDING_PROVIDER=openai but OPENAI_API_KEY is not set")
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise EmbeddingConfigError(f"OPENAI_BASE_URL is not an http(s) URL: {self.base_url!r}")
        if self.dimensions is not None and self.dimensions <= 0:
            raise EmbeddingConfigError(f"EMBEDDING_DIMENSIONS must be positive, got {self.dimensions}")
        for name, value in (
            ("EMBEDDING_RPM", self.rpm),
            ("EMBEDDING_TPM", self.tpm),
            ("EMBEDDING_CONCURRENCY", self.concurrency),
            ("EMBEDDING_POOL_LIMIT", self.pool_limit),
            ("EMBEDDING_BATCH_INPUTS", self.batch_inputs),
            ("EMBEDDING_BATCH_TOKENS", self.batch_tokens),
        ):
            if value is not None and value <= 0:
                raise EmbeddingConfigError(f"{name} must be positive, got {value}")
        if self.tpm is not None and self.tpm // self.pool_limit < 1:
            raise EmbeddingConfigError(f"EMBEDDING_TPM={self.tpm} leaves nothing for {self.pool_limit} pool slots")

    @property
    def step_rpm(self) -> int | None:
        """This step's share of the requests-per-minute budget."""
        return None if self.rpm is None else max(1, self.rpm // self.pool_limit)

    @property
    def step_tpm(self) -> int | None:
        """This step's share of the tokens-per-minute budget."""
        return None if self.tpm is None else max(1, self.tpm // self.pool_limit)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EmbeddingSettings:
        def integer(name: str) -> int | None:
            value = env.get(name)
            if not value:
                return None
            try:
                return int(value)
            except ValueError:
                raise EmbeddingConfigError(f"{name} must be an integer, got {value!r}") from None

        def first_set(*values: int | None) -> int:
            # 0 is a value (and validate() refuses it), not "unset"
            return next(v for v in values if v is not None)

        return cls(
            provider=env.get("EMBEDDING_PROVIDER") or ("openai" if env.get("OPENAI_API_KEY") else "local"),
            model=env.get("EMBEDDING_MODEL") or None,
            dimensions=integer("EMBEDDING_DIMENSIONS"),
            api_key=env.get("OPENAI_API_KEY") or None,
            base_url=env.get("OPENAI_BASE_URL") or None,
            concurrency=first_set(integer("EMBEDDING_CONCURRENCY"), 4),
            batch_inputs=integer("EMBEDDING_BATCH_INPUTS"),
            batch_tokens=integer("EMBEDDING_BATCH_TOKENS"),
            rpm=integer("EMBEDDING_RPM"),
            tpm=integer("EMBEDDING_TPM"),
            # The slots of the Dagster pool "embeddings": deploy/init-instance.sh sets them from
            # ETL_POOL_EMBEDDINGS, so that is the default share count too.
            pool_limit=first_set(integer("EMBEDDING_POOL_LIMIT"), integer("ETL_POOL_EMBEDDINGS"), 1),
        )

    @property
    def model_name(self) -> str:
        from etl_assets.core.embeddings.local_provider import LOCAL_MODEL_NAME

        return self.model or (DEFAULT_OPENAI_MODEL if self.provider == "openai" else LOCAL_MODEL_NAME)


@contextlib.asynccontextmanager
async def open_embedder(settings: EmbeddingSettings) -> AsyncIterator[Embedder]:
    """The provider's embedder, opened in the running loop and closed (with its pool) on exit."""
    settings.validate()
    if settings.provider == "local":
        from etl_assets.core.embeddings.local_provider import LocalEmbedder

        local = LocalEmbedder()
        if settings.dimensions not in (None, local.dimensions):
            raise EmbeddingConfigError(
                f"EMBEDDING_DIMENSIONS={settings.dimensions}, but the local model has {local.dimensions} dimensions"
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
    ) as embedder:
        if settings.batch_inputs:
            embedder.max_batch_inputs = min(settings.batch_inputs, embedder.max_batch_inputs)
        if settings.batch_tokens:
            embedder.max_batch_tokens = min(settings.batch_tokens, embedder.max_batch_tokens)
        yield embedder
