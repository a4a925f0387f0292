"""Semantic search over a tenant's collections, importable by any Python code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.embeddings.base import Embedder, ModelMismatchError
from etl_assets.core.vectorstore import collection_name


@dataclass(frozen=True)
class Hit:
    score: float
    external_id: str
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.payload.get("key") or self.payload.get("name") or self.external_id)


def _filter(tenant_id: str, project: str | None, status_category: str | None) -> models.Filter:
    must: list[models.Condition] = [models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant_id))]
    if project:
        must.append(models.FieldCondition(key="project_key", match=models.MatchValue(value=project)))
    if status_category:
        must.append(models.FieldCondition(key="status_category", match=models.MatchValue(value=status_category)))
    return models.Filter(must=must)


async def search(
    client: AsyncQdrantClient,
    embedder: Embedder,
    query: str,
    *,
    tenant_id: str,
    entity: str = "issues",
    project: str | None = None,
    status_category: str | None = None,
    k: int = 10,
) -> list[Hit]:
    """Rank the tenant's rows of ``entity`` by similarity to ``query``; one hit per row.

    The query is embedded with the configured model, which must be the one the
    collection was built with — otherwise the scores would be meaningless.
    """
    name = collection_name(tenant_id, entity)
    if not await client.collection_exists(name):
        raise LookupError(
            f"collection {name} does not exist yet: materialize vectors/{entity}_vectors for tenant {tenant_id}"
        )
    info = await client.get_collection(name)
    built_with = (info.config.metadata or {}).get("embedding_model")
    params = info.config.params.vectors
    size = params.size if isinstance(params, models.VectorParams) else None
    if built_with != embedder.model or size != embedder.dimensions:
        raise ModelMismatchError(
            f"collection {name} was built with {built_with!r} ({size} dimensions) but the configured model is "
            f"{embedder.model!r} ({embedder.dimensions}); set EMBEDDING_PROVIDER/EMBEDDING_MODEL to match"
        )
    [vector] = await embedder.embed([query])
    # Long rows have several chunks: over-fetch, then keep each row's best chunk.
    response = await client.query_points(
        name,
        query=vector,
        limit=max(k * 4, k + 10),
        with_payload=True,
        query_filter=_filter(tenant_id, project, status_category),
    )
    best: dict[str, Hit] = {}
    for point in response.points:
        payload = point.payload or {}
        ext = str(payload.get("external_id"))
        if ext not in best or point.score > best[ext].score:
            best[ext] = Hit(point.score, ext, payload)
    return sorted(best.values(), key=lambda h: h.score, reverse=True)[:k]
