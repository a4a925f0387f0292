"""Fetch a tenant's Jira permission rules into a :class:`~etl_assets.core.permissions.PermissionSnapshot`.

The calls, all on :class:`JiraClient` (its timeouts, retries and error messages):

* ``GET /rest/api/3/project/{projectKeyOrId}/permissionscheme`` — the project's scheme id;
* ``GET /rest/api/3/permissionscheme/{schemeId}?expand=permissions,user,group,projectRole,field``;
* ``GET /rest/api/3/project/{projectIdOrKey}/role/{id}`` — actors of each role a rule names;
* ``GET /rest/api/3/project/{projectKeyOrId}/issuesecuritylevelscheme`` — the levels;
* ``GET /rest/api/3/issuesecurityschemes/level/member?schemeId=…`` (paged) — the levels' members;
* ``GET /rest/api/3/applicationrole`` — the groups of each application role;
* ``GET /rest/api/3/group/member?groupId=…`` (paged) — members of every group a rule names;
* ``GET /rest/api/3/users/search`` (paged) — accountIds and e-mails, for the principal resolver.

Most need *Administer Jira* or *Administer Projects*. A 401/403 on any of them is recorded as
"cannot read" with a one-line reason and the rules depending on it fail safe (the issues get
``restricted:unreadable``); other errors (404 a project that vanished, a retry budget spent) are
recorded the same way — only an unknown rule, never an open one, results from a failed call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from etl_assets.core.permissions import BROWSE, Holder, IssueFacts, PermissionSnapshot, group_principal, user_principal
from etl_assets.core.records import RawPage
from etl_assets.core.sources.jira.client import JiraClient, JiraError

log = logging.getLogger(__name__)

SCHEME_EXPAND = "permissions,user,group,projectRole,field"
PAGE_SIZE = 50


@dataclass
class PermissionFetch:
    """What a permission sync fetched: the snapshot, the raw pages (to land) and the users."""

    snapshot: PermissionSnapshot
    pages: list[RawPage] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # accountId -> {email, displayName, active}


def _reason(exc: JiraError) -> str:
    # JiraError's message names tenant, site, request and status, never the token
    return " ".join(str(exc).split())[:400]


def holder_from_json(holder: Mapping[str, Any]) -> Holder:
    """A grant's or level member's ``holder`` object as a :class:`Holder` (groups by groupId)."""
    htype = str(holder.get("type", ""))
    if htype == "group" and not holder.get("value") and holder.get("parameter"):
        # a group named only by name: resolved through the group names we know, or fails safe
        return Holder(htype, f"name:{holder['parameter']}")
    value = holder.get("value") if htype == "group" else holder.get("parameter", holder.get("value"))
    return Holder(htype, "" if value is None else str(value))


class PermissionFetcher:
    """Fetches the rules that decide who may browse the given projects' issues."""

    def __init__(self, client: JiraClient) -> None:
        self.client = client
        self.snap = PermissionSnapshot()
        self.out = PermissionFetch(self.snap)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        page = self.client.request("GET", path, params=params)
        self.out.pages.append(page)
        return page.json()

    def _pages(self, path: str, params: dict[str, Any]) -> Iterable[Any]:
        for page in self.client.offset_pages(path, params=params, page_size=PAGE_SIZE):
            self.out.pages.append(page)
            data = page.json()
            yield from (data.get("values") or []) if isinstance(data, dict) else []

    def _unreadable(self, what: str, exc: JiraError) -> None:
        reason = _reason(exc)
        self.snap.unreadable[what] = reason
        log.warning("permissions of tenant %s: cannot read %s (%s)", self.client.tenant_id, what, reason)

    # -- per project ---------------------------------------------------------------------------

    def fetch_project(self, project: Mapping[str, Any]) -> None:
        pid, key = str(project["id"]), str(project.get("key", project["id"]))
        self.snap.project_keys[pid] = key
        lead = project.get("lead")
        if isinstance(lead, dict) and lead.get("accountId"):
            self.snap.project_leads[pid] = str(lead["accountId"])
        try:
            ref = self._get(f"/rest/api/3/project/{pid}/permissionscheme")
            sid = str(ref["id"])
            if sid not in self.snap.schemes:
                scheme = self._get(f"/rest/api/3/permissionscheme/{sid}", {"expand": SCHEME_EXPAND})
                self.snap.schemes[sid] = [
                    (str(g.get("permission")), holder_from_json(g.get("holder") or {}))
                    for g in scheme.get("permissions") or []
                ]
                for g in scheme.get("permissions") or []:
                    self._note_group_name(g.get("holder") or {})
            self.snap.project_schemes[pid] = sid
        except JiraError as exc:
            self._unreadable(f"project:{key}", exc)
        try:
            security = self._get(f"/rest/api/3/project/{pid}/issuesecuritylevelscheme")
        except JiraError as exc:
            if exc.status != 404:  # 404: no security scheme (an issue with a level then fails safe)
                self._unreadable(f"security:{key}", exc)
            return
        level_ids = [str(level["id"]) for level in security.get("levels") or []]
        members: dict[str, list[Holder]] = {lid: [] for lid in level_ids}
        try:
            for m in self._pages("/rest/api/3/issuesecurityschemes/level/member", {"schemeId": str(security["id"])}):
                lid = str(m.get("issueSecurityLevelId"))
                if lid in members:
                    members[lid].append(holder_from_json(m.get("holder") or {}))
                    self._note_group_name(m.get("holder") or {})
        except JiraError as exc:
            for lid in level_ids:
                self._unreadable(f"level:{lid}", exc)
            return
        self.snap.levels.update(members)

    def _note_group_name(self, holder: Mapping[str, Any]) -> None:
        if holder.get("type") == "group" and holder.get("parameter") and holder.get("value"):
            self.snap.group_names[str(holder["parameter"])] = str(holder["value"])

    def fetch_roles(self, project_ids: Iterable[str], role_ids: Iterable[str]) -> None:
        for pid in project_ids:
            for rid in sorted(set(role_ids)):
                try:
                    role = self._get(f"/rest/api/3/project/{pid}/role/{rid}")
                except JiraError as exc:
                    self._unreadable(f"role:{pid}:{rid}", exc)
                    continue
                actors: set[str] = set()
                for a in role.get("actors") or []:
                    if a.get("actorUser", {}).get("accountId"):
                        actors.add(user_principal(str(a["actorUser"]["accountId"])))
                    elif a.get("actorGroup", {}).get("groupId"):
                        group = a["actorGroup"]
                        actors.add(group_principal(str(group["groupId"])))
                        if group.get("name"):
                            self.snap.group_names[str(group["name"])] = str(group["groupId"])
                self.snap.role_actors[(pid, rid)] = frozenset(actors)
                if role.get("name"):
                    self.snap.role_names[(pid, str(role["name"]))] = rid

    def fetch_app_roles(self) -> None:
        try:
            roles = self._get("/rest/api/3/applicationrole")
        except JiraError as exc:
            self.snap.app_roles_readable = False
            self._unreadable("applicationroles", exc)
            return
        for role in roles or []:
            groups = {str(g["groupId"]) for g in role.get("groupDetails") or [] if g.get("groupId")}
            self.snap.app_role_groups[str(role.get("key"))] = frozenset(groups)

    def fetch_groups(self, group_ids: Iterable[str]) -> None:
        for gid in sorted(set(group_ids)):
            try:
                members = {str(u["accountId"]) for u in self._pages("/rest/api/3/group/member", {"groupId": gid})}
            except JiraError as exc:
                self._unreadable(f"group:{gid}", exc)
                continue
            self.snap.group_members[gid] = frozenset(members)

    def fetch_users(self) -> None:
        start = 0
        while True:
            try:
                batch = self._get("/rest/api/3/users/search", {"startAt": start, "maxResults": PAGE_SIZE})
            except JiraError as exc:
                self._unreadable("users", exc)
                return
            if not isinstance(batch, list) or not batch:
                return
            for u in batch:
                if u.get("accountId"):
                    self.out.users[str(u["accountId"])] = {
                        "email": u.get("emailAddress"),
                        "display_name": u.get("displayName"),
                        "active": bool(u.get("active", True)),
                    }
            if len(batch) < PAGE_SIZE:
                return
            start += len(batch)


def _referenced(snap: PermissionSnapshot, issues: Sequence[IssueFacts]) -> tuple[set[str], set[str]]:
    """Role ids and groupIds the rules and the issues name (what must be fetched next)."""
    holders = [h for grants in snap.schemes.values() for _, h in grants] + [
        h for members in snap.levels.values() for h in members
    ]
    roles = {h.value for h in holders if h.type == "projectRole" and h.value}
    groups = {h.value for h in holders if h.type == "group" and h.value}
    group_fields = {h.value for h in holders if h.type == "groupCustomField"}
    for issue in issues:
        for c in issue.comments:
            if c.visibility_type == "role" and c.visibility_id and c.visibility_id.isdigit():
                roles.add(c.visibility_id)  # a role id; a role named by name is known by the rules' roles
            elif c.visibility_type == "group" and c.visibility_id:
                groups.add(c.visibility_id)
        for f in group_fields:
            value = issue.fields.get(f)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, dict) and v.get("groupId"):
                    groups.add(str(v["groupId"]))
    return roles, groups


def fetch_permissions(
    client: JiraClient, projects: Sequence[Mapping[str, Any]], issues: Sequence[IssueFacts], *, users: bool = True
) -> PermissionFetch:
    """Fetch every rule deciding access to ``issues`` of ``projects`` (dicts with id, key, lead).

    Group members are fetched for every group the rules, role actors, application roles,
    comments and group-picker fields name (the groups a searcher's principals are resolved from).
    """
    fetcher = PermissionFetcher(client)
    for project in projects:
        fetcher.fetch_project(project)
    snap = fetcher.snap
    roles, groups = _referenced(snap, issues)
    fetcher.fetch_roles([str(p["id"]) for p in projects], roles)
    if any(h.type == "applicationRole" for grants in snap.schemes.values() for _, h in grants) or any(
        h.type == "applicationRole" for members in snap.levels.values() for h in members
    ):
        fetcher.fetch_app_roles()
    for actors in snap.role_actors.values():
        groups |= {p.removeprefix("group:") for p in actors if p.startswith("group:")}
    for app_groups in snap.app_role_groups.values():
        groups |= app_groups
    fetcher.fetch_groups(groups)
    if users:
        fetcher.fetch_users()
    return fetcher.out


def browse_grants(snap: PermissionSnapshot, scheme_id: str) -> list[Holder]:
    """The BROWSE_PROJECTS holders of a fetched scheme (for metadata and ``doctor``)."""
    return [h for perm, h in snap.schemes.get(scheme_id, []) if perm == BROWSE]
