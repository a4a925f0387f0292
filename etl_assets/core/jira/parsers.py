"""Parsers from Jira REST payloads to table rows.

Each parser takes one Jira object (a project, an issue type, a status, an issue) as
Jira sends it — v3 Cloud or, for the real captures we test against, v2 Server — and
returns a flat dict of the columns we keep. A record that cannot be understood raises
:class:`RecordError` with a reason; the caller quarantines it and carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from etl_assets.core.jira.adf import adf_to_text

MAX_TEXT = 200_000  # longer fields are cut: nothing legitimate in Jira is this long
MAX_SHORT = 1_000


class RecordError(ValueError):
    """One Jira record is unusable; ``external_id`` is set when it could be read."""

    def __init__(self, reason: str, external_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.external_id = external_id


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


def _obj(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def external_id(record: object, what: str) -> str:
    if not isinstance(record, dict):
        raise RecordError(f"{what}: expected a JSON object, got {type(record).__name__}")
    raw = record.get("id")
    if isinstance(raw, bool) or not isinstance(raw, str | int) or str(raw).strip() == "":
        raise RecordError(f"{what}: missing or invalid 'id' ({raw!r})")
    text = str(raw).strip()
    if len(text) > 64:
        raise RecordError(f"{what}: 'id' is {len(text)} characters long", text[:64])
    return text


def _scope(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    scope = _obj(record, "scope")
    project = _obj(scope, "project")
    scope_type = _str(scope, "type")
    project_id = _str(project, "id")
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
    text = adf_to_text(value) if isinstance(value, dict | list) else _clean(value, MAX_TEXT)
    return text[:MAX_TEXT] or None


def parse_project(record: object) -> dict[str, Any]:
    ext = external_id(record, "project")
    assert isinstance(record, dict)
    key = _str(record, "key")
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
        "project_type": _str(record, "projectTypeKey"),
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
    scope_type, scope_project = _scope(record)
    level = record.get("hierarchyLevel")
    subtask = record.get("subtask")
    return {
        "external_id": ext,
        "name": name,
        "description": _description(record.get("description")),
        "hierarchy_level": level if isinstance(level, int) and not isinstance(level, bool) else None,
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
    scope_type, scope_project = _scope(record)
    return {
        "external_id": ext,
        "name": name,
        "description": _description(record.get("description")),
        "category_key": _str(category, "key"),
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
    ext = external_id(record, "issue")
    assert isinstance(record, dict)
    key = _str(record, "key")
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
    return {
        "external_id": ext,
        "key": key,
        "summary": summary,
        "description": _description(fields.get("description")),
        "project_external_id": _str(project, "id"),
        "project_key": _str(project, "key"),
        "wit_external_id": _str(wit, "id"),
        "wit_name": _str(wit, "name"),
        "status_external_id": _str(status, "id"),
        "status_name": _str(status, "name"),
        "status_category": _str(category, "key"),
        "priority": _str(_obj(fields, "priority"), "name"),
        "labels": _names(fields.get("labels")),
        "components": _names(fields.get("components")),
        "assignee": _str(_obj(fields, "assignee"), "displayName"),
        "reporter": _str(_obj(fields, "reporter"), "displayName"),
        "resolution": _str(_obj(fields, "resolution"), "name"),
        "parent_key": _str(_obj(fields, "parent"), "key"),
        "created": parse_jira_datetime(fields.get("created")),
        "updated": updated,
    }
