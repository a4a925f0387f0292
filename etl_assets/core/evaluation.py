"""Retrieval quality on the sample site's labelled queries: recall@k and MRR.

Used by ``benchmarks/retrieval.py`` (prints the figures) and by a test that holds a floor,
so a change that breaks retrieval fails CI. It runs the real engine: the same parser,
text, chunking, embedder and search as the assets, into an in-memory Qdrant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qdrant_client import AsyncQdrantClient

from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.records import EntitySpec
from etl_assets.core.search import search
from etl_assets.core.vectorstore import Collection, collection_name
from etl_assets.core.vectorsync import sync_vectors


@dataclass
class QueryOutcome:
    query: str
    relevant: list[str]
    ranked: list[str]

    def recall(self, k: int) -> float:
        # Normalized by what k results can hold: a query with 9 relevant issues scores 1.0 with 5 of them.
        hits = len(set(self.ranked[:k]) & set(self.relevant))
        return hits / min(len(self.relevant), k)

    @property
    def reciprocal_rank(self) -> float:
        for rank, key in enumerate(self.ranked, start=1):
            if key in self.relevant:
                return 1.0 / rank
        return 0.0


@dataclass
class RetrievalReport:
    model: str
    k: int
    outcomes: list[QueryOutcome]

    @property
    def recall_at_k(self) -> float:
        return sum(o.recall(self.k) for o in self.outcomes) / len(self.outcomes)

    @property
    def mrr(self) -> float:
        return sum(o.reciprocal_rank for o in self.outcomes) / len(self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "k": self.k,
            "queries": len(self.outcomes),
            f"recall@{self.k}": round(self.recall_at_k, 4),
            "mrr": round(self.mrr, 4),
        }


async def evaluate_retrieval(
    spec: EntitySpec,
    records: Iterable[Any],
    queries: list[tuple[str, list[str]]],
    embedder: Embedder,
    *,
    k: int = 5,
    tenant_id: str = "eval",
) -> RetrievalReport:
    """Index ``records`` (source objects of ``spec``) as the vector asset would, then rank each query."""
    rows: list[dict[str, Any]] = []
    for record in records:
        row = spec.parse(record)
        rows.append({**row, "id": len(rows) + 1, "tenant_id": tenant_id})
    client = AsyncQdrantClient(location=":memory:")
    try:
        collection = Collection(client, collection_name(tenant_id, spec.name), tenant_id, spec.name, local=True)
        live = {r["external_id"] for r in rows}

        async def live_ids(candidates: list[str]) -> set[str]:
            return live & set(candidates)

        await sync_vectors(
            spec=spec,
            tenant_id=tenant_id,
            pages=lambda: iter([rows]),
            live_ids=live_ids,
            embedder=embedder,
            collection=collection,
        )
        outcomes = []
        for query, relevant in queries:
            hits = await search(client, embedder, query, tenant_id=tenant_id, k=k)
            outcomes.append(QueryOutcome(query, relevant, [h.key for h in hits]))
    finally:
        await client.close()
    return RetrievalReport(embedder.model, k, outcomes)


def document_rows(spec: EntitySpec, records: Iterable[Any], tenant_id: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``spec`` and of its child entities from source records, as the table step makes them.

    Child records are those the parent record carries (the sample site's issues carry all their
    comments); child rows the index leaves out (restricted comments) are left out here too.
    """
    out: dict[str, list[dict[str, Any]]] = {spec.name: []}
    for link in spec.children:
        out[link.spec.name] = []
    for record in records:
        row = spec.parse(record)
        out[spec.name].append({**row, "id": len(out[spec.name]) + 1, "tenant_id": tenant_id})
        for link in spec.children:
            inherited = {**link.inherit(row), link.parent_column: row["external_id"]}
            for child in link.extract(record, []).records:
                child_row = {**link.spec.parse(child), **inherited, "tenant_id": tenant_id}
                if child_row.get("visibility"):
                    continue
                out[link.spec.name].append({**child_row, "id": len(out[link.spec.name]) + 1})
    return out


async def evaluate_documents(
    spec: EntitySpec,
    records: Iterable[Any],
    queries: list[tuple[str, list[str]]],
    embedder: Embedder,
    *,
    k: int = 5,
    tenant_id: str = "eval",
) -> RetrievalReport:
    """Like :func:`evaluate_retrieval`, with the child entities (comments) indexed in their own
    collections and an issue ranked by its best passage, its own or a child's (as search does)."""
    rows = document_rows(spec, records, tenant_id)
    specs = {spec.name: spec, **{link.spec.name: link.spec for link in spec.children}}
    client = AsyncQdrantClient(location=":memory:")
    try:
        for name, entity in specs.items():
            collection = Collection(client, collection_name(tenant_id, name), tenant_id, name, local=True)
            live = {r["external_id"] for r in rows[name]}

            async def live_ids(candidates: list[str], live: set[str] = live) -> set[str]:
                return live & set(candidates)

            await sync_vectors(
                spec=entity,
                tenant_id=tenant_id,
                pages=lambda name=name: iter([rows[name]]),  # type: ignore[misc]
                live_ids=live_ids,
                embedder=embedder,
                collection=collection,
            )
        outcomes = []
        for query, relevant in queries:
            best: dict[str, float] = {}
            for name in specs:
                for hit in await search(client, embedder, query, tenant_id=tenant_id, entity=name, k=k * 4):
                    best[hit.key] = max(best.get(hit.key, -1.0), hit.score)
            ranked = sorted(best, key=lambda key: best[key], reverse=True)[:k]
            outcomes.append(QueryOutcome(query, relevant, ranked))
    finally:
        await client.close()
    return RetrievalReport(embedder.model, k, outcomes)
