"""Moving a tenant's collections to another embedding model while search keeps answering.

Layout: the name users and the code know, ``client_<tenant>_<entity>``, becomes a Qdrant
alias for a physical collection ``client_<tenant>_<entity>__<n>`` (a generation). Every
collection operation accepts the alias (server and local mode alike), so the sync, the
checks and search keep using the one name; only this module knows generations.

Why an alias and a new collection rather than a second named vector in the same collection:
the new model's vectors are built without touching the served collection at all (no schema
change, no rewrite of every point to add a vector, and on a failure nothing to undo), the
switch is one atomic alias operation, rollback is the same operation backwards, and dropping
the old model frees its storage by deleting one collection.

:func:`reindex` per (tenant, entity):

1. find the served collection (the alias's target; or, for a collection made before
   aliases, the physical collection of that name) and the build target: an unserved
   generation already built with the new model (a re-index that was stopped resumes there)
   or a new generation ``__<n+1>``;
2. build it with the sync engine at its full speed (:func:`~etl_assets.core.vectorsync.sync_vectors`:
   deterministic ids and content hashes, so a resumed build embeds only what is missing),
   then a second pass that catches up rows committed while the first ran. The target's
   settings are recorded in the building generation's metadata (:data:`TARGET_KEY`) so that
   incremental syncs apply their changes to it too (:func:`building`);
3. blocking gates: points (chunk 0) == live rows, vector size == the new model's dimension,
   and retrieval on the labelled queries (:mod:`etl_assets.core.evaluation`) not worse than
   the served model's by more than ``tolerance`` (recall@k and MRR, absolute);
4. only then, the alias is switched to the new generation in one atomic operation. The old
   generation stays until :func:`drop_unserved`; :func:`rollback` switches back.

Nothing here deletes a served collection, except once for a collection created before
aliases: the alias cannot take the name of an existing collection, so its points are first
copied (vectors included) to generation ``__0``, which then stays for rollback; the delete
and the alias creation are two consecutive requests, the only moment search can miss.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.evaluation import RetrievalReport, evaluate_retrieval
from etl_assets.core.records import EntitySpec
from etl_assets.core.vectorstore import BASE_PAYLOAD_INDEXES, Collection, collection_name, payload_schema
from etl_assets.core.vectorsync import sync_vectors

log = logging.getLogger(__name__)

GENERATION_SEPARATOR = "__"
DEFAULT_TOLERANCE = 0.05
COPY_PAGE = 256
# Metadata key of a generation being built: the target model's settings (provider, model,
# dimensions, base_url, chunk_tokens, and the NAME of the environment variable holding its key,
# never the key). Incremental syncs find it there and follow the build (:func:`building`);
# the switch removes it, so a generation that served once is never followed again.
TARGET_KEY = "reindex_target"
TARGET_FIELDS = ("provider", "model", "dimensions", "base_url", "chunk_tokens", "api_key_env")


class ReindexError(RuntimeError):
    """A re-index cannot proceed (a gate failed, or the served collection is not what we expect)."""


def generation_name(alias: str, n: int) -> str:
    return f"{alias}{GENERATION_SEPARATOR}{n}"


def _generation(alias: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(alias) + GENERATION_SEPARATOR + r"(\d+)", name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Layout:
    """What exists for one alias name: the collection it serves from and every generation."""

    alias: str
    served: str | None  # the physical collection searches read; None if nothing exists yet
    is_alias: bool  # False: a collection from before aliases holds the name itself
    generations: dict[int, str]  # n -> physical name


async def layout(client: AsyncQdrantClient, alias: str) -> Layout:
    names = {c.name for c in (await client.get_collections()).collections}
    aliases = {a.alias_name: a.collection_name for a in (await client.get_aliases()).aliases}
    generations = {n: name for name in names if (n := _generation(alias, name)) is not None}
    if alias in aliases:
        return Layout(alias, aliases[alias], True, generations)
    if alias in names:
        return Layout(alias, alias, False, generations)
    return Layout(alias, None, False, generations)


async def _model_of(client: AsyncQdrantClient, name: str) -> tuple[str | None, int | None]:
    info = await client.get_collection(name)
    params = info.config.params.vectors
    if isinstance(params, dict):
        first = next(iter(params.values()), None)
        size = first.size if first else None
    else:
        size = params.size if isinstance(params, models.VectorParams) else None
    return (info.config.metadata or {}).get("embedding_model"), size


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class ReindexOutcome:
    alias: str
    served_before: str | None
    target: str
    resumed: bool
    rows_embedded: int = 0
    live_rows: int = 0
    points: int = 0
    gates: list[Gate] = field(default_factory=list)
    quality_old: dict[str, Any] | None = None
    quality_new: dict[str, Any] | None = None
    swapped: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def summary(self) -> str:
        state = "switched" if self.swapped else ("ready, not switched" if self.passed else "NOT switched")
        failed = "; ".join(f"{g.name}: {g.detail}" for g in self.gates if not g.passed)
        return f"{self.alias} -> {self.target}: {state}" + (f" ({failed})" if failed else "")


@dataclass
class QualitySample:
    """The labelled queries and the records they are labelled on (the sample site's issues)."""

    spec: EntitySpec
    records: list[Any]
    queries: list[tuple[str, list[str]]]
    k: int = 5


async def quality(sample: QualitySample, embedder: Embedder) -> RetrievalReport:
    return await evaluate_retrieval(sample.spec, sample.records, sample.queries, embedder, k=sample.k)


def quality_gate(old: RetrievalReport, new: RetrievalReport, tolerance: float) -> Gate:
    """Recall@k and MRR of the new model at least the old one's minus ``tolerance`` (absolute)."""
    worse = [
        f"{name} {n:.3f} < {o:.3f} - {tolerance}"
        for name, o, n in (
            (f"recall@{old.k}", old.recall_at_k, new.recall_at_k),
            ("mrr", old.mrr, new.mrr),
        )
        if n < o - tolerance
    ]
    detail = (
        f"recall@{new.k} {new.recall_at_k:.3f} (was {old.recall_at_k:.3f}), mrr {new.mrr:.3f} (was {old.mrr:.3f}), "
        f"tolerance {tolerance}"
    )
    return Gate("retrieval_not_worse", not worse, "; ".join(worse) + f" — {detail}" if worse else detail)


async def building(client: AsyncQdrantClient, alias: str) -> list[tuple[str, dict[str, Any]]]:
    """Unserved generations of ``alias`` that a re-index is building (or left unfinished), with
    the target settings it recorded: an incremental sync applies its changes to them too.

    A build left behind by a stopped or killed re-index is still followed (it is resumed by the
    next run of the job, whose catch-up then has less to do); ``action: drop`` abandons it.
    """
    current = await layout(client, alias)
    found = []
    for n in sorted(current.generations):
        name = current.generations[n]
        if name == current.served:
            continue
        recorded = (await client.get_collection(name)).config.metadata or {}
        target = recorded.get(TARGET_KEY)
        if isinstance(target, dict):
            found.append((name, target))
    return found


async def find_target(client: AsyncQdrantClient, current: Layout, model: str, dimensions: int) -> tuple[str, bool]:
    """The generation to build: an unserved one already made with ``model`` (resume), else a new one."""
    for n in sorted(current.generations, reverse=True):
        name = current.generations[n]
        if name == current.served:
            continue
        if await _model_of(client, name) == (model, dimensions):
            return name, True
    n = max(current.generations, default=0) + 1
    return generation_name(current.alias, n), False


async def reindex(
    client: AsyncQdrantClient,
    *,
    spec: EntitySpec,
    tenant_id: str,
    embedder: Embedder,
    pages: Callable[[], Iterator[list[dict[str, Any]]]],
    live_ids: Callable[[list[str]], Awaitable[set[str]]],
    count_rows: Callable[[], int],
    local: bool,
    quality_check: Callable[[], Awaitable[Gate]] | None,
    swap: bool = True,
    concurrency: int = 4,
    serving: Embedder | None = None,
    target_record: dict[str, Any] | None = None,
    max_chunk_tokens: int | None = None,
) -> ReindexOutcome:
    """Build ``client_<tenant>_<entity>`` anew with ``embedder`` beside the served collection;
    switch the alias to it only when every gate passes (see the module docstring).

    ``quality_check`` compares the served model's retrieval with the new one's (skipped when
    nothing is served yet: there is nothing to be worse than). ``serving`` is the embedder that
    check uses for the served model: it must be the model the served collection was built with.
    ``target_record`` (keys :data:`TARGET_FIELDS`, no secret) is written to the building
    generation's metadata before anything is embedded, so that incremental syncs follow it.
    """
    import asyncio

    alias = collection_name(tenant_id, spec.name)
    current = await layout(client, alias)
    if current.served is not None:
        served_model = await _model_of(client, current.served)
        if served_model == (embedder.model, embedder.dimensions):
            raise ReindexError(
                f"{alias} already serves {embedder.model} ({embedder.dimensions} dimensions): nothing to re-index"
            )
        if serving is not None and served_model != (serving.model, serving.dimensions):
            raise ReindexError(
                f"{alias} serves {served_model[0]} ({served_model[1]} dimensions) but the configured model is "
                f"{serving.model} ({serving.dimensions}): keep EMBEDDING_MODEL / EMBEDDING_DIMENSIONS at the served "
                "model while re-indexing (the new one goes in the job's config)"
            )
    target, resumed = await find_target(client, current, embedder.model, embedder.dimensions)
    outcome = ReindexOutcome(alias, current.served, target, resumed)
    collection = Collection(client, target, tenant_id, spec.name, local=local)
    log.info("%s: building %s with %s%s", alias, target, embedder.model, " (resuming)" if resumed else "")
    if target_record is not None:
        await collection.ensure(
            model=embedder.model, dimensions=embedder.dimensions, indexes=dict(spec.payload_indexes)
        )
        record = {k: target_record.get(k) for k in TARGET_FIELDS}
        await client.update_collection(target, metadata={TARGET_KEY: record})
    # Two passes: the first builds at full speed; the second embeds only rows committed while the
    # first ran (content hashes), so the gates and the switch see the tables as they are now.
    for _ in range(2):
        result = await sync_vectors(
            spec=spec,
            tenant_id=tenant_id,
            pages=pages,
            live_ids=live_ids,
            embedder=embedder,
            collection=collection,
            concurrency=concurrency,
            max_chunk_tokens=max_chunk_tokens,
        )
        outcome.rows_embedded += result.rows_changed
    outcome.live_rows = await asyncio.to_thread(count_rows)
    outcome.points = await collection.count(chunk=0)
    _, size = await _model_of(client, target)
    outcome.gates.append(
        Gate(
            "points_match_live_rows",
            outcome.points == outcome.live_rows,
            f"{outcome.points} rows with points, {outcome.live_rows} live rows",
        )
    )
    outcome.gates.append(
        Gate("vector_size_matches_model", size == embedder.dimensions, f"size {size}, model {embedder.dimensions}")
    )
    # Skipped only for a first index (nothing served and no generation: nothing to be worse than);
    # a switch interrupted after a collection from before aliases was moved to __0 still compares.
    if quality_check is not None and (current.served is not None or current.generations):
        outcome.gates.append(await quality_check())
    if outcome.passed and swap:
        await switch(client, alias, target, current, local=local)
        # Served now: syncs reach it through the alias; no longer a build to follow.
        await client.update_collection(target, metadata={TARGET_KEY: None})
        outcome.swapped = True
    log.info("%s", outcome.summary())
    return outcome


async def switch(client: AsyncQdrantClient, alias: str, target: str, current: Layout, *, local: bool = False) -> None:
    """Point ``alias`` at ``target`` atomically (one alias request: delete + create applied together)."""
    if current.served is not None and not current.is_alias:
        # A collection from before aliases holds the name: keep its points as generation 0.
        keep = generation_name(alias, 0)
        await copy_collection(client, alias, keep, local=local)
        await client.delete_collection(alias)
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=target, alias_name=alias))
            ]
        )
        return
    operations: list[Any] = []
    if current.is_alias:
        operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    operations.append(
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=target, alias_name=alias))
    )
    await client.update_collection_aliases(change_aliases_operations=operations)


async def copy_collection(client: AsyncQdrantClient, source: str, dest: str, *, local: bool) -> int:
    """Copy every point (dense and sparse vectors, payload), the vector parameters and the metadata of ``source``."""
    info = await client.get_collection(source)
    if await client.collection_exists(dest):
        await client.delete_collection(dest)  # a copy interrupted earlier: start it again
    await client.create_collection(
        dest,
        vectors_config=info.config.params.vectors,
        sparse_vectors_config=info.config.params.sparse_vectors,  # the BM25 vector of hybrid search
        metadata=dict(info.config.metadata or {}),
    )
    if not local:
        schema = info.payload_schema or {}
        for field_name in {*BASE_PAYLOAD_INDEXES, *schema}:
            kind = schema[field_name].data_type if field_name in schema else payload_schema("keyword")
            await client.create_payload_index(dest, field_name, field_schema=kind)
    copied, offset = 0, None
    while True:
        page, offset = await client.scroll(source, limit=COPY_PAGE, offset=offset, with_payload=True, with_vectors=True)
        if page:
            await client.upsert(
                dest,
                points=[models.PointStruct(id=p.id, vector=cast(Any, p.vector or {}), payload=p.payload) for p in page],
                wait=True,
            )
            copied += len(page)
        if offset is None:
            return copied


async def rollback(client: AsyncQdrantClient, tenant_id: str, entity: str, generation: int | None = None) -> str:
    """Point the alias back at ``generation`` (default: the newest one that is not served); its name."""
    alias = collection_name(tenant_id, entity)
    current = await layout(client, alias)
    if not current.is_alias:
        raise ReindexError(f"{alias} is not an alias yet: there is nothing to roll back to")
    candidates = [n for n, name in current.generations.items() if name != current.served]
    if generation is None:
        if not candidates:
            raise ReindexError(f"{alias}: no other generation is kept (was it dropped?)")
        generation = max(candidates)
    if generation not in candidates:
        raise ReindexError(f"{alias}: generation {generation} does not exist or is the one served")
    target = current.generations[generation]
    await switch(client, alias, target, current)
    return target


async def drop_unserved(client: AsyncQdrantClient, tenant_id: str, entity: str) -> list[str]:
    """Delete every generation the alias does not point at (the old model's, abandoned builds)."""
    alias = collection_name(tenant_id, entity)
    current = await layout(client, alias)
    dropped = [name for name in current.generations.values() if name != current.served]
    for name in sorted(dropped):
        await client.delete_collection(name)
    return sorted(dropped)


def labelled_sample(spec: EntitySpec, records: Iterable[Any], queries: list[tuple[str, list[str]]]) -> QualitySample:
    return QualitySample(spec, list(records), queries)
