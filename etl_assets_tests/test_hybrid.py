"""Hybrid retrieval without a model: named dense + BM25 vectors, the upgrade of dense-only
collections, search modes, issue keys first, thresholds and bad input — on qdrant-client's
local mode and on the loopback Qdrant REST server.

The embedder here is a hashed bag of words (no model download, no HTTP): what matters is that
the sync and the search use it, and that it counts its requests. Retrieval quality with the
real local model is held by test_retrieval.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.embeddings.base import EmbeddingStats
from etl_assets.core.search import (
    NO_THRESHOLDS,
    InvalidRequestError,
    IssueFilters,
    NotIndexedError,
    SearchMode,
    Thresholds,
    issue_filter,
    issue_keys,
    rank,
    search,
)
from etl_assets.core.sources.jira.sample import generate_sample_site
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.sparse import SPARSE_VECTOR, SPARSE_VERSION, document_vector
from etl_assets.core.vectorstore import Collection, collection_name, layout_of
from etl_assets.core.vectorsync import plan_row, sync_vectors
from etl_assets.fakes.qdrant_server import FakeQdrant

TENANT = "t"
NAME = collection_name(TENANT, "issues")


class WordsEmbedder:
    """A deterministic embedder: each word adds to one of 64 dimensions; counts its requests."""

    model = "test-words"
    dimensions = 64
    max_batch_inputs = 64
    max_batch_tokens = 1_000_000
    max_input_tokens = 100_000

    def __init__(self) -> None:
        self.stats = EmbeddingStats()
        self.requests = 0
        self.inputs = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def split(self, text: str, max_tokens: int) -> list[str]:
        return [text]

    def vector(self, text: str) -> list[float]:
        v = [0.0] * self.dimensions
        for word in text.lower().split():
            v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dimensions] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.requests += 1
        self.inputs += len(texts)
        return [self.vector(t) for t in texts]


def sample_rows(n: int = 40) -> list[dict[str, Any]]:
    site = generate_sample_site()
    rows = []
    for issue in site.issues[:n]:
        row = ISSUES.parse(issue)
        rows.append({**row, "id": len(rows) + 1, "tenant_id": TENANT})
    return rows


@contextlib.asynccontextmanager
async def qdrant(kind: str, tmp_path, **fake: Any):
    if kind == "local":
        client = AsyncQdrantClient(location=":memory:")
        try:
            yield client, True
        finally:
            await client.close()
        return
    with FakeQdrant(tmp_path / "qdrant", **fake) as server:
        client = AsyncQdrantClient(url=server.url, timeout=30)
        try:
            yield client, False
        finally:
            await client.close()


async def sync(client: AsyncQdrantClient, local: bool, rows: list[dict[str, Any]], embedder: WordsEmbedder):
    live = {r["external_id"] for r in rows}

    async def live_ids(candidates: list[str]) -> set[str]:
        return live & set(candidates)

    return await sync_vectors(
        spec=ISSUES,
        tenant_id=TENANT,
        pages=lambda: iter([rows]),
        live_ids=live_ids,
        embedder=embedder,
        collection=Collection(client, NAME, TENANT, "issues", local=local),
    )


async def all_points(client: AsyncQdrantClient, name: str = NAME) -> list[models.Record]:
    points, _ = await client.scroll(name, limit=10_000, with_payload=True, with_vectors=True)
    return points


async def build_dense_only(client: AsyncQdrantClient, rows: list[dict[str, Any]], embedder: WordsEmbedder) -> None:
    """A collection as the code before hybrid search built it: one unnamed dense vector per point."""
    await client.create_collection(
        NAME,
        vectors_config=models.VectorParams(size=embedder.dimensions, distance=models.Distance.COSINE),
        metadata={
            "embedding_model": embedder.model,
            "dimensions": embedder.dimensions,
            "tenant_id": TENANT,
            "entity": "issues",
            "schema_version": 1,
        },
    )
    points = []
    for row in rows:
        for chunk in plan_row(ISSUES, TENANT, row, embedder, embedder.max_input_tokens):
            points.append(models.PointStruct(id=chunk.id, vector=embedder.vector(chunk.text), payload=chunk.payload))
    await client.upsert(NAME, points=points, wait=True)


KINDS = ["local", "server"]


# -- the sync writes both vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_point_carries_a_dense_and_a_bm25_vector_and_the_schema_says_so(kind, tmp_path):
    rows = sample_rows(20)

    async def go():
        async with qdrant(kind, tmp_path) as (client, local):
            embedder = WordsEmbedder()
            result = await sync(client, local, rows, embedder)
            return result, embedder, await client.get_collection(NAME), await all_points(client)

    result, embedder, info, points = asyncio.run(go())
    assert result.collection_created and len(points) == result.points_upserted >= 20
    assert embedder.inputs == result.chunks_embedded  # the sparse vectors cost no embedding input
    layout = layout_of(info)
    assert (layout.dense, layout.sparse, layout.size) == ("dense", SPARSE_VECTOR, 64)
    assert info.config.metadata["vectors"] == {"dense": "dense", "sparse": "bm25", "sparse_version": SPARSE_VERSION}
    assert info.config.params.sparse_vectors[SPARSE_VECTOR].modifier == models.Modifier.IDF
    for p in points:
        assert len(p.vector["dense"]) == 64
        text = p.payload["text"]
        if len(text) < 2000:  # the payload keeps the whole chunk: its BM25 vector must be that text's
            expected = document_vector(text)
            assert sorted(p.vector[SPARSE_VECTOR].indices) == sorted(expected.indices)


# -- the upgrade of a dense-only collection -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_dense_only_collection_gains_bm25_vectors_without_re_embedding(kind, tmp_path):
    rows = sample_rows(30)
    changed = {**rows[3], "summary": rows[3]["summary"] + " (edited)"}

    async def go():
        async with qdrant(kind, tmp_path) as (client, local):
            await build_dense_only(client, rows, WordsEmbedder())
            before = {str(p.id): p.vector for p in await all_points(client)}
            embedder = WordsEmbedder()
            result = await sync(client, local, [*rows[:3], changed, *rows[4:]], embedder)
            names = {c.name for c in (await client.get_collections()).collections}
            after = await all_points(client)
            again = await sync(client, local, [*rows[:3], changed, *rows[4:]], WordsEmbedder())
            return before, result, embedder, names, await client.get_collection(NAME), after, again

    before, result, embedder, names, info, after, again = asyncio.run(go())
    # Only the row that changed since the dense-only build is embedded (its chunks: text and history);
    # the others' dense vectors are copied.
    chunks = len(plan_row(ISSUES, TENANT, changed, WordsEmbedder(), WordsEmbedder.max_input_tokens))
    assert chunks >= 2 and result.rows_changed == 1 and embedder.inputs == chunks, result
    assert result.upgraded_points == len(before) - chunks
    assert names == {NAME}  # the staging collection is gone
    layout = layout_of(info)
    assert layout.hybrid and layout.dense == "dense"
    assert info.config.metadata["vectors"]["sparse"] == SPARSE_VECTOR
    assert info.config.metadata["embedding_model"] == "test-words"
    assert {str(p.id) for p in after} == set(before)
    for p in after:
        assert p.vector[SPARSE_VECTOR].indices
        if p.payload["external_id"] != changed["external_id"]:
            assert p.vector["dense"] == pytest.approx(before[str(p.id)], abs=1e-6)
    assert again.upgraded_points == 0 and again.rows_changed == 0  # upgraded once


@pytest.mark.parametrize("crash", ["after dropping the original", "while copying back"])
def test_an_interrupted_upgrade_resumes_from_the_staging_copy(crash, tmp_path):
    rows = sample_rows(12)

    async def go():
        async with qdrant("local", tmp_path) as (client, local):
            embedder = WordsEmbedder()
            await build_dense_only(client, rows, embedder)
            collection = Collection(client, NAME, TENANT, "issues", local=True)
            staging = await collection.begin_upgrade(model=embedder.model, dimensions=64, indexes=None)
            copied = await collection.dense_vectors([str(p.id) for p in await all_points(client)])
            await staging.upsert(
                [
                    models.PointStruct(id=i, vector={"dense": v, SPARSE_VECTOR: document_vector(p["text"])}, payload=p)
                    for i, (v, p) in copied.items()
                ]
            )
            # the crash: staging complete and marked, the original dropped, nothing (or a part) copied back
            await client.update_collection(staging.name, metadata={"upgrade_complete": True})
            await client.delete_collection(NAME)
            if crash == "while copying back":
                await collection._create(NAME, model=embedder.model, dimensions=64, indexes=None, upgrade_pending=True)
                first = next(iter(copied.items()))
                await collection.upsert([models.PointStruct(id=first[0], vector={"dense": first[1][0]}, payload={})])
            fresh = WordsEmbedder()
            result = await sync(client, local, rows, fresh)
            names = {c.name for c in (await client.get_collections()).collections}
            info = await client.get_collection(NAME)
            return result, fresh, names, await all_points(client), info

    result, fresh, names, points, info = asyncio.run(go())
    chunks = sum(len(plan_row(ISSUES, TENANT, r, fresh, fresh.max_input_tokens)) for r in rows)
    assert names == {NAME} and len(points) == chunks
    assert fresh.inputs == 0 and result.rows_unchanged == len(rows)
    assert all(p.vector[SPARSE_VECTOR].indices and p.payload["external_id"] for p in points)
    assert not info.config.metadata.get("upgrade_pending")


# -- search modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_modes_keys_first_thresholds_and_fallback(kind, tmp_path):
    rows = sample_rows(40)
    target = rows[17]
    other = rows[5]

    async def go():
        async with qdrant(kind, tmp_path) as (client, local):
            embedder = WordsEmbedder()
            await sync(client, local, rows, embedder)
            out: dict[str, Any] = {}
            for mode in SearchMode:
                # a query naming a key (lower case, inside a sentence) returns that issue first
                hits = await search(
                    client,
                    embedder,
                    f"what about {target['key'].lower()} and {other['summary']}",
                    tenant_id=TENANT,
                    access=None,
                    mode=mode,
                    k=5,
                )
                out[mode.value] = hits
            out["summary-sparse"] = await search(
                client, embedder, other["summary"], tenant_id=TENANT, access=None, mode="sparse"
            )
            strict = Thresholds(0.999, 10_000.0)
            out["strict"] = await search(
                client, embedder, other["summary"], tenant_id=TENANT, access=None, thresholds=strict
            )
            out["strict-key"] = await search(
                client, embedder, target["key"], tenant_id=TENANT, access=None, thresholds=strict
            )
            out["open"] = await search(
                client, embedder, other["summary"], tenant_id=TENANT, access=None, thresholds=NO_THRESHOLDS
            )
            return out

    out = asyncio.run(go())
    for mode in SearchMode:
        hits = out[mode.value]
        assert hits[0].key == target["key"] and hits[0].exact_key, (mode, [h.key for h in hits])
        assert len({h.external_id for h in hits}) == len(hits) <= 5
        if mode is not SearchMode.DENSE:  # the rest of the query still ranks (exact words: BM25)
            assert other["key"] in [h.key for h in hits], mode
    assert out["summary-sparse"][0].key == other["key"]
    # thresholds no hit clears: nothing, except the issue the query names by key
    assert out["strict"] == []
    assert [h.key for h in out["strict-key"]] == [target["key"]]
    # without thresholds the summary finds its issue (issue texts also hold a shared-word history digest)
    assert other["key"] in [h.key for h in out["open"][:3]]


@pytest.mark.parametrize("kind", KINDS)
def test_a_dense_only_collection_is_searched_dense_until_upgraded(kind, tmp_path):
    rows = sample_rows(10)

    async def go():
        async with qdrant(kind, tmp_path) as (client, _):
            embedder = WordsEmbedder()
            await build_dense_only(client, rows, embedder)
            hybrid = await search(client, embedder, rows[2]["summary"], tenant_id=TENANT, access=None)
            dense = await search(client, embedder, rows[2]["summary"], tenant_id=TENANT, access=None, mode="dense")
            with pytest.raises(NotIndexedError, match="no BM25 vectors yet.*re-run vectors/issues_vectors"):
                await search(client, embedder, rows[2]["summary"], tenant_id=TENANT, access=None, mode="sparse")
            return hybrid, dense

    hybrid, dense = asyncio.run(go())
    # hybrid on a dense-only collection is the dense search, hit for hit (local mode's scores vary
    # in the eighth decimal from one query to the next)
    assert hybrid and [h.key for h in hybrid] == [h.key for h in dense]
    assert [h.score for h in hybrid] == pytest.approx([h.score for h in dense], rel=1e-6)
    assert rows[2]["key"] in [h.key for h in hybrid[:3]]


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "query is empty"),
        ("  \t\n ", "query is empty"),
        ("x" * 100_000, "query is 100000 characters long; at most 10000"),
        ("?!… --- ///", "only punctuation"),
    ],
)
def test_queries_nothing_can_be_found_for_get_a_clear_refusal(query, message, tmp_path):
    async def go():
        async with qdrant("local", tmp_path) as (client, local):
            embedder = WordsEmbedder()
            await sync(client, local, sample_rows(3), embedder)
            before = embedder.requests
            with pytest.raises(InvalidRequestError, match=message) as refused:
                await search(client, embedder, query, tenant_id=TENANT, access=None)
            return refused.value, embedder.requests - before

    error, requests = asyncio.run(go())
    assert "\n" not in str(error) and requests == 0  # refused before anything was embedded


def test_the_key_of_a_deleted_issue_is_reported_missing_not_ranked_first(tmp_path):
    rows = sample_rows(12)
    gone = rows[4]

    async def go():
        async with qdrant("local", tmp_path) as (client, local):
            embedder = WordsEmbedder()
            await sync(client, local, rows, embedder)
            await sync(client, local, [r for r in rows if r is not gone], embedder)  # deleted at the source
            collection = Collection(client, NAME, TENANT, "issues", local=True)
            return await rank(
                client,
                embedder,
                f"{gone['key']} {gone['summary']}",
                name=NAME,
                layout=await collection.layout(),
                mode=SearchMode.HYBRID,
                flt=issue_filter(TENANT, IssueFilters(), access=None),
                k=5,
                keyed=True,
                thresholds=NO_THRESHOLDS,
            )

    hits, missing = asyncio.run(go())
    assert missing == [gone["key"]]
    assert gone["key"] not in [h.key for h in hits] and not any(h.exact_key for h in hits)


def test_a_filter_on_a_field_without_an_index_is_refused_in_one_line_naming_the_field(tmp_path):
    rows = sample_rows(5)

    async def go():
        # a server that refuses unindexed filters, and a collection that lost one of its indexes
        async with qdrant("server", tmp_path, require_indexes=True) as (client, _):
            embedder = WordsEmbedder()
            await sync(client, False, rows, embedder)
            # e.g. an index deleted by hand; the next vector sync would create it again
            await client.delete_payload_index(NAME, "project_key")
            ok = await search(client, embedder, rows[1]["summary"], tenant_id=TENANT, access=None)
            with pytest.raises(InvalidRequestError) as refused:
                await search(client, embedder, rows[1]["summary"], tenant_id=TENANT, access=None, project="ABC")
            return ok, refused.value

    ok, error = asyncio.run(go())
    assert ok[0].key == rows[1]["key"]
    assert "cannot filter on 'project_key'" in str(error) and "\n" not in str(error)


def test_issue_keys_are_found_in_queries_and_upper_cased():
    assert issue_keys("dup of abc-12, see ABC-12 and XY_Z-7; not utf8 or 9.4.2 or -5") == ["ABC-12", "XY_Z-7"]


# -- the service's answers ------------------------------------------------------------------------------


def test_the_service_says_why_a_named_key_or_a_whole_answer_is_missing(tmp_path):
    """A deleted issue's key, an unknown key and a query matching nothing get a notice, not silence."""
    from sqlalchemy import insert

    from etl_assets.core.search import Principal, SearchService
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.store.ops import row_hash, utcnow
    from etl_assets.core.tenants import TenantRegistry

    registry = TenantRegistry.load()
    tenant = registry.tenants[0].id
    rows = [{**r, "tenant_id": tenant} for r in sample_rows(8)]
    gone = rows[2]
    engine = make_engine(f"sqlite:///{tmp_path / 'etl.db'}")
    table = ISSUES.table
    columns = set(table.c.keys()) - {"id"}
    with engine.begin() as conn:
        for row in rows:
            values = {k: v for k, v in row.items() if k in columns}
            values["deleted_at"] = utcnow() if row is gone else None
            values["content_hash"] = row_hash(row)
            values["data"] = {"key": row["key"]}
            # the bookkeeping columns the table step fills: any time will do here
            for column in table.c:
                if not column.nullable and column.name not in values and column.name != "id":
                    values[column.name] = utcnow()
            conn.execute(insert(table).values(**values))
    live = [r for r in rows if r is not gone]

    async def go():
        client = AsyncQdrantClient(location=":memory:")
        try:
            embedder = WordsEmbedder()
            ids = {r["external_id"] for r in live}

            async def live_ids(candidates: list[str]) -> set[str]:
                return ids & set(candidates)

            await sync_vectors(
                spec=ISSUES,
                tenant_id=tenant,
                pages=lambda: iter([live]),
                live_ids=live_ids,
                embedder=embedder,
                collection=Collection(client, collection_name(tenant, "issues"), tenant, "issues", local=True),
            )
            service = SearchService(client, embedder, engine, registry)
            who = Principal("tester", frozenset({tenant}), unrestricted=True)
            deleted = await service.search_issues(who, f"{gone['key']} {live[0]['summary']}", tenant=tenant)
            # sparse: this test embedder has no calibrated dense threshold, so only BM25 can find "nothing"
            unknown = await service.search_issues(who, "ZZZ-999", tenant=tenant, mode="sparse")
            found = await service.search_issues(who, live[1]["key"], tenant=tenant)
            return deleted, unknown, found
        finally:
            await client.close()

    try:
        deleted, unknown, found = asyncio.run(go())
    finally:
        engine.dispose()
    assert deleted.mode == SearchMode.HYBRID and deleted.hits
    assert f"issue {gone['key']} was deleted at the source" in (deleted.notice or "")
    assert gone["key"] not in [h.key for h in deleted.hits]
    assert unknown.hits == [] and "no issue ZZZ-999" in (unknown.notice or "") and "no good match" in unknown.notice
    assert found.hits[0].key == live[1]["key"] and found.hits[0].exact_key and found.notice is None
