"""Access lists in Qdrant: the matrix searched inside the store, and changes as payload-only writes.

Qdrant is qdrant-client's embedded engine (local mode, a folder per test): the filter is the
one search will use (:func:`access_filter`), evaluated by the store, never after fetching.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient

from etl_assets.core.access_sync import ACCESS_FIELD, access_filter, apply_access_updates, with_access
from etl_assets.core.edge_client import EdgeQdrantClient, models
from etl_assets.core.permissions import compute_access, issue_facts_from_json
from etl_assets.core.sources.jira import permission_tables as pt
from etl_assets.core.sources.jira.sample.permissions import PermissionFixture, generate_permission_fixture
from etl_assets.core.store.db import make_engine
from etl_assets.core.vectorstore import point_id
from etl_assets_tests.test_permissions import ANONYMOUS, fetch, oracle_can_see, oracle_principals, points

COLLECTIONS = {"issue": "client_acme_issues", "comment": "client_acme_comments"}
DIM = 8


def _vector(n: int) -> list[float]:
    return [1.0 + ((n * 7 + i) % 5) / 10 for i in range(DIM)]


async def _load(client: AsyncQdrantClient, fx: PermissionFixture, access: dict[str, tuple[str, ...]]) -> None:
    for name in COLLECTIONS.values():
        await client.create_collection(
            name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
    for n, (key, _, _) in enumerate(points(fx)):
        kind, _, external_id = key.partition(":")
        entity = COLLECTIONS[kind].rsplit("_", 1)[1]
        chunks = _chunks(fx)[key]  # some points have several chunks: every chunk carries the list
        await client.upsert(
            COLLECTIONS[kind],
            points=[
                models.PointStruct(
                    id=point_id("acme", entity, external_id, c),
                    vector=_vector(n + c),
                    payload={
                        "tenant_id": "acme",
                        "external_id": external_id,
                        "chunk": c,
                        ACCESS_FIELD: list(access[key]),
                    },
                )
                for c in range(chunks)
            ],
        )


async def _visible(client: AsyncQdrantClient, principals: set[str]) -> set[str]:
    seen = set()
    for kind, name in COLLECTIONS.items():
        tenant = models.Filter(must=[models.FieldCondition(key="tenant_id", match=models.MatchValue(value="acme"))])
        result = await client.query_points(
            name, query=_vector(0), query_filter=with_access(tenant, principals), limit=10_000, with_payload=True
        )
        seen |= {f"{kind}:{p.payload['external_id']}" for p in result.points if p.payload}
    return seen


def _expected(fx: PermissionFixture, user: str | None) -> set[str]:
    return {k for k, i, c in points(fx) if oracle_can_see(fx, user, i, c)}


async def _vectors(client: AsyncQdrantClient) -> dict[Any, Any]:
    out = {}
    for name in COLLECTIONS.values():
        records, _ = await client.scroll(name, limit=10_000, with_vectors=True)
        out.update({(name, r.id): r.vector for r in records})
    return out


def _sync_tables(engine: Any, fx: PermissionFixture) -> dict[tuple[str, ...], list[str]]:
    fetched = fetch(fx)
    with engine.begin() as conn:
        pt.save_snapshot(conn, "acme", fetched)
        snap = pt.load_snapshot(conn, "acme")
        return pt.save_access(conn, "acme", compute_access(snap, [issue_facts_from_json(i) for i in fx.issues]))


def _chunks(fx: PermissionFixture) -> dict[str, int]:
    return {key: 2 if n % 4 == 0 else 1 for n, (key, _, _) in enumerate(points(fx))}


@pytest.mark.parametrize(("by", "store"), [("filter", "local"), ("ids", "local"), ("filter", "edge"), ("ids", "edge")])
def test_search_as_each_user_returns_exactly_what_jira_allows_and_changes_are_payload_only(
    tmp_path: Path, by: str, store: str
) -> None:
    fx = generate_permission_fixture()
    engine = make_engine(f"sqlite:///{tmp_path / 'perm.db'}")
    pending = _sync_tables(engine, fx)
    with engine.begin() as conn:
        access = pt.committed_access(conn, "acme")
        pt.mark_applied(conn, "acme", access)  # loaded with their lists below, as the vector sync would

    async def run() -> None:
        # qdrant-client's local mode, or the embedded Qdrant Edge engine (QDRANT_ENGINE=edge)
        client: Any = (
            AsyncQdrantClient(path=str(tmp_path / "qdrant")) if store == "local" else EdgeQdrantClient(tmp_path)
        )
        try:
            await _load(client, fx, access)
            users = [*sorted(fx.users), ANONYMOUS]
            for user in users:
                assert await _visible(client, oracle_principals(fx, user)) == _expected(fx, user), user
            before = await _vectors(client)

            # a change: an issue moves to a more restricted level, and carol leaves engineering
            target = next(i for i in fx.issues if (i["fields"]["security"] or {}).get("id") == "3000")
            fx.set_security(target["key"], "3001")
            fx.remove_from_group("acc-carol", "gid-eng")
            moved = {k for k, i, _ in points(fx) if i["key"] == target["key"]}
            pending = _sync_tables(engine, fx)
            written = {k for keys in pending.values() for k in keys}
            assert moved & written and written < set(access)
            # not before the payload writes: the tables committed, the index still has the old lists
            stale = [u for u in users if await _visible(client, oracle_principals(fx, u)) != _expected(fx, u)]
            assert stale
            chunks = _chunks(fx)

            def ids(kind: str, external_id: str) -> list[str]:
                entity = COLLECTIONS[kind].rsplit("_", 1)[1]
                return [point_id("acme", entity, external_id, c) for c in range(chunks[f"{kind}:{external_id}"])]

            stats = await apply_access_updates(client, COLLECTIONS, pending, point_ids=ids if by == "ids" else None)
            with engine.begin() as conn:
                pt.mark_applied(conn, "acme", stats.applied)
                assert pt.pending_access(conn, "acme") == {}
            assert stats.points == len(written)
            assert stats.payload_writes == sum(len({k.split(":")[0] for k in keys}) for keys in pending.values())
            assert stats.requests <= 2  # one batch request per collection
            for user in users:
                assert await _visible(client, oracle_principals(fx, user)) == _expected(fx, user), user
            assert await _vectors(client) == before  # payload-only: not one vector rewritten
        finally:
            await client.close()

    assert pending  # the first sync had every list to write
    asyncio.run(run())
    engine.dispose()


def test_points_without_access_match_no_principal(tmp_path: Path) -> None:
    async def run() -> None:
        client = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
        try:
            await client.create_collection(
                "c", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
            )
            await client.upsert("c", points=[models.PointStruct(id=1, vector=_vector(1), payload={"external_id": "1"})])
            hits = await client.query_points("c", query=_vector(1), query_filter=access_filter({"public"}), limit=5)
            assert hits.points == []
            unfiltered = await client.query_points("c", query=_vector(1), limit=5)
            assert len(unfiltered.points) == 1
        finally:
            await client.close()

    asyncio.run(run())


def test_permission_sync_steps_commit_then_write_and_a_no_change_sync_writes_nothing(tmp_path: Path) -> None:
    import httpx

    from etl_assets.core.permissions import RESTRICTED
    from etl_assets.core.sources.jira.client import JiraClient
    from etl_assets.core.sources.jira.permission_sync import apply_pending_access, sync_permission_tables
    from etl_assets.core.sources.jira.sample.permissions import permission_transport

    fx = generate_permission_fixture(issues_per_project=4)
    engine = make_engine(f"sqlite:///{tmp_path / 'perm.db'}")
    projects = [{"id": p["id"], "key": p["key"], "lead": {"accountId": p["lead"]}} for p in fx.projects]

    def sync() -> Any:
        with httpx.Client(transport=permission_transport(fx), base_url="https://sample.atlassian.net") as http:
            client = JiraClient(http=http, tenant_id="acme", site="https://sample.atlassian.net")
            return sync_permission_tables(
                engine, client, "acme", projects, [issue_facts_from_json(i) for i in fx.issues]
            )

    async def run() -> None:
        client = AsyncQdrantClient(location=":memory:")
        try:
            first = sync()
            assert first.changed == first.points and first.fail_safe_points == 0 and first.fail_safe_projects == {}
            with engine.connect() as conn:
                access = pt.committed_access(conn, "acme")
            await _load(client, fx, {k: ("stale",) for k in access})  # points from before any permission sync
            stats = await apply_pending_access(engine, client, "acme", COLLECTIONS)
            assert stats.points == first.points and stats.requests == 2
            for user in [*sorted(fx.users), ANONYMOUS]:
                assert await _visible(client, oracle_principals(fx, user)) == _expected(fx, user)
            again = sync()
            assert again.changed == 0 and again.pending == {}
            nothing = await apply_pending_access(engine, client, "acme", COLLECTIONS)
            assert (nothing.requests, nothing.payload_writes, nothing.points) == (0, 0, 0)
            # the API user loses admin: every point fails safe, one reason per project, nobody sees anything
            fx.api_user_is_admin = False
            refused = sync()
            assert refused.fail_safe_points == refused.points
            assert set(refused.fail_safe_projects) == {p["key"] for p in fx.projects}
            await apply_pending_access(engine, client, "acme", COLLECTIONS)
            for user in [*sorted(fx.users), ANONYMOUS]:
                assert await _visible(client, oracle_principals(fx, user)) == set()
            assert await _visible(client, {RESTRICTED}) == set(access)  # what --unrestricted would see
        finally:
            await client.close()

    asyncio.run(run())
    engine.dispose()
