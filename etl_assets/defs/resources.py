"""Dagster resources: Jira, GitHub, the database, the embedding provider and Qdrant.

Each holds a client for exactly the life of a step. The embeddings and Qdrant
resources are async: their clients are opened and closed inside the step's own event
loop (async ``yield_for_execution``), the loop the async vector asset runs in.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr
from qdrant_client import AsyncQdrantClient
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
from etl_assets.core.settings import Settings
from etl_assets.core.sources.github.client import API_VERSION, EtagCache, GitHubClient
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.store.db import make_engine, safe_url
from etl_assets.core.tenants import Tenant
from etl_assets.core.vectorstore import open_qdrant


class JiraResource(dg.ConfigurableResource):
    """HTTP access to each tenant's Jira Cloud site (REST v3, basic auth with e-mail + API token)."""

    timeout_s: float = Field(default=30.0, description="Read timeout per request, seconds.")
    connect_timeout_s: float = Field(default=10.0, description="Connect timeout per request, seconds.")
    max_attempts: int = Field(default=6, description="Attempts per request on 429, 5xx and transport errors.")
    max_wait_s: float = Field(
        default=60.0, description="Longest single wait between attempts (Retry-After is capped here)."
    )
    page_size: int = Field(default=50, description="maxResults for paged endpoints.")

    def serves(self, tenant: Tenant) -> bool:
        return True  # every tenant has a Jira site

    @contextlib.contextmanager
    def open(self, tenant: Tenant) -> Iterator[JiraClient]:
        """A client for ``tenant``'s site; its connection pool is closed when the block ends."""
        headers = {"Accept": "application/json", "User-Agent": "etl-assets"}
        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        if tenant.jira.is_sample:
            from etl_assets.core.sources.jira.sample import sample_site_for, sample_transport

            site = sample_site_for(tenant.jira.url)
            http = httpx.Client(
                base_url=site.base_url, transport=sample_transport(site), headers=headers, timeout=timeout
            )
        else:
            email, token = tenant.credentials()  # type: ignore[misc]
            http = httpx.Client(
                base_url=tenant.jira.url, auth=httpx.BasicAuth(email, token), headers=headers, timeout=timeout
            )
        try:
            yield JiraClient(
                http=http,
                tenant_id=tenant.id,
                site=tenant.jira.url.split("?")[0],
                max_attempts=self.max_attempts,
                max_wait_s=self.max_wait_s,
            )
        finally:
            http.close()


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


@functools.cache
def _sample_org(url: str) -> Any:
    from etl_assets.core.sources.github.sample import generate_sample_org

    parts = urlsplit(url)
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return generate_sample_org(
        parts.netloc,
        seed=int(q.get("seed", 7)),
        n_repos=int(q.get("repos", 3)),
        n_items=int(q.get("items", 24)),
        n_comments=int(q.get("comments", 30)),
    )


class GitHubResource(dg.ConfigurableResource):
    """HTTP access to each tenant's GitHub (REST v3, a token from the variable its tenants entry names).

    Conditional requests keep their ETags in the database (``github_http_cache``), hence ``database``.
    """

    database: DatabaseResource
    timeout_s: float = Field(default=30.0, description="Read timeout per request, seconds.")
    connect_timeout_s: float = Field(default=10.0, description="Connect timeout per request, seconds.")
    max_attempts: int = Field(default=6, description="Attempts per request on rate limits, 5xx and transport errors.")
    max_wait_s: float = Field(
        default=900.0,
        description="Longest wait for a rate limit (primary reset or secondary retry-after); longer fails the step.",
    )
    page_size: int = Field(default=100, description="per_page for listings (GitHub allows at most 100).")

    def serves(self, tenant: Tenant) -> bool:
        return tenant.github is not None

    @contextlib.contextmanager
    def open(self, tenant: Tenant) -> Iterator[GitHubClient]:
        """A client for ``tenant``'s GitHub; its connection pool is closed when the block ends."""
        config = tenant.github
        if config is None:  # a tenant without GitHub: a client that lists nothing and asks nothing
            with httpx.Client() as idle:
                yield GitHubClient(http=idle, tenant_id=tenant.id, api="(not configured)")
            return
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "etl-assets",
        }
        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        token = config.token(tenant.id)
        if config.is_sample:
            from etl_assets.core.sources.github.sample import sample_transport

            site = _sample_org(config.url)
            http = httpx.Client(
                base_url=f"https://api.{site.org}.github.sample",
                transport=sample_transport(site),
                headers=headers,
                timeout=timeout,
                follow_redirects=True,
            )
        else:
            http = httpx.Client(
                base_url=config.url,
                headers={**headers, "Authorization": f"Bearer {token}"},
                timeout=timeout,
                follow_redirects=True,  # a renamed repository answers 301 to its new address
            )
        cache = EtagCache(self.database.engine, tenant.id)
        cache.prune()
        try:
            yield GitHubClient(
                http=http,
                tenant_id=tenant.id,
                api=config.url.split("?")[0],
                cache=cache,
                secret=token,
                max_attempts=self.max_attempts,
                max_wait_s=self.max_wait_s,
            )
        finally:
            http.close()


def source_resources(database: DatabaseResource) -> dict[str, Any]:
    """One resource per source, named after it: the raw assets and change sensors ask for it by name."""
    return {"jira": JiraResource(), "github": GitHubResource(database=database)}


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
                self._client = None
