"""Parsers from Jira REST payloads to table rows.

Each parser takes one Jira object (a project, an issue type, a status, an issue) as
Jira sends it — v3 Cloud or, for the real captures we test against, v2 Server — and
returns a flat dict of the columns we keep. A record that cannot be understood raises
:class:`RecordError` with a reason; the caller quarantines it and carries on.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from etl_assets.core.records import RecordError
from etl_assets.core.sources.jira import custom_fields
from etl_assets.core.sources.jira.adf import adf_to_markdown

MAX_TEXT = 200_000  # longer fields are cut: nothing legitimate in Jira is this long
MAX_SHORT = 1_000
MAX_ID = 64  # ids and keys: the width of their columns; longer ones are refused, never cut (cut ids collide)
# JSON levels in one record. Jira's editor nests nowhere near this; Python's JSON codec gives
# up near 1,000 levels, so a deeper record could not even be quarantined intact.
MAX_NESTING = 256


def _clean(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    # Lone surrogates cannot be stored in UTF-8 columns; replace rather than refuse.
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return text[:limit].strip()


def _str(obj: Mapping[str, Any], key: str, *, limit: int = MAX_SHORT) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    text = _clean(value, limit)
    return text or None


def _storable(text: str) -> bool:
    """Neither a NUL nor an unpaired surrogate: what every database column can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _ref(obj: Mapping[str, Any], key: str, what: str, ext: str | None) -> str | None:
    """An id or key that identifies or references something: refused when it cannot fit its column."""
    value = obj.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    text = _clean(value, MAX_TEXT)
    if len(text) > MAX_ID:
        raise RecordError(f"{what}: '{key}' is {len(text)} characters long (at most {MAX_ID})", ext)
    return text or None


def _check_nesting(record: object, what: str, ext: str) -> None:
    # Iterative on purpose: the point is to survive structures too deep for recursion.
    stack: list[tuple[object, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise RecordError(f"{what}: the record nests more than {MAX_NESTING} levels deep", ext)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _obj(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def external_id(record: object, what: str, *, nesting_of: object = None) -> str:
    """The record's Jira id, checked; ``nesting_of``: the part whose depth is checked (default all)."""
    if not isinstance(record, dict):
        raise RecordError(f"{what}: expected a JSON object, got {type(record).__name__}")
    raw = record.get("id")
    if isinstance(raw, bool) or not isinstance(raw, str | int) or str(raw).strip() == "":
        raise RecordError(f"{what}: missing or invalid 'id' ({reprlib.repr(raw)})")  # bounded: ids can be anything
    text = str(raw).strip()
    if len(text) > MAX_ID:
        raise RecordError(f"{what}: 'id' is {len(text)} characters long", _clean(text, MAX_ID) or None)
    if not _storable(text):
        raise RecordError(f"{what}: 'id' {text!r} holds a NUL or an unpaired surrogate")
    _check_nesting(record if nesting_of is None else nesting_of, what, text)
    return text


def _scope(record: Mapping[str, Any], what: str, ext: str) -> tuple[str | None, str | None]:
    scope = _obj(record, "scope")
    project = _obj(scope, "project")
    scope_type = _str(scope, "type", limit=32)
    project_id = _ref(project, "id", what, ext)
    return scope_type, project_id


def _icon(record: Mapping[str, Any]) -> str | None:
    icon = _str(record, "iconUrl", limit=2000)
    if icon is None:
        avatars = _obj(record, "avatarUrls")
        icon = _str(avatars, "48x48", limit=2000) or _str(avatars, "32x32", limit=2000)
    return icon


def _description(value: Any) -> str | None:
    if value is None:
        return None
    # ADF text nodes can carry what a column cannot (NULs, unpaired surrogates): clean both kinds.
    text = adf_to_markdown(value) if isinstance(value, dict | list) else value
    if not isinstance(text, str):
        text = str(text)
    if len(text) > MAX_TEXT:
        # Cut, and say so, within MAX_TEXT (the column and the embedding budget hold no more).
        note = f"\n[cut: the text was {len(text)} characters long, the first {MAX_TEXT - 100} are kept]"
        text = text[: MAX_TEXT - 100].rstrip() + note
    return _clean(text, MAX_TEXT) or None


def parse_project(record: object) -> dict[str, Any]:
    ext = external_id(record, "project")
    assert isinstance(record, dict)
    key = _ref(record, "key", "project", ext)
    name = _str(record, "name")
    if not key or not name:
        raise RecordError("project: 'key' and 'name' must be non-empty strings", ext)
    category = _obj(record, "projectCategory")
    lead = _obj(record, "lead")
    style = _str(record, "style")
    simplified = record.get("simplified")
    if style in ("next-gen",) or simplified is True:
        management = "team-managed"
    elif style == "classic" or simplified is False:
        management = "company-managed"
    else:
        management = None
    return {
        "external_id": ext,
        "key": key,
        "name": name,
        "description": _description(record.get("description")),
        "category": _str(category, "name"),
        "project_type": _str(record, "projectTypeKey", limit=64),
        "management": management,
        "lead": _str(lead, "displayName"),
        "url": _str(record, "url", limit=2000) or _str(record, "self", limit=2000),
        "icon_url": _icon(record),
    }


def parse_wit(record: object) -> dict[str, Any]:
    ext = external_id(record, "issue type")
    assert isinstance(record, dict)
    name = _str(record, "name")
    if not name:
        raise RecordError("issue type: 'name' must be a non-empty string", ext)
    scope_type, scope_project = _scope(record, "issue type", ext)
    level = record.get("hierarchyLevel")
    subtask = record.get("subtask")
    return {
        "external_id": ext,
        "name": name,
        "description": _description(record.get("description")),
        # Outside the INTEGER column's range the value is nonsense (Jira uses -1..2); storing it would
        # fail the whole table transaction on SQLite and PostgreSQL alike.
        "hierarchy_level": level
        if isinstance(level, int) and not isinstance(level, bool) and -(2**31) <= level < 2**31
        else None,
        "subtask": subtask if isinstance(subtask, bool) else None,
        "scope_type": scope_type,
        "scope_project_id": scope_project,
        "icon_url": _icon(record),
    }


def parse_status(record: object) -> dict[str, Any]:
    ext = external_id(record, "status")
    assert isinstance(record, dict)
    name = _str(record, "name")
    if not name:
        raise RecordError("status: 'name' must be a non-empty string", ext)
    category = _obj(record, "statusCategory")
    scope_type, scope_project = _scope(record, "status", ext)
    return {
        "external_id": ext,
        "name": name,
        "description": _description(record.get("description")),
        "category_key": _str(category, "key", limit=64),
        "category_name": _str(category, "name"),
        "scope_type": scope_type,
        "scope_project_id": scope_project,
        "icon_url": _icon(record),
    }


def parse_jira_datetime(value: Any) -> datetime | None:
    """Jira timestamps look like ``2026-03-04T10:15:30.000+0000``; returned in UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if len(text) >= 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"  # +0000 -> +00:00 for fromisoformat
    text = text.replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _names(values: Any, key: str = "name") -> list[str]:
    if not isinstance(values, list):
        return []
    out = []
    for value in values:
        if isinstance(value, str):
            text = _clean(value, MAX_SHORT)
        elif isinstance(value, dict):
            text = _str(value, key) or ""
        else:
            continue
        if text:
            out.append(text)
    return out


def parse_issue(record: object) -> dict[str, Any]:
    # Its comments are checked one by one (parse_comment): a too deep comment is quarantined on
    # its own, and the issue and its other comments are kept.
    fields_in = record.get("fields") if isinstance(record, dict) else None
    shallow = (
        {**record, "fields": {k: v for k, v in fields_in.items() if k != "comment"}}
        if isinstance(record, dict) and isinstance(fields_in, dict)
        else record
    )
    ext = external_id(record, "issue", nesting_of=shallow)
    assert isinstance(record, dict)
    key = _ref(record, "key", "issue", ext)
    fields = record.get("fields")
    if not key:
        raise RecordError("issue: 'key' must be a non-empty string", ext)
    if not isinstance(fields, dict):
        raise RecordError(f"issue {key}: 'fields' must be an object", ext)
    summary = _str(fields, "summary", limit=MAX_SHORT * 2)
    if not summary:
        raise RecordError(f"issue {key}: 'summary' must be a non-empty string", ext)
    updated = parse_jira_datetime(fields.get("updated"))
    if updated is None:
        raise RecordError(f"issue {key}: 'updated' is missing or not a Jira timestamp", ext)
    project = _obj(fields, "project")
    wit = _obj(fields, "issuetype")
    status = _obj(fields, "status")
    category = _obj(status, "statusCategory")
    what = f"issue {key}"
    return {
        "external_id": ext,
        "key": key,
        "summary": summary,
        "description": _description(fields.get("description")),
        "project_external_id": _ref(project, "id", what, ext),
        "project_key": _ref(project, "key", what, ext),
        "wit_external_id": _ref(wit, "id", what, ext),
        "wit_name": _str(wit, "name"),
        "status_external_id": _ref(status, "id", what, ext),
        "status_name": _str(status, "name"),
        "status_category": _str(category, "key", limit=64),
        "priority": _str(_obj(fields, "priority"), "name"),
        "labels": _names(fields.get("labels")),
        "components": _names(fields.get("components")),
        "assignee": _str(_obj(fields, "assignee"), "displayName"),
        "reporter": _str(_obj(fields, "reporter"), "displayName"),
        "resolution": _str(_obj(fields, "resolution"), "name"),
        "parent_key": _ref(_obj(fields, "parent"), "key", what, ext),
        "created": parse_jira_datetime(fields.get("created")),
        "updated": updated,
        "links": issue_links(fields),
        "attachments": attachments(fields.get("attachment")),
        "history": history_digest(record.get("changelog")),
        "resolved_at": parse_jira_datetime(fields.get("resolutiondate")),
        "status_changed_at": status_changed_at(fields, record.get("changelog")),
        "custom_fields": custom_fields.parse(record, fields),
        "comments_total": _comment_total(fields.get("comment")),
        "comments_incomplete": None,
        "history_incomplete": None,
        "access_facts": access_facts(record, fields),
    }


def _comment_total(value: Any) -> int | None:
    if not isinstance(value, dict):
        return None
    total = value.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and 0 <= total < 2**31:
        return total
    comments = value.get("comments")
    return len(comments) if isinstance(comments, list) else None


def _key_of(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    key = _str(value, "key", limit=MAX_ID + 1)
    return key if key and len(key) <= MAX_ID else None


def issue_links(fields: Mapping[str, Any]) -> list[dict[str, str]]:
    """Parent (or epic), sub-tasks and issue links as ``{"relation", "key"}``, in Jira's order.

    A link whose other end has no usable key is left out (it says nothing we could show).
    """
    out: list[dict[str, str]] = []
    parent = _obj(fields, "parent")
    if (key := _key_of(parent)) is not None:
        level = _obj(_obj(parent, "fields"), "issuetype").get("hierarchyLevel")
        out.append({"relation": "epic" if level == 1 else "parent", "key": key})
    subtasks = fields.get("subtasks")
    for sub in subtasks if isinstance(subtasks, list) else []:
        if (key := _key_of(sub)) is not None:
            out.append({"relation": "sub-task", "key": key})
    links = fields.get("issuelinks")
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict):
            continue
        kind = _obj(link, "type")
        if (key := _key_of(link.get("outwardIssue"))) is not None:
            relation = _str(kind, "outward") or _str(kind, "name") or "relates to"
        elif (key := _key_of(link.get("inwardIssue"))) is not None:
            relation = _str(kind, "inward") or _str(kind, "name") or "relates to"
        else:
            continue
        out.append({"relation": relation, "key": key})
    return out


def attachments(value: Any) -> list[dict[str, str]]:
    """File names and media types of an issue's attachments (their contents are not fetched)."""
    out = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        name = _str(item, "filename") or _str(item, "name")
        if name:
            out.append({"name": name, "type": _str(item, "mimeType", limit=200) or "unknown type"})
    return out


HISTORY_FIELDS = {"status": "Status", "assignee": "Assignee", "resolution": "Resolution"}
MAX_HISTORY_LINES = 50


def _histories(changelog: Any) -> list[tuple[datetime, str, Mapping[str, Any]]]:
    """(when, who, item) for the changelog items the digest keeps, oldest first."""
    histories = changelog.get("histories") if isinstance(changelog, dict) else None
    out: list[tuple[datetime, str, Mapping[str, Any]]] = []
    for history in histories if isinstance(histories, list) else []:
        if not isinstance(history, dict):
            continue
        when = parse_jira_datetime(history.get("created"))
        if when is None:
            continue
        who = _str(_obj(history, "author"), "displayName") or "a former user"
        items = history.get("items")
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and str(item.get("field") or "").lower() in HISTORY_FIELDS:
                out.append((when, who, item))
    out.sort(key=lambda t: t[0])
    return out


def history_digest(changelog: Any) -> str | None:
    """Status transitions, assignee changes and resolutions with their dates, one line each.

    Other field edits are left out: they would drown the few lines a reader (and a search
    for "reopened after release") cares about. The newest ``MAX_HISTORY_LINES`` are kept.
    """
    lines = []
    for when, who, item in _histories(changelog):
        name = HISTORY_FIELDS[str(item.get("field")).lower()]
        before = _str(item, "fromString") or "none"
        after = _str(item, "toString") or "none"
        verb = ""
        if (
            name == "Status"
            and before.lower() in ("done", "closed", "resolved")
            and after.lower()
            not in (
                "done",
                "closed",
                "resolved",
            )
        ):
            verb = " (reopened)"
        lines.append(f"{when:%Y-%m-%d}: {name} {before} → {after}{verb} by {who}")
    if len(lines) > MAX_HISTORY_LINES:
        lines = [f"({len(lines) - MAX_HISTORY_LINES} earlier changes)"] + lines[-MAX_HISTORY_LINES:]
    return "\n".join(lines) or None


def status_changed_at(fields: Mapping[str, Any], changelog: Any) -> datetime | None:
    """When the status last changed: the newest status transition, else Jira's category-change date."""
    moves = [when for when, _, item in _histories(changelog) if str(item.get("field")).lower() == "status"]
    return max(moves) if moves else parse_jira_datetime(fields.get("statuscategorychangedate"))


DELETED_AUTHOR = "a former user"


def visibility(value: Any) -> str | None:
    """``role:Developers`` / ``group:jira-admins`` for a restricted comment; None when everyone sees it."""
    if not isinstance(value, dict) or not value:
        return None
    kind = _str(value, "type", limit=32) or "restricted"
    name = _str(value, "value") or _str(value, "identifier") or "?"
    return f"{kind}:{name}"


def parse_comment(record: object) -> dict[str, Any]:
    """One comment as Jira sends it (its issue's columns are added by the caller)."""
    ext = external_id(record, "comment")
    assert isinstance(record, dict)
    author = _obj(record, "author") or _obj(record, "updateAuthor")
    account = _str(author, "accountId", limit=128)
    name = _str(author, "displayName")
    if not account and not name:
        name = DELETED_AUTHOR  # Jira drops the account of a deleted user; the comment stays
    return {
        "external_id": ext,
        "author": name or DELETED_AUTHOR,
        "author_account_id": account,
        "created": parse_jira_datetime(record.get("created")),
        "updated": parse_jira_datetime(record.get("updated")) or parse_jira_datetime(record.get("created")),
        "body": _description(record.get("body")),
        "visibility": visibility(record.get("visibility")),
        "access_facts": {"visibility": visibility_facts(record.get("visibility"))},
    }


# -- what access depends on (never part of the embedded text) ---------------------------------

#: The key under which the issues spec hands each issue the picker fields its search asked for
#: (id -> "user" / "group"; None: the site's field listing could not be read).
ACCESS_FIELDS_KEY = "accessFields"
ACCESS_FACTS_VERSION = 1


def _account_id(value: Any) -> str | None:
    return _str(value, "accountId", limit=128) if isinstance(value, dict) else None


def _picker_values(value: Any) -> list[Mapping[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, dict)]


def picker_facts(kind: str, value: Any) -> dict[str, Any]:
    """A user picker's value as ``{"users": [accountId]}``, a group picker's as
    ``{"groups": [{"groupId", "name"}]}`` (single- and multi-value pickers alike)."""
    if kind == "user":
        return {"users": sorted({a for v in _picker_values(value) if (a := _account_id(v))})}
    groups = []
    for v in _picker_values(value):
        gid, name = _str(v, "groupId", limit=128), _str(v, "name")
        if gid or name:
            groups.append({"groupId": gid, "name": name})
    return {"groups": groups}


def access_facts(record: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """What the permission stage needs of an issue, as JSON: its project, its security level
    (``security_known`` False when the search did not return the ``security`` field), reporter and
    assignee accountIds, and the values of the site's user/group picker fields
    (``pickers_known`` False when the picker fields were not asked for: access by them fails safe).
    """
    security = fields.get("security")
    level = _str(security, "id", limit=128) if isinstance(security, dict) else None
    asked = record.get(ACCESS_FIELDS_KEY)
    pickers: dict[str, Any] = {}
    if isinstance(asked, dict):
        for fid, kind in asked.items():
            if kind in ("user", "group"):
                pickers[str(fid)] = {"kind": kind, **picker_facts(kind, fields.get(fid))}
    return {
        "version": ACCESS_FACTS_VERSION,
        "project_id": _str(_obj(fields, "project"), "id", limit=128),
        "security_known": "security" in fields,
        "security_level_id": level,
        "reporter": _account_id(fields.get("reporter")),
        "assignee": _account_id(fields.get("assignee")),
        "pickers_known": isinstance(asked, dict),
        "pickers": pickers,
    }


def visibility_facts(value: Any) -> dict[str, str | None] | None:
    """A comment's ``visibility`` as ``{"type", "identifier", "value"}``; None when everyone may see it."""
    if not isinstance(value, dict) or not value:
        return None
    return {
        "type": _str(value, "type", limit=32),
        "identifier": _str(value, "identifier", limit=255),
        "value": _str(value, "value"),
    }
