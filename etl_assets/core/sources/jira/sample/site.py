"""The in-memory sample Jira site: its state, its edits and the Jira object shapes.

:class:`JiraSite` holds what a Jira Cloud site would return (projects, issue types,
statuses, issues) as REST v3 JSON; the edit methods (:meth:`JiraSite.touch_issue`,
:meth:`JiraSite.add_issue`, ...) change it the way Jira would, so tests can watch an
incremental sync follow. The helpers below build the nested objects Jira embeds in
its responses and are shared by the generator and the REST handler.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from etl_assets.core.sources.jira.parsers import parse_jira_datetime
from etl_assets.core.sources.jira.sample.adf_nodes import paragraphs_doc

#: "Now" of the generated site: every generated ``updated`` lies before this instant.
SITE_NOW = datetime(2026, 3, 10, 17, 45, tzinfo=UTC)

# (id, name, icon file)
PRIORITIES: tuple[tuple[str, str, str], ...] = (
    ("1", "Highest", "highest.svg"),
    ("2", "High", "high.svg"),
    ("3", "Medium", "medium.svg"),
    ("4", "Low", "low.svg"),
    ("5", "Lowest", "lowest.svg"),
)

# status category key -> (id, colour, name), as Jira Cloud names them
CATEGORY_OBJ = {
    "new": (2, "blue-gray", "To Do"),
    "indeterminate": (4, "yellow", "In Progress"),
    "done": (3, "green", "Done"),
}


def format_jira_timestamp(value: datetime) -> str:
    """``2026-03-04T10:15:30.123+0000`` (Jira's REST timestamp format, always UTC here)."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}+0000"


def stored_datetime(value: str) -> datetime:
    """A timestamp the site holds, parsed by the sync's own parser (ValueError if it is none)."""
    parsed = parse_jira_datetime(value)
    if parsed is None:
        raise ValueError(f"not a Jira timestamp: {value!r}")
    return parsed


def key_sort(key: str) -> tuple[str, int]:
    """Sort key for issue keys in Jira's order: by project, then by number (PAY-2 < PAY-10)."""
    project, _, number = key.rpartition("-")
    return project, int(number) if number.isdigit() else 0


@dataclass
class JiraSite:
    """An in-memory Jira Cloud site; the handler serves its current state."""

    base_url: str
    projects: list[dict[str, Any]]
    issue_types: list[dict[str, Any]]
    statuses: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: issue key -> topic id (private labels for retrieval tests; not in any field)
    topics: dict[str, str] = field(default_factory=dict)
    #: issue key -> language code of its summary and description ("en", "de", ...)
    languages: dict[str, str] = field(default_factory=dict)
    #: keys of the issues generated with a very long description (3,000-6,000 words)
    long_issue_keys: list[str] = field(default_factory=list)
    #: project id -> components ({"self","id","name"}) issues of that project may use
    components: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: users that appear as leads, assignees and reporters
    users: list[dict[str, Any]] = field(default_factory=list)
    #: the API user's profile time zone (IANA): what ``/myself`` reports and the zone JQL date
    #: literals are read in, as on Jira Cloud
    time_zone: str = "UTC"
    #: planted comment text -> keys of the issues whose comments say it (see ``documents``)
    comment_facts: dict[str, list[str]] = field(default_factory=dict)
    #: planted "Root cause" custom field text -> keys of the issues that carry it
    custom_facts: dict[str, list[str]] = field(default_factory=dict)
    #: custom fields beyond the standard ones ``GET /rest/api/3/field`` lists (e.g. the pickers
    #: the permission fixture fills)
    fields: list[dict[str, Any]] = field(default_factory=list)
    #: the site's access rules (``sample.permissions.PermissionFixture``), when it has them; the
    #: REST handler then serves the permission endpoints over them
    permissions: Any = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _next_issue_id: int = field(default=0, repr=False, compare=False)

    # ---- lookups -------------------------------------------------------------------

    def issue(self, key_or_id: str) -> dict[str, Any]:
        """The stored issue with this key (case-insensitive) or id; KeyError if none."""
        wanted = key_or_id.upper()
        for issue in self.issues:
            if issue["key"] == wanted or issue["id"] == key_or_id:
                return issue
        raise KeyError(key_or_id)

    def project(self, id_or_key: str) -> dict[str, Any]:
        """The stored project with this id or key (case-insensitive); KeyError if none."""
        wanted = id_or_key.upper()
        for project in self.projects:
            if project["id"] == id_or_key or project["key"] == wanted:
                return project
        raise KeyError(id_or_key)

    def latest_updated(self) -> datetime:
        """The most recent ``updated`` of any issue (``SITE_NOW`` for an empty site)."""
        if not self.issues:
            return SITE_NOW
        return max(stored_datetime(i["fields"]["updated"]) for i in self.issues)

    # ---- mutations -----------------------------------------------------------------

    def touch_issue(
        self,
        key: str,
        *,
        summary: str | None = None,
        description: str | dict[str, Any] | None = None,
        updated: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Edit an issue and bump its ``updated``.

        ``description`` may be an ADF doc or a plain string (stored as ADF paragraphs).
        Without ``updated`` the new timestamp is one minute after the latest
        ``updated`` of any issue, so an incremental ``updated >=`` query finds it.
        """
        with self._lock:
            issue = self.issue(key)
            fields = issue["fields"]
            if summary is not None:
                fields["summary"] = summary
            if description is not None:
                fields["description"] = paragraphs_doc(description) if isinstance(description, str) else description
            fields["updated"] = self._next_timestamp(updated)
            self._refresh_links()
            return issue

    def add_issue(
        self,
        project_key: str,
        *,
        summary: str,
        description: str | dict[str, Any] | None = None,
        issue_type: str = "Task",
        topic: str | None = None,
        created: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Create an issue at the end of ``project_key`` (next id and key number)."""
        with self._lock:
            project = self.project(project_key)
            types = project.get("issueTypes") or []
            itype = next((t for t in types if t["name"].lower() == issue_type.lower()), None)
            if itype is None:
                itype = next(t for t in types if t["hierarchyLevel"] == 0)
            status = self._statuses_for(project)[0]
            stamp = self._next_timestamp(created)
            number = 1 + max(
                (int(i["key"].rsplit("-", 1)[1]) for i in self.issues if i["fields"]["project"]["id"] == project["id"]),
                default=0,
            )
            issue_id = str(self._next_issue_id)
            self._next_issue_id += 1
            key = f"{project['key']}-{number}"
            users = self.users or [user_obj(self.base_url, 0, "Sample User", "UTC", True)]
            desc: dict[str, Any] | None
            if isinstance(description, str):
                desc = paragraphs_doc(description)
            else:
                desc = description
            base = self.base_url
            fields = base_fields(
                base,
                summary=summary,
                description=desc,
                itype=itype,
                status=status,
                project=project,
                priority=PRIORITIES[2],
                reporter=users[0],
                assignee=None,
                created=stamp,
                updated=stamp,
                rank=f"0|i{int(issue_id):05x}:",
            )
            fields["watches"]["self"] = f"{base}/rest/api/3/issue/{key}/watchers"
            issue = {
                "id": issue_id,
                "key": key,
                "self": f"{self.base_url}/rest/api/3/issue/{issue_id}",
                "fields": fields,
            }
            self.issues.append(issue)
            self.languages[key] = "en"
            if topic is not None:
                self.topics[key] = topic
            return issue

    def delete_issue(self, key: str) -> list[str]:
        """Delete an issue and its sub-tasks (as Jira does); returns the deleted keys."""
        with self._lock:
            issue = self.issue(key)
            doomed = {issue["key"]}
            doomed.update(i["key"] for i in self.issues if (i["fields"].get("parent") or {}).get("id") == issue["id"])
            self.issues = [i for i in self.issues if i["key"] not in doomed]
            for k in doomed:
                self.topics.pop(k, None)
                self.languages.pop(k, None)
            self.long_issue_keys = [k for k in self.long_issue_keys if k not in doomed]
            self._refresh_links()
            return sorted(doomed)

    def delete_project(self, project_id: str) -> list[str]:
        """Delete a project (id or key), its issues and its team-managed (scoped) issue
        types and statuses; returns the deleted issue keys."""
        with self._lock:
            project = self.project(project_id)
            pid = project["id"]
            self.projects = [p for p in self.projects if p["id"] != pid]
            gone = [i["key"] for i in self.issues if i["fields"]["project"]["id"] == pid]
            gone_set = set(gone)
            self.issues = [i for i in self.issues if i["key"] not in gone_set]
            for k in gone:
                self.topics.pop(k, None)
                self.languages.pop(k, None)
            self.long_issue_keys = [k for k in self.long_issue_keys if k not in gone_set]
            self.issue_types = [t for t in self.issue_types if scope_pid(t) != pid]
            self.statuses = [s for s in self.statuses if scope_pid(s) != pid]
            self.components.pop(pid, None)
            self._refresh_links()
            return gone

    def rename_project(self, project_id: str, name: str) -> dict[str, Any]:
        """Rename a project; the embedded project in its issues follows, as in Jira."""
        with self._lock:
            project = self.project(project_id)
            project["name"] = name
            for issue in self.issues:
                if issue["fields"]["project"]["id"] == project["id"]:
                    issue["fields"]["project"]["name"] = name
            return project

    # ---- internals -----------------------------------------------------------------

    def _next_timestamp(self, value: datetime | str | None) -> str:
        if isinstance(value, str):
            stored_datetime(value)  # refuse what Jira would not send
            return value
        if isinstance(value, datetime):
            return format_jira_timestamp(value)
        return format_jira_timestamp(self.latest_updated() + timedelta(minutes=1))

    def _statuses_for(self, project: dict[str, Any]) -> list[dict[str, Any]]:
        scoped = [s for s in self.statuses if scope_pid(s) == project["id"]]
        if scoped:
            return scoped
        return [s for s in self.statuses if "scope" not in s]

    def _refresh_links(self) -> None:
        """Recompute the denormalised ``parent`` and ``subtasks`` copies."""
        by_id = {i["id"]: i for i in self.issues}
        children: dict[str, list[dict[str, Any]]] = {}
        for issue in self.issues:
            parent = issue["fields"].get("parent")
            if parent is None:
                continue
            target = by_id.get(parent["id"])
            if target is None:  # the parent was deleted: Jira would have deleted it too
                issue["fields"].pop("parent", None)
                continue
            issue["fields"]["parent"] = issue_link(self.base_url, target)
            if issue["fields"]["issuetype"].get("subtask"):
                children.setdefault(target["id"], []).append(issue)
        for issue in self.issues:
            kids = children.get(issue["id"], [])
            issue["fields"]["subtasks"] = [issue_link(self.base_url, k) for k in kids]


def scope_pid(obj: dict[str, Any]) -> str | None:
    """The project a team-managed (project-scoped) issue type or status belongs to, else None."""
    scope = obj.get("scope")
    if not scope:
        return None
    return scope.get("project", {}).get("id")


def issue_link(base: str, issue: dict[str, Any]) -> dict[str, Any]:
    """The compact issue copy Jira embeds as ``parent`` and in ``subtasks``."""
    fields = issue["fields"]
    return {
        "id": issue["id"],
        "key": issue["key"],
        "self": f"{base}/rest/api/3/issue/{issue['id']}",
        "fields": {
            "summary": fields["summary"],
            "status": fields["status"],
            "priority": fields["priority"],
            "issuetype": fields["issuetype"],
        },
    }


def user_obj(base: str, n: int, name: str, tz: str, active: bool) -> dict[str, Any]:
    """The n-th user as Jira Cloud returns one, with an account id of either modern or legacy form."""
    digest = hashlib.sha1(f"{n}:{name}".encode()).hexdigest()
    if n % 3 == 0:
        account_id = f"712020:{uuid.UUID(digest[:32])}"
    else:
        account_id = "5" + digest[:23]
    initials = "".join(part[0] for part in name.split()[:2]).upper() or "U"
    avatar = (
        f"https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/initials/{quote(initials)}-{n % 6}.png"
    )
    return {
        "self": f"{base}/rest/api/3/user?accountId={account_id}",
        "accountId": account_id,
        "avatarUrls": {size: avatar for size in ("48x48", "24x24", "16x16", "32x32")},
        "displayName": name,
        "active": active,
        "timeZone": tz,
        "accountType": "atlassian",
    }


def lead_ref(user: dict[str, Any]) -> dict[str, Any]:
    """The shorter user copy Jira embeds as a project's ``lead``."""
    return {k: user[k] for k in ("self", "accountId", "avatarUrls", "displayName", "active")}


def avatar_urls(base: str, kind: str, avatar_id: int) -> dict[str, str]:
    """The four ``avatarUrls`` sizes of a project or issue type avatar."""
    root = f"{base}/rest/api/3/universal_avatar/view/type/{kind}/avatar/{avatar_id}"
    return {
        "48x48": root,
        "24x24": f"{root}?size=small",
        "16x16": f"{root}?size=xsmall",
        "32x32": f"{root}?size=medium",
    }


def status_category(base: str, key: str) -> dict[str, Any]:
    """The ``statusCategory`` object of a status (``new``, ``indeterminate`` or ``done``)."""
    cid, color, name = CATEGORY_OBJ[key]
    return {
        "self": f"{base}/rest/api/3/statuscategory/{cid}",
        "id": cid,
        "key": key,
        "colorName": color,
        "name": name,
    }


def issue_status(status: dict[str, Any]) -> dict[str, Any]:
    """A status as embedded in an issue: without the fields only the status list carries."""
    return {k: v for k, v in status.items() if k not in ("scope", "untranslatedName")}


def issue_type_ref(itype: dict[str, Any]) -> dict[str, Any]:
    """An issue type as embedded in an issue: without the fields only the type list carries."""
    return {k: v for k, v in itype.items() if k not in ("scope", "untranslatedName")}


def priority_obj(base: str, prio: tuple[str, str, str]) -> dict[str, Any]:
    """An issue's ``priority`` object."""
    pid, name, icon = prio
    return {
        "self": f"{base}/rest/api/3/priority/{pid}",
        "iconUrl": f"{base}/images/icons/priorities/{icon}",
        "name": name,
        "id": pid,
    }


def base_fields(
    base: str,
    *,
    summary: str,
    description: dict[str, Any] | None,
    itype: dict[str, Any],
    status: dict[str, Any],
    project: dict[str, Any],
    priority: tuple[str, str, str],
    reporter: dict[str, Any],
    assignee: dict[str, Any] | None,
    created: str,
    updated: str,
    rank: str,
) -> dict[str, Any]:
    """Every field of a new issue, in the order Jira Cloud sends them; callers fill in the rest."""
    return {
        "statuscategorychangedate": created,
        "issuetype": issue_type_ref(itype),
        "project": {
            "self": project["self"],
            "id": project["id"],
            "key": project["key"],
            "name": project["name"],
            "projectTypeKey": project["projectTypeKey"],
            "simplified": project["simplified"],
            "avatarUrls": project["avatarUrls"],
        },
        "fixVersions": [],
        "resolution": None,
        "resolutiondate": None,
        "watches": {
            "self": "",
            "watchCount": 1,
            "isWatching": False,
        },
        "created": created,
        "priority": priority_obj(base, priority),
        "labels": [],
        "versions": [],
        "issuelinks": [],
        "assignee": assignee,
        "updated": updated,
        "status": issue_status(status),
        "components": [],
        "description": description,
        "summary": summary,
        "creator": reporter,
        "subtasks": [],
        "reporter": reporter,
        "duedate": None,
        "environment": None,
        "customfield_10019": rank,
        "customfield_10020": None,
        "security": None,  # no issue security level (Jira sends null when asked for the field)
    }
