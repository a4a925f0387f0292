"""The sample site's permissions: users, groups, schemes, roles, security levels, restricted comments.

:func:`generate_permission_fixture` builds, deterministically from a seed, a small site whose
access rules exercise every holder type the permission stage resolves:

* four projects with different permission schemes — ``OPEN`` (anyone), ``ENG`` (groups, a
  project role, reporter, a user-picker field), ``SALES`` (an application role, a named user,
  the project lead, assignee), ``HR`` (admins and a role) — plus an unused ``Locked`` scheme
  that the change tests move a project to;
* two issue security schemes whose levels' members include reporter, assignee, a user-picker
  custom field, a group-picker custom field, a group, a project role, a user and the lead;
* ten users in overlapping groups (one in none, one only in a role, one only in a field);
* issues cycling through every level and none, with comments restricted to a role or a group.

:class:`PermissionRoutes` answers the Jira REST v3 endpoints the permission stage calls over a
fixture, the way Jira Cloud does (PageBeans, 403 for a non-admin API user on the admin-only
endpoints); :func:`permission_transport` wraps it for ``httpx.Client(transport=...)`` and the
sample site's :class:`~.transport.JiraSiteHandler` takes it as ``extra_routes``.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from etl_assets.core.sources.jira.sample.documents import field_listing

__all__ = [
    "PermissionFixture",
    "PermissionRoutes",
    "generate_permission_fixture",
    "permission_transport",
    "site_permission_fixture",
]

USER_PICKER = "customfield_10100"  # "Reviewers" (multi user picker)
GROUP_PICKER = "customfield_10101"  # "Owning team" (group picker)
DEVELOPERS = "10002"
HR_ROLE = "10003"
ROLE_NAMES = {DEVELOPERS: "Developers", HR_ROLE: "HR"}
BASE = "https://sample.atlassian.net"


@dataclass
class PermissionFixture:
    """A site's permission data as plain dicts (what the routes serve and tests reason from)."""

    users: dict[str, dict[str, Any]]  # accountId -> {displayName, emailAddress}
    groups: dict[str, dict[str, Any]]  # groupId -> {name, members: set[accountId]}
    app_roles: dict[str, list[str]]  # application key -> groupIds
    projects: list[dict[str, Any]]  # {id, key, name, lead, scheme, security_scheme}
    schemes: dict[str, dict[str, Any]]  # scheme id -> {name, grants: [(permission, type, value)]}
    role_actors: dict[tuple[str, str], dict[str, set[str]]]  # (project id, role id) -> {users, groups}
    security_schemes: dict[str, dict[str, Any]]  # id -> {name, levels: {level id: {name, members: [(type, value)]}}}
    issues: list[dict[str, Any]]  # issues as /search/jql returns them (fields: project, people, security, comment)
    api_user_is_admin: bool = True
    base_url: str = BASE
    hidden_groups: set[str] = field(default_factory=set)  # group/member answers 403 for these
    requests: list[tuple[str, str]] = field(default_factory=list)

    # -- lookups -------------------------------------------------------------------------
    def project(self, id_or_key: str) -> dict[str, Any]:
        for p in self.projects:
            if id_or_key in (p["id"], p["key"]):
                return p
        raise KeyError(id_or_key)

    def issue(self, key: str) -> dict[str, Any]:
        return next(i for i in self.issues if i["key"] == key)

    # -- the edits the change tests make --------------------------------------------------
    def remove_from_group(self, account_id: str, group_id: str) -> None:
        self.groups[group_id]["members"].discard(account_id)

    def set_security(self, issue_key: str, level_id: str | None) -> None:
        fields = self.issue(issue_key)["fields"]
        fields["security"] = None if level_id is None else self._level_ref(level_id)

    def set_project_scheme(self, project_key: str, scheme_id: str) -> None:
        self.project(project_key)["scheme"] = scheme_id

    def _level_ref(self, level_id: str) -> dict[str, Any]:
        for scheme in self.security_schemes.values():
            if level_id in scheme["levels"]:
                level = scheme["levels"][level_id]
                return {
                    "self": f"{self.base_url}/rest/api/3/securitylevel/{level_id}",
                    "id": level_id,
                    "name": level["name"],
                    "description": level["name"],
                }
        raise KeyError(level_id)


def _user_ref(account_id: str | None, users: dict[str, dict[str, Any]], base: str = BASE) -> dict[str, Any] | None:
    if account_id is None:
        return None
    return {
        "self": f"{base}/rest/api/3/user?accountId={account_id}",
        "accountId": account_id,
        "displayName": users[account_id]["displayName"],
        "active": True,
        "accountType": "atlassian",
    }


def scheme_templates(*, admins: str, eng: str, sales: str, named_user: str) -> dict[str, dict[str, Any]]:
    """The five permission schemes (``1000`` Open … ``1003`` HR, ``1004`` Locked) over the given groups and user."""
    browse = "BROWSE_PROJECTS"
    schemes: dict[str, dict[str, Any]] = {
        "1000": {
            "name": "Open",
            "grants": [
                (browse, "anyone", ""),
                ("CREATE_ISSUES", "group", eng),
                ("ADMINISTER_PROJECTS", "group", admins),
            ],
        },
        "1001": {
            "name": "Engineering",
            "grants": [
                (browse, "group", eng),
                (browse, "group", admins),
                (browse, "projectRole", DEVELOPERS),
                (browse, "reporter", ""),
                (browse, "userCustomField", USER_PICKER),
                ("EDIT_ISSUES", "group", sales),  # not a browse grant: must not admit sales
            ],
        },
        "1002": {
            "name": "Sales",
            "grants": [
                (browse, "applicationRole", "jira-software"),
                (browse, "user", named_user),
                (browse, "projectLead", ""),
                (browse, "assignee", ""),
                (browse, "sd.customer.portal.only", ""),  # portal customers: grants no browse here
            ],
        },
        "1003": {"name": "HR", "grants": [(browse, "group", admins), (browse, "projectRole", HR_ROLE)]},
        "1004": {"name": "Locked", "grants": [(browse, "group", admins)]},
    }
    return schemes


def security_templates(*, admins: str, eng: str, sales: str, admin: str) -> dict[str, dict[str, Any]]:
    """The two issue security schemes (``2000`` for Engineering, ``2001`` for Sales) and their levels."""
    security_schemes: dict[str, dict[str, Any]] = {
        "2000": {
            "name": "Engineering security",
            "levels": {
                "3000": {
                    "name": "Internal",
                    "members": [("group", eng), ("group", admins), ("reporter", ""), ("assignee", "")],
                },
                "3001": {
                    "name": "Confidential",
                    "members": [
                        ("projectRole", DEVELOPERS),
                        ("userCustomField", USER_PICKER),
                        ("reporter", ""),
                        ("group", admins),
                    ],
                },
            },
        },
        "2001": {
            "name": "Sales security",
            "levels": {
                "3002": {
                    "name": "Deal team",
                    "members": [("group", sales), ("groupCustomField", GROUP_PICKER), ("assignee", "")],
                },
                "3003": {"name": "Leadership", "members": [("user", admin), ("projectLead", "")]},
            },
        },
    }
    return security_schemes


def generate_permission_fixture(seed: int = 14, issues_per_project: int = 12) -> PermissionFixture:
    """A deterministic permission fixture (same seed, same site)."""
    rng = random.Random(seed)
    names = ["admin", "alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivan"]
    users = {f"acc-{n}": {"displayName": n.title(), "emailAddress": f"{n}@example.com"} for n in names}
    groups: dict[str, dict[str, Any]] = {
        "gid-admins": {"name": "jira-admins", "members": {"acc-admin"}},
        "gid-eng": {"name": "engineering", "members": {"acc-alice", "acc-carol", "acc-ivan"}},
        "gid-sales": {"name": "sales", "members": {"acc-bob", "acc-carol", "acc-hank"}},
        "gid-support": {"name": "support", "members": {"acc-erin", "acc-ivan"}},
    }
    app_roles = {"jira-software": ["gid-admins", "gid-eng", "gid-sales", "gid-support"]}
    projects: list[dict[str, Any]] = [
        {"id": "10000", "key": "OPEN", "name": "Open", "lead": "acc-alice", "scheme": "1000", "security_scheme": None},
        {"id": "10001", "key": "ENG", "name": "Eng", "lead": "acc-carol", "scheme": "1001", "security_scheme": "2000"},
        {
            "id": "10002",
            "key": "SALES",
            "name": "Sales",
            "lead": "acc-bob",
            "scheme": "1002",
            "security_scheme": "2001",
        },
        {"id": "10003", "key": "HR", "name": "HR", "lead": "acc-admin", "scheme": "1003", "security_scheme": None},
    ]
    schemes = scheme_templates(admins="gid-admins", eng="gid-eng", sales="gid-sales", named_user="acc-frank")
    role_actors: dict[tuple[str, str], dict[str, set[str]]] = {}
    for p in projects:
        role_actors[(p["id"], DEVELOPERS)] = {"users": set(), "groups": set()}
        role_actors[(p["id"], HR_ROLE)] = {"users": set(), "groups": set()}
    role_actors[("10000", DEVELOPERS)]["groups"].add("gid-eng")
    role_actors[("10001", DEVELOPERS)]["users"].add("acc-dave")
    role_actors[("10001", DEVELOPERS)]["groups"].add("gid-support")
    role_actors[("10002", DEVELOPERS)]["users"].add("acc-dave")
    role_actors[("10003", HR_ROLE)]["users"].add("acc-erin")
    security_schemes = security_templates(admins="gid-admins", eng="gid-eng", sales="gid-sales", admin="acc-admin")
    fixture = PermissionFixture(users, groups, app_roles, projects, schemes, role_actors, security_schemes, [])
    people = [a for a in users if a != "acc-admin"]
    issue_id, comment_id = 20000, 50000
    for p in projects:
        levels = [None, *security_schemes[p["security_scheme"]]["levels"]] if p["security_scheme"] else [None]
        for n in range(1, issues_per_project + 1):
            issue_id += 1
            level = levels[n % len(levels)]
            # erin reports every third issue: the reporter of many restricted issues
            reporter = "acc-erin" if n % 3 == 0 else rng.choice(people)
            assignee = rng.choice([None, *people])
            pickers = sorted({"acc-frank"} if n % 2 else set(rng.sample(people, rng.randint(0, 2))))
            team = rng.choice([None, "gid-support", "gid-eng"])
            comments = []
            for _ in range(rng.randint(1, 3)):
                comment_id += 1
                visibility: dict[str, str] | None = rng.choice(
                    [
                        None,
                        {"type": "role", "value": "Developers", "identifier": DEVELOPERS},
                        {"type": "role", "value": "HR", "identifier": HR_ROLE},
                        {"type": "group", "value": "sales", "identifier": "gid-sales"},
                        {"type": "group", "value": "support", "identifier": "gid-support"},
                    ]
                )
                comment: dict[str, Any] = {
                    "self": f"{BASE}/rest/api/3/issue/{issue_id}/comment/{comment_id}",
                    "id": str(comment_id),
                    "author": _user_ref(rng.choice(people), users),
                    "body": {"type": "doc", "version": 1, "content": []},
                }
                if visibility:
                    comment["visibility"] = visibility
                comments.append(comment)
            fields: dict[str, Any] = {
                "project": {"id": p["id"], "key": p["key"], "name": p["name"]},
                "summary": f"{p['name']} issue {n}",
                "reporter": _user_ref(reporter, users),
                "assignee": _user_ref(assignee, users),
                "security": None,
                USER_PICKER: [_user_ref(a, users) for a in pickers] or None,
                GROUP_PICKER: (
                    [{"groupId": team, "name": groups[team]["name"], "self": f"{BASE}/rest/api/3/group?groupId={team}"}]
                    if team
                    else None
                ),
                "comment": {"comments": comments, "startAt": 0, "maxResults": len(comments), "total": len(comments)},
            }
            fixture.issues.append({"id": str(issue_id), "key": f"{p['key']}-{n}", "fields": fields})
            if level:
                fixture.set_security(f"{p['key']}-{n}", level)
    return fixture


# -- over a generated sample site -----------------------------------------------------------------

#: The picker fields :func:`site_permission_fixture` fills, as ``GET /rest/api/3/field`` lists them.
PICKER_FIELDS: tuple[dict[str, Any], ...] = tuple(
    field_listing(
        int(fid.rsplit("_", 1)[1]),
        name,
        {
            **({"type": "array", "items": kind} if multi else {"type": kind}),
            "custom": f"com.atlassian.jira.plugin.system.customfieldtypes:{custom}",
            "customId": int(fid.rsplit("_", 1)[1]),
        },
    )
    for fid, name, kind, custom, multi in (
        (USER_PICKER, "Reviewers", "user", "multiuserpicker", True),
        (GROUP_PICKER, "Owning team", "group", "grouppicker", False),
    )
)
_SCHEME_CYCLE = ("1000", "1001", "1002", "1003")
_SECURITY_OF = {"1001": "2000", "1002": "2001"}


def _email(name: str, n: int) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    local = ".".join(part for part in re.split(r"[^a-z0-9]+", ascii_name.lower()) if part)
    return f"{local or f'user{n}'}@example.com"


def _adf_text(node: Any) -> str:
    if isinstance(node, dict):
        return str(node.get("text") or "") + "".join(_adf_text(c) for c in node.get("content") or [])
    if isinstance(node, list):
        return "".join(_adf_text(c) for c in node)
    return ""


def site_permission_fixture(site: Any, *, seed: int = 14) -> PermissionFixture:
    """Give a generated :class:`~.site.JiraSite` access rules and return them as a fixture (deterministic).

    The site's own users, projects and issues are used: the users keep their accountIds and
    names (e-mails are derived from the names); four groups overlap (the first user is the
    admin, one user is in none, one only holds a project role, one is only named in the
    user-picker field); the projects cycle through the four scheme templates of
    :func:`generate_permission_fixture` (Open, Engineering, Sales, HR); two thirds of the
    issues of the Engineering and Sales projects get a security level (their ``security``
    field); every issue gets a ``Reviewers`` (multi user picker) and an ``Owning team`` (group
    picker) value, the two fields are added to the site's ``GET /field`` listing; about a
    quarter of the comments become restricted to a role (``identifier`` = the role's name, as
    Jira sends it) or a group. Nothing that is embedded changes: summaries, descriptions,
    comment bodies, reporters and assignees stay as generated, and comments that carry a
    planted retrieval fact stay unrestricted. The fixture shares the site's issue objects, so
    an edit through either shows in both (a deleted issue leaves the fixture's list).
    """
    rng = random.Random(f"permissions:{seed}")
    site_users = list(site.users)
    if not site_users:
        raise ValueError("the sample site has no users to give permissions to")
    accounts = [str(u["accountId"]) for u in site_users]

    def acc(n: int) -> str:
        return accounts[n % len(accounts)]

    users = {
        a: {"displayName": u["displayName"], "emailAddress": _email(str(u["displayName"]), n)}
        for n, (a, u) in enumerate(zip(accounts, site_users, strict=True))
    }

    def gid(name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{site.base_url}/group/{name}"))

    admins, eng, sales, support = gid("jira-admins"), gid("engineering"), gid("sales"), gid("support")
    # indexes into the site's users: 0 admin; 3 in engineering and sales; 9 in engineering and
    # support; 6 only a Developers role actor; 7 only named in Reviewers; 8 in nothing at all
    groups: dict[str, dict[str, Any]] = {
        admins: {"name": "jira-admins", "members": {acc(0)}},
        eng: {"name": "engineering", "members": {acc(1), acc(3), acc(9), acc(11)}},
        sales: {"name": "sales", "members": {acc(2), acc(3), acc(5), acc(12)}},
        support: {"name": "support", "members": {acc(4), acc(9), acc(13)}},
    }
    role_only, picked, hr_actor = acc(6), acc(7), acc(10)
    projects: list[dict[str, Any]] = []
    for n, p in enumerate(site.projects):
        scheme = _SCHEME_CYCLE[n % len(_SCHEME_CYCLE)]
        lead = (p.get("lead") or {}).get("accountId")
        projects.append(
            {
                "id": str(p["id"]),
                "key": str(p["key"]),
                "name": str(p["name"]),
                "lead": lead,
                "scheme": scheme,
                "security_scheme": _SECURITY_OF.get(scheme),
            }
        )
    role_actors: dict[tuple[str, str], dict[str, set[str]]] = {}
    for p in projects:
        developers: dict[str, set[str]] = {"users": set(), "groups": set()}
        if p["scheme"] == "1000":
            developers["groups"].add(eng)
        elif p["scheme"] in ("1001", "1002"):
            developers["users"].add(role_only)
            if p["scheme"] == "1001":
                developers["groups"].add(support)
        role_actors[(p["id"], DEVELOPERS)] = developers
        role_actors[(p["id"], HR_ROLE)] = {"users": {hr_actor}, "groups": set()}
    fixture = PermissionFixture(
        users=users,
        groups=groups,
        app_roles={"jira-software": [admins, eng, sales, support]},
        projects=projects,
        schemes=scheme_templates(admins=admins, eng=eng, sales=sales, named_user=picked),
        role_actors=role_actors,
        security_schemes=security_templates(admins=admins, eng=eng, sales=sales, admin=acc(0)),
        issues=site.issues,
        base_url=site.base_url,
    )
    planted = set(getattr(site, "comment_facts", {}) or {})
    people = [a for a in accounts if a != acc(0)]
    counters: dict[str, int] = {}
    for issue in site.issues:
        fields = issue["fields"]
        project = fixture.project(str(fields["project"]["id"]))
        n = counters[project["id"]] = counters.get(project["id"], 0) + 1
        reviewers = [picked] if n % 2 else sorted(rng.sample(people, rng.randint(0, 2)))
        team = rng.choice([None, support, eng])
        fields[USER_PICKER] = [_user_ref(a, users, site.base_url) for a in reviewers] or None
        fields[GROUP_PICKER] = (
            {"groupId": team, "name": groups[team]["name"], "self": f"{site.base_url}/rest/api/3/group?groupId={team}"}
            if team
            else None
        )
        security = project["security_scheme"]
        levels = [None, *fixture.security_schemes[security]["levels"]] if security else [None]
        fixture.set_security(issue["key"], levels[n % len(levels)])
        for comment in (fields.get("comment") or {}).get("comments") or []:
            if comment.get("visibility") or rng.random() >= 0.25:
                continue
            if any(fact in _adf_text(comment.get("body")) for fact in planted):
                continue  # a planted retrieval fact stays where every searcher can find it
            comment["visibility"] = rng.choice(
                [
                    {"type": "role", "value": ROLE_NAMES[DEVELOPERS], "identifier": ROLE_NAMES[DEVELOPERS]},
                    {"type": "role", "value": ROLE_NAMES[HR_ROLE], "identifier": ROLE_NAMES[HR_ROLE]},
                    {"type": "group", "value": "sales", "identifier": sales},
                    {"type": "group", "value": "support", "identifier": support},
                ]
            )
    existing = {f["id"] for f in site.fields}
    site.fields.extend(f for f in PICKER_FIELDS if f["id"] not in existing)
    site.permissions = fixture
    return fixture


# -- serving ------------------------------------------------------------------------------------

_ADMIN_ONLY = "You do not have permission to perform this operation. Administer Jira permission is required."


def _error(status: int, message: str) -> tuple[int, Any]:
    return status, {"errorMessages": [message], "errors": {}}


def _page(values: list[Any], query: dict[str, str], self_url: str, default_size: int = 50) -> dict[str, Any]:
    start = int(query.get("startAt") or 0)
    size = int(query.get("maxResults") or default_size)
    chunk = values[start : start + size]
    is_last = start + len(chunk) >= len(values)
    out: dict[str, Any] = {
        "self": self_url,
        "maxResults": size,
        "startAt": start,
        "total": len(values),
        "isLast": is_last,
    }
    if not is_last:
        out["nextPage"] = f"{self_url}?startAt={start + size}&maxResults={size}"
    out["values"] = chunk
    return out


class PermissionRoutes:
    """Answer the permission endpoints over a :class:`PermissionFixture`; ``None`` for other routes."""

    def __init__(self, fixture: PermissionFixture) -> None:
        self.fx = fixture

    def __call__(self, method: str, route: str, query: dict[str, str]) -> tuple[int, Any] | None:
        if method != "GET":
            return None
        self.fx.requests.append((method, route))
        for pattern, handler in self._routes():
            m = re.fullmatch(pattern, route)
            if m:
                return handler(query, *m.groups())
        return None

    def _routes(self) -> list[tuple[str, Callable[..., tuple[int, Any]]]]:
        return [
            (r"/rest/api/3/project/([^/]+)/permissionscheme", self._project_scheme),
            (r"/rest/api/3/permissionscheme/(\d+)", self._scheme),
            (r"/rest/api/3/project/([^/]+)/role/(\d+)", self._role),
            (r"/rest/api/3/project/([^/]+)/issuesecuritylevelscheme", self._security_scheme),
            (r"/rest/api/3/issuesecurityschemes/level/member", self._level_members),
            (r"/rest/api/3/group/member", self._group_members),
            (r"/rest/api/3/applicationrole", self._app_roles),
            (r"/rest/api/3/users/search", self._users),
        ]

    def _project(self, id_or_key: str) -> dict[str, Any] | None:
        try:
            return self.fx.project(id_or_key)
        except KeyError:
            return None

    def _project_scheme(self, query: dict[str, str], key: str) -> tuple[int, Any]:
        project = self._project(key)
        if project is None:
            return _error(404, f"No project could be found with key '{key}'.")
        if not self.fx.api_user_is_admin:
            return _error(403, _ADMIN_ONLY)
        sid = project["scheme"]
        return 200, {
            "self": f"{BASE}/rest/api/3/permissionscheme/{sid}",
            "id": int(sid),
            "name": self.fx.schemes[sid]["name"],
        }

    def _holder(self, htype: str, value: str) -> dict[str, Any]:
        holder: dict[str, Any] = {"type": htype}
        if htype == "group":
            holder.update(parameter=self.fx.groups[value]["name"], value=value)
        elif value:
            holder.update(parameter=value, value=value)
        return holder

    def _scheme(self, query: dict[str, str], sid: str) -> tuple[int, Any]:
        if not self.fx.api_user_is_admin:
            return _error(403, _ADMIN_ONLY)
        scheme = self.fx.schemes.get(sid)
        if scheme is None:
            return _error(404, f"Permission scheme {sid} does not exist.")
        grants = [
            {
                "id": 10000 + n,
                "self": f"{BASE}/rest/api/3/permissionscheme/{sid}/permission/{10000 + n}",
                "holder": self._holder(t, v),
                "permission": perm,
            }
            for n, (perm, t, v) in enumerate(scheme["grants"])
        ]
        body: dict[str, Any] = {
            "expand": "permissions,user,group,projectRole,field,all",
            "id": int(sid),
            "self": f"{BASE}/rest/api/3/permissionscheme/{sid}",
            "name": scheme["name"],
            "description": scheme["name"],
        }
        if "permissions" in query.get("expand", ""):
            body["permissions"] = grants
        return 200, body

    def _role(self, query: dict[str, str], key: str, rid: str) -> tuple[int, Any]:
        project = self._project(key)
        if project is None or rid not in ROLE_NAMES:
            return _error(404, f"No role {rid} in project {key}.")
        actors_of = self.fx.role_actors[(project["id"], rid)]
        actors: list[dict[str, Any]] = []
        for n, gid in enumerate(sorted(actors_of["groups"])):
            name = self.fx.groups[gid]["name"]
            actors.append(
                {
                    "id": 30000 + n,
                    "displayName": name,
                    "type": "atlassian-group-role-actor",
                    "name": name,
                    "actorGroup": {"name": name, "displayName": name, "groupId": gid},
                }
            )
        for n, acc in enumerate(sorted(actors_of["users"])):
            actors.append(
                {
                    "id": 31000 + n,
                    "displayName": self.fx.users[acc]["displayName"],
                    "type": "atlassian-user-role-actor",
                    "actorUser": {"accountId": acc},
                }
            )
        return 200, {
            "self": f"{BASE}/rest/api/3/project/{project['id']}/role/{rid}",
            "name": ROLE_NAMES[rid],
            "id": int(rid),
            "description": ROLE_NAMES[rid],
            "actors": actors,
        }

    def _security_scheme(self, query: dict[str, str], key: str) -> tuple[int, Any]:
        project = self._project(key)
        if project is None:
            return _error(404, f"No project could be found with key '{key}'.")
        if not self.fx.api_user_is_admin:
            return _error(403, _ADMIN_ONLY)
        sid = project["security_scheme"]
        if sid is None:
            return _error(404, f"No issue security scheme is associated with project '{key}'.")
        scheme = self.fx.security_schemes[sid]
        levels = [
            {
                "self": f"{BASE}/rest/api/3/securitylevel/{lid}",
                "id": lid,
                "name": lv["name"],
                "description": lv["name"],
                "isDefault": False,
                "issueSecuritySchemeId": sid,
            }
            for lid, lv in scheme["levels"].items()
        ]
        return 200, {
            "self": f"{BASE}/rest/api/3/issuesecurityschemes/{sid}",
            "id": int(sid),
            "name": scheme["name"],
            "description": scheme["name"],
            "levels": levels,
        }

    def _level_members(self, query: dict[str, str]) -> tuple[int, Any]:
        if not self.fx.api_user_is_admin:
            return _error(403, _ADMIN_ONLY)
        schemes = set(filter(None, query.get("schemeId", "").split(",")))
        levels = set(filter(None, query.get("levelId", "").split(",")))
        members = []
        for sid, scheme in sorted(self.fx.security_schemes.items()):
            for lid, level in scheme["levels"].items():
                if sid in schemes or lid in levels:
                    for n, (t, v) in enumerate(level["members"]):
                        members.append(
                            {
                                "id": f"{lid}{n:02d}",
                                "issueSecurityLevelId": lid,
                                "issueSecuritySchemeId": sid,
                                "holder": self._holder(t, v),
                            }
                        )
        return 200, _page(members, query, f"{BASE}/rest/api/3/issuesecurityschemes/level/member")

    def _group_members(self, query: dict[str, str]) -> tuple[int, Any]:
        gid = query.get("groupId", "")
        if gid in self.fx.hidden_groups:
            return _error(403, "You do not have permission to view this group's members.")
        if gid not in self.fx.groups:
            return _error(404, f"Group {gid!r} does not exist.")
        members = [
            {
                "self": f"{BASE}/rest/api/3/user?accountId={a}",
                "accountId": a,
                "displayName": self.fx.users[a]["displayName"],
                "active": True,
                "accountType": "atlassian",
                "timeZone": "UTC",
            }
            for a in sorted(self.fx.groups[gid]["members"])
        ]
        return 200, _page(members, query, f"{BASE}/rest/api/3/group/member")

    def _app_roles(self, query: dict[str, str]) -> tuple[int, Any]:
        if not self.fx.api_user_is_admin:
            return _error(403, _ADMIN_ONLY)
        out = []
        for key, gids in sorted(self.fx.app_roles.items()):
            details = [
                {"groupId": g, "name": self.fx.groups[g]["name"], "self": f"{BASE}/rest/api/3/group?groupId={g}"}
                for g in gids
            ]
            out.append(
                {
                    "key": key,
                    "name": key,
                    "groups": [d["name"] for d in details],
                    "groupDetails": details,
                    "defaultGroups": [d["name"] for d in details],
                    "defaultGroupsDetails": details,
                    "selectedByDefault": False,
                    "defined": True,
                    "numberOfSeats": 100,
                    "remainingSeats": 90,
                    "userCount": len(self.fx.users),
                    "userCountDescription": "users",
                    "hasUnlimitedSeats": False,
                    "platform": False,
                }
            )
        return 200, out

    def _users(self, query: dict[str, str]) -> tuple[int, Any]:
        start = int(query.get("startAt") or 0)
        size = int(query.get("maxResults") or 50)
        users = [
            {
                "self": f"{BASE}/rest/api/3/user?accountId={a}",
                "accountId": a,
                "accountType": "atlassian",
                "displayName": u["displayName"],
                "emailAddress": u["emailAddress"],
                "active": True,
            }
            for a, u in sorted(self.fx.users.items())
        ]
        return 200, users[start : start + size]


def permission_transport(fixture: PermissionFixture) -> httpx.MockTransport:
    """An httpx transport serving only the permission endpoints of ``fixture`` (others: 404)."""
    routes = PermissionRoutes(fixture)

    def respond(request: httpx.Request) -> httpx.Response:
        query: dict[str, str] = {}
        for name, value in request.url.params.multi_items():
            query[name] = f"{query[name]},{value}" if name in query else value
        answer = routes(request.method, request.url.path, query)
        status, payload = answer if answer is not None else _error(404, f"No resource at {request.url.path}")
        return httpx.Response(
            status,
            content=json.dumps(payload).encode(),
            request=request,
            headers={"content-type": "application/json;charset=UTF-8"},
        )

    return httpx.MockTransport(respond)
