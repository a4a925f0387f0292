"""The embedded Qdrant Edge adapter: qdrant-client's API, answered like qdrant-client's local mode.

Every query runs on the same points in both engines and the answers are compared (the
collections stay below Edge's full-scan threshold, so both search exactly).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core import edge_client
from etl_assets.core.edge_client import (
    STORE_FILE,
    EdgeQdrantClient,
    EdgeUnsupportedError,
)
from etl_assets.core.sparse import DENSE_VECTOR
from etl_assets.core.vectorstore import Collection, NewPoint, point_id

NAME = "client_t_issues"
DIM = 8
WORDS = ["flush", "index", "writer", "null", "pointer", "exception", "timeout", "deploy", "login", "cache"]


def _points(n: int = 120, seed: int = 7) -> list[models.PointStruct]:
    rng = random.Random(seed)
    out = []
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for i in range(n):
        terms = sorted(rng.sample(range(len(WORDS)), rng.randint(1, 4)))
        out.append(
            models.PointStruct(
                id=point_id("t", "issues", str(i)),
                vector={
                    "dense": [rng.uniform(-1, 1) for _ in range(DIM)],
                    "bm25": models.SparseVector(indices=terms, values=[round(rng.uniform(0.5, 3.0), 3) for _ in terms]),
                },
                payload={
                    "tenant_id": "t",
                    "external_id": str(i),
                    "project": ["ABC", "XYZ", "OPS"][i % 3],
                    "priority": i % 5,
                    "updated": (start + dt.timedelta(days=i)).isoformat().replace("+00:00", "Z"),
                    "labels": ["a", "b"] if i % 4 == 0 else [],
                },
            )
        )
    return out


async def _fill(client: AsyncQdrantClient, name: str = NAME) -> None:
    await client.create_collection(
        name,
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        metadata={"embedding_model": "m", "entity": "issues"},
    )
    await client.upsert(name, points=_points())


def both(tmp_path: Path, scenario: Callable[[AsyncQdrantClient], Awaitable[Any]]) -> tuple[Any, Any]:
    """``scenario`` on Edge and on qdrant-client's local mode, each on the same fresh points."""

    async def run(client: AsyncQdrantClient) -> Any:
        try:
            await _fill(client)
            return await scenario(client)
        finally:
            await client.close()

    edge = asyncio.run(run(EdgeQdrantClient(tmp_path / "edge")))
    local = asyncio.run(run(AsyncQdrantClient(location=":memory:")))
    return edge, local


def ranked(response: models.QueryResponse) -> list[tuple[str, float]]:
    return [(str(p.id), round(p.score, 4)) for p in response.points]


def assert_same_ranking(edge: list[tuple[str, float]], local: list[tuple[str, float]]) -> None:
    assert len(edge) == len(local) and edge, (edge, local)
    for (eid, escore), (lid, lscore) in zip(edge, local, strict=True):
        assert math.isclose(escore, lscore, rel_tol=1e-3, abs_tol=1e-3), (edge, local)
        if eid != lid:  # only equal scores may swap places
            assert math.isclose(escore, lscore, abs_tol=1e-3) and (eid, escore) in edge and (lid, lscore) in local


QUERY = [0.3, -0.2, 0.9, 0.1, -0.5, 0.4, 0.0, 0.2]
SPARSE = models.SparseVector(indices=[0, 5, 7], values=[1.0, 1.0, 1.0])
FILTERS = {
    "match value": models.Filter(must=[models.FieldCondition(key="project", match=models.MatchValue(value="ABC"))]),
    "match any": models.Filter(
        must=[models.FieldCondition(key="external_id", match=models.MatchAny(any=["1", "4", "9", "77", "200"]))]
    ),
    "range": models.Filter(must=[models.FieldCondition(key="priority", range=models.Range(gte=1, lt=3))]),
    "datetime range": models.Filter(
        must=[
            models.FieldCondition(
                key="updated",
                range=models.DatetimeRange(gte=dt.datetime(2024, 2, 1, tzinfo=dt.UTC), lt=dt.datetime(2024, 3, 15)),
            )
        ]
    ),
    "must_not + should": models.Filter(
        should=[
            models.FieldCondition(key="project", match=models.MatchValue(value="XYZ")),
            models.FieldCondition(key="priority", match=models.MatchValue(value=0)),
        ],
        must_not=[models.FieldCondition(key="project", match=models.MatchValue(value="OPS"))],
    ),
    "is_empty": models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="labels"))]),
    "has_id": models.Filter(must=[models.HasIdCondition(has_id=[point_id("t", "issues", "3")])]),
}


def test_dense_sparse_and_filtered_queries_rank_as_local_mode(tmp_path: Path) -> None:
    async def scenario(client: AsyncQdrantClient) -> dict[str, Any]:
        out = {
            "dense": ranked(await client.query_points(NAME, query=QUERY, using="dense", limit=15)),
            "sparse idf": ranked(await client.query_points(NAME, query=SPARSE, using="bm25", limit=15)),
            "nearest query": ranked(
                await client.query_points(NAME, query=models.NearestQuery(nearest=QUERY), using="dense", limit=5)
            ),
            "threshold": ranked(
                await client.query_points(NAME, query=QUERY, using="dense", limit=50, score_threshold=0.5)
            ),
            "offset": ranked(await client.query_points(NAME, query=QUERY, using="dense", limit=5, offset=5)),
        }
        for label, flt in FILTERS.items():
            out[label] = ranked(await client.query_points(NAME, query=QUERY, using="dense", query_filter=flt, limit=8))
            out[f"count {label}"] = (await client.count(NAME, count_filter=flt)).count
        return out

    edge, local = both(tmp_path, scenario)
    assert edge.keys() == local.keys()
    for key in edge:
        if key.startswith("count"):
            assert edge[key] == local[key] > 0, key
        else:
            assert_same_ranking(edge[key], local[key])


@pytest.mark.parametrize("fusion", [models.Fusion.RRF, models.Fusion.DBSF])
def test_prefetch_fusion_matches_local_mode(tmp_path: Path, fusion: models.Fusion) -> None:
    async def scenario(client: AsyncQdrantClient) -> Any:
        flt = models.Filter(must_not=[models.FieldCondition(key="project", match=models.MatchValue(value="OPS"))])
        return ranked(
            await client.query_points(
                NAME,
                prefetch=[
                    models.Prefetch(query=QUERY, using="dense", limit=20),
                    models.Prefetch(query=SPARSE, using="bm25", limit=20),
                ],
                query=models.FusionQuery(fusion=fusion),
                query_filter=flt,
                limit=10,
            )
        )

    edge, local = both(tmp_path, scenario)
    assert_same_ranking(edge, local)


def test_rrf_query_with_weights_and_batch(tmp_path: Path) -> None:
    async def scenario(client: AsyncQdrantClient) -> Any:
        prefetch = [
            models.Prefetch(query=QUERY, using="dense", limit=20),
            models.Prefetch(query=SPARSE, using="bm25", limit=20),
        ]
        [a, b] = await client.query_batch_points(
            NAME,
            requests=[
                models.QueryRequest(prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=60)), limit=5),
                models.QueryRequest(query=QUERY, using="dense", limit=5, with_payload=["project"]),
            ],
        )
        assert all(set((p.payload or {}).keys()) == {"project"} for p in b.points)
        return ranked(a), ranked(b)

    edge, local = both(tmp_path, scenario)
    assert_same_ranking(edge[0], local[0])
    assert_same_ranking(edge[1], local[1])


def test_reads_and_payload_updates_agree_with_local_mode(tmp_path: Path) -> None:
    ids = [point_id("t", "issues", str(i)) for i in range(6)]

    async def scenario(client: AsyncQdrantClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        got = await client.retrieve(NAME, ids[:3] + [point_id("t", "issues", "missing")], with_vectors=True)
        out["retrieve"] = sorted((str(r.id), r.payload["project"] if r.payload else None) for r in got)
        vec = next(r for r in got if str(r.id) == ids[0]).vector
        assert isinstance(vec, dict) and isinstance(vec["bm25"], models.SparseVector)
        out["sparse"] = (vec["bm25"].indices, [round(v, 5) for v in vec["bm25"].values])  # Edge keeps float32
        out["dense norm"] = round(math.fsum(x * x for x in vec["dense"]), 4)
        only = await client.retrieve(NAME, ids[:1], with_payload=models.PayloadSelectorInclude(include=["priority"]))
        out["include"] = only[0].payload
        no_payload = await client.retrieve(NAME, ids[:1], with_payload=False)
        out["no payload"] = no_payload[0].payload

        await client.set_payload(NAME, payload={"status": "done"}, points=ids[:2])
        await client.set_payload(
            NAME,
            payload={"flag": True},
            points=models.FilterSelector(
                filter=models.Filter(must=[models.FieldCondition(key="project", match=models.MatchValue(value="XYZ"))])
            ),
        )
        await client.overwrite_payload(NAME, payload={"only": 1}, points=[ids[2]])
        await client.delete_payload(NAME, keys=["labels"], points=[ids[0]])
        await client.clear_payload(NAME, points_selector=models.PointIdsList(points=[ids[3]]))
        after = await client.retrieve(NAME, ids[:5])
        out["after updates"] = sorted((str(r.id), sorted((r.payload or {}).items())) for r in after)
        out["flagged"] = (
            await client.count(
                NAME,
                count_filter=models.Filter(
                    must=[models.FieldCondition(key="flag", match=models.MatchValue(value=True))]
                ),
            )
        ).count

        await client.update_vectors(NAME, points=[models.PointVectors(id=ids[4], vector={"dense": QUERY})])
        top = await client.query_points(NAME, query=QUERY, using="dense", limit=1)
        out["updated vector wins"] = str(top.points[0].id) == ids[4]

        await client.delete(NAME, points_selector=models.PointIdsList(points=ids[:2]))
        await client.delete(
            NAME,
            points_selector=models.FilterSelector(
                filter=models.Filter(must=[models.FieldCondition(key="priority", match=models.MatchValue(value=4))])
            ),
        )
        out["count after delete"] = (await client.count(NAME)).count
        pages, offset, seen = 0, None, []
        while True:
            records, offset = await client.scroll(NAME, limit=17, offset=offset, with_payload=["external_id"])
            pages += 1
            seen += [str(r.id) for r in records]
            if offset is None:
                break
        out["scroll"] = (pages, sorted(seen))
        return out

    edge, local = both(tmp_path, scenario)
    assert edge["updated vector wins"] is True
    assert edge["count after delete"] == 120 - 2 - 24 + sum(1 for i in (0, 1) if i % 5 == 4)
    assert edge == local


def test_collection_write_hands_edge_the_parts_and_stores_what_local_mode_stores(tmp_path: Path) -> None:
    """``Collection.write`` gives Edge each point's parts (``upsert_parts``: a numpy row or a list as
    the dense vector, no ``PointStruct``) and a server or local mode ``PointStruct`` s: the stored
    points are the same, a payload value JSON lacks (a datetime) included."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((7, DIM)).astype(np.float32)
    points = [
        NewPoint(
            point_id("t", "issues", str(i)),
            rows[i] if i % 2 else rows[i].tolist(),  # as a local embedder or a parsed answer holds it
            models.SparseVector(indices=[i, i + 3], values=[1.0, 2.0]),
            {"tenant_id": "t", "external_id": str(i), "at": dt.datetime(2024, 1, i + 1, tzinfo=dt.UTC)},
        )
        for i in range(7)
    ]

    async def scenario(client: AsyncQdrantClient) -> list[tuple[str, list[float], list[int], dict[str, Any]]]:
        try:
            await client.create_collection(
                NAME,
                vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
                sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            await Collection(client, NAME, "t", "issues", local=True).write(points)
            got, _ = await client.scroll(NAME, limit=100, with_payload=True, with_vectors=True)
        finally:
            await client.close()
        out = []
        for r in got:
            vec = cast(dict[str, Any], r.vector)
            out.append((str(r.id), [round(x, 5) for x in vec["dense"]], vec["bm25"].indices, dict(r.payload or {})))
        return sorted(out)

    calls: list[int] = []

    class Counting(EdgeQdrantClient):
        async def upsert(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("Collection.write made PointStructs for Edge")

        async def upsert_parts(self, collection_name: str, parts: Any) -> None:
            calls.append(len(parts))
            await super().upsert_parts(collection_name, parts)

    edge = asyncio.run(scenario(Counting(tmp_path / "edge")))
    local = asyncio.run(scenario(AsyncQdrantClient(location=":memory:")))
    assert calls == [7] and len(edge) == 7
    assert edge == local
    assert edge[0][3]["at"].startswith("2024-01-")  # the datetime, as qdrant-client sends it


def test_collection_metadata_marker_and_schema_survive_a_restart(tmp_path: Path) -> None:
    async def first() -> None:
        client = EdgeQdrantClient(tmp_path)
        collection = Collection(client, NAME, "t", "issues", local=True)  # the embedded flag: Edge still indexes
        assert await collection.ensure(
            model="m", dimensions=DIM, indexes={"updated": "datetime", "priority": "integer"}
        )
        await collection.upsert(
            [
                models.PointStruct(
                    id=point_id("t", "issues", str(i)),
                    vector={DENSE_VECTOR: [1.0] * DIM},
                    payload={"external_id": str(i)},
                )
                for i in range(30)
            ]
        )
        await collection.write_marker({"watermark": "2024-01-01"})
        await client.close()

    async def second() -> tuple[Any, ...]:
        client = EdgeQdrantClient(tmp_path)
        try:
            collection = Collection(client, NAME, "t", "issues")
            info = await client.get_collection(NAME)
            assert not await collection.ensure(model="m", dimensions=DIM)
            return (
                await collection.count(),
                await collection.read_marker(),
                await collection.model(),
                {k: v.data_type for k, v in (info.payload_schema or {}).items()},
                info.config.metadata["entity"] if info.config.metadata else None,
            )
        finally:
            await client.close()

    asyncio.run(first())
    count, marker, model, schema, entity = asyncio.run(second())
    assert count == 30 and marker == {"watermark": "2024-01-01"} and model == ("m", DIM) and entity == "issues"
    assert schema == {
        "tenant_id": models.PayloadSchemaType.KEYWORD,
        "external_id": models.PayloadSchemaType.KEYWORD,
        "source": models.PayloadSchemaType.KEYWORD,
        "access": models.PayloadSchemaType.KEYWORD,
        "updated": models.PayloadSchemaType.DATETIME,
        "priority": models.PayloadSchemaType.INTEGER,
    }


def test_payload_index_is_built_and_used_by_filters(tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, ...]:
        client = EdgeQdrantClient(tmp_path)
        try:
            await _fill(client)
            await client.create_payload_index(NAME, "project", field_schema=models.PayloadSchemaType.KEYWORD)
            await client.create_payload_index(NAME, "priority", field_schema="integer")
            info = await client.get_collection(NAME)
            flt = models.Filter(must=[models.FieldCondition(key="project", match=models.MatchValue(value="XYZ"))])
            hits = await client.query_points(NAME, query=QUERY, using="dense", query_filter=flt, limit=100)
            await client.delete_payload_index(NAME, "priority")
            after = await client.get_collection(NAME)
            return info.payload_schema, len(hits.points), after.payload_schema
        finally:
            await client.close()

    schema, hits, after = asyncio.run(scenario())
    assert schema is not None and schema["project"].data_type == models.PayloadSchemaType.KEYWORD
    assert schema["project"].points == 120  # every point is in the index
    assert schema["priority"].data_type == models.PayloadSchemaType.INTEGER
    assert hits == 40
    assert after is not None and set(after) == {"project"}


def test_aliases_resolve_persist_and_follow_deletion(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        client = EdgeQdrantClient(tmp_path)
        await _fill(client, "issues_v1")
        await _fill(client, "issues_v2")
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="issues_v1", alias_name="live")
                )
            ]
        )
        out["exists via alias"] = await client.collection_exists("live")
        out["count via alias"] = (await client.count("live")).count
        await client.upsert("live", points=_points(3, seed=1)[:1])  # writes go to the target
        # Switch in one call, as a zero-downtime model change does.
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="live")),
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="issues_v2", alias_name="live")
                ),
            ]
        )
        with pytest.raises(ValueError, match="not found"):
            await client.update_collection_aliases(
                change_aliases_operations=[
                    models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="nope", alias_name="x"))
                ]
            )
        await client.close()

        client = EdgeQdrantClient(tmp_path)  # aliases are in the folder, not in memory
        out["after restart"] = [(a.alias_name, a.collection_name) for a in (await client.get_aliases()).aliases]
        out["v2 aliases"] = [a.alias_name for a in (await client.get_collection_aliases("issues_v2")).aliases]
        out["v1 aliases"] = [a.alias_name for a in (await client.get_collection_aliases("issues_v1")).aliases]
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.RenameAliasOperation(
                    rename_alias=models.RenameAlias(old_alias_name="live", new_alias_name="current")
                )
            ]
        )
        out["renamed"] = (await client.get_collection("current")).points_count
        await client.delete_collection("issues_v2")
        out["after delete"] = (await client.get_aliases()).aliases
        out["collections"] = sorted(c.name for c in (await client.get_collections()).collections)
        out["exists deleted"] = await client.collection_exists("current")
        await client.close()
        return out

    out = asyncio.run(scenario())
    assert out["exists via alias"] is True and out["count via alias"] == 120
    assert out["after restart"] == [("live", "issues_v2")]
    assert out["v2 aliases"] == ["live"] and out["v1 aliases"] == []
    assert out["renamed"] == 120
    assert out["after delete"] == [] and out["collections"] == ["issues_v1"] and out["exists deleted"] is False
    assert (tmp_path / STORE_FILE).exists()


def test_sparse_vector_added_to_a_dense_only_collection(tmp_path: Path) -> None:
    """The path to hybrid search for collections built before it: add ``bm25``, fill it, query it."""

    async def scenario(client: AsyncQdrantClient) -> Any:
        await client.create_collection(
            "old", vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        )
        points = _points(20)
        await client.upsert(
            "old",
            points=[
                models.PointStruct(id=p.id, vector={"dense": p.vector["dense"]}, payload=p.payload) for p in points
            ],  # type: ignore[index]
        )
        await client.create_vector_name(
            "old", "bm25", models.SparseVectorNameConfig(sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF))
        )
        await client.update_vectors(
            "old",
            points=[models.PointVectors(id=p.id, vector={"bm25": p.vector["bm25"]}) for p in points],  # type: ignore[index]
        )
        info = await client.get_collection("old")
        assert info.config.params.sparse_vectors is not None and "bm25" in info.config.params.sparse_vectors
        return ranked(await client.query_points("old", query=SPARSE, using="bm25", limit=10))

    async def edge_run() -> Any:
        client = EdgeQdrantClient(tmp_path)
        try:
            return await scenario(client)
        finally:
            await client.close()

    async def local_run() -> Any:
        client = AsyncQdrantClient(location=":memory:")
        try:
            return await scenario(client)
        except NotImplementedError:  # local mode may lack create_vector_name: compare with a fresh build
            await client.delete_collection("old")
            await client.create_collection(
                "old",
                vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
                sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            await client.upsert("old", points=_points(20))
            return ranked(await client.query_points("old", query=SPARSE, using="bm25", limit=10))
        finally:
            await client.close()

    assert_same_ranking(asyncio.run(edge_run()), asyncio.run(local_run()))


def test_unsupported_calls_fail_by_name_and_closed_client_refuses(tmp_path: Path) -> None:
    async def scenario() -> None:
        client = EdgeQdrantClient(tmp_path)
        await _fill(client)
        with pytest.raises(EdgeUnsupportedError, match=r"create_snapshot\(\)"):
            await client.create_snapshot(NAME)
        with pytest.raises(EdgeUnsupportedError, match="shard_key_selector"):
            await client.count(NAME, shard_key_selector="k")
        with pytest.raises(EdgeUnsupportedError, match="Document"):
            await client.query_points(NAME, query=models.Document(text="x", model="m"), using="dense")
        with pytest.raises(ValueError, match="Collection nope not found"):
            await client.count("nope")
        with pytest.raises(ValueError, match="already exists"):
            await _fill(client)
        with pytest.raises(ValueError, match="not allowed"):
            await client.create_collection(
                "../escape", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT)
            )
        await client.close()
        await client.close()  # twice is harmless
        with pytest.raises(RuntimeError, match="closed"):
            await client.count(NAME)

    asyncio.run(scenario())


def test_equal_fused_scores_keep_one_order_the_first_legs(tmp_path: Path) -> None:
    # Each leg's first point gets 1/k in a rank fusion, so points found by one leg only tie with the
    # other leg's: Edge alone returns such ties in an order that changes between processes. The
    # adapter fuses the legs itself and keeps local mode's order: the first leg's ranking first.
    async def scenario(client: AsyncQdrantClient) -> Any:
        far = models.SparseVector(indices=[9], values=[1.0])  # "cache": a term few points carry
        out = []
        for fusion in (models.Fusion.RRF, models.Fusion.DBSF):
            response = await client.query_points(
                NAME,
                prefetch=[
                    models.Prefetch(query=QUERY, using="dense", limit=6, score_threshold=0.6),
                    models.Prefetch(query=far, using="bm25", limit=6),
                ],
                query=models.FusionQuery(fusion=fusion),
                limit=12,
                offset=1,
                with_payload=["external_id"],
            )
            out.append([(str(p.id), round(p.score, 6), (p.payload or {}).get("external_id")) for p in response.points])
        return out

    edge, local = both(tmp_path, scenario)
    rrf_scores = [score for _, score, _ in edge[0]]
    assert len(rrf_scores) > len(set(rrf_scores)), "the scenario must have ties"
    for fused_edge, fused_local in zip(edge, local, strict=True):
        assert fused_edge == fused_local  # ids, scores and payloads, in the same order


def test_a_writer_indexes_as_it_goes_and_keeps_its_segments_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every INDEX_EVERY_BYTES of dense vectors written, the writer builds the index of what it wrote
    (not only at close), and the optimizer does not merge those segments back into one."""
    dim, step = 1024, 2_700  # 2,700 points of 1,024 dimensions: 11 MB, above Edge's 10 MB indexing threshold
    monkeypatch.setattr(edge_client, "INDEX_EVERY_BYTES", step * dim * 4)
    monkeypatch.setattr(edge_client, "MAX_SEGMENT_KB", step * dim * 4 // 1024)
    rng = random.Random(3)
    vectors = [[rng.gauss(0, 1) for _ in range(dim)] for _ in range(2 * step)]

    async def go() -> tuple[models.CollectionInfo, list[Any], int]:
        client = EdgeQdrantClient(tmp_path / "store")
        try:
            await client.create_collection(
                NAME, vectors_config={DENSE_VECTOR: models.VectorParams(size=dim, distance=models.Distance.COSINE)}
            )
            for start in range(0, len(vectors), 900):
                points = [
                    models.PointStruct(id=i + 1, vector={DENSE_VECTOR: vectors[i]}, payload={"i": i})
                    for i in range(start, start + 900)
                ]
                await client.upsert(NAME, points=points)
            info = await client.get_collection(NAME)  # before close: built as it wrote
            hits = await client.query_points(NAME, query=vectors[4_321], using=DENSE_VECTOR, limit=1, with_payload=True)
            return info, hits.points, (await client.count(NAME)).count
        finally:
            await client.close()

    with caplog.at_level("INFO", logger="etl_assets.core.edge_client"):
        info, hits, count = asyncio.run(go())
    assert count == info.indexed_vectors_count == 2 * step  # built when 2,700 and 5,400 points were written
    assert info.segments_count == 3  # two built segments, not merged into one, and the one new points go to
    assert hits[0].payload == {"i": 4_321}
    assert sum("embedded Qdrant: indexed client_t_issues" in r.message for r in caplog.records) == 2
