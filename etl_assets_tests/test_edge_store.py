"""The embedded store behind ``open_qdrant`` with QDRANT_ENGINE=edge: one process per folder, local-mode folders migrated."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.catalogue import BY_NAME
from etl_assets.core.edge_client import BACKUP_SUFFIX, STORE_FILE, EdgeQdrantClient
from etl_assets.core.sparse import DENSE_VECTOR
from etl_assets.core.vectorstore import (
    BASE_PAYLOAD_INDEXES,
    Collection,
    QdrantLockTimeout,
    collection_name,
    open_qdrant,
    point_id,
)

DIM = 16


def _issue_points(n: int) -> list[models.PointStruct]:
    return [
        models.PointStruct(
            id=point_id("1", "issues", str(i), chunk),
            vector={DENSE_VECTOR: [math.sin(i + k + chunk) for k in range(DIM)]},
            payload={
                "tenant_id": "1",
                "external_id": str(i),
                "chunk": chunk,
                "chunks": 2,
                "content_hash": f"h{i}",
                "key": f"ABC-{i}",
                "updated": f"2024-03-{i % 28 + 1:02d}T10:00:00Z",
            },
        )
        for i in range(n)
        for chunk in (0, 1)
    ]


async def _build_local_mode_folder(path: Path) -> dict[str, Any]:
    """A folder as the code before Edge wrote it: qdrant-client local mode, marker, an alias, a sparse vector."""
    client = AsyncQdrantClient(path=str(path))
    try:
        issues = Collection(client, collection_name("1", "issues"), "1", "issues", local=True)
        await issues.ensure(model="hash-16", dimensions=DIM, indexes=BY_NAME["issues"].payload_indexes)
        await issues.upsert(_issue_points(150))
        await issues.write_marker({"watermark": "2024-03-28T10:00:00Z", "rows": 150})
        await client.create_collection(
            "hybrid",
            vectors_config={"dense": models.VectorParams(size=4, distance=models.Distance.DOT)},
            sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        await client.upsert(
            "hybrid",
            points=[
                models.PointStruct(
                    id=i,
                    vector={
                        "dense": [float(i), 1.0, 0.0, 2.0],
                        "bm25": models.SparseVector(indices=[i % 7, 100 + i], values=[1.0, 0.5]),
                    },
                    payload={"n": i},
                )
                for i in range(1, 40)
            ],
        )
        await client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name="hybrid", alias_name="hybrid_live")
                )
            ]
        )
        return await _snapshot(client)
    finally:
        await client.close()


async def _snapshot(client: AsyncQdrantClient) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for description in (await client.get_collections()).collections:
        info = await client.get_collection(description.name)
        records, _ = await client.scroll(description.name, limit=10_000, with_payload=True, with_vectors=True)
        out[description.name] = {
            "metadata": info.config.metadata,
            "vectors": info.config.params.vectors,
            "sparse": sorted((info.config.params.sparse_vectors or {}).items()),
            "points": {str(r.id): (r.payload, r.vector) for r in records},
        }
    out["aliases"] = sorted((a.alias_name, a.collection_name) for a in (await client.get_aliases()).aliases)
    return out


def _same_vectors(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_vectors(a[k], b[k]) for k in a)
    if isinstance(a, models.SparseVector):
        return a.indices == b.indices and all(
            math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a.values, b.values, strict=True)
        )
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a, b, strict=True))


def test_local_mode_folder_is_migrated_once_with_everything_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "qdrant"
    before = asyncio.run(_build_local_mode_folder(folder))
    assert (folder / "meta.json").exists() and (folder / "collection" / "client_1_issues" / "storage.sqlite").exists()

    async def open_twice() -> tuple[dict[str, Any], dict[str, Any], Any, bool]:
        async with open_qdrant(None, None, str(folder), engine="edge") as client:
            assert isinstance(client, EdgeQdrantClient)
            after = await _snapshot(client)
            schema = (await client.get_collection("client_1_issues")).payload_schema or {}
            hits = await client.query_points(
                "hybrid_live", query=models.SparseVector(indices=[3], values=[1.0]), using="bm25", limit=3
            )
            found = bool(hits.points)
        async with open_qdrant(None, None, str(folder), engine="edge") as client:
            again = await _snapshot(client)
        return after, again, schema, found

    with caplog.at_level(logging.INFO, logger="etl_assets.core.vectorstore"):
        after, again, schema, found = asyncio.run(open_twice())

    messages = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert len(messages) == 1, messages  # once, on first use
    assert "\n" not in messages[0] and "2 collections, 339 points" in messages[0] and BACKUP_SUFFIX in messages[0]
    for state in (after, again):
        assert state.keys() == before.keys() and state["aliases"] == before["aliases"] == [("hybrid_live", "hybrid")]
        for name in ("client_1_issues", "hybrid"):
            old, new = before[name], state[name]
            assert (
                new["metadata"] == old["metadata"]
                and new["vectors"] == old["vectors"]
                and new["sparse"] == old["sparse"]
            )
            assert new["points"].keys() == old["points"].keys() and len(new["points"]) > 0
            for pid, (payload, vector) in old["points"].items():
                assert new["points"][pid][0] == payload
                assert _same_vectors(vector, new["points"][pid][1]), pid
    assert before["client_1_issues"]["metadata"]["etl_vector_sync"]["rows"] == 150
    # local mode kept no payload index; the migrated collection has those ``ensure`` would have made
    wanted = {**BASE_PAYLOAD_INDEXES, **BY_NAME["issues"].payload_indexes}
    assert {k: v.data_type.value for k, v in schema.items()} == wanted
    assert found
    backup = tmp_path / f"qdrant{BACKUP_SUFFIX}"
    assert (backup / "collection" / "client_1_issues" / "storage.sqlite").exists() and (backup / "meta.json").exists()
    assert (folder / STORE_FILE).exists() and not (folder / "meta.json").exists()
    assert not (tmp_path / "qdrant.edge-migrating").exists()


def test_an_interrupted_migration_leaves_the_local_folder_and_retries(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    before = asyncio.run(_build_local_mode_folder(folder))
    staging = tmp_path / "qdrant.edge-migrating"
    staging.mkdir()
    (staging / STORE_FILE).write_text("half-written")  # what a crash mid-migration leaves

    async def open_once() -> dict[str, Any]:
        async with open_qdrant(None, None, str(folder), engine="edge") as client:
            return await _snapshot(client)

    after = asyncio.run(open_once())
    assert {n: len(s["points"]) for n, s in after.items() if n != "aliases"} == {
        n: len(s["points"]) for n, s in before.items() if n != "aliases"
    }


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from qdrant_client import models
    from etl_assets.core.vectorstore import open_qdrant

    async def main():
        async with open_qdrant(None, None, sys.argv[1], engine="edge") as client:
            await client.create_collection("c", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
            await client.upsert("c", points=[models.PointStruct(id=i, vector=[1.0, float(i)]) for i in range(1, 11)])
            print("ready", flush=True)
            sys.stdin.readline()

    asyncio.run(main())
    """
)


def test_one_process_owns_the_folder_and_the_next_sees_its_writes(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"

        async def try_open() -> None:
            async with open_qdrant(None, None, str(folder), lock_timeout_s=0.5, engine="edge"):
                pass

        with pytest.raises(QdrantLockTimeout, match="stayed locked by another process"):
            asyncio.run(try_open())
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()

    async def read() -> int:
        async with open_qdrant(None, None, str(folder), lock_timeout_s=5, engine="edge") as client:
            return (await client.count("c")).count

    assert asyncio.run(read()) == 10


def test_edge_is_the_default_engine_and_local_mode_stays_selectable(tmp_path: Path) -> None:
    from etl_assets.core.settings import Settings
    from etl_assets.core.vectorstore import QdrantConfigError
    from etl_assets.defs.resources import QdrantResource

    folder = str(tmp_path / "qdrant")
    assert Settings.load({"QDRANT_PATH": folder}).qdrant.engine == "edge"
    assert QdrantResource(path=folder).engine == "edge"
    local = Settings.load({"QDRANT_PATH": str(tmp_path / "old"), "QDRANT_ENGINE": "local"}).qdrant
    assert local.engine == "local"

    async def kinds() -> tuple[type, type]:
        async with open_qdrant(None, None, folder) as default:
            await default.create_collection("c", vectors_config=models.VectorParams(size=4, distance="Cosine"))
            default_kind = type(default)
        async with open_qdrant(None, None, local.path, engine=local.engine) as chosen:
            await chosen.create_collection("c", vectors_config=models.VectorParams(size=4, distance="Cosine"))
            chosen_kind = type(chosen)
        return default_kind, chosen_kind

    default_kind, chosen_kind = asyncio.run(kinds())
    assert default_kind is EdgeQdrantClient
    assert chosen_kind is AsyncQdrantClient and (tmp_path / "old" / "meta.json").is_file()

    async def open_edge_folder_as_local() -> None:
        async with open_qdrant(None, None, folder, engine="local"):
            pass

    with pytest.raises(QdrantConfigError, match="QDRANT_ENGINE=edge"):
        asyncio.run(open_edge_folder_as_local())


def test_closing_the_writer_of_a_small_collection_builds_no_index(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Edge indexes what a client wrote when it closes; below Edge's indexing threshold a collection
    # stays plain (searched exactly), so the small collections of tests and small tenants pay nothing.
    async def write() -> tuple[int, int]:
        async with open_qdrant(None, None, str(tmp_path / "qdrant")) as client:
            issues = Collection(client, collection_name("1", "issues"), "1", "issues")
            await issues.ensure(model="hash-16", dimensions=DIM, indexes=BY_NAME["issues"].payload_indexes)
            await issues.upsert(_issue_points(500))
            info = await client.get_collection(issues.name)
            return info.points_count or 0, info.segments_count

    with caplog.at_level(logging.INFO, logger="etl_assets.core.edge_client"):
        points, segments = asyncio.run(write())
    assert points == 1000 and segments == 1
    assert not [r for r in caplog.records if "indexed" in r.getMessage()], "a 1,000-point collection was indexed"

    async def reopen() -> int:
        async with open_qdrant(None, None, str(tmp_path / "qdrant")) as client:
            return (await client.count(collection_name("1", "issues"))).count

    assert asyncio.run(reopen()) == 1000
