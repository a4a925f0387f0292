"""A fake Jira Cloud REST v3 server over a :class:`JiraSite`, in process.

:class:`JiraSiteHandler` answers the handful of endpoints the sync uses, with the
response shapes, paging rules and error bodies Jira Cloud uses; it speaks plain
(method, path, query, body) so that both :func:`sample_transport` (an
``httpx.MockTransport`` for ``httpx.Client(transport=...)``) and the loopback HTTP
server of the tests can put it on the wire.

Served endpoints (everything else is a 404):

* ``GET  /rest/api/3/project/search``  PageBean of projects (``startAt``/``maxResults``,
  ``expand``, ``orderBy``, ``query``, ``keys``, ``id``, ``typeKey``)
* ``GET  /rest/api/3/project/{idOrKey}``, ``GET /rest/api/3/issue/{idOrKey}``
* ``GET  /rest/api/3/issuetype``, ``GET /rest/api/3/status``
* ``GET|POST /rest/api/3/search/jql``  enhanced search, ``nextPageToken`` paging, the
  JQL subset of :mod:`.jql`
* ``POST /rest/api/3/issue/bulkfetch``  up to 100 issues by id or key, ascending id order
* ``POST /rest/api/3/search/approximate-count``
* ``GET  /rest/api/3/myself``, ``GET /rest/api/3/serverInfo``
* ``GET|POST /rest/api/{2,3,latest}/search``  410 Gone, as on Jira Cloud since CHANGE-2046
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from etl_assets.core.sources.jira.sample.documents import (
    CUSTOM_FIELDS,
    EMBEDDED_COMMENTS,
    EMBEDDED_HISTORIES,
    SYSTEM_FIELDS,
)
from etl_assets.core.sources.jira.sample.jql import JqlError, run_jql
from etl_assets.core.sources.jira.sample.site import JiraSite, format_jira_timestamp, stored_datetime, user_obj

__all__ = ["JiraSiteHandler", "sample_transport"]

_JSON_HEADERS = {"content-type": "application/json;charset=UTF-8"}
_INVALID_PAYLOAD = "Invalid request payload. Refer to the REST API documentation and try again."
_SEARCH_BODY_KEYS = {
    "jql",
    "nextPageToken",
    "maxResults",
    "fields",
    "expand",
    "properties",
    "fieldsByKeys",
    "reconcileIssues",
}
_BULKFETCH_BODY_KEYS = {"expand", "fields", "fieldsByKeys", "issueIdsOrKeys", "properties"}
_BULKFETCH_MAX = 100
_PROJECT_EXPANDS = {"description", "lead", "issueTypes", "url", "insight"}
_PROJECT_ORDER = {
    "key",
    "name",
    "category",
    "owner",
    "issueCount",
    "lastIssueUpdatedDate",
    "archivedDate",
    "deletedDate",
}
_REMOVED_SEARCH = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
    "API. A full migration guideline is available at "
    "https://developer.atlassian.com/changelog/#CHANGE-2046"
)


class _HttpError(Exception):
    def __init__(self, status: int, messages: list[str]) -> None:
        super().__init__(status, messages)
        self.status = status
        self.messages = messages


class JiraSiteHandler:
    """Serve a :class:`JiraSite` the way Jira Cloud's REST API v3 does.

    ``clock`` supplies "now" for relative JQL dates (``updated >= -5m``); it defaults
    to the real current time.
    """

    def __init__(
        self,
        site: JiraSite,
        *,
        page_size_cap: int = 100,
        clock: Callable[[], datetime] | None = None,
        extra_routes: Callable[[str, str, dict[str, str]], tuple[int, Any] | None] | None = None,
        cache_views: bool = False,
    ) -> None:
        self.site = site
        # more endpoints (e.g. sample.permissions.PermissionRoutes): (method, route, query) -> answer or None;
        # a site with access rules (``site.permissions``) serves them unless told otherwise
        if extra_routes is None and site.permissions is not None:
            from etl_assets.core.sources.jira.sample.permissions import PermissionRoutes

            extra_routes = PermissionRoutes(site.permissions)
        self.extra_routes = extra_routes
        self.page_size_cap = page_size_cap
        self.clock = clock or (lambda: datetime.now(UTC))
        self._prefix = urlsplit(site.base_url).path.rstrip("/")
        # A search's hits, kept for its later pages (a cursor, as Jira's nextPageToken is): the
        # first page evaluates the JQL, the others page through what it found. A few at a time.
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        # id and key -> issue, rebuilt when the site's issue list changed (bulk fetches look up 100)
        self._index: tuple[int, int, dict[str, dict[str, Any]]] = (0, -1, {})
        # ``cache_views``: each issue's JSON, once rendered for a field selection, is kept and
        # served again (see :meth:`prerender`). Only for a site whose issues do not change while
        # it is served, or whose owner calls :meth:`clear_views` after changing them: a benchmark
        # stands in for Jira's own servers, which render on machines of their own.
        self._views: dict[tuple[Any, ...], _Rendered] | None = {} if cache_views else None
        self.views_rendered = 0  # issue views rendered while answering (cache misses)

    # ---- entry point -----------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request as (status, headers, JSON body); every request is logged in ``site.requests``."""
        method = method.upper()
        with self.site._lock:
            self.site.requests.append((method, path))
            route = path
            if self._prefix and route.startswith(self._prefix + "/"):
                route = route[len(self._prefix) :]
            route = route.rstrip("/") or "/"
            try:
                status, payload = self._dispatch(method, route, query, body)
            except _HttpError as exc:
                status, payload = exc.status, {"errorMessages": exc.messages, "errors": {}}
            except JqlError as exc:
                status, payload = 400, {"errorMessages": [str(exc)], "errors": {}}
        return status, dict(_JSON_HEADERS), _encode(payload)

    # ---- rendered issue views (``cache_views``) -----------------------------------------

    def _view(
        self, issue: dict[str, Any], wanted: set[str] | None, *, changelog: bool, names: bool, schema: bool
    ) -> dict[str, Any] | _Rendered:
        """An issue as a search page or a bulk fetch shows it (``names``/``schema``: an IssueBean's
        own, as a bulk fetch gives them); from the view cache when it is on."""
        if self._views is None or (wanted is not None and not wanted):  # an id listing: nothing to keep
            return self._own_view(issue, wanted, changelog=changelog, names=names, schema=schema)
        key = (issue["id"], None if wanted is None else frozenset(wanted), changelog, names, schema)
        rendered = self._views.get(key)
        if rendered is None:
            self.views_rendered += 1
            view = self._own_view(issue, wanted, changelog=changelog, names=names, schema=schema)
            rendered = _Rendered(
                tuple(view["fields"]), json.dumps(view, ensure_ascii=False, separators=(",", ":")).encode()
            )
            self._views[key] = rendered
        return rendered

    def _own_view(
        self, issue: dict[str, Any], wanted: set[str] | None, *, changelog: bool, names: bool, schema: bool
    ) -> dict[str, Any]:
        view = _issue_view(issue, wanted, changelog=changelog)
        if names or schema:
            known = {f["id"]: f for f in self._fields()}
            shown = sorted(k for k in view["fields"] if k in known)
            if names:
                view["names"] = {k: known[k]["name"] for k in shown}
            if schema:
                view["schema"] = {k: known[k]["schema"] for k in shown}
        return view

    def prerender(self, fields: list[str], expand: list[str]) -> int:
        """Render every issue of the site for ``fields`` and ``expand`` (a bulk fetch's lists; a
        search with the same fields and ``expand`` string is served from the same views) into the
        view cache, before anything is timed; returns how many were rendered."""
        if self._views is None:
            raise RuntimeError("prerender needs a handler made with cache_views=True")
        wanted = _field_selection([p for f in fields for p in _split_fields(f)])
        with self.site._lock:
            before = self.views_rendered
            for issue in self.site.issues:
                self._view(
                    issue, wanted, changelog="changelog" in expand, names="names" in expand, schema="schema" in expand
                )
            rendered = self.views_rendered - before
            self.views_rendered = before
        return rendered

    def clear_views(self) -> None:
        """Forget every rendered view (call it after changing the site's issues)."""
        if self._views is not None:
            with self.site._lock:
                self._views.clear()

    def _dispatch(self, method: str, route: str, query: dict[str, str], body: bytes | None) -> tuple[int, Any]:
        if re.fullmatch(r"/rest/api/(2|3|latest)/search", route):
            raise _HttpError(410, [_REMOVED_SEARCH])
        routes: dict[str, tuple[set[str], Callable[..., Any]]] = {
            "/rest/api/3/project/search": ({"GET"}, self._project_search),
            "/rest/api/3/issuetype": ({"GET"}, self._issue_types),
            "/rest/api/3/status": ({"GET"}, self._statuses),
            "/rest/api/3/search/jql": ({"GET", "POST"}, self._search_jql),
            "/rest/api/3/search/approximate-count": ({"POST"}, self._approximate_count),
            "/rest/api/3/issue/bulkfetch": ({"POST"}, self._bulkfetch),
            "/rest/api/3/myself": ({"GET"}, self._myself),
            "/rest/api/3/field": ({"GET"}, lambda method, query, body: self._fields()),
            "/rest/api/3/serverInfo": ({"GET"}, self._server_info),
        }
        if route in routes:
            methods, fn = routes[route]
            if method not in methods:
                raise _HttpError(405, [f"Method '{method}' is not allowed on {route}."])
            return 200, fn(method, query, body)
        comments = re.fullmatch(r"/rest/api/3/issue/([^/]+)/comment", route)
        if comments:
            if method != "GET":
                raise _HttpError(405, [f"Method '{method}' is not allowed on {route}."])
            return 200, self._comments(comments.group(1), query)
        changelog = re.fullmatch(r"/rest/api/3/issue/([^/]+)/changelog", route)
        if changelog:
            if method != "GET":
                raise _HttpError(405, [f"Method '{method}' is not allowed on {route}."])
            return 200, self._changelog(changelog.group(1), query)
        match = re.fullmatch(r"/rest/api/3/(project|issue)/([^/]+)", route)
        if match and match.group(2) == "bulkfetch":
            raise _HttpError(405, [f"Method '{method}' is not allowed on {route}."])
        if match and method == "GET":
            if match.group(1) == "project":
                return 200, self._project_get(match.group(2), query)
            return 200, self._issue_get(match.group(2), query)
        if self.extra_routes is not None:
            answer = self.extra_routes(method, route, query)
            if answer is not None:
                return answer
        raise _HttpError(404, [f"No resource is available at {method} {route}."])

    def _fields(self) -> list[dict[str, Any]]:
        return [*SYSTEM_FIELDS, *CUSTOM_FIELDS, *self.site.fields]

    # ---- projects --------------------------------------------------------------------

    def _project_view(self, project: dict[str, Any], expand: set[str]) -> dict[str, Any]:
        view = {k: v for k, v in project.items() if k not in ("description", "lead", "issueTypes", "url")}
        if "description" in expand:
            view["description"] = project.get("description", "")
        if "lead" in expand and "lead" in project:
            view["lead"] = project["lead"]
        if "issueTypes" in expand:
            view["issueTypes"] = project.get("issueTypes", [])
        if "url" in expand and project.get("url"):
            view["url"] = project["url"]
        if "insight" in expand:
            mine = [i for i in self.site.issues if i["fields"]["project"]["id"] == project["id"]]
            insight: dict[str, Any] = {"totalIssueCount": len(mine)}
            if mine:
                last = max(stored_datetime(i["fields"]["updated"]) for i in mine)
                insight["lastIssueUpdateTime"] = format_jira_timestamp(last)
            view["insight"] = insight
        return view

    def _project_search(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        start = _int_param(query, "startAt", 0, minimum=0)
        size = min(_int_param(query, "maxResults", 50, minimum=0), self.page_size_cap)
        expand = {e.strip() for e in query.get("expand", "").split(",") if e.strip()}
        order_by = query.get("orderBy", "key").strip() or "key"
        descending = order_by.startswith("-")
        order_field = order_by.lstrip("+-")
        if order_field not in _PROJECT_ORDER:
            raise _HttpError(400, [f"Invalid orderBy value: '{order_by}'."])

        projects = list(self.site.projects)
        if query.get("query"):
            needle = query["query"].lower()
            projects = [p for p in projects if needle in p["key"].lower() or needle in p["name"].lower()]
        if query.get("keys"):
            keys = {k.strip().upper() for k in query["keys"].split(",")}
            projects = [p for p in projects if p["key"] in keys]
        if query.get("id"):
            ids = {k.strip() for k in query["id"].split(",")}
            projects = [p for p in projects if p["id"] in ids]
        if query.get("typeKey"):
            types = {k.strip() for k in query["typeKey"].split(",")}
            projects = [p for p in projects if p["projectTypeKey"] in types]
        if query.get("categoryId"):
            cat = query["categoryId"]
            projects = [p for p in projects if (p.get("projectCategory") or {}).get("id") == cat]

        counts: dict[str, int] = {}
        last_update: dict[str, str] = {}
        for issue in self.site.issues:
            pid = issue["fields"]["project"]["id"]
            counts[pid] = counts.get(pid, 0) + 1
            last_update[pid] = max(last_update.get(pid, ""), issue["fields"]["updated"])
        sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "key": lambda p: p["key"],
            "name": lambda p: (p["name"].strip().lower(), p["key"]),
            "category": lambda p: ((p.get("projectCategory") or {}).get("name", "~"), p["key"]),
            "owner": lambda p: (p.get("lead", {}).get("displayName", ""), p["key"]),
            "issueCount": lambda p: (counts.get(p["id"], 0), p["key"]),
            "lastIssueUpdatedDate": lambda p: (last_update.get(p["id"], ""), p["key"]),
        }
        projects.sort(key=sort_keys.get(order_field, sort_keys["key"]), reverse=descending)

        page = projects[start : start + size]
        is_last = start + len(page) >= len(projects)
        extra = [(k, v) for k, v in query.items() if k not in ("startAt", "maxResults")]
        root = f"{self.site.base_url}/rest/api/3/project/search?"

        def link(at: int) -> str:
            params = [("startAt", str(at)), ("maxResults", str(size)), *extra]
            return root + urlencode(params, safe=",")

        out: dict[str, Any] = {"self": link(start)}
        if not is_last:
            out["nextPage"] = link(start + size)
        out.update(
            maxResults=size,
            startAt=start,
            total=len(projects),
            isLast=is_last,
            values=[self._project_view(p, expand) for p in page],
        )
        return out

    def _project_get(self, id_or_key: str, query: dict[str, str]) -> Any:
        try:
            project = self.site.project(id_or_key)
        except KeyError:
            raise _HttpError(404, [f"No project could be found with key '{id_or_key}'."]) from None
        expand = {"description", "lead", "issueTypes", "url"}
        expand |= {e.strip() for e in query.get("expand", "").split(",") if e.strip()}
        return self._project_view(project, expand)

    # ---- lists -----------------------------------------------------------------------

    def _issue_types(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        return self.site.issue_types

    def _statuses(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        return self.site.statuses

    def _myself(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        # The API user: the first user, in the profile zone the site reads JQL dates in.
        me = self.site.users[0] if self.site.users else user_obj(self.site.base_url, 0, "Sample User", "UTC", True)
        return {**me, "timeZone": self.site.time_zone}

    def _server_info(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        return {
            "baseUrl": self.site.base_url,
            "displayUrl": self.site.base_url,
            "version": "1001.0.0-SNAPSHOT",
            "versionNumbers": [1001, 0, 0],
            "deploymentType": "Cloud",
            "buildNumber": 100289,
            "buildDate": "2026-03-01T00:00:00.000+0000",
            "serverTime": format_jira_timestamp(self.clock()),
            "scmInfo": "0f5d6a4c1b2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a",
            "serverTitle": "Jira",
        }

    # ---- issues ----------------------------------------------------------------------

    def _issue_get(self, key_or_id: str, query: dict[str, str]) -> Any:
        try:
            issue = self.site.issue(key_or_id)
        except KeyError:
            raise _HttpError(404, ["Issue does not exist or you do not have permission to see it."]) from None
        wanted = _field_selection(_split_fields(query.get("fields")) or ["*all"])
        return _issue_view(issue, wanted)

    def _comments(self, key_or_id: str, query: dict[str, str]) -> Any:
        """``GET /rest/api/3/issue/{id}/comment``: a PageOfComments, at most 100 a page."""
        try:
            issue = self.site.issue(key_or_id)
        except KeyError:
            raise _HttpError(404, ["Issue does not exist or you do not have permission to see it."]) from None
        start = _int_param(query, "startAt", 0, minimum=0)
        size = min(_int_param(query, "maxResults", 100, minimum=0), 100)
        order = query.get("orderBy", "created")
        if order not in ("created", "+created", "-created"):
            raise _HttpError(400, [f"The value '{order}' is not valid for orderBy."])
        every = list((issue["fields"].get("comment") or {}).get("comments") or [])
        if order == "-created":
            every.reverse()
        return {"startAt": start, "maxResults": size, "total": len(every), "comments": every[start : start + size]}

    def _changelog(self, key_or_id: str, query: dict[str, str]) -> Any:
        """``GET /rest/api/3/issue/{id}/changelog``: a PageBeanChangelog, oldest first, at most 100 a page."""
        try:
            issue = self.site.issue(key_or_id)
        except KeyError:
            raise _HttpError(404, ["Issue does not exist or you do not have permission to see it."]) from None
        start = _int_param(query, "startAt", 0, minimum=0)
        size = min(_int_param(query, "maxResults", 100, minimum=0), 100)
        every = _oldest_first((issue.get("changelog") or {}).get("histories") or [])
        page = every[start : start + size]
        base = f"{self.site.base_url}/rest/api/3/issue/{issue['key']}/changelog"
        out: dict[str, Any] = {
            "self": f"{base}?startAt={start}&maxResults={size}",
            "maxResults": size,
            "startAt": start,
            "total": len(every),
            "isLast": start + len(page) >= len(every),
            "values": page,
        }
        if not out["isLast"]:
            out["nextPage"] = f"{base}?startAt={start + len(page)}&maxResults={size}"
        return out

    def _search_request(self, method: str, query: dict[str, str], body: bytes | None) -> dict[str, Any]:
        if method == "GET":
            request: dict[str, Any] = {
                "jql": query.get("jql", ""),
                "nextPageToken": query.get("nextPageToken"),
                "maxResults": query.get("maxResults"),
                "fields": _split_fields(query.get("fields")),
                "expand": query.get("expand"),
            }
            if request["maxResults"] is not None:
                try:
                    request["maxResults"] = int(request["maxResults"])
                except ValueError:
                    raise _HttpError(400, [f"The value '{query['maxResults']}' is not valid for maxResults."]) from None
            return request
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _HttpError(400, [_INVALID_PAYLOAD]) from None
        if not isinstance(payload, dict) or set(payload) - _SEARCH_BODY_KEYS:
            raise _HttpError(400, [_INVALID_PAYLOAD])
        jql = payload.get("jql", "")
        token = payload.get("nextPageToken")
        size = payload.get("maxResults")
        fields = payload.get("fields")
        if (
            not isinstance(jql, str | None)
            or not isinstance(token, str | None)
            or (size is not None and (not isinstance(size, int) or isinstance(size, bool)))
        ):
            raise _HttpError(400, [_INVALID_PAYLOAD])
        if isinstance(fields, str):
            fields = _split_fields(fields)
        elif isinstance(fields, list) and all(isinstance(f, str) for f in fields):
            fields = [p for f in fields for p in _split_fields(f)]
        elif fields is not None:
            raise _HttpError(400, [_INVALID_PAYLOAD])
        expand = payload.get("expand")
        if not isinstance(expand, str | None):
            raise _HttpError(400, [_INVALID_PAYLOAD])
        return {"jql": jql or "", "nextPageToken": token, "maxResults": size, "fields": fields, "expand": expand}

    def _search_jql(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        request = self._search_request(method, query, body)
        jql: str = request["jql"]
        fields = request["fields"] or ["id"]
        wanted = _field_selection(fields)
        offset = 0
        if request["nextPageToken"]:
            offset = _decode_token(request["nextPageToken"], jql)
        size = request["maxResults"]
        if size is None:
            size = 50
        if size < 1:
            raise _HttpError(400, ["The maxResults parameter must be greater than 0."])
        id_only = wanted is not None and not wanted
        size = min(size, 5000 if id_only else self.page_size_cap)
        cursor = request["nextPageToken"]
        hits = self._cursors.get(cursor) if cursor else None
        if hits is None:
            hits = run_jql(self.site, jql, now=self.clock())
        page = hits[offset : offset + size]
        expand = set(_split_fields(request.get("expand")))
        views = [self._view(i, wanted, changelog="changelog" in expand, names=False, schema=False) for i in page]
        out: dict[str, Any] = {"issues": views}
        known = {f["id"]: f for f in self._fields()}
        shown = sorted({k for v in views for k in _view_fields(v) if k in known})
        if "names" in expand:
            out["names"] = {k: known[k]["name"] for k in shown}
        if "schema" in expand:
            out["schema"] = {k: known[k]["schema"] for k in shown}
        if offset + len(page) < len(hits):
            out["nextPageToken"] = _encode_token(offset + len(page), jql)
            out["isLast"] = False
            if cursor:
                self._cursors.pop(cursor, None)
            self._cursors[out["nextPageToken"]] = hits
            while len(self._cursors) > 8:
                self._cursors.pop(next(iter(self._cursors)))
        else:
            out["isLast"] = True
        return out

    def _issue_index(self) -> dict[str, dict[str, Any]]:
        issues = self.site.issues
        ident, size, index = self._index
        if ident != id(issues) or size != len(issues):
            index = {}
            for issue in issues:
                index[issue["id"]] = issue
                index[issue["key"]] = issue
            self._index = (id(issues), len(issues), index)
        return index

    def _bulkfetch(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        """``POST /rest/api/3/issue/bulkfetch``: BulkFetchIssueRequestBean in, BulkIssueResults out.

        Issues by id or key (a key case-insensitively), in ascending id order; ids of issues
        that do not exist are left out silently (Jira lists only retriable failures in
        ``issueErrors``). ``expand`` is a list here, unlike the search's comma string;
        ``names``/``schema`` are per issue (an IssueBean's own).
        """
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _HttpError(400, [_INVALID_PAYLOAD]) from None
        if not isinstance(payload, dict) or set(payload) - _BULKFETCH_BODY_KEYS:
            raise _HttpError(400, [_INVALID_PAYLOAD])
        wanted_ids = payload.get("issueIdsOrKeys")
        fields = payload.get("fields")
        expand = payload.get("expand")
        lists = (wanted_ids, fields if fields is not None else [], expand if expand is not None else [])
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists):
            raise _HttpError(400, [_INVALID_PAYLOAD])
        if not wanted_ids:
            raise _HttpError(400, ["At least one issue ID or key must be provided."])
        if len(wanted_ids) > _BULKFETCH_MAX:
            raise _HttpError(400, [f"The number of issues requested exceeds the maximum of {_BULKFETCH_MAX}."])
        index = self._issue_index()
        found: dict[str, dict[str, Any]] = {}
        for ident in wanted_ids:
            issue = index.get(ident) or index.get(ident.upper())
            if issue is not None:
                found[issue["id"]] = issue
        wanted = _field_selection([p for f in (fields or ["*navigable"]) for p in _split_fields(f)])
        expands = set(expand or [])
        issues = [
            self._view(
                issue,
                wanted,
                changelog="changelog" in expands,
                names="names" in expands,
                schema="schema" in expands,
            )
            for _, issue in sorted(found.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)
        ]
        return {"issues": issues, "issueErrors": []}

    def _approximate_count(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _HttpError(400, [_INVALID_PAYLOAD]) from None
        # JQLCountRequestBean: "jql" only (additionalProperties: false); the count is of the live
        # issues the JQL matches now (deleted ones are gone from ``site.issues``).
        if not isinstance(payload, dict) or set(payload) - {"jql"} or not isinstance(payload.get("jql", ""), str):
            raise _HttpError(400, [_INVALID_PAYLOAD])
        return {"count": len(run_jql(self.site, payload.get("jql", ""), now=self.clock()))}


class _Rendered:
    """An issue view already encoded as JSON (``cache_views``), with the ids of its fields."""

    __slots__ = ("body", "fields")

    def __init__(self, fields: tuple[str, ...], body: bytes) -> None:
        self.fields, self.body = fields, body


def _view_fields(view: dict[str, Any] | _Rendered) -> Any:
    return view.fields if isinstance(view, _Rendered) else view["fields"]


def _encode(payload: Any) -> bytes:
    """The answer as compact JSON; issue views already rendered are spliced in as they are."""
    issues = payload.get("issues") if isinstance(payload, dict) else None
    if not issues or not isinstance(issues[0], _Rendered):
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    rest = json.dumps({k: v for k, v in payload.items() if k != "issues"}, ensure_ascii=False, separators=(",", ":"))
    tail = b"}" if rest == "{}" else b"," + rest[1:].encode()
    return b'{"issues":[' + b",".join(view.body for view in issues) + b"]" + tail


def _int_param(query: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _HttpError(400, [f"The value '{raw}' is not valid for {name}."]) from None
    if value < minimum:
        raise _HttpError(400, [f"The value '{raw}' is not valid for {name}."])
    return value


def _split_fields(raw: str | None) -> list[str]:
    if not raw:
        return []
    return [f.strip() for f in raw.split(",") if f.strip()]


def _field_selection(fields: list[str]) -> set[str] | None:
    """Field names to include; ``None`` means every field. ``id``/``key`` are always at
    the top level of an issue, so ``["id"]`` selects no field at all."""
    include_all = False
    chosen: set[str] = set()
    excluded: set[str] = set()
    for name in fields:
        if name in ("*all", "*navigable"):
            include_all = True
        elif name.startswith("-"):
            excluded.add(name[1:])
        elif name not in ("id", "key", "self"):
            chosen.add(name)
    if excluded and not include_all and not chosen:
        include_all = True  # "-description" means navigable fields minus description
    if include_all:
        return None if not excluded else {"*all", *(f"-{e}" for e in excluded)}
    return chosen - excluded


def _issue_view(issue: dict[str, Any], wanted: set[str] | None, *, changelog: bool = False) -> dict[str, Any]:
    fields = issue["fields"]
    if wanted is None:
        chosen = dict(fields)
    elif "*all" in wanted:
        drop = {w[1:] for w in wanted if w.startswith("-")}
        chosen = {k: v for k, v in fields.items() if k not in drop}
    else:
        chosen = {k: v for k, v in fields.items() if k in wanted}
    comment = chosen.get("comment")
    if isinstance(comment, dict) and len(comment.get("comments") or []) > EMBEDDED_COMMENTS:
        # Jira embeds only the first comments; the rest are paged on /issue/{id}/comment.
        chosen["comment"] = {
            **comment,
            "comments": comment["comments"][:EMBEDDED_COMMENTS],
            "maxResults": EMBEDDED_COMMENTS,
        }
    view = {
        "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
        "id": issue["id"],
        "self": issue["self"],
        "key": issue["key"],
        "fields": chosen,
    }
    if changelog and "changelog" in issue:
        log = issue["changelog"]
        histories = log.get("histories") or []
        if len(histories) > EMBEDDED_HISTORIES:
            # Like Jira, the search embeds only part of a long changelog (here: its oldest
            # entries); the whole of it is paged on /issue/{id}/changelog.
            kept = {id(h) for h in _oldest_first(histories)[:EMBEDDED_HISTORIES]}
            log = {**log, "maxResults": EMBEDDED_HISTORIES, "histories": [h for h in histories if id(h) in kept]}
        view["changelog"] = log
    return view


def _oldest_first(histories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(histories, key=lambda h: (str(h.get("created")), int(h.get("id") or 0)))


def _jql_digest(jql: str) -> str:
    return hashlib.sha256(" ".join(jql.split()).encode()).hexdigest()[:12]


def _encode_token(offset: int, jql: str) -> str:
    raw = json.dumps({"o": offset, "q": _jql_digest(jql)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, jql: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = int(data["o"])
        same_query = data["q"] == _jql_digest(jql)
    except (ValueError, KeyError, TypeError):
        raise _HttpError(400, ["The provided next page token is invalid."]) from None
    if offset < 0 or not same_query:
        raise _HttpError(400, ["The provided next page token is invalid."])
    return offset


def sample_transport(
    site: JiraSite,
    *,
    page_size_cap: int = 100,
    extra_routes: Callable[[str, str, dict[str, str]], tuple[int, Any] | None] | None = None,
) -> httpx.MockTransport:
    """An httpx transport answering requests from :class:`JiraSiteHandler` over ``site``.

    Repeated query parameters (``fields=a&fields=b``) reach the handler joined by
    commas, which is how Jira treats them for the list-valued parameters.
    """
    handler = JiraSiteHandler(site, page_size_cap=page_size_cap, extra_routes=extra_routes)

    def respond(request: httpx.Request) -> httpx.Response:
        query: dict[str, str] = {}
        for name, value in request.url.params.multi_items():
            query[name] = f"{query[name]},{value}" if name in query else value
        status, headers, body = handler.handle(request.method, request.url.path, query, request.content or None)
        return httpx.Response(status, headers=headers, content=body, request=request)

    return httpx.MockTransport(respond)
