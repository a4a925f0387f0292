"""Qdrant: collection naming, creation with a recorded model, upserts and deletes.

One collection per tenant and entity, ``client_<tenant>_<entity>``. Each collection
records the embedding model and dimension it was built with; opening it with another
is an error, never a silent mix of vector spaces.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.embeddings.base import ModelMismatchError
from etl_assets.core.tenants import validate_tenant_id

log = logging.getLogger(__name__)

POINT_NAMESPACE = uuid.UUID("5b0f8f0e-3c1e-5a8e-9f57-6574c2d1a001")
SCHEMA_VERSION = 1


def collection_name(tenant_id: str, entity: str) -> str:
    validate_tenant_id(tenant_id)
    if not entity.isidentifier():
        raise ValueError(f"entity {entity!r} is not a valid collection suffix")
    return f"client_{tenant_id}_{entity}"


def point_id(tenant_id: str, entity: str, external_id: str, chunk: int = 0) -> str:
    """Deterministic point id: the same row and chunk always land on the same point."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant_id}\x1f{entity}\x1f{external_id}\x1f{chunk}"))


def _schema(kind: str) -> models.PayloadSchemaType:
    return {
        "keyword": models.PayloadSchemaType.KEYWORD,
        "integer": models.PayloadSchemaType.INTEGER,
        "datetime": models.PayloadSchemaType.DATETIME,
        "bool": models.PayloadSchemaType.BOOL,
    }[kind]


@dataclass
class ExistingPoint:
    id: str
    external_id: str | None
    content_hash: str | None
    chunks: int | None


@dataclass
class Collection:
    """One tenant's collection for one entity, on an open AsyncQdrantClient."""

    client: AsyncQdrantClient
    name: str
    tenant_id: str
    entity: str
    local: bool = False

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool:
        """Create the collection if needed; refuse one built with another model. True if created."""
        if await self.client.collection_exists(self.name):
            info = await self.client.get_collection(self.name)
            params = info.config.params.vectors
            size = params.size if isinstance(params, models.VectorParams) else None
            meta = info.config.metadata or {}
            built_with = meta.get("embedding_model")
            if size != dimensions or (built_with is not None and built_with != model):
                raise ModelMismatchError(
                    f"collection {self.name} was built with model {built_with!r} ({size} dimensions) "
                    f"but the configured embeddings are {model!r} ({dimensions} dimensions); "
                    f"re-create the collection (etl-assets drop-collection {self.name}) or configure the "
                    "same model"
                )
            return False
        await self.client.create_collection(
            self.name,
            vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
            metadata={
                "embedding_model": model,
                "dimensions": dimensions,
                "tenant_id": self.tenant_id,
                "entity": self.entity,
                "schema_version": SCHEMA_VERSION,
            },
        )
        if not self.local:  # local mode ignores payload indexes (and warns about them)
            for field_name, kind in {"tenant_id": "keyword", "external_id": "keyword", **(indexes or {})}.items():
                await self.client.create_payload_index(self.name, field_name, field_schema=_schema(kind))
        return True

    async def model(self) -> tuple[str | None, int | None]:
        info = await self.client.get_collection(self.name)
        params = info.config.params.vectors
        size = params.size if isinstance(params, models.VectorParams) else None
        return (info.config.metadata or {}).get("embedding_model"), size

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingPoint]:
        if not ids:
            return {}
        points = await self.client.retrieve(
            self.name, ids=list(ids), with_payload=["external_id", "content_hash", "chunks"], with_vectors=False
        )
        out = {}
        for p in points:
            payload = p.payload or {}
            out[str(p.id)] = ExistingPoint(str(p.id), payload.get("external_id"), payload.get("content_hash"),
                                           payload.get("chunks"))  # fmt: skip
        return out

    async def upsert(self, points: list[models.PointStruct]) -> None:
        if points:
            await self.client.upsert(self.name, points=points, wait=True)

    async def delete_ids(self, ids: Iterable[str], *, batch: int = 1000) -> int:
        ids = list(ids)
        for start in range(0, len(ids), batch):
            await self.client.delete(
                self.name, points_selector=models.PointIdsList(points=ids[start : start + batch]), wait=True
            )
        return len(ids)

    async def scroll_external_ids(self, *, page: int = 1000) -> AsyncIterator[list[tuple[str, str | None]]]:
        """(point id, external id) of every point, a page at a time."""
        offset: Any = None
        while True:
            points, offset = await self.client.scroll(
                self.name, limit=page, offset=offset, with_payload=["external_id"], with_vectors=False
            )
            if points:
                yield [(str(p.id), (p.payload or {}).get("external_id")) for p in points]
            if offset is None:
                return

    async def count(self, **filters: Any) -> int:
        flt = None
        if filters:
            flt = models.Filter(
                must=[models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in filters.items()]
            )
        return (await self.client.count(self.name, count_filter=flt, exact=True)).count


@dataclass(frozen=True)
class QdrantSettings:
    url: str | None
    api_key: str | None
    path: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QdrantSettings:
        from etl_assets.core.settings import DEFAULT_QDRANT_PATH

        return cls(env.get("QDRANT_URL") or None, env.get("QDRANT_API_KEY") or None,
                   env.get("QDRANT_PATH") or DEFAULT_QDRANT_PATH)  # fmt: skip


class QdrantLockTimeout(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def open_qdrant(url: str | None, api_key: str | None, path: str, lock_timeout_s: float = 900.0) -> AsyncIterator[AsyncQdrantClient]:
    """Open an AsyncQdrantClient in this loop and close it on exit.

    Local mode holds an exclusive lock on its folder; we take our own inter-process lock
    first and wait for it, so concurrent steps queue instead of failing.
    """
    if url:
        client = AsyncQdrantClient(url=url, api_key=api_key, timeout=60)
        try:
            yield client
        finally:
            await client.close()
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(path).with_suffix(".etl-lock")))
    try:
        lock.acquire(timeout=lock_timeout_s)
    except Timeout:
        raise QdrantLockTimeout(f"Qdrant local folder {path} stayed locked by another process for {lock_timeout_s:.0f}s") from None
    try:
        client = AsyncQdrantClient(path=path)
        try:
            yield client
        finally:
            await client.close()
    finally:
        lock.release()
