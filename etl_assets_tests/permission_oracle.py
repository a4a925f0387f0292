"""The independent expectation of the permission matrix: who may see which sample issue and comment.

Computed user by user straight from a :class:`PermissionFixture`'s rules, the way Jira's
documentation states them — does this user hold any BROWSE_PROJECTS grant of the project, any
member entry of the issue's security level, the comment's role or group — without principals,
access lists or any code of ``etl_assets.core.permissions``. Works for the standalone fixture
(``generate_permission_fixture``) and for a sample site's (``site_permission_fixture`` /
``permission_fixture_for(url)``); ``mismatches`` compares access lists against it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from etl_assets.core.sources.jira.sample.permissions import ROLE_NAMES, PermissionFixture

ANONYMOUS = None


def people_in(value: Any) -> set[str]:
    values = value if isinstance(value, list) else [value]
    return {v["accountId"] for v in values if isinstance(v, dict) and v.get("accountId")}


def groups_in(value: Any) -> set[str]:
    values = value if isinstance(value, list) else [value]
    return {v["groupId"] for v in values if isinstance(v, dict) and v.get("groupId")}


def _in_group(fx: PermissionFixture, user: str | None, gid: str) -> bool:
    return user is not None and user in fx.groups[gid]["members"]


def _holds(fx: PermissionFixture, user: str | None, htype: str, value: str, issue: dict[str, Any]) -> bool:
    """Does ``user`` match one holder on this issue? (Jira's holder types, read literally.)"""
    fields = issue["fields"]
    project = fx.project(fields["project"]["id"])
    if htype == "anyone":
        return True
    if user is None:
        return False
    if htype == "group":
        return _in_group(fx, user, value)
    if htype == "user":
        return user == value
    if htype == "reporter":
        return user in people_in(fields.get("reporter"))
    if htype == "assignee":
        return user in people_in(fields.get("assignee"))
    if htype == "projectLead":
        return user == project["lead"]
    if htype == "projectRole":
        actors = fx.role_actors[(project["id"], value)]
        return user in actors["users"] or any(_in_group(fx, user, g) for g in actors["groups"])
    if htype == "userCustomField":
        return user in people_in(fields.get(value))
    if htype == "groupCustomField":
        return any(_in_group(fx, user, g) for g in groups_in(fields.get(value)))
    if htype == "applicationRole":
        keys = [value] if value else list(fx.app_roles)
        return any(_in_group(fx, user, g) for k in keys for g in fx.app_roles[k])
    return False


def _level_members(fx: PermissionFixture, level_id: str) -> list[tuple[str, str]]:
    for scheme in fx.security_schemes.values():
        if level_id in scheme["levels"]:
            members: list[tuple[str, str]] = scheme["levels"][level_id]["members"]
            return members
    raise KeyError(level_id)


def oracle_can_see(
    fx: PermissionFixture, user: str | None, issue: dict[str, Any], comment: dict[str, Any] | None
) -> bool:
    fields = issue["fields"]
    project = fx.project(fields["project"]["id"])
    grants = fx.schemes[project["scheme"]]["grants"]
    if not any(perm == "BROWSE_PROJECTS" and _holds(fx, user, t, v, issue) for perm, t, v in grants):
        return False
    security = fields.get("security")
    if security and not any(_holds(fx, user, t, v, issue) for t, v in _level_members(fx, security["id"])):
        return False
    visibility = (comment or {}).get("visibility")
    if visibility:
        if visibility["type"] == "group":
            return _in_group(fx, user, visibility["identifier"])
        # a role is named by its name (Jira's ``identifier`` of a role); the standalone fixture uses ids
        by_name = {n: r for r, n in ROLE_NAMES.items()}
        ident = visibility.get("identifier")
        role = ident if ident in ROLE_NAMES else by_name[ident or visibility["value"]]
        return _holds(fx, user, "projectRole", role, issue)
    return True


def oracle_principals(fx: PermissionFixture, user: str | None) -> set[str]:
    """The searcher's principals, written out from the fixture (not via ``principals_of``)."""
    if user is None:
        return {"public"}
    return {"public", f"user:{user}"} | {f"group:{g}" for g, grp in fx.groups.items() if user in grp["members"]}


def points(fx: PermissionFixture) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """Every point of the fixture's issues: ``("issue:<id>" | "comment:<id>", issue, comment or None)``."""
    for issue in fx.issues:
        yield f"issue:{issue['id']}", issue, None
        for c in (issue["fields"].get("comment") or {}).get("comments") or []:
            yield f"comment:{c['id']}", issue, c


def mismatches(
    fx: PermissionFixture, lists: Mapping[str, Sequence[str]], users: Sequence[str | None] | None = None
) -> list[str]:
    """``LEAK``/``MISS`` lines where a match-any on ``lists`` disagrees with :func:`oracle_can_see`."""
    who: list[str | None] = list(users) if users is not None else [*sorted(fx.users), ANONYMOUS]
    out = []
    for user in who:
        mine = oracle_principals(fx, user)
        for key, issue, comment in points(fx):
            admitted = not mine.isdisjoint(lists[key])
            expected = oracle_can_see(fx, user, issue, comment)
            if admitted != expected:
                kind = "LEAK" if admitted else "MISS"
                out.append(f"{kind}: {user} {issue['key']} {key} list={tuple(lists[key])}")
    return out
