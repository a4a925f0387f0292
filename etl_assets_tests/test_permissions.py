"""Permission-aware access lists: the matrix (every user × every issue and comment), changes, refusals.

The access lists come from the code under test: the Jira client fetching the sample site's
permission endpoints (:mod:`etl_assets.core.sources.jira.permissions`) and the pure computation
(:mod:`etl_assets.core.permissions`). The expected answer is computed separately and user by
user, straight from the fixture's rules (:mod:`etl_assets_tests.permission_oracle`): does this
user hold any BROWSE_PROJECTS grant of the project, any member entry of the issue's level, the
comment's role or group — the way Jira's documentation states the rules, without principals or lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from etl_assets.core.permissions import (
    PUBLIC,
    RESTRICTED,
    PermissionSnapshot,
    access_updates,
    compute_access,
    fail_safe_reasons,
    issue_facts_from_json,
    meet,
    principals_of,
)
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.permissions import PermissionFetch, fetch_permissions
from etl_assets.core.sources.jira.sample.permissions import (
    DEVELOPERS,
    GROUP_PICKER,
    USER_PICKER,
    PermissionFixture,
    generate_permission_fixture,
    permission_transport,
)
from etl_assets_tests.permission_oracle import (
    ANONYMOUS,
    groups_in,
    mismatches,
    oracle_can_see,
    oracle_principals,
    people_in,
    points,
)

# The matrix' cast (the issue asks for at least these eight kinds of user)
CAST = {
    "acc-admin": "admin",
    "acc-alice": "group A (engineering) only",
    "acc-bob": "group B (sales) only",
    "acc-carol": "groups A and B",
    "acc-dave": "project-role holder (Developers), no group",
    "acc-erin": "reporter of restricted issues (support group)",
    "acc-frank": "named in the user-picker field, no group",
    "acc-gina": "no group, no role",
}


# -- running the code under test -----------------------------------------------------------------


def fetch(fx: PermissionFixture) -> PermissionFetch:
    with httpx.Client(transport=permission_transport(fx), base_url="https://sample.atlassian.net") as http:
        client = JiraClient(http=http, tenant_id="acme", site="https://sample.atlassian.net")
        projects = [{"id": p["id"], "key": p["key"], "lead": {"accountId": p["lead"]}} for p in fx.projects]
        return fetch_permissions(client, projects, [issue_facts_from_json(i) for i in fx.issues])


def access_lists(fx: PermissionFixture) -> tuple[PermissionSnapshot, dict[str, tuple[str, ...]]]:
    fetched = fetch(fx)
    computed = compute_access(fetched.snapshot, [issue_facts_from_json(i) for i in fx.issues])
    return fetched.snapshot, {k: a.principals for k, a in computed.items()}


@pytest.fixture
def fx() -> PermissionFixture:
    return generate_permission_fixture()


# -- the fixture covers what the matrix must cover ----------------------------------------------


def test_fixture_is_deterministic_and_covers_every_case(fx: PermissionFixture) -> None:
    again = generate_permission_fixture()
    assert again.issues == fx.issues
    assert set(CAST) <= set(fx.users) and len(fx.users) >= 8
    levels = {i["fields"]["security"]["id"] for i in fx.issues if i["fields"]["security"]}
    assert levels == {"3000", "3001", "3002", "3003"}
    comment_vis = {
        (c.get("visibility") or {}).get("type") for i in fx.issues for c in i["fields"]["comment"]["comments"]
    }
    assert comment_vis == {None, "role", "group"}
    # erin reports restricted issues; frank is named in the picker of restricted issues
    restricted = [i for i in fx.issues if i["fields"]["security"]]
    assert any(i["fields"]["reporter"]["accountId"] == "acc-erin" for i in restricted)
    assert any("acc-frank" in people_in(i["fields"][USER_PICKER]) for i in restricted)
    assert any(groups_in(i["fields"][GROUP_PICKER]) for i in restricted)
    # overlapping groups: carol is in A and B, ivan in A and support
    member_of = {u: {g for g, grp in fx.groups.items() if u in grp["members"]} for u in fx.users}
    assert member_of["acc-carol"] == {"gid-eng", "gid-sales"} and member_of["acc-gina"] == set()


# -- the matrix ------------------------------------------------------------------------------------


def test_matrix_every_user_sees_exactly_what_jira_allows(fx: PermissionFixture) -> None:
    _, lists = access_lists(fx)
    assert len(lists) == sum(1 for _ in points(fx))
    assert mismatches(fx, lists) == []
    # the matrix is not trivial: every cast member sees some points and misses others
    for user in [*CAST, ANONYMOUS]:
        seen = sum(oracle_can_see(fx, user, i, c) for _, i, c in points(fx))
        assert 0 < seen < len(lists), (user, seen)
    # every kind of user sees a different set of points
    sets = {u: frozenset(k for k, i, c in points(fx) if oracle_can_see(fx, u, i, c)) for u in [*CAST, ANONYMOUS]}
    assert len(set(sets.values())) == len(sets)
    assert not any(RESTRICTED in acl for acl in lists.values())
    assert all(PUBLIC not in lists[f"issue:{i['id']}"] for i in fx.issues if i["fields"]["project"]["key"] != "OPEN")


def test_matrix_catches_a_leak_when_the_level_is_ignored(fx: PermissionFixture) -> None:
    """The check can fail: drop the security level from the facts and the matrix reports leaks."""
    snap, _ = access_lists(fx)
    facts = [issue_facts_from_json(i) for i in fx.issues]
    broken = [f.__class__(**{**f.__dict__, "security_level_id": None}) for f in facts]
    lists = {k: a.principals for k, a in compute_access(snap, broken).items()}
    problems = mismatches(fx, lists)
    assert problems and all(p.startswith("LEAK") for p in problems)


def test_principals_of_matches_the_fixture(fx: PermissionFixture) -> None:
    snap, _ = access_lists(fx)
    for user in [*fx.users, None]:
        assert principals_of(user, snap.group_members) == oracle_principals(fx, user)


def test_meet_keeps_shared_principals_and_expands_the_rest(fx: PermissionFixture) -> None:
    snap, _ = access_lists(fx)
    eng, sales, support = "group:gid-eng", "group:gid-sales", "group:gid-support"
    assert meet(snap, frozenset({PUBLIC}), frozenset({eng})) == {eng}
    assert meet(snap, frozenset({eng, sales}), frozenset({eng})) == {eng}
    # engineering ∩ sales = carol only; engineering ∩ support = ivan
    assert meet(snap, frozenset({eng}), frozenset({sales})) == {"user:acc-carol"}
    assert meet(snap, frozenset({eng, support}), frozenset({sales, support})) == {support, "user:acc-carol"}
    assert meet(snap, frozenset({eng}), frozenset({"user:acc-bob"})) == frozenset()
    assert meet(snap, frozenset({RESTRICTED}), frozenset({PUBLIC})) == {RESTRICTED}


# -- changes: the recomputed lists differ exactly where access changed ----------------------------


def _oracle_sets(fx: PermissionFixture) -> dict[str, frozenset[str | None]]:
    users: list[str | None] = [*sorted(fx.users), ANONYMOUS]
    return {k: frozenset(u for u in users if oracle_can_see(fx, u, i, c)) for k, i, c in points(fx)}


def _keys_of_issue(fx: PermissionFixture, key: str) -> set[str]:
    return {k for k, i, _ in points(fx) if i["key"] == key}


def test_issue_moved_to_a_more_restricted_level_updates_only_it_and_its_comments(fx: PermissionFixture) -> None:
    _, old = access_lists(fx)
    before = _oracle_sets(fx)
    target = next(i for i in fx.issues if (i["fields"]["security"] or {}).get("id") == "3000")
    fx.set_security(target["key"], "3001")
    _, new = access_lists(fx)
    assert mismatches(fx, new) == []
    updates = access_updates(old, new)
    updated = {k for keys in updates.values() for k in keys}
    changed = {k for k, s in _oracle_sets(fx).items() if s != before[k]}
    assert changed and changed == updated
    assert updated <= _keys_of_issue(fx, target["key"])
    # each write carries the new list
    assert all(new[k] == acl for acl, keys in updates.items() for k in keys)


def test_project_scheme_change_updates_only_that_projects_points(fx: PermissionFixture) -> None:
    _, old = access_lists(fx)
    before = _oracle_sets(fx)
    fx.set_project_scheme("OPEN", "1004")  # anyone -> admins only
    _, new = access_lists(fx)
    assert mismatches(fx, new) == []
    updated = {k for keys in access_updates(old, new).values() for k in keys}
    changed = {k for k, s in _oracle_sets(fx).items() if s != before[k]}
    in_open = {k for k, i, _ in points(fx) if i["fields"]["project"]["key"] == "OPEN"}
    assert changed and changed == updated and updated <= in_open


def test_user_removed_from_a_group(fx: PermissionFixture) -> None:
    """carol leaves engineering: lists naming ``group:gid-eng`` stay (her groups are resolved at
    query time); lists where she was expanded as a user are rewritten; nothing else is."""
    _, old = access_lists(fx)
    before = _oracle_sets(fx)
    fx.remove_from_group("acc-carol", "gid-eng")
    _, new = access_lists(fx)
    assert mismatches(fx, new) == []
    updated = {k for keys in access_updates(old, new).values() for k in keys}
    changed = {k for k, s in _oracle_sets(fx).items() if s != before[k]}
    assert changed
    via_group = {k for k in changed if "group:gid-eng" in old[k]}
    assert changed - via_group <= updated
    # only lists where carol appeared as a user are written
    assert updated and all("user:acc-carol" in old[k] or "user:acc-carol" in new[k] for k in updated)


def test_no_change_means_no_payload_writes(fx: PermissionFixture) -> None:
    _, old = access_lists(fx)
    _, new = access_lists(fx)
    assert access_updates(old, new) == {}
    assert access_updates({}, {"issue:1": ("b", "a")}) == {("a", "b"): ["issue:1"]}
    assert access_updates({"issue:1": ("a", "b")}, {"issue:1": ("b", "a")}) == {}


# -- refusals: a non-admin API user fails safe ----------------------------------------------------


def test_non_admin_api_user_gets_fail_safe_lists_and_one_reason_per_project(fx: PermissionFixture) -> None:
    fx.api_user_is_admin = False
    snap, lists = access_lists(fx)
    assert set(lists.values()) == {(RESTRICTED,)}
    reasons = fail_safe_reasons(snap)
    assert set(reasons) == {p["key"] for p in fx.projects}
    for reason in reasons.values():
        assert "\n" not in reason and "HTTP 403" in reason and "/permissionscheme" in reason
    # nobody but an unrestricted operator is admitted
    for user in [*fx.users, None]:
        assert all(oracle_principals(fx, user).isdisjoint(acl) for acl in lists.values())


def test_an_unreadable_level_fails_safe_only_for_its_issues(fx: PermissionFixture) -> None:
    fx.security_schemes["2001"]["levels"]["3003"]["members"].append(("group", "gid-ghost"))
    fx.groups["gid-ghost"] = {"name": "ghost", "members": {"acc-gina"}}
    fx.hidden_groups.add("gid-ghost")  # its members cannot be read (403)
    snap, lists = access_lists(fx)
    leadership = {k for k, i, _ in points(fx) if (i["fields"]["security"] or {}).get("id") == "3003"}
    restricted = {k for k, acl in lists.items() if acl == (RESTRICTED,)}
    assert leadership and restricted == leadership
    assert "group:gid-ghost" in snap.unreadable
    computed = compute_access(snap, [issue_facts_from_json(i) for i in fx.issues])
    assert all("gid-ghost" in (computed[k].reason or "") for k in leadership)


def test_comment_role_given_only_by_name_resolves(fx: PermissionFixture) -> None:
    for issue in fx.issues:
        for c in issue["fields"]["comment"]["comments"]:
            if (c.get("visibility") or {}).get("identifier") == DEVELOPERS:
                del c["visibility"]["identifier"]
    _, lists = access_lists(fx)
    assert mismatches(fx, lists) == []


# -- committed tables: round trip, resolver, pending payload writes ---------------------------------


@pytest.fixture
def engine(tmp_path: Any) -> Iterator[Any]:
    from etl_assets.core.sources.jira import permission_tables  # noqa: F401 - declares the tables
    from etl_assets.core.store.db import make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'perm.db'}")
    yield eng
    eng.dispose()


def test_tables_round_trip_gives_the_same_access_and_the_matrix_holds(fx: PermissionFixture, engine: Any) -> None:
    from etl_assets.core.sources.jira.permission_tables import load_snapshot, save_snapshot

    fetched = fetch(fx)
    facts = [issue_facts_from_json(i) for i in fx.issues]
    with engine.begin() as conn:
        save_snapshot(conn, "acme", fetched)
        save_snapshot(conn, "other", PermissionFetch(PermissionSnapshot()))
    with engine.connect() as conn:
        loaded = load_snapshot(conn, "acme")
        empty = load_snapshot(conn, "other")
    direct = {k: a.principals for k, a in compute_access(fetched.snapshot, facts).items()}
    from_tables = {k: a.principals for k, a in compute_access(loaded, facts).items()}
    assert from_tables == direct and mismatches(fx, from_tables) == []
    # another tenant's (empty) rules fail safe instead of borrowing acme's
    assert {a.principals for a in compute_access(empty, facts).values()} == {(RESTRICTED,)}


def test_resolver_by_email_or_account_id(fx: PermissionFixture, engine: Any) -> None:
    from etl_assets.core.sources.jira.permission_tables import UnknownPrincipal, resolve_principal, save_snapshot

    with engine.begin() as conn:
        save_snapshot(conn, "acme", fetch(fx))
    with engine.connect() as conn:
        assert resolve_principal(conn, "acme", "Carol@Example.com") == oracle_principals(fx, "acc-carol")
        assert resolve_principal(conn, "acme", "acc-gina") == {"public", "user:acc-gina"}
        with pytest.raises(UnknownPrincipal, match="tenant 'acme': no user 'zed@example.com'"):
            resolve_principal(conn, "acme", "zed@example.com")
        with pytest.raises(UnknownPrincipal):
            resolve_principal(conn, "other", "acc-carol")


def test_save_access_marks_changes_pending_until_applied(fx: PermissionFixture, engine: Any) -> None:
    from etl_assets.core.sources.jira.permission_tables import mark_applied, pending_access, save_access

    facts = [issue_facts_from_json(i) for i in fx.issues]
    first = compute_access(fetch(fx).snapshot, facts)
    with engine.begin() as conn:
        pending = save_access(conn, "acme", first)
    assert sum(len(v) for v in pending.values()) == len(first)  # a first sync writes every point
    with engine.begin() as conn:
        mark_applied(conn, "acme", [k for keys in pending.values() for k in keys])
    with engine.begin() as conn:
        assert save_access(conn, "acme", first) == {}  # no change: no payload writes
    target = next(i for i in fx.issues if (i["fields"]["security"] or {}).get("id") == "3000")
    fx.set_security(target["key"], "3001")
    second = compute_access(fetch(fx).snapshot, [issue_facts_from_json(i) for i in fx.issues])
    with engine.begin() as conn:
        pending = save_access(conn, "acme", second)
    written = {k for keys in pending.values() for k in keys}
    assert written and written <= _keys_of_issue(fx, target["key"])
    # not applied (say the index was down): the next sync, with no new change, still has them
    with engine.begin() as conn:
        assert save_access(conn, "acme", second) == pending
        mark_applied(conn, "acme", written)
        assert pending_access(conn, "acme") == {}


def test_sample_site_serves_the_permission_routes_over_loopback(fx: PermissionFixture) -> None:
    """The sample site's handler with the fixture's routes, on a real loopback HTTP server."""
    from etl_assets.core.sources.jira.sample import JiraSiteHandler, generate_sample_site
    from etl_assets.core.sources.jira.sample.permissions import PermissionRoutes
    from etl_assets.fakes.loopback import LoopbackServer, Request, Response

    site = generate_sample_site(seed=3, n_projects=2, n_issues=5)
    handler = JiraSiteHandler(site, extra_routes=PermissionRoutes(fx))

    def handle(req: Request) -> Response:
        status, headers, body = handler.handle(req.method, req.path, req.query, req.body)
        return Response(status=status, headers=headers, body=body)

    server = LoopbackServer(handle).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            client = JiraClient(http=http, tenant_id="acme", site=server.url)
            projects = [{"id": p["id"], "key": p["key"], "lead": {"accountId": p["lead"]}} for p in fx.projects]
            fetched = fetch_permissions(client, projects, [issue_facts_from_json(i) for i in fx.issues])
            assert http.get("/rest/api/3/issuetype").status_code == 200  # the site's own routes still answer
            assert http.get("/rest/api/3/nothing/here").status_code == 404
    finally:
        server.stop()
    lists = {
        k: a.principals
        for k, a in compute_access(fetched.snapshot, [issue_facts_from_json(i) for i in fx.issues]).items()
    }
    assert mismatches(fx, lists) == []
    assert ("GET", "/rest/api/3/project/10001/permissionscheme") in site.requests


def test_a_list_committed_after_the_payload_step_read_stays_pending(fx: PermissionFixture, engine: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from etl_assets.core.sources.jira.permission_tables import mark_applied, pending_access, save_access

    access = compute_access(fetch(fx).snapshot, [issue_facts_from_json(i) for i in fx.issues])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        save_access(conn, "acme", access, now=t0 + timedelta(minutes=5))  # a sync committing after the read
        keys = [k for keys in pending_access(conn, "acme").values() for k in keys]
        mark_applied(conn, "acme", keys, read_at=t0)
        assert sum(len(v) for v in pending_access(conn, "acme").values()) == len(keys)
        mark_applied(conn, "acme", keys, read_at=t0 + timedelta(minutes=10))
        assert pending_access(conn, "acme") == {}


def test_a_group_holder_known_only_by_name(fx: PermissionFixture) -> None:
    from etl_assets.core.permissions import Holder, resolve_holder
    from etl_assets.core.sources.jira.permissions import holder_from_json

    snap, _ = access_lists(fx)
    holder = holder_from_json({"type": "group", "parameter": "engineering"})
    issue = issue_facts_from_json(fx.issues[0])
    assert resolve_holder(snap, issue, holder) == {"group:gid-eng"}
    assert holder_from_json({"type": "group", "parameter": "sales", "value": "gid-sales"}) == Holder(
        "group", "gid-sales"
    )
    snap.schemes["1000"] = [("BROWSE_PROJECTS", Holder("group", "name:nobody-knows"))]
    from etl_assets.core.permissions import issue_access

    assert issue_access(snap, issue).principals == (RESTRICTED,)


def test_an_issue_read_without_its_security_field_fails_safe(fx: PermissionFixture) -> None:
    """The issue sync may not request ``security``: an absent field is unknown, not "no level"."""
    snap, _ = access_lists(fx)
    restricted = next(i for i in fx.issues if i["fields"]["security"])
    without = {**restricted, "fields": {k: v for k, v in restricted["fields"].items() if k != "security"}}
    access = compute_access(snap, [issue_facts_from_json(without)])
    assert {a.principals for a in access.values()} == {(RESTRICTED,)}
    assert "fetched without its 'security' field" in (access[f"issue:{restricted['id']}"].reason or "")
