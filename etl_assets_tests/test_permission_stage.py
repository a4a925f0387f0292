"""Permission-aware search through the whole graph: nobody finds what they could not open in Jira.

The sample site's access rules (``site_permission_fixture``) are synced by the permission stage
(``tables/permissions_table`` → ``vectors/access_payloads``); every search below runs as a Jira
user and goes through Qdrant's own filter. What each user should see is computed from the
fixture's rules by ``permission_oracle`` (independent of the code under test).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, update

from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.embeddings.factory import open_embedder
from etl_assets.core.permissions import RESTRICTED
from etl_assets.core.search import NO_THRESHOLDS, Principal, SearchMode, SearchService, resolve_access, search
from etl_assets.core.settings import EmbeddingSettings
from etl_assets.core.sources.jira.permission_tables import perm_access
from etl_assets.core.store import schema
from etl_assets.core.store.db import make_engine
from etl_assets.defs import names
from etl_assets_tests.github_env import github_for
from etl_assets_tests.github_env import run as run_github
from etl_assets_tests.permission_oracle import ANONYMOUS, oracle_can_see, points
from etl_assets_tests.test_graph import all_points

PERMISSIONS = "key:tables/permissions_table or key:vectors/access_payloads"
KIND_OF = {"issues": "issue", "comments": "comment"}


def _settings(env: Any) -> EmbeddingSettings:
    return EmbeddingSettings(provider="openai", api_key="sk-test-perm", base_url=env.embeddings.url, dimensions=64)


def _fixture(env: Any, tenant: str = "1") -> Any:
    fx = env.tenants[tenant].site.permissions
    assert fx is not None, "the test sites carry access rules"
    return fx


async def everything(client: Any, embedder: Any, tenant: str, entity: str, access: frozenset[str] | None) -> list[Any]:
    """A query that matches every point ``access`` may see: no thresholds, k beyond the collection."""
    return await search(
        client,
        embedder,
        "anything at all",
        tenant_id=tenant,
        access=access,
        entity=entity,
        k=10_000,
        mode=SearchMode.DENSE,
        thresholds=NO_THRESHOLDS,
    )


def searched(env: Any, users: list[str | None], tenant: str = "1") -> dict[str | None, set[str]]:
    """Every point key each user's search returns: queries that match everything (no thresholds,
    k as large as the collection), issues and comments, through ``search`` and Qdrant's filter."""

    async def go() -> dict[str | None, set[str]]:
        engine = make_engine(env.database_url, create=False)
        client = EdgeQdrantClient(env.qdrant_path)  # the folder the graph wrote (QDRANT_ENGINE's default)
        out: dict[str | None, set[str]] = {}
        try:
            async with open_embedder(_settings(env)) as embedder:
                for user in users:
                    email = None if user is None else _fixture(env, tenant).users[user]["emailAddress"]
                    access = resolve_access(engine, tenant, email)
                    found: set[str] = set()
                    for entity, kind in KIND_OF.items():
                        hits = await everything(client, embedder, tenant, entity, access)
                        found |= {f"{kind}:{h.external_id}" for h in hits}
                    out[user] = found
        finally:
            await client.close()
            engine.dispose()
        return out

    return asyncio.run(go())


def expected(fx: Any, users: list[str | None]) -> dict[str | None, set[str]]:
    return {u: {key for key, issue, comment in points(fx) if oracle_can_see(fx, u, issue, comment)} for u in users}


def diff(got: dict[str | None, set[str]], want: dict[str | None, set[str]]) -> list[str]:
    out = []
    for user in want:
        out += [f"LEAK {user} {k}" for k in sorted(got[user] - want[user])]
        out += [f"MISS {user} {k}" for k in sorted(want[user] - got[user])]
    return out


def everyone(fx: Any) -> list[str | None]:
    return [*sorted(fx.users), ANONYMOUS]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_user_finds_exactly_what_jira_lets_them_open(env):
    result = env.materialize("1")
    assert result.success
    fx = _fixture(env)
    users = everyone(fx)
    # The matrix covers the cases the rules distinguish: someone in two groups, someone in none,
    # the admin, anonymous; and restricted issues and comments exist.
    members = {u: {g for g, grp in fx.groups.items() if u in grp["members"]} for u in fx.users}
    assert len(users) >= 8 and any(len(g) >= 2 for g in members.values()) and any(not g for g in members.values())
    assert any(i["fields"].get("security") for i in fx.issues)
    assert any(c.get("visibility") for _, _, c in points(fx) if c)

    want = expected(fx, users)
    got = searched(env, users)
    assert diff(got, want) == []
    # Not vacuous: users see different things, and nobody but operators sees everything.
    assert len({frozenset(v) for v in want.values()}) >= 4
    every_point = {key for key, _, _ in points(fx)}
    assert all(want[u] < every_point for u in users if u is not None) or any(want[u] == every_point for u in users)
    assert want[ANONYMOUS] < max((want[u] for u in users if u), key=len)

    meta = result.asset_materializations_for_node(names.op_name(names.PERMISSIONS_TABLE))[0].metadata
    assert meta["points"].value == len(every_point) and meta["fail_safe_points"].value == 0
    # The responses the rules came from are landed as Jira sent them, in the rules' transaction.
    engine = make_engine(env.database_url, create=False)
    try:
        with engine.connect() as conn:
            landed = conn.execute(
                select(schema.raw_jira_pages.c.path, schema.raw_batches.c.consumed_at)
                .join(schema.raw_batches, schema.raw_batches.c.id == schema.raw_jira_pages.c.batch_id)
                .where(schema.raw_jira_pages.c.batch_id == meta["raw_batch_id"].value)
            ).all()
    finally:
        engine.dispose()
    assert len(landed) == meta["raw_pages"].value > 0 and all(consumed for _, consumed in landed)
    assert any("/permissionscheme" in path for path, _ in landed)
    # Every Jira point carries its list (written with the point or by the payload step); an empty
    # list (a comment restricted to a group nobody who sees the issue is in) matches nobody.
    stored = all_points(env)
    for entity in KIND_OF:
        assert all(isinstance(p.payload.get("access"), list) for p in stored[f"client_1_{entity}"]), entity


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_access_changes_take_effect_with_the_permission_sync_and_never_re_embed(env):
    assert env.materialize("1").success
    fx = _fixture(env)
    site = env.tenants["1"].site
    users = everyone(fx)
    # 1. a user leaves a group; 2. an open issue moves to a restricted level; 3. a project's scheme
    #    changes to the locked one (admins only).
    gid, group = next((g, grp) for g, grp in sorted(fx.groups.items()) if len(grp["members"]) >= 2)
    leaver = sorted(group["members"])[0]
    fx.remove_from_group(leaver, gid)
    # An issue of a project with a security scheme moves to another of its levels (or gets one).
    leveled, issue = next(
        (p, i)
        for p in fx.projects
        if p.get("security_scheme")
        for i in fx.issues
        if i["fields"]["project"]["id"] == p["id"]
    )
    current = (issue["fields"].get("security") or {}).get("id")
    level = next(lv for lv in sorted(fx.security_schemes[leveled["security_scheme"]]["levels"]) if lv != current)
    fx.set_security(issue["key"], level)
    site.touch_issue(issue["key"])  # Jira bumps ``updated`` on the edit: the incremental sync sees it
    locked_project = next(p for p in fx.projects if p["scheme"] != "1004" and p["id"] != leveled["id"])
    fx.set_project_scheme(locked_project["key"], "1004")
    after = expected(fx, users)

    # Before the permission sync commits, searches still answer by the committed (old) lists.
    assert env.materialize("1", selection="key:jira/raw/raw_jira_issues or key:tables/issues_table").success
    stale = searched(env, users)
    assert diff(stale, after), "the change must not show before the permission sync"

    env.embeddings.reset_counters()  # (the searches above embedded their queries)
    result = env.materialize("1", selection=PERMISSIONS)
    assert result.success
    assert env.embeddings.requests == 0 and env.embeddings.inputs == 0, "access changes never re-embed"
    assert diff(searched(env, users), after) == []
    meta = result.asset_materializations_for_node(names.op_name(names.ACCESS_PAYLOADS))[0].metadata
    assert meta["points_updated"].value > 0 and meta["embedding_requests"].value == 0

    # A second permission sync with nothing changed writes nothing to Qdrant.
    again = env.materialize("1", selection=PERMISSIONS)
    table = again.asset_materializations_for_node(names.op_name(names.PERMISSIONS_TABLE))[0].metadata
    payloads = again.asset_materializations_for_node(names.op_name(names.ACCESS_PAYLOADS))[0].metadata
    assert table["access_lists_changed"].value == 0
    assert payloads["payload_writes"].value == 0 and payloads["qdrant_requests"].value == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_api_user_without_admin_rights_fails_safe_for_everyone_but_operators(env):
    fx = _fixture(env)
    fx.api_user_is_admin = False
    result = env.materialize("1")
    assert result.success
    meta = result.asset_materializations_for_node(names.op_name(names.PERMISSIONS_TABLE))[0].metadata
    reasons = meta["fail_safe_projects"].value
    assert all(p["key"] in reasons for p in fx.projects), reasons
    assert "Administer" in reasons or "403" in reasons
    stored = all_points(env)
    for entity in KIND_OF:
        assert all(p.payload.get("access") == [RESTRICTED] for p in stored[f"client_1_{entity}"])
    got = searched(env, everyone(fx))
    assert all(found == set() for found in got.values()), "nothing unknown is ever public"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_service_answers_get_issue_and_search_as_the_principal(env):
    assert env.materialize("1").success
    fx = _fixture(env)
    users = everyone(fx)
    want = expected(fx, users)
    # A restricted issue, someone who may open it and someone who may not.
    issue = next(i for i in fx.issues if i["fields"].get("security"))
    key = f"issue:{issue['id']}"
    allowed = next(u for u in users if u and key in want[u])
    refused = next(u for u in users if u and key not in want[u])

    async def go() -> dict[str, Any]:
        engine = make_engine(env.database_url, create=False)
        client = EdgeQdrantClient(env.qdrant_path)  # the folder the graph wrote (QDRANT_ENGINE's default)
        try:
            async with open_embedder(_settings(env)) as embedder:
                service = SearchService(client, embedder, engine, env.registry)

                def who(user: str) -> Principal:
                    return Principal(user, frozenset({"1"}), jira_user=fx.users[user]["emailAddress"])

                out: dict[str, Any] = {"detail": await service.get_issue(who(allowed), issue["key"])}
                try:
                    await service.get_issue(who(refused), issue["key"])
                except Exception as exc:  # noqa: BLE001 - the type and message are asserted below
                    out["refused"] = exc
                out["by_key_allowed"] = await service.search_issues(who(allowed), issue["key"])
                out["by_key_refused"] = await service.search_issues(who(refused), issue["key"])
                out["operator"] = await service.get_issue(
                    Principal("ops", frozenset({"1"}), unrestricted=True), issue["key"]
                )
                return out
        finally:
            await client.close()
            engine.dispose()

    out = asyncio.run(go())
    assert out["detail"].key == issue["key"]
    assert type(out["refused"]).__name__ == "NotFoundError" and "not found" in str(out["refused"])
    assert out["by_key_allowed"].hits and out["by_key_allowed"].hits[0].key == issue["key"]
    assert all(h.key != issue["key"] for h in out["by_key_refused"].hits)
    # The refused user is told the same as for a key that does not exist.
    assert f"no issue {issue['key']} in tenant 1" in (out["by_key_refused"].notice or "")
    # Comments the allowed user may not see are counted, never shown; the operator sees them all.
    comments = issue["fields"]["comment"]["comments"]
    mine = [c for c in comments if f"comment:{c['id']}" in want[allowed]]
    assert len(out["detail"].comments) == len(mine)
    assert out["detail"].comments_restricted == len(comments) - len(mine)
    assert len(out["operator"].comments) == len(comments) and out["operator"].comments_restricted == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_github_rows_follow_their_repositorys_visibility_as_payload_only_changes(env, monkeypatch):
    """A public repository's rows are public; a private one's are for operators only; a change of
    visibility rewrites the points' lists on the next sync without embedding them again."""
    with github_for(env, monkeypatch, n_repos=2, n_items=6, n_comments=4) as server:
        github = env.tenants["1"].github
        repo = next(iter(github.repos.values()))
        repo.private = True  # private, still visible to the token
        repo.updated = github.tick()
        assert run_github(env, server).success

        def lists() -> dict[str, set[tuple[str, ...]]]:
            out: dict[str, set[tuple[str, ...]]] = {"private": set(), "public": set()}
            for name, pts in all_points(env).items():
                if not name.startswith("client_1_github_"):
                    continue
                for p in pts:
                    mine = p.payload.get("repo", p.payload.get("key")) == repo.full_name
                    out["private" if mine else "public"].add(tuple(p.payload["access"]))
            return out

        assert lists() == {"private": {(RESTRICTED,)}, "public": {("public",)}}
        operator = searched_github(env, None)
        anyone = searched_github(env, frozenset({"public"}))
        assert anyone and anyone < operator and all(not k.startswith(repo.full_name) for k in anyone)

        repo.private = False  # made public
        repo.updated = github.tick()
        env.embeddings.reset_counters()
        result = run_github(env, server)
        assert result.success
        assert lists() == {"private": {("public",)}, "public": {("public",)}}
        issues = result.asset_materializations_for_node("vectors__github_issues_vectors")[0].metadata
        assert issues["access_rewritten"].value > 0 and issues["chunks_embedded"].value == 0
        # Only the repository's own row (its text names its visibility) was embedded again.
        assert env.embeddings.inputs == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_list_committed_without_its_payload_write_is_repaired_by_the_next_vector_sync(env):
    """Convergence: if a committed list never reached a point (a payload step that did not run),
    the vector step finds the difference and rewrites the payload, never the vectors."""
    assert env.materialize("1").success
    fx = _fixture(env)
    issue = fx.issues[0]
    key = f"issue:{issue['id']}"
    engine = make_engine(env.database_url, create=False)
    try:
        with engine.begin() as conn:  # a new list committed and marked applied, but never written
            conn.execute(
                update(perm_access)
                .where(perm_access.c.tenant_id == "1", perm_access.c.point_key == key)
                .values(access=["user:somebody-new"], pending=False)
            )
    finally:
        engine.dispose()
    env.embeddings.reset_counters()
    result = env.materialize("1", selection="key:vectors/issues_vectors")
    assert result.success
    meta = result.asset_materializations_for_node("vectors__issues_vectors")[0].metadata
    assert meta["access_rewritten"].value >= 1 and meta["chunks_embedded"].value == 0
    assert env.embeddings.inputs == 0
    points = [p for p in all_points(env)["client_1_issues"] if p.payload["external_id"] == issue["id"]]
    assert points and all(p.payload["access"] == ["user:somebody-new"] for p in points)


def searched_github(env: Any, access: frozenset[str] | None) -> set[str]:
    """Keys of the tenant-1 GitHub issues a search with no thresholds returns to ``access``."""

    async def go() -> set[str]:
        client = EdgeQdrantClient(env.qdrant_path)  # the folder the graph wrote (QDRANT_ENGINE's default)
        try:
            async with open_embedder(_settings(env)) as embedder:
                return {h.key for h in await everything(client, embedder, "1", "github_issues", access)}
        finally:
            await client.close()

    return asyncio.run(go())
