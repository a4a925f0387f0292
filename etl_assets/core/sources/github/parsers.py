"""Parsers from GitHub REST v3 objects to table rows.

Each takes one object as GitHub sends it (a repository, an issue, a pull request, a comment)
and returns the columns we keep. A record that cannot be understood raises
:class:`RecordError` naming it; the table step quarantines it and carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from etl_assets.core.records import RecordError

MAX_TEXT = 200_000
MAX_SHORT = 1_000
MAX_ID = 64


def _clean(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    # Lone surrogates and NULs cannot be stored in every database: replace rather than refuse.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit].strip()


def _str(obj: Mapping[str, Any], key: str, limit: int = MAX_SHORT) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict | list | bool):
        return None
    return _clean(value, limit) or None


def _bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    return value if isinstance(value, bool) else None


def _login(obj: Mapping[str, Any], key: str) -> str | None:
    user = obj.get(key)
    return _str(user, "login", 200) if isinstance(user, dict) else None


def parse_datetime(value: Any) -> datetime | None:
    """GitHub's ISO 8601 timestamps (``2011-04-14T16:00:49Z``) as aware UTC datetimes."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _id(record: object, what: str) -> tuple[dict[str, Any], str]:
    if not isinstance(record, dict):
        raise RecordError(f"{what}: expected an object, got {type(record).__name__}")
    raw = record.get("id")
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip():
        raise RecordError(f"{what}: missing or invalid 'id'")
    ext = str(raw).strip()
    if len(ext) > MAX_ID:
        raise RecordError(f"{what}: 'id' is {len(ext)} characters long (at most {MAX_ID})")
    return record, ext


def repo_of(api_url: Any) -> str | None:
    """``owner/repo`` from a REST URL such as ``https://api.github.com/repos/o/r/issues/7``."""
    if not isinstance(api_url, str):
        return None
    parts = api_url.split("/repos/", 1)
    if len(parts) != 2:
        return None
    segments = parts[1].split("/")
    return f"{segments[0]}/{segments[1]}" if len(segments) >= 2 and segments[0] and segments[1] else None


def _number_at_end(api_url: Any) -> int | None:
    if not isinstance(api_url, str):
        return None
    tail = api_url.rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _required_time(record: Mapping[str, Any], key: str, what: str, ext: str) -> datetime:
    value = parse_datetime(record.get(key))
    if value is None:
        raise RecordError(f"{what} {ext}: '{key}' is missing or not an ISO 8601 time", ext)
    return value


def parse_repository(record: object) -> dict[str, Any]:
    rec, ext = _id(record, "GitHub repository")
    full_name = _str(rec, "full_name", 300)
    if not full_name or "/" not in full_name:
        raise RecordError(f"GitHub repository {ext}: 'full_name' is missing or not owner/repo", ext)
    topics = rec.get("topics")
    private = _bool(rec, "private")
    return {
        "external_id": ext,
        "full_name": full_name,
        "name": _str(rec, "name", 200) or full_name.split("/", 1)[1],
        "owner": _login(rec, "owner"),
        "description": _str(rec, "description", MAX_TEXT),
        "visibility": _str(rec, "visibility", 32) or (None if private is None else "private" if private else "public"),
        "private": private,
        "archived": _bool(rec, "archived"),
        "language": _str(rec, "language", 100),
        "topics": [_clean(t, 100) for t in topics if isinstance(t, str)] if isinstance(topics, list) else [],
        "default_branch": _str(rec, "default_branch", 300),
        "url": _str(rec, "html_url", 2000),
        "created": parse_datetime(rec.get("created_at")),
        "updated": parse_datetime(rec.get("updated_at")),
    }


def _labels(rec: Mapping[str, Any]) -> list[str]:
    out = []
    for label in rec.get("labels") or []:
        name = label.get("name") if isinstance(label, dict) else label if isinstance(label, str) else None
        if isinstance(name, str) and name.strip():
            out.append(_clean(name, 200))
    return out


def _assignees(rec: Mapping[str, Any]) -> list[str]:
    people = rec.get("assignees")
    if not isinstance(people, list):
        one = _login(rec, "assignee")
        return [one] if one else []
    return [login for p in people if isinstance(p, dict) and (login := _str(p, "login", 200))]


def _issue_like(record: object, what: str, repo: str | None) -> dict[str, Any]:
    rec, ext = _id(record, what)
    number = rec.get("number")
    if isinstance(number, bool) or not isinstance(number, int):
        raise RecordError(f"{what} {ext}: 'number' is missing or not an integer", ext)
    if not repo:
        raise RecordError(f"{what} {ext}: its repository cannot be read from its URLs", ext)
    title = _str(rec, "title", 2000)
    if title is None:
        raise RecordError(f"{what} {repo}#{number}: 'title' is missing", ext)
    state = _str(rec, "state", 32)
    if state not in ("open", "closed"):
        raise RecordError(f"{what} {repo}#{number}: 'state' is {state!r}, not open or closed", ext)
    milestone = rec.get("milestone")
    return {
        "external_id": ext,
        "repo": repo,
        "number": number,
        "key": f"{repo}#{number}",
        "title": title,
        "body": _str(rec, "body", MAX_TEXT),
        "state": state,
        "state_reason": _str(rec, "state_reason", 64),
        "locked": _bool(rec, "locked"),
        "author": _login(rec, "user"),
        "assignees": _assignees(rec),
        "labels": _labels(rec),
        "milestone": _str(milestone, "title", 1000) if isinstance(milestone, dict) else None,
        "url": _str(rec, "html_url", 2000),
        "created": parse_datetime(rec.get("created_at")),
        "closed": parse_datetime(rec.get("closed_at")),
        "updated": _required_time(rec, "updated_at", what, f"{repo}#{number}"),
    }


def parse_issue(record: object) -> dict[str, Any]:
    rec = record if isinstance(record, dict) else {}
    row = _issue_like(record, "GitHub issue", repo_of(rec.get("repository_url")) or repo_of(rec.get("url")))
    comments = rec.get("comments")
    row["comments"] = comments if isinstance(comments, int) and not isinstance(comments, bool) else None
    return row


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_pull_request(record: object) -> dict[str, Any]:
    rec = record if isinstance(record, dict) else {}
    base = _obj(rec.get("base"))
    head = _obj(rec.get("head"))
    base_repo = _obj(base.get("repo"))
    repo = repo_of(rec.get("url")) or _str(base_repo, "full_name", 300)
    row = _issue_like(record, "GitHub pull request", repo)
    row |= {
        "draft": _bool(rec, "draft"),
        "merged": parse_datetime(rec.get("merged_at")),
        "base_ref": _str(base, "ref", 300),
        "head_ref": _str(head, "ref", 300),
    }
    return row


def _comment(record: object, what: str, parent_url_key: str) -> dict[str, Any]:
    rec, ext = _id(record, what)
    parent = rec.get(parent_url_key)
    repo, number = repo_of(parent), _number_at_end(parent)
    if repo is None or number is None:
        raise RecordError(f"{what} {ext}: '{parent_url_key}' does not name a repository and number", ext)
    return {
        "external_id": ext,
        "repo": repo,
        "number": number,
        "key": f"{repo}#{number}",
        "body": _str(rec, "body", MAX_TEXT),
        "author": _login(rec, "user"),
        "url": _str(rec, "html_url", 2000),
        "created": parse_datetime(rec.get("created_at")),
        "updated": _required_time(rec, "updated_at", what, ext),
    }


def parse_issue_comment(record: object) -> dict[str, Any]:
    return _comment(record, "GitHub issue comment", "issue_url")


def parse_review_comment(record: object) -> dict[str, Any]:
    row = _comment(record, "GitHub review comment", "pull_request_url")
    rec = record if isinstance(record, dict) else {}
    line = rec.get("line")
    row |= {
        "path": _str(rec, "path", 2000),
        "commit_id": _str(rec, "commit_id", 64),
        "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
    }
    return row


def updated_at(record: Any) -> datetime | None:
    """A record's version for overlapping windows: its ``updated_at``."""
    return parse_datetime(record.get("updated_at")) if isinstance(record, dict) else None
