"""A loopback Qdrant REST server backed by qdrant-client's own local mode.

No Qdrant binary is available here, yet the server code path (``QDRANT_URL``: the REST
client, its connection pool, HTTP errors, payload indexes) deserves tests, and a fault
"in the middle of an upsert batch" needs a server that can fail one request. This fake
speaks the part of Qdrant's REST API the project uses and stores everything in a
``QdrantLocal`` folder, so the same data can be read back with ``path=`` afterwards::

    with FakeQdrant(tmp_path / "qdrant") as qdrant:
        client = AsyncQdrantClient(url=qdrant.url)

Request and response bodies are parsed and rendered with qdrant-client's REST models, so
what the real client sends is validated the way a server would. Served (everything else
is a 404): ``GET /``, ``GET /collections``, ``GET|PUT|DELETE /collections/{name}``,
``PATCH /collections/{name}`` (metadata), ``GET /collections/{name}/exists``,
``PUT /collections/{name}/index`` (recorded, and listed in the collection's ``payload_schema``),
``DELETE /collections/{name}/index/{field}``,
``POST|PUT /collections/{name}/points``, ``POST /collections/{name}/points/{delete,scroll,count}``,
``POST /collections/{name}/points/batch`` (update operations, e.g. set_payload),
``POST /collections/{name}/points/query`` (the Query API: named dense and sparse vectors,
``prefetch`` legs, ``FusionQuery`` RRF/DBSF, ``score_threshold``), and the aliases:
``GET /aliases``, ``GET /collections/{name}/aliases``, ``POST /collections/aliases`` (create,
delete and rename actions applied together, as the server does). A collection's routes accept
an alias for its name, as the server's do. With ``require_indexes`` it behaves like a server in
strict mode that refuses filters on fields without an index of a type that serves the condition
(a range needs an integer/float index, a datetime range a datetime index, a match on text a
keyword index). ``indexes`` records every index created: collection -> field -> schema type.

Faults: the generic ``faults`` queue of :class:`LoopbackServer` (``Fault.respond``,
``reset``, ...), plus ``fail_upsert`` — a predicate called with (collection, number of
upserts that collection has received before this one) whose truthy answer (a Response,
or True for a 503) refuses that upsert *before* anything is stored, so a batch fails as a
whole, as it does on a server that is going away. ``latency_s`` delays every answer
(after the operation was applied, as on a server whose acknowledgement is slow).

``log`` records ``(method, path, status, started, finished)`` of every request, in
``time.time()`` seconds (comparable with Dagster's event timestamps) — added on arrival with
status 0 and ``finished`` None, completed when answered — for tests that audit which
collections a run touched and for the crash script, which asks what was in flight at the
moment it killed a run.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from qdrant_client.http import models as m
from qdrant_client.local.qdrant_local import QdrantLocal

from etl_assets.fakes.loopback import Fault, LoopbackServer, Request, Response

__all__ = ["FakeQdrant"]

_POINTS_SELECTOR = TypeAdapter(m.PointsSelector)
_INSERT = TypeAdapter(m.PointInsertOperations)
_VERSION = importlib.metadata.version("qdrant-client")  # the client checks it is compatible


class _QdrantError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _ok(result: Any) -> Response:
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    elif isinstance(result, list):
        result = [r.model_dump(mode="json") if hasattr(r, "model_dump") else r for r in result]
    return Response.json({"result": result, "status": "ok", "time": 0.0})


class FakeQdrant:
    def __init__(
        self, path: str | Path, *, api_key: str | None = None, latency_s: float = 0.0, require_indexes: bool = False
    ) -> None:
        self.path = str(path)
        # Qdrant's strict mode (unindexed_filtering_retrieve: false): a filter on a field
        # without a payload index is refused with a 400, as a server configured so answers.
        self.require_indexes = require_indexes
        self.indexes: dict[str, dict[str, m.PayloadSchemaType]] = {}
        self.api_key = api_key
        self.latency_s = latency_s
        self.fail_upsert: Callable[[str, int], Response | bool | None] | None = None
        self.upserts: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, str, int, float, float | None]] = []
        self._lock = threading.Lock()
        self._local: QdrantLocal | None = None
        self._server = LoopbackServer(self._handle)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def server(self) -> LoopbackServer:
        return self._server

    @property
    def faults(self) -> collections.deque[Fault]:
        return self._server.faults

    def start(self) -> FakeQdrant:
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self._local = QdrantLocal(location=self.path)
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> FakeQdrant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def collections_touched(self) -> set[str]:
        """Names of the collections any request addressed."""
        with self._lock:
            paths = [entry[1] for entry in self.log]
        return {p.split("/")[2] for p in paths if p.startswith("/collections/") and len(p.split("/")) > 2}

    # -- request handling ----------------------------------------------------------------

    async def _handle(self, req: Request) -> Response:
        with self._lock:  # logged on arrival (finished None), completed when answered
            index = len(self.log)
            self.log.append((req.method, req.path, 0, time.time(), None))
        response = self._answer(req)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        with self._lock:
            method, path, _, started, _ = self.log[index]
            self.log[index] = (method, path, response.status, started, time.time())
        return response

    def _answer(self, req: Request) -> Response:
        if self.api_key is not None and req.headers.get("api-key") != self.api_key:
            return Response.json(
                {"status": {"error": "Must provide an API key or an Authorization bearer token"}}, status=401
            )
        try:
            response = self._dispatch(req)
        except _QdrantError as exc:
            return Response.json({"status": {"error": exc.message}, "time": 0.0}, status=exc.status)
        except (ValueError, KeyError, TypeError) as exc:  # what the local engine refuses, a server refuses too
            return Response.json({"status": {"error": f"Bad request: {exc}"}, "time": 0.0}, status=400)
        return response

    def _body(self, req: Request) -> Any:
        try:
            return json.loads(req.body or b"{}")
        except ValueError:
            raise _QdrantError(400, "Format error in JSON body") from None

    def _need(self, name: str) -> None:
        assert self._local is not None
        if not self._local.collection_exists(name):
            raise _QdrantError(404, f"Not found: Collection `{name}` doesn't exist!")

    def _dispatch(self, req: Request) -> Response:
        local = self._local
        assert local is not None
        parts = [p for p in req.path.split("/") if p]
        method = req.method
        if not parts and method == "GET":
            return Response.json({"title": "qdrant - vector search engine (loopback fake)", "version": _VERSION})
        if parts == ["collections"] and method == "GET":
            return _ok(local.get_collections())
        if parts == ["aliases"] and method == "GET":
            return _ok(local.get_aliases())
        if parts == ["collections", "aliases"] and method == "POST":
            # Every action of the request is applied, or none (the local engine validates on a copy).
            aliases = m.ChangeAliasesOperation.model_validate(self._body(req))
            return _ok(local.update_collection_aliases(aliases.actions))
        if len(parts) < 2 or parts[0] != "collections":
            raise _QdrantError(404, f"No route for {method} {req.path}")
        name, rest = parts[1], parts[2:]
        if not rest:
            if method == "GET":
                self._need(name)
                info = local.get_collection(name)
                info.payload_schema = {  # local mode keeps no payload indexes; the server would list them
                    field: m.PayloadIndexInfo(data_type=kind, points=0)
                    for field, kind in self.indexes.get(name, {}).items()
                }
                return _ok(info)
            if method == "PUT":
                spec = m.CreateCollection.model_validate(self._body(req))
                if local.collection_exists(name):
                    raise _QdrantError(409, f"Wrong input: Collection `{name}` already exists!")
                return _ok(
                    local.create_collection(
                        name,
                        vectors_config=spec.vectors,
                        sparse_vectors_config=spec.sparse_vectors,
                        metadata=spec.metadata,
                    )
                )
            if method == "PATCH":
                self._need(name)
                change = m.UpdateCollection.model_validate(self._body(req))
                return _ok(
                    local.update_collection(name, metadata=change.metadata, sparse_vectors_config=change.sparse_vectors)
                )
            if method == "DELETE":
                self.indexes.pop(name, None)
                return _ok(local.delete_collection(name))
        if rest == ["exists"] and method == "GET":
            return _ok({"exists": local.collection_exists(name)})
        if rest == ["aliases"] and method == "GET":
            self._need(name)
            return _ok(local.get_collection_aliases(name))
        self._need(name)
        if rest == ["index"] and method == "PUT":
            index = m.CreateFieldIndex.model_validate(self._body(req))
            schema = index.field_schema
            kind = (
                schema
                if isinstance(schema, m.PayloadSchemaType)
                else m.PayloadSchemaType(getattr(schema, "type", "keyword"))
            )
            self.indexes.setdefault(name, {})[index.field_name] = kind
            return _ok(m.UpdateResult(operation_id=0, status=m.UpdateStatus.COMPLETED))
        if len(rest) == 2 and rest[0] == "index" and method == "DELETE":
            self.indexes.get(name, {}).pop(rest[1], None)
            return _ok(m.UpdateResult(operation_id=0, status=m.UpdateStatus.COMPLETED))
        if rest == ["points"] and method == "PUT":
            return self._upsert(name, req)
        if rest == ["points"] and method == "POST":
            pr = m.PointRequest.model_validate(self._body(req))
            return _ok(
                local.retrieve(
                    name,
                    pr.ids,
                    with_payload=pr.with_payload if pr.with_payload is not None else True,
                    with_vectors=pr.with_vector or False,
                )
            )
        if rest == ["points", "delete"] and method == "POST":
            selector = _POINTS_SELECTOR.validate_python(self._body(req))
            return _ok(local.delete(name, points_selector=selector))
        if rest == ["points", "scroll"] and method == "POST":
            sr = m.ScrollRequest.model_validate(self._body(req))
            if self.require_indexes:
                self._check_indexed(name, sr.filter)
            points, offset = local.scroll(
                name,
                scroll_filter=sr.filter,
                limit=sr.limit or 10,
                offset=sr.offset,
                with_payload=sr.with_payload if sr.with_payload is not None else True,
                with_vectors=sr.with_vector or False,
                order_by=sr.order_by,
            )
            return _ok({"points": [p.model_dump(mode="json") for p in points], "next_page_offset": offset})
        if rest == ["points", "query"] and method == "POST":
            qr = m.QueryRequest.model_validate(self._body(req))
            if self.require_indexes:
                prefetch = qr.prefetch if isinstance(qr.prefetch, list) else [qr.prefetch] if qr.prefetch else []
                for flt in [qr.filter, *(p.filter for p in prefetch)]:
                    self._check_indexed(name, flt)
            return _ok(
                local.query_points(
                    name,
                    query=_as_query(qr.query),
                    using=qr.using,
                    prefetch=qr.prefetch,
                    query_filter=qr.filter,
                    score_threshold=qr.score_threshold,
                    limit=qr.limit or 10,
                    offset=qr.offset,
                    with_payload=qr.with_payload if qr.with_payload is not None else False,
                    with_vectors=qr.with_vector or False,
                )
            )
        if rest == ["points", "batch"] and method == "POST":
            # Several update operations in one request (the permission stage's payload writes).
            batch = m.UpdateOperations.model_validate(self._body(req))
            return _ok(local.batch_update_points(name, update_operations=batch.operations))
        if rest == ["points", "count"] and method == "POST":
            cr = m.CountRequest.model_validate(self._body(req))
            return _ok(local.count(name, count_filter=cr.filter, exact=cr.exact if cr.exact is not None else True))
        raise _QdrantError(404, f"No route for {method} {req.path}")

    def _check_indexed(self, name: str, flt: m.Filter | None) -> None:
        """Strict mode: every condition needs an index on its key of a type that serves it (a range
        on a keyword index is as unindexed as no index at all)."""
        for condition in sorted(_filter_conditions(flt), key=lambda c: c.key):
            usable = _usable_indexes(condition)
            if self.indexes.get(name, {}).get(condition.key) not in usable:
                kinds = ", ".join(k.value for k in usable)
                raise _QdrantError(
                    400,
                    f'Bad request: Index required but not found for "{condition.key}" of one of the following types: '
                    f"[{kinds}]. Help: Create an index for this key or use a different filter.",
                )

    def _upsert(self, name: str, req: Request) -> Response:
        assert self._local is not None
        operation = _INSERT.validate_python(self._body(req))
        with self._lock:
            before = self.upserts[name]
            self.upserts[name] += 1
        if self.fail_upsert is not None:
            verdict = self.fail_upsert(name, before)
            if isinstance(verdict, Response):
                return verdict
            if verdict:
                raise _QdrantError(503, "Service Unavailable: the update queue is full")
        if isinstance(operation, m.PointsList):
            points = operation.points
        else:
            raise _QdrantError(400, "this fake accepts only the points-list form of an upsert")
        return _ok(self._local.upsert(name, points=points))


def _filter_conditions(flt: Any) -> list[m.FieldCondition]:
    """The field conditions of a filter (nested filters included)."""
    if flt is None:
        return []
    if isinstance(flt, m.FieldCondition):
        return [flt]
    if isinstance(flt, m.Filter):
        out: list[m.FieldCondition] = []
        for clause in (flt.must, flt.should, flt.must_not):
            items = clause if isinstance(clause, list) else [clause] if clause is not None else []
            for item in items:
                out += _filter_conditions(item)
        return out
    return []


_T = m.PayloadSchemaType


def _usable_indexes(condition: m.FieldCondition) -> tuple[m.PayloadSchemaType, ...]:
    """The index types a server's strict mode accepts for ``condition`` (as Qdrant's error lists them)."""
    if condition.range is not None:
        if isinstance(condition.range, m.DatetimeRange):
            return (_T.DATETIME,)
        return (_T.INTEGER, _T.FLOAT)
    match = condition.match
    values: list[Any] = []
    if isinstance(match, m.MatchValue):
        values = [match.value]
    elif isinstance(match, m.MatchAny | m.MatchExcept):
        values = list(getattr(match, "any", None) or getattr(match, "except_", None) or [])
    if values and all(isinstance(v, bool) for v in values):
        return (_T.BOOL,)
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return (_T.INTEGER,)
    return (_T.KEYWORD, _T.UUID)


def _as_query(query: Any) -> Any:
    """The Query API's shorthand (a bare vector, sparse vector or point id) as the query it stands for."""
    if query is None or isinstance(query, m.NearestQuery | m.FusionQuery | m.OrderByQuery | m.RrfQuery):
        return query
    if isinstance(query, list | m.SparseVector | int | str):
        return m.NearestQuery(nearest=query)
    return query
