"""Per-tenant custom fields: names resolved to ids, values rendered to text by their type.

The tenants file lists fields by name (``custom_fields: ["Story Points", "Team"]``) or by id
(``customfield_10031``). At fetch time :func:`resolve` reads ``GET /rest/api/3/field`` once and
maps each entry to field ids:

- an id is taken as it is (when the site has it);
- a name matches every custom field of that name, case-insensitively. Jira allows two custom
  fields with one name (a "Team" select next to the Atlassian Teams field, or two apps' "Story
  Points"); we do not guess which one the tenant meant: all of them are fetched, and on each issue
  the non-empty values are rendered under that name (an issue rarely has both; when it does, both
  texts are kept, joined). A warning names the ids, so an operator can pin one by writing its id.
  Contexts (per-project option sets of ONE field) need nothing: the field id is the same.
- a name the site does not have is a warning, never a failure: the other fields still come.

The search is asked for those ids and ``expand=names,schema``, so each response says, for the
fields it carries, their names and schema types; :func:`render` turns a value into text by
that schema (option, multi-option, cascading select, user(s), group, number, date/datetime,
labels, URL, ADF text area, arrays of these) and falls back to the value's readable text for any
shape it does not know — never an error.

A field's single value (a number, a date, one option or user) is also a payload field
``cf_<name>`` (:func:`slug`) a search can filter on, typed by the field's schema
(:func:`index_kind`: ``float``, ``datetime`` as RFC 3339, or ``keyword``); the vector sync gives
each such field a payload index (:func:`filter_fields`, the issues spec's ``row_filters``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from etl_assets.core.sources.jira.adf import adf_to_markdown

log = logging.getLogger(__name__)

FIELD_PATH = "/rest/api/3/field"
_ID = re.compile(r"^customfield_\d{1,18}$")
MAX_FIELD_TEXT = 4000  # one field's rendered text; longer is cut
MAX_PAYLOAD_SCALAR = 200  # a scalar longer than this is text, not a filter value
_READABLE_KEYS = ("value", "name", "displayName", "title", "key", "text", "label", "emailAddress", "id")


@dataclass(frozen=True)
class Resolved:
    ids: tuple[str, ...]
    names: dict[str, str]  # id -> the name the tenant used
    warnings: tuple[str, ...]


def resolve(wanted: tuple[str, ...], fields: Any, tenant: str) -> Resolved:
    """Map the tenant's field names/ids to ids using the ``GET /field`` listing (see the module doc)."""
    listing = [f for f in (fields if isinstance(fields, list) else []) if isinstance(f, dict)]
    by_id = {str(f.get("id")): f for f in listing if f.get("id")}
    by_name: dict[str, list[str]] = {}
    for f in listing:
        if (
            f.get("custom") is not False
            and isinstance(f.get("name"), str)
            and str(f.get("id", "")).startswith("customfield_")
        ):
            by_name.setdefault(f["name"].strip().lower(), []).append(str(f["id"]))
    ids: list[str] = []
    names: dict[str, str] = {}
    warnings: list[str] = []
    for entry in wanted:
        if _ID.match(entry):
            found = [entry] if entry in by_id else []
            label = str(by_id.get(entry, {}).get("name") or entry)
        else:
            found = sorted(by_name.get(entry.lower(), []), key=lambda i: int(i.rsplit("_", 1)[1]))
            label = entry
            if len(found) > 1:
                warnings.append(
                    f"tenant {tenant!r}: custom field {entry!r} names {len(found)} fields ({', '.join(found)}); "
                    "all are indexed under that name — list one id in custom_fields to pick it"
                )
        if not found:
            warnings.append(f"tenant {tenant!r}: custom field {entry!r} is not on the site (GET {FIELD_PATH}); skipped")
        for fid in found:
            if fid not in names:
                ids.append(fid)
                names[fid] = label
    return Resolved(tuple(ids), names, tuple(warnings))


def _date(value: str) -> str:
    text = value.strip()
    try:
        if len(text) == 10:
            return text  # a date: as Jira spells it
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("+0000", "+00:00"))
        return parsed.strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def _readable(value: Any, depth: int = 0) -> str:
    """Any JSON value as text a person would write; the fallback for unknown shapes."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str):
        return value.strip()
    if depth > 8:
        return ""
    if isinstance(value, list):
        return ", ".join(t for t in (_readable(v, depth + 1) for v in value) if t)
    if isinstance(value, dict):
        if value.get("type") == "doc":
            return adf_to_markdown(value)
        for key in _READABLE_KEYS:
            if isinstance(value.get(key), str | int | float) and not isinstance(value.get(key), bool):
                text = _readable(value[key], depth + 1)
                child = value.get("child")
                if isinstance(child, dict):  # cascading select: parent → child
                    inner = _readable(child, depth + 1)
                    return f"{text} → {inner}" if inner else text
                return text
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)[:MAX_FIELD_TEXT]
    return str(value)


def render(value: Any, schema: Mapping[str, Any] | None) -> str:
    """A custom field's value as text, by its schema type (see the module doc); never raises."""
    if value is None or value == [] or value == "":
        return ""
    kind = str((schema or {}).get("type") or "")
    try:
        if kind in ("date", "datetime") and isinstance(value, str):
            text = _date(value)
        elif kind == "array" and isinstance(value, list):
            items = str((schema or {}).get("items") or "")
            text = ", ".join(t for t in (render(v, {"type": items}) for v in value) if t)
        else:
            text = _readable(value)
    except Exception:  # noqa: BLE001 - the contract: any shape becomes text, never an error
        log.warning("custom field value of an unexpected shape (%s); kept as its JSON text", type(value).__name__)
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text[:MAX_FIELD_TEXT]


def index_kind(value: Any, schema: Mapping[str, Any] | None) -> str:
    """The payload index a field's single values get, by its schema type: ``float`` for a number,
    ``datetime`` for a date or date-time, ``keyword`` for the rest (an option, a user, a URL, a
    string). Without a schema type the value decides (a number is a number)."""
    kind = str((schema or {}).get("type") or "")
    if kind == "number":
        return "float"
    if kind in ("date", "datetime"):
        return "datetime"
    if not kind and isinstance(value, int | float) and not isinstance(value, bool):
        return "float"
    return "keyword"


def _rfc3339(value: str) -> str | None:
    """A Jira date (``2026-03-01``: midnight UTC) or date-time as RFC 3339, which Qdrant's datetime
    index reads; None when it is neither."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC).isoformat()
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).isoformat()


def scalar(value: Any, text: str, kind: str = "keyword") -> str | int | float | None:
    """The value as a payload filter value of index ``kind`` (see :func:`index_kind`), when it is
    one value of that kind: a number for ``float``, an RFC 3339 string for ``datetime``, one short
    line of text for ``keyword`` (an option, a user, a number of a field typed otherwise); else None."""
    if isinstance(value, bool):
        return None
    if kind == "float":
        return value if isinstance(value, int | float) else None
    if kind == "datetime":
        return _rfc3339(value) if isinstance(value, str) else None
    if isinstance(value, dict) and value.get("type") == "doc":
        return None
    if isinstance(value, str | dict | int | float) and text and len(text) <= MAX_PAYLOAD_SCALAR and "\n" not in text:
        return text
    return None


def slug(name: str) -> str:
    """The payload key of a custom field: ``cf_`` and its name in lower snake case."""
    return "cf_" + (re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "field")


def filter_fields(parsed: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    """The payload fields of one issue's parsed custom fields (:func:`parse`) that a search can
    filter on: ``{cf_<name>: (index kind, name)}``.

    A row committed before kinds were recorded says nothing of its field's type: a number is a
    ``float``, but a text may be a date as well as an option, and the first index created for a
    field is the one it keeps; so such a text is no filter field until the issue is fetched again
    (a full re-sync types every row)."""
    out: dict[str, tuple[str, str]] = {}
    for name, v in (parsed or {}).items():
        if not isinstance(v, dict) or v.get("value") is None:
            continue
        kind, value = v.get("kind"), v["value"]
        if kind not in ("float", "datetime", "keyword"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            kind = "float"
        out[slug(str(name))] = (str(kind), str(name))
    return out


def parse(record: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """``{name: {"text": ..., "value": scalar or None, "kind": index kind}}`` for the custom fields the
    record carries with a name (from ``expand=names``, attached to each issue by the issues spec);
    None if none. ``kind`` (see :func:`index_kind`) is there when ``value`` is; ``"rich": True``
    marks a rich-text (ADF) value, which the issue's text keeps as a part of its own."""
    names = record.get("names")
    schemas = record.get("schema")
    if not isinstance(names, dict):
        return None
    out: dict[str, dict[str, Any]] = {}
    for fid, value in fields.items():
        if not str(fid).startswith("customfield_") or fid not in names:
            continue
        name = str(names[fid])
        schema = schemas.get(fid) if isinstance(schemas, dict) else None
        text = render(value, schema if isinstance(schema, dict) else None)
        if not text:
            continue
        # Rich text (an ADF document: a text area) is prose of its own, chunked apart from the fields.
        rich = {"rich": True} if isinstance(value, dict) and value.get("type") == "doc" else {}
        if name in out:  # two fields of one name (see the module doc): both texts kept
            both = {"rich": True} if out[name].get("rich") or rich else {}
            out[name] = {"text": f"{out[name]['text']}; {text}", "value": None, **both}
            continue
        kind = index_kind(value, schema if isinstance(schema, dict) else None)
        single = scalar(value, text, kind)
        out[name] = {"text": text, "value": single, **({"kind": kind} if single is not None else {}), **rich}
    return out or None


# -- the fields access depends on -------------------------------------------------------------

# schema.custom suffixes of Jira Cloud's user- and group-picker field types
# (com.atlassian.jira.plugin.system.customfieldtypes:userpicker, ...); a permission scheme or
# a security level may grant access to "the users / groups in custom field X".
_PICKER_KINDS = {
    "userpicker": "user",
    "multiuserpicker": "user",
    "grouppicker": "group",
    "multigrouppicker": "group",
}


def picker_kind(field: Mapping[str, Any]) -> str | None:
    """``"user"`` / ``"group"`` for a user- or group-picker field of a ``GET /field`` listing, else None.

    Read from ``schema.custom`` (``…:userpicker``, ``…:multiuserpicker``, ``…:grouppicker``,
    ``…:multigrouppicker``); a field without ``schema.custom`` falls back on its value type
    (``user`` / ``group``, or an array of them), which also covers the ``people`` fields of
    team-managed projects (``schema.type`` ``array`` of ``user``).
    """
    schema = field.get("schema")
    if not isinstance(schema, dict) or not str(field.get("id", "")).startswith("customfield_"):
        return None
    custom = schema.get("custom")
    if isinstance(custom, str) and custom:
        return _PICKER_KINDS.get(custom.rsplit(":", 1)[-1])
    kind = schema.get("items") if schema.get("type") == "array" else schema.get("type")
    return str(kind) if kind in ("user", "group") else None


def access_fields(fields: Any) -> dict[str, str]:
    """The site's user/group picker custom fields, id -> ``"user"`` / ``"group"``, from ``GET /field``."""
    listing = [f for f in (fields if isinstance(fields, list) else []) if isinstance(f, dict)]
    out = {str(f["id"]): kind for f in listing if (kind := picker_kind(f)) is not None}
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))
