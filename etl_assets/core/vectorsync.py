"""The vector stage: committed rows in, Qdrant points out, only what changed re-embedded.

Rows come from the database through the caller's own connection (never handed over in
memory by the table step). For every page of rows we compute each row's text and chunks,
compare the content hash with what the collection holds, embed only new or changed
chunks — packed into requests by input count and token budget, several in flight — and
upsert them as each request returns. A final sweep removes points whose row is deleted
or gone. Memory is bounded by the page size and the number of requests in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from qdrant_client import models

from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.entities import EntitySpec
from etl_assets.core.vectorstore import Collection, point_id

log = logging.getLogger(__name__)


@dataclass
class VectorSyncResult:
    collection: str
    model: str
    dimensions: int
    rows_live: int = 0
    rows_changed: int = 0
    rows_unchanged: int = 0
    chunks_embedded: int = 0
    points_upserted: int = 0
    points_deleted: int = 0
    surplus_chunks_deleted: int = 0
    collection_created: bool = False
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out["duration_s"] = round(self.duration_s, 3)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class PlannedChunk:
    id: str
    text: str
    tokens: int
    payload: dict[str, Any]


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def content_hash(model: str, dimensions: int, text: str) -> str:
    return hashlib.sha256(f"{model}\x1f{dimensions}\x1f{text}".encode()).hexdigest()


def plan_row(spec: EntitySpec, tenant_id: str, row: dict[str, Any], embedder: Embedder, max_tokens: int) -> list[PlannedChunk]:
    text = spec.text(row).strip() or f"{spec.name} {row['external_id']}"
    digest = content_hash(embedder.model, embedder.dimensions, text)
    pieces = embedder.split(text, max_tokens)
    base = {
        "tenant_id": tenant_id,
        "entity": spec.name,
        "external_id": row["external_id"],
        **{k: _jsonable(v) for k, v in spec.payload(row).items()},
        "content_hash": digest,
        "embedding_model": embedder.model,
        "chunks": len(pieces),
    }
    return [
        PlannedChunk(point_id(tenant_id, spec.name, row["external_id"], i), piece, embedder.count_tokens(piece),
                     {**base, "chunk": i, "text": piece[:2000]})  # fmt: skip
        for i, piece in enumerate(pieces)
    ]


def pack(chunks: Iterable[PlannedChunk], *, max_inputs: int, max_tokens: int) -> Iterator[list[PlannedChunk]]:
    """Group chunks into requests that respect both the input-count and the token budget."""
    batch: list[PlannedChunk] = []
    tokens = 0
    for chunk in chunks:
        if batch and (len(batch) >= max_inputs or tokens + chunk.tokens > max_tokens):
            yield batch
            batch, tokens = [], 0
        batch.append(chunk)
        tokens += chunk.tokens
    if batch:
        yield batch


async def sync_vectors(
    *,
    spec: EntitySpec,
    tenant_id: str,
    pages: Callable[[], Iterator[list[dict[str, Any]]]],
    live_ids: Callable[[list[str]], Awaitable[set[str]]],
    embedder: Embedder,
    collection: Collection,
    concurrency: int = 4,
    max_batch_inputs: int | None = None,
    max_batch_tokens: int | None = None,
    max_chunk_tokens: int | None = None,
) -> VectorSyncResult:
    """Bring ``collection`` to exactly the live rows produced by ``pages``.

    ``pages`` yields the live committed rows page by page; ``live_ids`` answers which of
    a list of external ids are live rows (for the orphan sweep).
    """
    started = time.perf_counter()
    result = VectorSyncResult(collection.name, embedder.model, embedder.dimensions)
    result.collection_created = await collection.ensure(
        model=embedder.model, dimensions=embedder.dimensions, indexes=dict(spec.payload_indexes)
    )
    max_inputs = min(max_batch_inputs or embedder.max_batch_inputs, embedder.max_batch_inputs)
    budget = min(max_batch_tokens or embedder.max_batch_tokens, embedder.max_batch_tokens)
    chunk_tokens = min(max_chunk_tokens or embedder.max_input_tokens, embedder.max_input_tokens)
    in_flight = asyncio.Semaphore(max(1, concurrency))

    async def embed_and_upsert(batch: list[PlannedChunk]) -> None:
        try:
            vectors = await embedder.embed([c.text for c in batch])
            await collection.upsert(
                [models.PointStruct(id=c.id, vector=v, payload=c.payload) for c, v in zip(batch, vectors, strict=True)]
            )
            result.chunks_embedded += len(batch)
            result.points_upserted += len(batch)
        finally:
            in_flight.release()

    row_iter = pages()
    async with asyncio.TaskGroup() as tg:  # a failed request cancels and awaits the rest
        while True:
            page = await asyncio.to_thread(next, row_iter, None)
            if page is None:
                break
            planned = [plan_row(spec, tenant_id, row, embedder, chunk_tokens) for row in page]
            result.rows_live += len(planned)
            ids = [c.id for chunks in planned for c in chunks]
            ids += [point_id(tenant_id, spec.name, row["external_id"], 0) for row in page]  # chunk 0 carries the old count
            existing = await collection.existing(sorted(set(ids)))
            todo: list[PlannedChunk] = []
            surplus: list[str] = []
            for row, chunks in zip(page, planned, strict=True):
                have = [existing.get(c.id) for c in chunks]
                if all(p is not None and p.content_hash == c.payload["content_hash"] for p, c in zip(have, chunks, strict=True)):
                    result.rows_unchanged += 1
                    continue
                result.rows_changed += 1
                todo.extend(chunks)
                old = existing.get(point_id(tenant_id, spec.name, row["external_id"], 0))
                if old is not None and isinstance(old.chunks, int) and old.chunks > len(chunks):
                    surplus += [point_id(tenant_id, spec.name, row["external_id"], i) for i in range(len(chunks), old.chunks)]
            if surplus:
                result.surplus_chunks_deleted += await collection.delete_ids(surplus)
            for batch in pack(todo, max_inputs=max_inputs, max_tokens=budget):
                await in_flight.acquire()
                tg.create_task(embed_and_upsert(batch))

    # Sweep: points whose row is deleted, vanished, or never committed leave the collection.
    async for points in collection.scroll_external_ids():
        ext_ids = sorted({e for _, e in points if e})
        alive = await live_ids(ext_ids) if ext_ids else set()
        doomed = [pid for pid, e in points if e not in alive]
        if doomed:
            result.points_deleted += await collection.delete_ids(doomed)
    result.duration_s = time.perf_counter() - started
    return result
