"""Jira permission tables (on the shared schema metadata) and their reads and writes.

A permission sync replaces a tenant's rules in one transaction (:func:`save_snapshot`: schemes,
grants, project → scheme, role actors, application roles, security levels and members, groups
and members, users, what could not be read), then records the access list of every point
(:func:`save_access`) in the same transaction, marking the changed ones ``pending``. After the
commit, the vector side writes the pending lists as payloads and clears the mark
(:func:`mark_applied`) — the commit-first rule; a payload write that fails stays pending and is
retried by the next sync, so the index converges.

No migration is needed for these tables: ``store.migrations.upgrade`` runs ``create_all``
whenever a table of the metadata is missing, and they are new tables (not changes to old ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Index,
    RowMapping,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)

from etl_assets.core.permissions import (
    Access,
    AccessList,
    CommentFacts,
    Holder,
    IssueFacts,
    PermissionSnapshot,
    access_updates,
    principals_of,
)
from etl_assets.core.sources.jira import tables as jira_tables
from etl_assets.core.sources.jira.permissions import PermissionFetch
from etl_assets.core.store.schema import TS, metadata

_T = String(48)
_V = TypeVar("_V")
_ID = String(128)


def _table(name: str, *columns: Column, index: tuple[str, ...] = ()) -> Table:
    return Table(
        name,
        metadata,
        Column("tenant_id", _T, nullable=False),
        *columns,
        Index(f"ix_{name}_tenant", "tenant_id", *index),
    )


perm_project_schemes = _table(
    "perm_project_schemes",
    Column("project_id", _ID, nullable=False),
    Column("project_key", String(64)),
    Column("scheme_id", _ID),  # NULL: unreadable (see perm_unreadable)
    Column("lead_account_id", _ID),
)
perm_grants = _table(
    "perm_grants",
    Column("scheme_id", _ID, nullable=False),
    Column("permission", String(255), nullable=False),
    Column("holder_type", String(64), nullable=False),
    Column("holder_value", String(255), nullable=False),
    index=("scheme_id",),
)
perm_role_actors = _table(
    "perm_role_actors",
    Column("project_id", _ID, nullable=False),
    Column("role_id", _ID, nullable=False),
    Column("role_name", String(255)),
    Column("principal", String(200)),  # NULL: the role has no actors (a row still says it was read)
)
perm_app_role_groups = _table(
    "perm_app_role_groups",
    Column("app_key", String(128), nullable=False),
    Column("group_id", _ID),  # NULL: the role has no groups
)
perm_level_members = _table(
    "perm_level_members",
    Column("level_id", _ID, nullable=False),
    Column("holder_type", String(64)),  # NULL: the level has no members (read, empty)
    Column("holder_value", String(255)),
)
perm_groups = _table(
    "perm_groups",
    Column("group_id", _ID, nullable=False),
    Column("name", String(255)),
)
perm_group_members = _table(
    "perm_group_members",
    Column("group_id", _ID, nullable=False),
    Column("account_id", _ID, nullable=False),
    index=("account_id",),
)
perm_users = _table(
    "perm_users",
    Column("account_id", _ID, nullable=False),
    Column("email", String(320)),
    Column("display_name", String(1000)),
    Column("active", Boolean, nullable=False),
    index=("account_id",),
)
perm_unreadable = _table(
    "perm_unreadable",
    Column("what", String(255), nullable=False),
    Column("reason", Text, nullable=False),
)
perm_meta = _table("perm_meta", Column("app_roles_readable", Boolean, nullable=False))
perm_access = _table(
    "perm_access",
    Column("point_key", String(128), nullable=False),
    Column("access", JSON, nullable=False),
    Column("reason", Text),
    Column("pending", Boolean, nullable=False),
    Column("updated_at", TS, nullable=False),
    index=("point_key",),
)

SNAPSHOT_TABLES = (
    perm_project_schemes,
    perm_grants,
    perm_role_actors,
    perm_app_role_groups,
    perm_level_members,
    perm_groups,
    perm_group_members,
    perm_users,
    perm_unreadable,
    perm_meta,
)


def _or_none(items: list[_V]) -> list[_V | None]:
    """The items, or one ``None`` — the row that records "read, and empty"."""
    return list(items) if items else [None]


def save_snapshot(conn: Connection, tenant_id: str, fetched: PermissionFetch) -> None:
    """Replace the tenant's permission rules with ``fetched`` (inside the caller's transaction)."""
    snap = fetched.snapshot
    for table in SNAPSHOT_TABLES:
        conn.execute(delete(table).where(table.c.tenant_id == tenant_id))

    def put(table: Table, rows: Iterable[Mapping[str, object]]) -> None:
        rows = [{"tenant_id": tenant_id, **r} for r in rows]
        if rows:
            conn.execute(insert(table), rows)

    put(
        perm_project_schemes,
        (
            {
                "project_id": pid,
                "project_key": key,
                "scheme_id": snap.project_schemes.get(pid),
                "lead_account_id": snap.project_leads.get(pid),
            }
            for pid, key in snap.project_keys.items()
        ),
    )
    put(
        perm_grants,
        (
            {"scheme_id": sid, "permission": perm, "holder_type": h.type, "holder_value": h.value}
            for sid, grants in snap.schemes.items()
            for perm, h in grants
        ),
    )
    role_names = {(pid, rid): name for (pid, name), rid in snap.role_names.items()}
    put(
        perm_role_actors,
        (
            {"project_id": pid, "role_id": rid, "role_name": role_names.get((pid, rid)), "principal": p}
            for (pid, rid), actors in snap.role_actors.items()
            for p in _or_none(sorted(actors))
        ),
    )
    put(
        perm_app_role_groups,
        ({"app_key": k, "group_id": g} for k, groups in snap.app_role_groups.items() for g in _or_none(sorted(groups))),
    )
    put(
        perm_level_members,
        (
            {
                "level_id": lid,
                "holder_type": h.type if h is not None else None,
                "holder_value": h.value if h is not None else None,
            }
            for lid, members in snap.levels.items()
            for h in _or_none(members)
        ),
    )
    names = {gid: name for name, gid in snap.group_names.items()}
    put(perm_groups, ({"group_id": g, "name": names.get(g)} for g in snap.group_members))
    put(
        perm_group_members,
        ({"group_id": g, "account_id": a} for g, members in snap.group_members.items() for a in sorted(members)),
    )
    put(
        perm_users,
        (
            {"account_id": a, "email": u.get("email"), "display_name": u.get("display_name"), "active": u["active"]}
            for a, u in fetched.users.items()
        ),
    )
    put(perm_unreadable, ({"what": w, "reason": r} for w, r in snap.unreadable.items()))
    put(perm_meta, [{"app_roles_readable": snap.app_roles_readable}])


def load_snapshot(conn: Connection, tenant_id: str) -> PermissionSnapshot:
    """The tenant's committed permission rules as a :class:`PermissionSnapshot`."""
    snap = PermissionSnapshot()

    def rows(table: Table) -> list[RowMapping]:
        return list(conn.execute(select(table).where(table.c.tenant_id == tenant_id)).mappings())

    for r in rows(perm_project_schemes):
        pid = str(r["project_id"])
        snap.project_keys[pid] = str(r["project_key"])
        if r["scheme_id"] is not None:
            snap.project_schemes[pid] = str(r["scheme_id"])
        if r["lead_account_id"] is not None:
            snap.project_leads[pid] = str(r["lead_account_id"])
    for r in rows(perm_grants):
        snap.schemes.setdefault(str(r["scheme_id"]), []).append(
            (str(r["permission"]), Holder(str(r["holder_type"]), str(r["holder_value"])))
        )
    actors: dict[tuple[str, str], set[str]] = {}
    for r in rows(perm_role_actors):
        key = (str(r["project_id"]), str(r["role_id"]))
        actors.setdefault(key, set())
        if r["principal"] is not None:
            actors[key].add(str(r["principal"]))
        if r["role_name"] is not None:
            snap.role_names[(key[0], str(r["role_name"]))] = key[1]
    snap.role_actors = {k: frozenset(v) for k, v in actors.items()}
    apps: dict[str, set[str]] = {}
    for r in rows(perm_app_role_groups):
        apps.setdefault(str(r["app_key"]), set()).update([str(r["group_id"])] if r["group_id"] is not None else [])
    snap.app_role_groups = {k: frozenset(v) for k, v in apps.items()}
    for r in rows(perm_level_members):
        members = snap.levels.setdefault(str(r["level_id"]), [])
        if r["holder_type"] is not None:
            members.append(Holder(str(r["holder_type"]), str(r["holder_value"] or "")))
    groups: dict[str, set[str]] = {}
    for r in rows(perm_groups):
        groups[str(r["group_id"])] = set()
        if r["name"] is not None:
            snap.group_names[str(r["name"])] = str(r["group_id"])
    for r in rows(perm_group_members):
        groups.setdefault(str(r["group_id"]), set()).add(str(r["account_id"]))
    snap.group_members = {g: frozenset(m) for g, m in groups.items()}
    snap.unreadable = {str(r["what"]): str(r["reason"]) for r in rows(perm_unreadable)}
    meta = list(rows(perm_meta))
    snap.app_roles_readable = bool(meta[0]["app_roles_readable"]) if meta else False
    return snap


def save_access(
    conn: Connection, tenant_id: str, access: Mapping[str, Access], *, now: datetime | None = None
) -> dict[AccessList, list[str]]:
    """Record every point's access list; mark changed ones pending; return all pending writes.

    Rows of points no longer in ``access`` are deleted (their points are deleted by the vector
    reconciliation). Returns :func:`pending_access` after the write, i.e. this sync's changes
    plus any a previous sync committed but could not write to the index.
    """
    now = now or datetime.now(UTC)
    stored = {
        str(r.point_key): tuple(r.access)
        for r in conn.execute(
            select(perm_access.c.point_key, perm_access.c.access).where(perm_access.c.tenant_id == tenant_id)
        )
    }
    changes = access_updates(stored, {k: a.principals for k, a in access.items()})
    gone = set(stored) - set(access)
    if gone:
        conn.execute(
            delete(perm_access).where(perm_access.c.tenant_id == tenant_id, perm_access.c.point_key.in_(sorted(gone)))
        )
    for acl, keys in changes.items():
        existing = [k for k in keys if k in stored]
        if existing:
            conn.execute(
                delete(perm_access).where(perm_access.c.tenant_id == tenant_id, perm_access.c.point_key.in_(existing))
            )
        conn.execute(
            insert(perm_access),
            [
                {
                    "tenant_id": tenant_id,
                    "point_key": k,
                    "access": list(acl),
                    "reason": access[k].reason,
                    "pending": True,
                    "updated_at": now,
                }
                for k in keys
            ],
        )
    return pending_access(conn, tenant_id)


def pending_access(conn: Connection, tenant_id: str) -> dict[AccessList, list[str]]:
    """Committed access lists not yet written to the index: list -> point keys."""
    out: dict[AccessList, list[str]] = {}
    query = (
        select(perm_access.c.point_key, perm_access.c.access)
        .where(perm_access.c.tenant_id == tenant_id, perm_access.c.pending.is_(True))
        .order_by(perm_access.c.point_key)
    )
    for r in conn.execute(query):
        out.setdefault(tuple(r.access), []).append(str(r.point_key))
    return out


def mark_applied(
    conn: Connection, tenant_id: str, point_keys: Iterable[str], *, read_at: datetime | None = None
) -> None:
    """Clear the pending mark of points whose payload the index now has.

    ``read_at``: when the pending lists were read; a list a later sync committed after that
    (not the one written) stays pending.
    """
    keys = sorted(set(point_keys))
    for start in range(0, len(keys), 500):
        stmt = update(perm_access).where(
            perm_access.c.tenant_id == tenant_id, perm_access.c.point_key.in_(keys[start : start + 500])
        )
        if read_at is not None:
            stmt = stmt.where(perm_access.c.updated_at <= read_at)
        conn.execute(stmt.values(pending=False))


def access_of(conn: Connection, tenant_id: str, kind: str, external_ids: Sequence[str]) -> dict[str, AccessList]:
    """The committed access lists of points of ``kind`` (``issue``, ``comment``): external id -> list.

    Ids without a list (not yet seen by a permission sync) are left out: their points get no
    ``access`` payload, which no principal matches (fail safe).
    """
    out: dict[str, AccessList] = {}
    keys = [f"{kind}:{i}" for i in external_ids]
    for start in range(0, len(keys), 500):
        query = select(perm_access.c.point_key, perm_access.c.access).where(
            perm_access.c.tenant_id == tenant_id, perm_access.c.point_key.in_(keys[start : start + 500])
        )
        for r in conn.execute(query):
            out[str(r.point_key).partition(":")[2]] = tuple(r.access)
    return out


def committed_access(conn: Connection, tenant_id: str) -> dict[str, AccessList]:
    query = select(perm_access.c.point_key, perm_access.c.access).where(perm_access.c.tenant_id == tenant_id)
    return {str(r.point_key): tuple(r.access) for r in conn.execute(query)}


class UnknownPrincipal(LookupError):
    pass


def resolve_principal(conn: Connection, tenant_id: str, who: str) -> frozenset[str]:
    """A searcher's principals from the committed tables: ``who`` is an e-mail or an accountId.

    Raises :class:`UnknownPrincipal` (one line, naming tenant and who) when the tenant's users
    table knows neither; an operator who wants anonymous access asks for it explicitly.
    """
    query = select(perm_users.c.account_id).where(perm_users.c.tenant_id == tenant_id)
    match = conn.execute(query.where(perm_users.c.account_id == who)).first()
    if match is None and "@" in who:
        found = conn.execute(query.where(func.lower(perm_users.c.email) == who.strip().lower())).all()
        if len(found) > 1:
            raise UnknownPrincipal(f"tenant {tenant_id!r}: e-mail {who!r} belongs to {len(found)} accounts")
        match = found[0] if found else None
    if match is None:
        raise UnknownPrincipal(f"tenant {tenant_id!r}: no user {who!r} in the committed permission tables")
    account = str(match[0])
    groups = conn.execute(
        select(perm_group_members.c.group_id).where(
            perm_group_members.c.tenant_id == tenant_id, perm_group_members.c.account_id == account
        )
    )
    return principals_of(account, {str(g[0]): [account] for g in groups})


# -- what the permission stage reads from the committed entity tables ---------------------------


def _comment_facts(external_id: str, facts: Any, legacy: str | None) -> CommentFacts:
    if isinstance(facts, dict):
        vis = facts.get("visibility")
        if not isinstance(vis, dict):
            return CommentFacts(str(external_id))
        return CommentFacts(
            str(external_id),
            visibility_type=vis.get("type"),
            visibility_id=vis.get("identifier"),
            visibility_value=vis.get("value"),
        )
    if legacy:
        # a row from before schema version 5: "role:Developers" / "group:jira-admins" (by name;
        # resolved through the role and group names the permission sync reads, or fails safe)
        kind, _, name = legacy.partition(":")
        return CommentFacts(str(external_id), visibility_type=kind or "restricted", visibility_value=name or None)
    return CommentFacts(str(external_id))


def _picker_field(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A picker's stored facts in the shape :func:`~etl_assets.core.permissions.resolve_holder` reads."""
    if entry.get("kind") == "user":
        return [{"accountId": a} for a in entry.get("users") or []]
    return [
        {k: v for k, v in (("groupId", g.get("groupId")), ("name", g.get("name"))) if v is not None}
        for g in entry.get("groups") or []
        if isinstance(g, dict)
    ]


def _issue_facts(row: RowMapping, comments: tuple[CommentFacts, ...]) -> IssueFacts:
    ext, key = str(row["external_id"]), str(row["key"])
    facts = row["access_facts"]
    if not isinstance(facts, dict):
        # written before schema version 5: the level, people and pickers are unknown -> fail safe
        return IssueFacts(
            id=ext,
            key=key,
            project_id=str(row["project_external_id"] or ""),
            comments=comments,
            security_known=False,
            known_fields=frozenset(),
        )
    stored = facts.get("pickers")
    pickers: dict[str, Any] = stored if isinstance(stored, dict) else {}
    return IssueFacts(
        id=ext,
        key=key,
        project_id=str(facts.get("project_id") or row["project_external_id"] or ""),
        security_level_id=facts.get("security_level_id"),
        reporter=facts.get("reporter"),
        assignee=facts.get("assignee"),
        fields={fid: _picker_field(v) for fid, v in pickers.items() if isinstance(v, dict)},
        comments=comments,
        security_known=bool(facts.get("security_known")),
        known_fields=frozenset(pickers) if facts.get("pickers_known") else frozenset(),
    )


def issue_facts(conn: Connection, tenant_id: str) -> list[IssueFacts]:
    """:class:`IssueFacts` (with their comments) of the tenant's committed, live issues, by key.

    Live means ``deleted_at IS NULL``, the store's rule. Rows written before schema version 5
    (``access_facts`` NULL) give facts with ``security_known=False`` and no readable pickers, so
    their access fails safe until the issue sync writes them again.
    """
    issues, comments = jira_tables.issues, jira_tables.comments
    by_issue: dict[str, list[CommentFacts]] = {}
    query = (
        select(comments.c.issue_external_id, comments.c.external_id, comments.c.access_facts, comments.c.visibility)
        .where(comments.c.tenant_id == tenant_id, comments.c.deleted_at.is_(None))
        .order_by(comments.c.id)
    )
    for r in conn.execute(query):
        by_issue.setdefault(str(r.issue_external_id), []).append(
            _comment_facts(r.external_id, r.access_facts, r.visibility)
        )
    rows = conn.execute(
        select(issues.c.external_id, issues.c.key, issues.c.project_external_id, issues.c.access_facts)
        .where(issues.c.tenant_id == tenant_id, issues.c.deleted_at.is_(None))
        .order_by(issues.c.key)
    ).mappings()
    return [_issue_facts(r, tuple(by_issue.get(str(r["external_id"]), ()))) for r in rows]


def projects_for_permissions(conn: Connection, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's committed, live projects as :func:`~.permissions.fetch_permissions` takes them:
    ``{"id", "key", "lead": {"accountId"} or None}`` (the lead's accountId from the landed record)."""
    projects = jira_tables.projects
    rows = conn.execute(
        select(projects.c.external_id, projects.c.key, projects.c.data)
        .where(projects.c.tenant_id == tenant_id, projects.c.deleted_at.is_(None))
        .order_by(projects.c.key)
    )
    out: list[dict[str, Any]] = []
    for r in rows:
        lead = r.data.get("lead") if isinstance(r.data, dict) else None
        account = lead.get("accountId") if isinstance(lead, dict) else None
        out.append(
            {"id": str(r.external_id), "key": str(r.key), "lead": {"accountId": str(account)} if account else None}
        )
    return out
