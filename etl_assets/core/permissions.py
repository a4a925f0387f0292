"""Who may see a Jira issue or comment: access lists of principals, computed from fetched permissions.

Pure and Dagster-free. The Jira permission stage fetches a tenant's permission schemes, role
actors, issue security levels, application roles and group members into a
:class:`PermissionSnapshot`; :func:`issue_access` and :func:`comment_access` turn it, with an
issue's own fields (:class:`IssueFacts`), into an **access list**: a sorted tuple of principals

* ``public`` — anyone, including anonymous users (the ``anyone`` holder);
* ``user:<accountId>``;
* ``group:<groupId>``;
* ``restricted:unreadable`` — the fail-safe marker: the rules could not be read, so only an
  ``--unrestricted`` operator search (which applies no access filter at all) sees the point.

A searcher is admitted when their principals (:func:`principals_of`: their user, their groups
and ``public``) meet the list — the match-any filter the vector store applies on the keyword
payload ``access``.

**Intersections are materialised, not stored as conjunctions.** Jira lets a user see an issue
when they hold BROWSE_PROJECTS in its project *and* (when the issue has a security level) are a
member of that level; a restricted comment additionally requires its role or group. Each side
is a union of principals; a match-any filter cannot say "in group A and in group B". Encoding
conjunctions as pair tokens (``group:A&group:B``) would make every searcher's filter carry every
pair (and triple) of their principals. Instead :func:`meet` computes the intersection as one
list: a principal present on both sides stays as it is (so a list keeps ``group:eng`` when
both sides name ``group:eng``), ``public`` on one side yields the other side, and everything
else is expanded to the users the two sides have in common (``user:<accountId>``), minus users
already covered by a kept group. The list is exact as of the permission sync; a later change of
group membership reaches kept ``group:`` principals at once (the searcher's groups are resolved
at query time) and expanded users at the next sync — both in the safe direction for removals
from kept groups, and a removal from an expanded group is a list change the sync writes.

**Fail safe.** A scheme, a level's members, a role's actors, an application role or a group's
members that the API user could not read (HTTP 401/403) — or a level the snapshot does not know
— make the affected issue (and its comments) ``("restricted:unreadable",)``, with a reason.
Nothing unknown ever becomes ``public``. A holder type we do not know grants nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PUBLIC = "public"
RESTRICTED = "restricted:unreadable"
BROWSE = "BROWSE_PROJECTS"

AccessList = tuple[str, ...]


def user_principal(account_id: str) -> str:
    return f"user:{account_id}"


def group_principal(group_id: str) -> str:
    return f"group:{group_id}"


@dataclass(frozen=True)
class Holder:
    """A grant's or level member's holder, as Jira describes it (``type`` + identifier).

    ``value`` is the identifier we resolve by: the groupId for ``group``, the accountId for
    ``user``, the role id for ``projectRole``, the field id for ``userCustomField`` /
    ``groupCustomField``, the application key (or ``""`` for any) for ``applicationRole``.
    """

    type: str
    value: str = ""


class Unreadable(Exception):
    """Raised while resolving when a rule the answer depends on could not be read."""


@dataclass
class PermissionSnapshot:
    """One tenant's permission rules as fetched; ``unreadable`` maps what failed to why."""

    # project id -> permission scheme id; a project absent here has an unreadable scheme
    project_schemes: dict[str, str] = field(default_factory=dict)
    # scheme id -> [(permission key, holder)]
    schemes: dict[str, list[tuple[str, Holder]]] = field(default_factory=dict)
    project_leads: dict[str, str] = field(default_factory=dict)
    # (project id, role id) -> principals of the role's actors (users and groups)
    role_actors: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    # (project id, role name) -> role id, for comment visibility given by name only
    role_names: dict[tuple[str, str], str] = field(default_factory=dict)
    # security level id -> member holders; a level absent here is unreadable
    levels: dict[str, list[Holder]] = field(default_factory=dict)
    # application key -> groupIds with access; "" is absent unless fetched
    app_role_groups: dict[str, frozenset[str]] = field(default_factory=dict)
    app_roles_readable: bool = True
    # groupId -> accountIds; a group absent here has unreadable members
    group_members: dict[str, frozenset[str]] = field(default_factory=dict)
    group_names: dict[str, str] = field(default_factory=dict)  # group name -> groupId
    # what could not be read: "project:<key or id>" / "level:<id>" / "group:<id>" ... -> one-line reason
    unreadable: dict[str, str] = field(default_factory=dict)
    project_keys: dict[str, str] = field(default_factory=dict)  # project id -> key, for messages


@dataclass(frozen=True)
class CommentFacts:
    id: str
    visibility_type: str | None = None  # "role" | "group" | None (visible to the issue's audience)
    visibility_id: str | None = None  # role id / groupId (Jira's ``identifier``)
    visibility_value: str | None = None  # role name / group name (Jira's ``value``)


@dataclass(frozen=True)
class IssueFacts:
    """What access depends on in an issue: its project, level, people and custom fields."""

    id: str
    key: str
    project_id: str
    security_level_id: str | None = None
    reporter: str | None = None
    assignee: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    comments: tuple[CommentFacts, ...] = ()
    # False when the issue was read without its ``security`` field: a level we cannot see
    # must not read as "no level" (that would open a restricted issue), so access fails safe.
    security_known: bool = True
    # The custom fields whose values ``fields`` holds for certain (the site's user/group pickers
    # the issue sync asked for); None: ``fields`` is the whole issue. A user/group custom-field
    # holder naming a field outside it fails safe: an unread picker is not an empty one.
    known_fields: frozenset[str] | None = None


def issue_facts_from_json(issue: Mapping[str, Any]) -> IssueFacts:
    """:class:`IssueFacts` from an issue as Jira returns it (``fields`` with security, people, comments)."""
    fields = issue.get("fields") or {}
    security = fields.get("security") or None
    comment_field = fields.get("comment") or {}
    listed = comment_field.get("comments") or [] if isinstance(comment_field, dict) else []
    comments = [comment_facts_from_json(c) for c in listed]
    return IssueFacts(
        id=str(issue["id"]),
        key=str(issue.get("key", issue["id"])),
        project_id=str((fields.get("project") or {}).get("id", "")),
        security_level_id=str(security["id"]) if isinstance(security, dict) and security.get("id") else None,
        reporter=_account(fields.get("reporter")),
        assignee=_account(fields.get("assignee")),
        fields={k: v for k, v in fields.items() if k.startswith("customfield_")},
        comments=tuple(comments),
        security_known="security" in fields,
    )


def comment_facts_from_json(comment: Mapping[str, Any]) -> CommentFacts:
    """:class:`CommentFacts` from a comment as Jira returns it (``id``, optional ``visibility``)."""
    vis = comment.get("visibility") or {}
    return CommentFacts(
        id=str(comment["id"]),
        visibility_type=vis.get("type"),
        visibility_id=None if vis.get("identifier") is None else str(vis.get("identifier")),
        visibility_value=vis.get("value"),
    )


def _account(user: Any) -> str | None:
    if isinstance(user, dict) and user.get("accountId"):
        return str(user["accountId"])
    return None


# -- resolving holders -------------------------------------------------------------------------


def _custom_values(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return [value] if isinstance(value, dict) else []


def resolve_holder(snap: PermissionSnapshot, issue: IssueFacts, holder: Holder) -> frozenset[str]:
    """The principals one holder stands for on this issue (raises :class:`Unreadable`)."""
    t = holder.type
    if t == "anyone":
        return frozenset({PUBLIC})
    if t == "group":
        if holder.value.startswith("name:"):
            gid = snap.group_names.get(holder.value.removeprefix("name:"))
            if gid is None:
                raise Unreadable(f"the id of group {holder.value.removeprefix('name:')!r}")
            return frozenset({group_principal(gid)})
        return frozenset({group_principal(holder.value)}) if holder.value else frozenset()
    if t == "user":
        return frozenset({user_principal(holder.value)}) if holder.value else frozenset()
    if t == "reporter":
        return frozenset({user_principal(issue.reporter)}) if issue.reporter else frozenset()
    if t == "assignee":
        return frozenset({user_principal(issue.assignee)}) if issue.assignee else frozenset()
    if t == "projectLead":
        lead = snap.project_leads.get(issue.project_id)
        return frozenset({user_principal(lead)}) if lead else frozenset()
    if t == "projectRole":
        actors = snap.role_actors.get((issue.project_id, holder.value))
        if actors is None:
            raise Unreadable(f"the actors of role {holder.value} in project {_pkey(snap, issue.project_id)}")
        return actors
    if t in ("userCustomField", "groupCustomField") and issue.known_fields is not None:
        if holder.value not in issue.known_fields:
            raise Unreadable(f"field {holder.value} of {issue.key} (the issue sync did not read it)")
    if t == "userCustomField":
        accounts = {_account(v) for v in _custom_values(issue.fields.get(holder.value))}
        return frozenset(user_principal(a) for a in accounts if a)
    if t == "groupCustomField":
        out = set()
        for v in _custom_values(issue.fields.get(holder.value)):
            gid = v.get("groupId") or snap.group_names.get(str(v.get("name", "")))
            if not gid:
                raise Unreadable(f"group {v.get('name')!r} in field {holder.value} of {issue.key} has no known id")
            out.add(group_principal(str(gid)))
        return frozenset(out)
    if t == "applicationRole":
        if not snap.app_roles_readable:
            raise Unreadable("the application roles' groups")
        if holder.value:
            groups = snap.app_role_groups.get(holder.value)
            if groups is None:
                raise Unreadable(f"application role {holder.value!r}")
        else:  # any application access = the groups of every application role
            groups = frozenset().union(*snap.app_role_groups.values())
        return frozenset(group_principal(g) for g in groups)
    # sd.customer.portal.only and types Jira may add: grant nothing (a miss, never a leak)
    return frozenset()


def _pkey(snap: PermissionSnapshot, project_id: str) -> str:
    return snap.project_keys.get(project_id, project_id)


def _holders_union(snap: PermissionSnapshot, issue: IssueFacts, holders: Iterable[Holder]) -> frozenset[str]:
    out: set[str] = set()
    for h in holders:
        out |= resolve_holder(snap, issue, h)
    return frozenset(out)


def _members(snap: PermissionSnapshot, principals: Iterable[str]) -> set[str]:
    users: set[str] = set()
    for p in principals:
        kind, _, ident = p.partition(":")
        if kind == "user":
            users.add(ident)
        elif kind == "group":
            members = snap.group_members.get(ident)
            if members is None:
                raise Unreadable(f"the members of group {ident}")
            users |= members
    return users


def meet(snap: PermissionSnapshot, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    """The principals admitting exactly the users both ``a`` and ``b`` admit, as one list.

    Principals on both sides are kept; ``public`` on one side yields the other side; the rest
    is expanded through group members to ``user:`` principals (see the module docstring).
    """
    if RESTRICTED in a or RESTRICTED in b:
        return frozenset({RESTRICTED})
    if PUBLIC in a:
        return b
    if PUBLIC in b:
        return a
    common = a & b
    users = _members(snap, a - common) & _members(snap, b - common)
    covered: set[str] = set()
    for p in common:
        if p.startswith("group:"):
            # unreadable here only costs a redundant user entry, never access
            covered |= snap.group_members.get(p.removeprefix("group:"), frozenset())
    return common | {user_principal(u) for u in users - covered}


# -- access lists --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """An access list and, when it is the fail-safe marker, the one-line reason."""

    principals: AccessList
    reason: str | None = None


def _issue_principals(snap: PermissionSnapshot, issue: IssueFacts) -> frozenset[str]:
    scheme_id = snap.project_schemes.get(issue.project_id)
    if scheme_id is None or scheme_id not in snap.schemes:
        why = snap.unreadable.get(f"project:{_pkey(snap, issue.project_id)}", "not fetched")
        raise Unreadable(f"the permission scheme of project {_pkey(snap, issue.project_id)} ({why})")
    if not issue.security_known:
        raise Unreadable(f"the security level of {issue.key} (the issue was fetched without its 'security' field)")
    browse = _holders_union(snap, issue, (h for perm, h in snap.schemes[scheme_id] if perm == BROWSE))
    if issue.security_level_id is None:
        return browse
    level = snap.levels.get(issue.security_level_id)
    if level is None:
        why = snap.unreadable.get(f"level:{issue.security_level_id}", "not fetched")
        raise Unreadable(f"the members of security level {issue.security_level_id} ({why})")
    return meet(snap, browse, _holders_union(snap, issue, level))


def _fail_safe(issue: IssueFacts, exc: Unreadable) -> Access:
    return Access((RESTRICTED,), f"{issue.key}: cannot read {exc}")


def issue_access(snap: PermissionSnapshot, issue: IssueFacts) -> Access:
    """The access list of one issue: its project's browse holders ∩ its security level's members."""
    try:
        return Access(tuple(sorted(_issue_principals(snap, issue))))
    except Unreadable as exc:
        return _fail_safe(issue, exc)


def comment_audience(snap: PermissionSnapshot, issue: IssueFacts, comment: CommentFacts) -> frozenset[str] | None:
    """The principals a restricted comment names (None: not restricted)."""
    if comment.visibility_type == "group":
        gid = comment.visibility_id or snap.group_names.get(comment.visibility_value or "")
        if not gid:
            raise Unreadable(f"group {comment.visibility_value!r} of comment {comment.id}")
        return frozenset({group_principal(gid)})
    if comment.visibility_type == "role":
        # Jira's ``identifier`` of a role is its *name* (the spec's Visibility schema); an id is
        # accepted too when the snapshot knows that role of the project.
        rid = comment.visibility_id if (issue.project_id, comment.visibility_id or "") in snap.role_actors else None
        for name in (comment.visibility_value, comment.visibility_id):
            rid = rid or snap.role_names.get((issue.project_id, name or ""))
        if not rid:
            raise Unreadable(f"role {comment.visibility_value or comment.visibility_id!r} of comment {comment.id}")
        return resolve_holder(snap, issue, Holder("projectRole", rid))
    if comment.visibility_type:
        raise Unreadable(f"visibility type {comment.visibility_type!r} of comment {comment.id}")
    return None


def comment_access(snap: PermissionSnapshot, issue: IssueFacts, comment: CommentFacts) -> Access:
    """A comment's access list: the issue's, intersected with its role or group audience if restricted."""
    try:
        base = _issue_principals(snap, issue)
        audience = comment_audience(snap, issue, comment)
        result = base if audience is None else meet(snap, base, audience)
        return Access(tuple(sorted(result)))
    except Unreadable as exc:
        return _fail_safe(issue, exc)


def issue_point_key(issue_id: str) -> str:
    return f"issue:{issue_id}"


def comment_point_key(comment_id: str) -> str:
    return f"comment:{comment_id}"


def compute_access(snap: PermissionSnapshot, issues: Iterable[IssueFacts]) -> dict[str, Access]:
    """Access of every issue and comment, keyed ``issue:<id>`` / ``comment:<id>``."""
    out: dict[str, Access] = {}
    for issue in issues:
        out[issue_point_key(issue.id)] = issue_access(snap, issue)
        for c in issue.comments:
            out[comment_point_key(c.id)] = comment_access(snap, issue, c)
    return out


def fail_safe_reasons(snap: PermissionSnapshot) -> dict[str, str]:
    """One line per project (key) whose scheme could not be read — for metadata and ``doctor``."""
    return {k.removeprefix("project:"): v for k, v in sorted(snap.unreadable.items()) if k.startswith("project:")}


# -- principals of a searcher and the payload updates -------------------------------------------


def principals_of(account_id: str | None, group_members: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """A searcher's principals: ``public``, and for a known account its user and its groups."""
    if not account_id:
        return frozenset({PUBLIC})
    groups = {group_principal(g) for g, members in group_members.items() if account_id in set(members)}
    return frozenset({PUBLIC, user_principal(account_id)} | groups)


def admits(access: Sequence[str], principals: Iterable[str]) -> bool:
    """What the vector store's match-any filter does: any principal of the searcher in the list."""
    return not set(access).isdisjoint(principals)


def access_updates(old: Mapping[str, Sequence[str]], new: Mapping[str, Sequence[str]]) -> dict[AccessList, list[str]]:
    """The minimal payload writes taking ``old`` access lists to ``new``: new list -> point keys.

    Only points whose list changed (or that had none) are written; points that share a new list
    are grouped so that one ``set_payload`` call per distinct list suffices. Points missing from
    ``new`` are not written (deleting them is the reconciliation's job).
    """
    out: dict[AccessList, list[str]] = {}
    for key in sorted(new):
        target = tuple(sorted(set(new[key])))
        current = old.get(key)
        if current is None or tuple(sorted(set(current))) != target:
            out.setdefault(target, []).append(key)
    return out
