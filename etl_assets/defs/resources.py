"""Dagster resources: one per source (Jira, GitHub), the database, the embedding provider and Qdrant.

Each holds a client for exactly the life of a step. The embeddings and Qdrant
resources are async: their clients are opened and closed inside the step's own event
loop (async ``yield_for_execution``), the loop the async vector asset runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from qdrant_client import AsyncQdrantClient
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.core.catalogue import SOURCE_BY_NAME
from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
from etl_assets.core.pipeline import FanOutOptions
from etl_assets.core.settings import Settings
from etl_assets.core.source_api import ClientOptions, Source
from etl_assets.core.store.db import make_engine, safe_url
from etl_assets.core.tenants import Tenant
from etl_assets.core.vectorstore import open_qdrant


async def settle_abandoned_tasks() -> None:
    """Cancel, and wait for, the tasks of this loop other than the caller's; called as a step's
    async resources tear down, before their clients close.

    When a run is interrupted (terminated from the UI, Ctrl-C, SIGTERM) while the step's async
    code awaits, Dagster stops waiting for the task it was running and tears the resources down
    on the same loop. That task is still pending: run by the teardown's own awaits, it would
    call a client already closed and die with an error no one reads ("Task exception was never
    retrieved"). Cancelled here, it unwinds (its ``async with`` blocks exit) while the clients
    are still open. When a step ends normally there is nothing to cancel: Dagster tears down
    one resource at a time, each on its own ``run_until_complete``.
    """
    current = asyncio.current_task()
    abandoned = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in abandoned:
        task.cancel()
    # return_exceptions: what they ended with is retrieved here; the interruption is the story.
    await asyncio.gather(*abandoned, return_exceptions=True)


class DatabaseResource(dg.ConfigurableResource):
    """The SQL database holding raw responses and committed tables (SQLite or PostgreSQL)."""

    url: str = Field(
        default_factory=lambda: Settings.load().database,
        description="SQLAlchemy URL: DATABASE_URL, default SQLite under ETL_DATA_DIR (bind with EnvVar: it may hold a password).",
    )
    _engine: Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = self._open()

    def _open(self) -> Engine:
        try:
            return make_engine(self.url)
        except (SQLAlchemyError, OSError) as exc:
            # Name the setting and the (password-masked) URL; the driver's first line says why.
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise dg.Failure(
                f"database {safe_url(self.url)} (DATABASE_URL) cannot be opened: {type(exc).__name__}: {reason}"
            ) from None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:  # used outside a run (e.g. a sensor): open lazily
            self._engine = self._open()
        return self._engine

    @property
    def display_url(self) -> str:
        return safe_url(self.url)

    @property
    def dialect(self) -> str:
        return "postgres" if self.url.startswith("postgres") else "sqlite"


class SourceResource(dg.ConfigurableResource):
    """HTTP access to one source (``source``: ``jira``, ``github``) for each tenant that uses it.

    One resource class serves every source: what differs (the tenants-file section, credentials,
    the client) is the source's own declaration (``core/sources/<name>/source.py``). Unset
    ``max_wait_s`` / ``page_size`` take the source's defaults. A source that keeps an HTTP cache in
    the project's database (GitHub's ETags) is opened with that database's engine.
    """

    source: str = Field(description="The source this resource opens clients for: a name from the catalogue.")
    timeout_s: float = Field(default=30.0, description="Read timeout per request, seconds.")
    connect_timeout_s: float = Field(default=10.0, description="Connect timeout per request, seconds.")
    max_attempts: int = Field(default=6, description="Attempts per request on rate limits, 5xx and transport errors.")
    max_wait_s: float | None = Field(
        default=None,
        description="Longest single wait between attempts (Retry-After, a rate limit's reset); default: the source's.",
    )
    page_size: int | None = Field(default=None, description="Page size of listings; default: the source's.")
    fan_out_concurrency: int = Field(
        default=12, ge=1, description="A full read's most fan-out requests in flight (adapts to 429s below it)."
    )
    fan_out_min_records: int = Field(
        default=2000,
        ge=0,
        description="A full read of fewer records keeps the paged listing (entities that can fan out: Jira issues).",
    )

    @property
    def declaration(self) -> Source:
        try:
            return SOURCE_BY_NAME[self.source]
        except KeyError:
            raise dg.DagsterInvalidConfigError(
                f"source resource: unknown source {self.source!r} (known: {', '.join(SOURCE_BY_NAME)})", [], None
            ) from None

    @property
    def listing_size(self) -> int:
        """The page size listings ask for: ``page_size``, else the source's own default."""
        return self.page_size or self.declaration.page_size

    def serves(self, tenant: Tenant) -> bool:
        return tenant.section(self.source) is not None

    def fan_out_options(self) -> FanOutOptions:
        return FanOutOptions(concurrency=self.fan_out_concurrency, min_records=self.fan_out_min_records)

    @contextlib.contextmanager
    def open(self, tenant: Tenant, database: Engine | None = None) -> Iterator[Any]:
        """A client for ``tenant`` (one that lists nothing for a tenant without this source); its
        connections are closed when the block ends. ``database``: the project's engine, required by a
        source that keeps state there."""
        source = self.declaration
        if source.uses_database and database is None:
            raise dg.DagsterInvariantViolationError(
                f"the {source.title} client keeps its HTTP cache in the database: open it with the database's engine"
            )
        options = ClientOptions(
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            max_attempts=self.max_attempts,
            max_wait_s=source.max_wait_s if self.max_wait_s is None else self.max_wait_s,
            page_size=self.listing_size,
            engine=database if source.uses_database else None,
        )
        with source.open_client(tenant.id, tenant.section(self.source), options) as client:
            yield client


def source_resources(**options: Any) -> dict[str, SourceResource]:
    """One resource per source, named after it: the raw assets and change sensors ask for it by name.
    ``options`` (``max_attempts=3``, …) apply to every source."""
    return {name: SourceResource(source=name, **options) for name in SOURCE_BY_NAME}


class EmbeddingsResource(dg.ConfigurableResource, EmbeddingSettings):
    """Text embeddings: any OpenAI-compatible endpoint, or the packaged local MiniLM model.

    The fields are :class:`~etl_assets.core.settings.EmbeddingSettings`', inherited rather than
    repeated: one declaration gives the resource, the environment reader and the core the same
    names, types, defaults, descriptions and checks (a bad value is refused when the resource
    is built). :meth:`settings` is the one conversion back to the plain core model.
    """

    _embedder: Any = PrivateAttr(default=None)

    def settings(self) -> EmbeddingSettings:
        """This resource's values as the core model ``open_embedder`` takes (EnvVars resolved)."""
        return EmbeddingSettings(**{name: getattr(self, name) for name in EmbeddingSettings.model_fields})

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise dg.DagsterInvariantViolationError("EmbeddingsResource used outside its step")
        return self._embedder

    @contextlib.asynccontextmanager
    # Dagster accepts an async context manager here (the client lives in the step's loop);
    # its signature only declares the sync form.
    async def yield_for_execution(  # type: ignore[override]
        self, context: dg.InitResourceContext
    ) -> AsyncIterator[EmbeddingsResource]:
        async with open_embedder(self.settings()) as embedder:
            self._embedder = embedder
            try:
                yield self
            finally:
                await settle_abandoned_tasks()
                self._embedder = None


class QdrantResource(dg.ConfigurableResource):
    """Qdrant: a server (QDRANT_URL, QDRANT_API_KEY) or local mode in a folder (QDRANT_PATH)."""

    url: str | None = Field(default=None, description="QDRANT_URL of a server or cluster; unset for local mode.")
    api_key: str | None = Field(default=None, description="QDRANT_API_KEY (bind with EnvVar).")
    path: str = Field(
        default_factory=lambda: Settings.load().qdrant.path,
        description="QDRANT_PATH: local-mode folder when no URL is set; default <ETL_DATA_DIR>/qdrant.",
    )
    lock_timeout_s: float = Field(default=900.0, description="How long a step waits for the local folder lock.")
    engine: str = Field(
        default="edge", description="QDRANT_ENGINE: the embedded engine for the folder: edge (default) or local."
    )
    _client: AsyncQdrantClient | None = PrivateAttr(default=None)

    @property
    def local(self) -> bool:
        return not self.url

    @property
    def client(self) -> AsyncQdrantClient:
        if self._client is None:
            raise dg.DagsterInvariantViolationError("QdrantResource used outside its step")
        return self._client

    @contextlib.asynccontextmanager
    # Dagster accepts an async context manager here (the client lives in the step's loop);
    # its signature only declares the sync form.
    async def yield_for_execution(  # type: ignore[override]
        self, context: dg.InitResourceContext
    ) -> AsyncIterator[QdrantResource]:
        async with open_qdrant(self.url, self.api_key, self.path, self.lock_timeout_s, engine=self.engine) as client:
            self._client = client
            try:
                yield self
            finally:
                await settle_abandoned_tasks()
                self._client = None
