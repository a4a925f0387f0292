"""An AsyncQdrantClient over Qdrant Edge (``qdrant-edge-py``): the embedded vector store.

qdrant-client's local mode keeps every vector in RAM and searches by brute force, without
payload indexes. Qdrant Edge is Qdrant's own engine in-process (HNSW, payload indexes,
sparse vectors with IDF, prefetch + fusion, on-disk segments). :class:`EdgeQdrantClient`
speaks the subset of ``AsyncQdrantClient`` the project uses, taking and returning
``qdrant_client.models`` objects, so the vector store, the sync engine, search and the MCP
server run on it unchanged; what it does not support raises :class:`EdgeUnsupportedError`
naming the method or feature, never a silent approximation.

Layout of a store folder (one writer at a time: ``open_qdrant`` holds a file lock)::

    <folder>/edge_store.json              format marker and the collection aliases
    <folder>/collections/<name>/collection.json   vector params and metadata as qdrant-client models
    <folder>/collections/<name>/shard/    the Edge shard (segments, WAL, payload indexes)

Edge calls release the GIL; the ones that touch a shard run in a worker thread
(``asyncio.to_thread``) so a long upsert, optimize or close never stalls the step's loop.

Edge builds its indexes (HNSW) only when asked. The client that writes asks as it goes, each
time ``INDEX_EVERY_BYTES`` of dense vectors were written since the last build, and once more
when it closes; see ``INDEX_EVERY_BYTES`` for why not only at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy
import qdrant_edge as qe
from pydantic_core import to_jsonable_python
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http import models as rest  # its QueryResponse (qdrant_client.models has fastembed's)
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

log = logging.getLogger(__name__)

STORE_FILE = "edge_store.json"
COLLECTIONS_DIR = "collections"
CONFIG_FILE = "collection.json"
SHARD_DIR = "shard"
STORE_FORMAT = "qdrant-edge"
STORE_VERSION = 1
# Qdrant's own default for Reciprocal Rank Fusion (the server and qdrant-client's local mode).
RRF_DEFAULT_K = 2
# A writer indexes what it wrote each time this much of dense vectors (4 bytes a dimension) has
# been written since its last build. Left to the close, a large first sync builds one segment of
# all its points at once, and the build holds the unindexed segment (Edge maps its vectors twice),
# the new segment and the graph together: the writer of 200,000 points of 384 dimensions peaked
# at 1.75 GB. A build of at most this much peaks at about 3x it above what the open store maps,
# whatever the collection's size; the cost is one segment per this much (five at 200,000 points
# of 384 dimensions), which a search visits in turn, and Edge's indexing threshold (10 MB) keeps
# small writers from indexing before their close.
INDEX_EVERY_BYTES = 64 * 1024 * 1024
# Edge's optimizer merges segments down to about one per CPU by default, which would rebuild the
# graph of all of them at once (the peak above, every time): no merged segment may exceed one
# indexing step (``max_segment_size`` counts KB of vectors); small leftovers still merge.
MAX_SEGMENT_KB = INDEX_EVERY_BYTES // 1024
# Call arguments that mean nothing in-process (there is no network, replica or shard key).
_IGNORED = {"wait", "ordering", "timeout", "consistency", "grpc_grace"}
_INVALID_NAME_CHARS = set('<>:"/\\|?*\0\u0000')

T = TypeVar("T")


class EdgeUnsupportedError(NotImplementedError):
    """A qdrant-client feature the embedded Edge engine does not provide (named in the message)."""


def _check_kwargs(method: str, kwargs: Mapping[str, Any]) -> None:
    used = sorted(k for k, v in kwargs.items() if k not in _IGNORED and v is not None)
    if used:
        raise EdgeUnsupportedError(f"embedded Qdrant Edge: {method}() does not support {', '.join(used)}")


def _validate_name(name: str, what: str = "collection") -> None:
    if name in ("", ".", "..") or len(name) > 255 or any(c in _INVALID_NAME_CHARS for c in name):
        raise ValueError(f"{what} name {name!r} is not allowed in the embedded Qdrant store")


# -- models -> Edge ---------------------------------------------------------------------------------

_DISTANCE = {
    models.Distance.COSINE: qe.Distance.Cosine,
    models.Distance.EUCLID: qe.Distance.Euclid,
    models.Distance.DOT: qe.Distance.Dot,
    models.Distance.MANHATTAN: qe.Distance.Manhattan,
}
_SCHEMA_TO_EDGE = {
    models.PayloadSchemaType.KEYWORD: qe.PayloadSchemaType.Keyword,
    models.PayloadSchemaType.INTEGER: qe.PayloadSchemaType.Integer,
    models.PayloadSchemaType.FLOAT: qe.PayloadSchemaType.Float,
    models.PayloadSchemaType.GEO: qe.PayloadSchemaType.Geo,
    models.PayloadSchemaType.TEXT: qe.PayloadSchemaType.Text,
    models.PayloadSchemaType.BOOL: qe.PayloadSchemaType.Bool,
    models.PayloadSchemaType.DATETIME: qe.PayloadSchemaType.Datetime,
    models.PayloadSchemaType.UUID: qe.PayloadSchemaType.Uuid,
}
_SCHEMA_FROM_EDGE = {str(v): k for k, v in _SCHEMA_TO_EDGE.items()}


def _dense_params(p: models.VectorParams) -> qe.EdgeVectorParams:
    if p.multivector_config is not None:
        raise EdgeUnsupportedError("embedded Qdrant Edge: multivector collections are not supported")
    return qe.EdgeVectorParams(size=p.size, distance=_DISTANCE[p.distance], on_disk=p.on_disk)


def _sparse_params(p: models.SparseVectorParams) -> qe.EdgeSparseVectorParams:
    modifier = qe.Modifier.Idf if p.modifier == models.Modifier.IDF else None
    on_disk = p.index.on_disk if p.index is not None else None
    return qe.EdgeSparseVectorParams(modifier=modifier, on_disk=on_disk)


def _edge_config(vectors: Any, sparse: Mapping[str, models.SparseVectorParams] | None) -> qe.EdgeConfig:
    dense: qe.EdgeVectorParams | dict[str, qe.EdgeVectorParams] | None
    if isinstance(vectors, models.VectorParams):
        dense = _dense_params(vectors)
    else:
        dense = {name: _dense_params(p) for name, p in (vectors or {}).items()}
    return qe.EdgeConfig(
        vectors=dense,
        sparse_vectors={name: _sparse_params(p) for name, p in (sparse or {}).items()},
        optimizers=_optimizers(),
    )


def _optimizers() -> qe.EdgeOptimizersConfig:
    return qe.EdgeOptimizersConfig(max_segment_size=MAX_SEGMENT_KB)


def _point_id(value: Any) -> Any:
    if isinstance(value, (int, uuid.UUID)):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ValueError(f"point id {value!r} is neither an unsigned integer nor a UUID") from None
    raise ValueError(f"point id {value!r} is neither an unsigned integer nor a UUID")


def _vector_in(value: Any) -> Any:
    if isinstance(value, list):
        return value
    if isinstance(value, models.SparseVector):
        return qe.SparseVector(value.indices, value.values)
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    raise EdgeUnsupportedError(
        f"embedded Qdrant Edge: vector of type {type(value).__name__} is not supported (no inference)"
    )


def _vectors_in(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _vector_in(v) for name, v in value.items()}
    return {"": _vector_in(value)}


def _payload_in(payload: Any) -> dict[str, Any]:
    return dict(to_jsonable_python(payload)) if payload else {}


def _parts_point(point_id: Any, vector: Any, payload: dict[str, Any] | None) -> qe.Point:
    pid = point_id if isinstance(point_id, (int, str)) else _point_id(point_id)  # Edge parses UUID strings itself
    payload = payload or {}
    try:
        return qe.Point(pid, _vectors_in(vector), payload)
    except TypeError:  # a value JSON lacks (datetime, UUID, ...): as qdrant-client would send it
        return qe.Point(pid, _vectors_in(vector), _payload_in(payload))


def _edge_point(p: models.PointStruct) -> qe.Point:
    return _parts_point(p.id, p.vector, p.payload)


def _with_payload(value: Any) -> Any:
    if isinstance(value, models.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(list(value.include))
    if isinstance(value, models.PayloadSelectorExclude):
        return qe.PayloadSelector.Exclude(list(value.exclude))
    if isinstance(value, (bool, list)):
        return value
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: with_payload={value!r} is not supported")


def _with_vectors(value: Any) -> Any:
    if isinstance(value, (bool, list)):
        return value
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: with_vectors={value!r} is not supported")


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _datetime(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # Qdrant reads a datetime without an offset as UTC.
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).isoformat()
    return str(value)


def _match(m: Any) -> Any:
    if isinstance(m, models.MatchValue):
        if isinstance(m.value, bool):
            # qdrant-edge-py 0.9 reads a Python bool as the integer 0/1 (it matched no boolean
            # payload); numpy's bool goes through as a boolean.
            return qe.MatchValue(numpy.bool_(m.value))  # type: ignore[arg-type]
        return qe.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        return qe.MatchAny(list(m.any))  # type: ignore[arg-type]  # str or int values, as the model says
    if isinstance(m, models.MatchExcept):
        return qe.MatchExcept(list(m.except_))  # type: ignore[arg-type]
    if isinstance(m, models.MatchText):
        return qe.MatchText(m.text)
    if isinstance(m, models.MatchTextAny):
        return qe.MatchTextAny(m.text_any)
    if isinstance(m, models.MatchPhrase):
        return qe.MatchPhrase(m.phrase)
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: match condition {type(m).__name__} is not supported")


def _range(r: Any) -> Any:
    if isinstance(r, models.DatetimeRange):
        return qe.RangeDateTime(gte=_datetime(r.gte), gt=_datetime(r.gt), lte=_datetime(r.lte), lt=_datetime(r.lt))
    if isinstance(r, models.Range):
        f = lambda v: None if v is None else float(v)  # noqa: E731
        return qe.RangeFloat(gte=f(r.gte), gt=f(r.gt), lte=f(r.lte), lt=f(r.lt))
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: range {type(r).__name__} is not supported")


def _geo_point(p: models.GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(lon=p.lon, lat=p.lat)


def _condition(c: Any) -> Any:
    if isinstance(c, models.Filter):
        return _filter(c)
    if isinstance(c, models.FieldCondition):
        return qe.FieldCondition(
            c.key,
            match=_match(c.match) if c.match is not None else None,
            range=_range(c.range) if c.range is not None else None,
            geo_bounding_box=qe.GeoBoundingBox(
                _geo_point(c.geo_bounding_box.top_left), _geo_point(c.geo_bounding_box.bottom_right)
            )
            if c.geo_bounding_box is not None
            else None,
            geo_radius=qe.GeoRadius(_geo_point(c.geo_radius.center), c.geo_radius.radius)
            if c.geo_radius is not None
            else None,
            geo_polygon=qe.GeoPolygon(
                [_geo_point(p) for p in c.geo_polygon.exterior.points],
                [[_geo_point(p) for p in ring.points] for ring in c.geo_polygon.interiors or []] or None,
            )
            if c.geo_polygon is not None
            else None,
            values_count=qe.ValuesCount(
                lt=c.values_count.lt, gt=c.values_count.gt, lte=c.values_count.lte, gte=c.values_count.gte
            )
            if c.values_count is not None
            else None,
            is_empty=c.is_empty,
            is_null=c.is_null,
        )
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition({_point_id(i) for i in c.has_id})
    if isinstance(c, models.HasVectorCondition):
        return qe.HasVectorCondition(c.has_vector)
    if isinstance(c, models.NestedCondition):
        return qe.NestedCondition(c.nested.key, _filter(c.nested.filter) or qe.Filter())
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: filter condition {type(c).__name__} is not supported")


def _filter(f: models.Filter | None) -> qe.Filter | None:
    if f is None:
        return None
    if not isinstance(f, models.Filter):
        raise EdgeUnsupportedError(f"embedded Qdrant Edge: filter of type {type(f).__name__} is not supported")
    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould([_condition(c) for c in f.min_should.conditions], f.min_should.min_count)
    return qe.Filter(
        must=[_condition(c) for c in _listed(f.must)] or None,
        should=[_condition(c) for c in _listed(f.should)] or None,
        must_not=[_condition(c) for c in _listed(f.must_not)] or None,
        min_should=min_should,
    )


def _search_params(p: models.SearchParams | None) -> qe.SearchParams | None:
    if p is None:
        return None
    if p.quantization is not None or p.acorn is not None or p.idf is not None:
        raise EdgeUnsupportedError("embedded Qdrant Edge: search_params quantization/acorn/idf are not supported")
    return qe.SearchParams(hnsw_ef=p.hnsw_ef, exact=bool(p.exact), indexed_only=bool(p.indexed_only))


def _selector(points: Any) -> tuple[list[Any] | None, qe.Filter | None]:
    """A points selector as (ids, None) or (None, filter)."""
    if isinstance(points, models.PointIdsList):
        return [_point_id(i) for i in points.points], None
    if isinstance(points, models.FilterSelector):
        return None, _filter(points.filter)
    if isinstance(points, models.Filter):
        return None, _filter(points)
    if isinstance(points, (list, tuple)):
        return [_point_id(i) for i in points], None
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: points selector {type(points).__name__} is not supported")


# -- Edge -> models ---------------------------------------------------------------------------------


def _id_out(value: Any) -> models.ExtendedPointId:
    return str(value) if isinstance(value, uuid.UUID) else value


def _vector_out(value: Any) -> Any:
    if isinstance(value, qe.SparseVector):
        return models.SparseVector(indices=list(value.indices), values=list(value.values))
    return value


def _vectors_out(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) == {""}:  # the collection's unnamed vector: qdrant-client returns it bare
            return _vector_out(value[""])
        return {name: _vector_out(v) for name, v in value.items() if name != ""}
    return value


class _Collection:
    """One collection: its qdrant-client config (persisted as JSON) and its open Edge shard."""

    def __init__(self, folder: Path, config: dict[str, Any], shard: qe.EdgeShard | None) -> None:
        self.folder = folder
        self.config = config
        self.shard = cast(qe.EdgeShard, shard)  # None only while the caller loads it
        self.written = False
        self.unindexed_bytes = 0  # dense vectors written since this client's last build
        self.counting = threading.Lock()  # writes run in several worker threads
        self.building = threading.Lock()  # one build at a time (writes go on meanwhile)
        self.indexing_s = 0.0

    @property
    def point_bytes(self) -> int:
        """Bytes of dense vectors in one point (float32)."""
        raw = self.config.get("vectors") or {}
        params = [raw] if "size" in raw else list(raw.values())
        return 4 * sum(int(p["size"]) for p in params)

    def wrote(self, points: int) -> bool:
        """Count ``points`` written; True when an index build is due (the count starts again)."""
        with self.counting:
            self.written = True
            self.unindexed_bytes += points * self.point_bytes
            if self.unindexed_bytes < INDEX_EVERY_BYTES:
                return False
            self.unindexed_bytes = 0
            return True

    def index(self) -> bool:
        """Build the indexes of what was written; True if Edge had anything to build."""
        with self.building:
            started = time.monotonic()
            built = self.shard.optimize()
            if built:
                # Edge keeps the segments a build replaced (and their mapped pages) until a flush.
                self.shard.flush()
            self.indexing_s += time.monotonic() - started
            return built

    @property
    def vectors(self) -> models.VectorParams | dict[str, models.VectorParams]:
        raw = self.config.get("vectors") or {}
        if "size" in raw:
            return models.VectorParams.model_validate(raw)
        return {name: models.VectorParams.model_validate(p) for name, p in raw.items()}

    @property
    def sparse_vectors(self) -> dict[str, models.SparseVectorParams]:
        return {n: models.SparseVectorParams.model_validate(p) for n, p in (self.config.get("sparse") or {}).items()}

    @property
    def metadata(self) -> dict[str, Any] | None:
        value = self.config.get("metadata")
        return value if isinstance(value, dict) else None

    def save(self) -> None:
        _write_json(self.folder / CONFIG_FILE, self.config)


def _write_json(path: Path, value: Any) -> None:
    # Write-then-rename: a crash leaves the old file or the new one, never half of either.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)


class EdgeQdrantClient(AsyncQdrantClient):
    """qdrant-client's async API on Qdrant Edge shards in a folder; see the module docstring.

    It subclasses ``AsyncQdrantClient`` so that code typed against it accepts it; it does not
    call the base initializer, and any method it does not override fails with
    :class:`EdgeUnsupportedError` instead of reaching a network client.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:  # noqa: D107 - base init is not called on purpose
        self._root = Path(path)
        self._root.mkdir(parents=True, exist_ok=True)
        (self._root / COLLECTIONS_DIR).mkdir(exist_ok=True)
        self._closed = False
        self._open: dict[str, _Collection] = {}
        self._guard = threading.Lock()  # opening shards: worker threads may race for the same one
        store = self._root / STORE_FILE
        if store.exists():
            state = json.loads(store.read_text())
            if state.get("format") != STORE_FORMAT:
                raise ValueError(f"{store} is not an embedded Qdrant Edge store (format {state.get('format')!r})")
            self._aliases: dict[str, str] = dict(state.get("aliases") or {})
        else:
            self._aliases = {}
            self._save_store()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the instance and class lack: the base's state (``_client``, ...).
        raise EdgeUnsupportedError(f"embedded Qdrant Edge: AsyncQdrantClient attribute {name!r} is not available")

    @property
    def path(self) -> Path:
        return self._root

    def _save_store(self) -> None:
        _write_json(
            self._root / STORE_FILE, {"format": STORE_FORMAT, "version": STORE_VERSION, "aliases": self._aliases}
        )

    # -- plumbing --

    def _names(self) -> list[str]:
        folder = self._root / COLLECTIONS_DIR
        return sorted(p.name for p in folder.iterdir() if (p / CONFIG_FILE).exists())

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the embedded Qdrant Edge client is closed")

    def _resolve(self, name: str) -> str:
        if (self._root / COLLECTIONS_DIR / name / CONFIG_FILE).exists():
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise ValueError(f"Collection {name} not found")

    def _collection(self, name: str) -> _Collection:
        """The open collection behind ``name`` (a collection or an alias); opens its shard once."""
        self._check_open()
        real = self._resolve(name)
        with self._guard:
            col = self._open.get(real)
            if col is None:
                folder = self._root / COLLECTIONS_DIR / real
                config = json.loads((folder / CONFIG_FILE).read_text())
                col = _Collection(folder, config, None)
                # With the config it was created with (checked against the segments by Edge), and
                # MAX_SEGMENT_KB, which a store created before it gets this way.
                col.shard = qe.EdgeShard.load(str(folder / SHARD_DIR), _edge_config(col.vectors, col.sparse_vectors))
                self._open[real] = col
            return col

    async def _run(self, fn: Callable[[], T]) -> T:
        self._check_open()
        return await asyncio.to_thread(fn)

    async def _update(self, name: str, make: Callable[[_Collection], qe.UpdateOperation]) -> models.UpdateResult:
        def work() -> None:
            col = self._collection(name)
            col.shard.update(make(col))
            col.written = True

        await self._run(work)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    async def _update_selected(
        self,
        name: str,
        selector: Any,
        by_ids: Callable[[Any], qe.UpdateOperation],
        by_filter: Callable[[Any], qe.UpdateOperation],
    ) -> models.UpdateResult:
        """An update of the points ``selector`` names: by ids, or by a filter (Edge has an operation for each)."""
        ids, flt = _selector(selector)
        if ids is not None:
            return await self._update(name, lambda _c: by_ids(ids))
        assert flt is not None
        return await self._update(name, lambda _c: by_filter(flt))

    # -- collections --

    async def collection_exists(self, collection_name: str, **kwargs: Any) -> bool:
        self._check_open()
        try:
            self._resolve(collection_name)
        except ValueError:
            return False
        return True

    async def get_collections(self, **kwargs: Any) -> models.CollectionsResponse:
        self._check_open()
        return models.CollectionsResponse(collections=[models.CollectionDescription(name=n) for n in self._names()])

    async def get_collection(self, collection_name: str, **kwargs: Any) -> models.CollectionInfo:
        def work() -> models.CollectionInfo:
            col = self._collection(collection_name)
            info = col.shard.info()
            schema = {
                field: models.PayloadIndexInfo(data_type=_SCHEMA_FROM_EDGE[str(i.data_type)], points=i.points)
                for field, i in info.payload_schema.items()
            }
            return models.CollectionInfo(
                status=models.CollectionStatus.GREEN,
                optimizer_status=models.OptimizersStatusOneOf.OK,
                indexed_vectors_count=info.indexed_vectors_count,
                points_count=info.points_count,
                segments_count=info.segments_count,
                payload_schema=schema,
                config=models.CollectionConfig(
                    params=models.CollectionParams(
                        vectors=col.vectors,
                        sparse_vectors=col.sparse_vectors or None,
                        shard_number=1,
                        replication_factor=1,
                        write_consistency_factor=1,
                        on_disk_payload=True,
                    ),
                    hnsw_config=models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000),
                    optimizer_config=models.OptimizersConfig(
                        deleted_threshold=0.2,
                        vacuum_min_vector_number=1000,
                        default_segment_number=0,
                        flush_interval_sec=5,
                    ),
                    wal_config=models.WalConfig(wal_capacity_mb=32, wal_segments_ahead=0),
                    quantization_config=None,
                    metadata=col.metadata,
                ),
            )

        return await self._run(work)

    async def create_collection(
        self,
        collection_name: str,
        vectors_config: Any = None,
        sparse_vectors_config: Mapping[str, models.SparseVectorParams] | None = None,
        *args: Any,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        self._check_open()
        if args:
            raise EdgeUnsupportedError("embedded Qdrant Edge: create_collection() takes its options as keywords")
        _check_kwargs("create_collection", {k: v for k, v in kwargs.items() if k != "on_disk_payload"})
        _validate_name(collection_name)
        for name in sparse_vectors_config or {}:
            if name == "":
                raise ValueError("Sparse vector name cannot be empty")
        if collection_name in self._names():
            raise ValueError(f"Collection {collection_name} already exists")
        if collection_name in self._aliases:
            raise ValueError(f"Alias {collection_name} already exists")
        if isinstance(vectors_config, models.VectorParams):
            vectors: Any = vectors_config.model_dump(mode="json", exclude_none=True)
        else:
            vectors = {n: p.model_dump(mode="json", exclude_none=True) for n, p in (vectors_config or {}).items()}
        config = {
            "vectors": vectors,
            "sparse": {
                n: p.model_dump(mode="json", exclude_none=True) for n, p in (sparse_vectors_config or {}).items()
            },
            "metadata": to_jsonable_python(metadata) if metadata is not None else None,
        }
        edge_config = _edge_config(vectors_config, sparse_vectors_config)
        folder = self._root / COLLECTIONS_DIR / collection_name

        def work() -> None:
            shutil.rmtree(folder, ignore_errors=True)  # the remains of a creation that crashed
            folder.mkdir(parents=True)
            shard = qe.EdgeShard.create(str(folder / SHARD_DIR), edge_config)
            col = _Collection(folder, config, shard)
            col.save()  # last: the config file is what makes the collection exist
            with self._guard:
                self._open[collection_name] = col

        await self._run(work)
        return True

    async def delete_collection(self, collection_name: str, timeout: int | None = None, **kwargs: Any) -> bool:
        self._check_open()
        if collection_name not in self._names():
            return False

        def work() -> None:
            with self._guard:
                col = self._open.pop(collection_name, None)
            if col is not None:
                col.shard.close()
            folder = self._root / COLLECTIONS_DIR / collection_name
            (folder / CONFIG_FILE).unlink()
            shutil.rmtree(folder, ignore_errors=True)

        await self._run(work)
        self._aliases = {a: c for a, c in self._aliases.items() if c != collection_name}
        self._save_store()
        return True

    async def update_collection(
        self,
        collection_name: str,
        *args: Any,
        sparse_vectors_config: Mapping[str, models.SparseVectorParams] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        if args:
            raise EdgeUnsupportedError("embedded Qdrant Edge: update_collection() takes its options as keywords")
        _check_kwargs("update_collection", kwargs)
        col = self._collection(collection_name)
        present = col.sparse_vectors
        for name, params in (sparse_vectors_config or {}).items():
            if name not in present:
                raise ValueError(f"Vector {name} does not exist in the collection")
            if params.modifier != present[name].modifier:
                raise EdgeUnsupportedError(
                    f"embedded Qdrant Edge: cannot change the modifier of sparse vector {name!r}; "
                    "create a new vector name instead"
                )
        if metadata is None:
            return sparse_vectors_config is not None
        merged = dict(col.metadata or {})
        for key, value in to_jsonable_python(metadata).items():
            if value is None:  # as the server's merge: null removes the key
                merged.pop(key, None)
            else:
                merged[key] = value
        col.config["metadata"] = merged
        await self._run(col.save)
        return True

    async def create_vector_name(
        self,
        collection_name: str,
        vector_name: str,
        vector_name_config: Any,
        wait: bool = True,
        ordering: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("create_vector_name", kwargs)
        _validate_name(vector_name, "vector")
        col = self._collection(collection_name)
        if isinstance(col.vectors, models.VectorParams):
            raise EdgeUnsupportedError(
                "embedded Qdrant Edge: a collection with an unnamed vector cannot gain named ones"
            )
        if vector_name in col.vectors or vector_name in col.sparse_vectors:
            raise ValueError(f"Vector {vector_name} already exists in collection {collection_name}")
        if isinstance(vector_name_config, models.SparseVectorNameConfig):
            sparse = vector_name_config.sparse
            modifier = qe.Modifier.Idf if sparse.modifier == models.Modifier.IDF else None
            op = qe.UpdateOperation.create_sparse_vector(vector_name, modifier=modifier)
            record = models.SparseVectorParams(modifier=sparse.modifier)
            key = "sparse"
        elif isinstance(vector_name_config, models.DenseVectorNameConfig):
            dense = vector_name_config.dense
            if dense.multivector_config is not None:
                raise EdgeUnsupportedError("embedded Qdrant Edge: multivector vectors are not supported")
            op = qe.UpdateOperation.create_dense_vector(vector_name, dense.size, _DISTANCE[dense.distance])
            record_dense = models.VectorParams(size=dense.size, distance=dense.distance)
            key = "vectors"
        else:
            raise EdgeUnsupportedError(f"embedded Qdrant Edge: vector config {type(vector_name_config).__name__}")

        def work() -> None:
            col.shard.update(op)
            col.written = True
            section = dict(col.config.get(key) or {})
            section[vector_name] = (record if key == "sparse" else record_dense).model_dump(
                mode="json", exclude_none=True
            )
            col.config[key] = section
            col.save()

        await self._run(work)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    async def delete_vector_name(
        self,
        collection_name: str,
        vector_name: str,
        wait: bool = True,
        ordering: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("delete_vector_name", kwargs)
        col = self._collection(collection_name)
        key = "sparse" if vector_name in col.sparse_vectors else "vectors"
        if isinstance(col.vectors, models.VectorParams) or (key == "vectors" and vector_name not in col.vectors):
            raise ValueError(f"Vector {vector_name} does not exist in collection {collection_name}")

        def work() -> None:
            col.shard.update(qe.UpdateOperation.delete_vector_name(vector_name))
            col.written = True
            section = dict(col.config.get(key) or {})
            section.pop(vector_name, None)
            col.config[key] = section
            col.save()

        await self._run(work)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    # -- aliases (Edge has none: the map lives in edge_store.json) --

    async def update_collection_aliases(
        self, change_aliases_operations: Sequence[Any], timeout: int | None = None, **kwargs: Any
    ) -> bool:
        self._check_open()
        names = set(self._names())
        aliases = dict(self._aliases)
        # All operations apply together or none do, as on the server.
        for op in change_aliases_operations:
            if isinstance(op, models.CreateAliasOperation):
                target, alias = op.create_alias.collection_name, op.create_alias.alias_name
                if target not in names:
                    raise ValueError(f"Collection {target} not found")
                if alias in names:
                    raise ValueError(f"Collection {alias} already exists")
                aliases[alias] = target
            elif isinstance(op, models.DeleteAliasOperation):
                aliases.pop(op.delete_alias.alias_name, None)
            elif isinstance(op, models.RenameAliasOperation):
                old, new = op.rename_alias.old_alias_name, op.rename_alias.new_alias_name
                if new in names:
                    raise ValueError(f"Collection {new} already exists")
                if old not in aliases:
                    raise ValueError(f"Alias {old} does not exist")
                aliases[new] = aliases.pop(old)
            else:
                raise EdgeUnsupportedError(f"embedded Qdrant Edge: alias operation {type(op).__name__}")
        self._aliases = aliases
        self._save_store()
        return True

    async def get_aliases(self, **kwargs: Any) -> models.CollectionsAliasesResponse:
        self._check_open()
        return models.CollectionsAliasesResponse(
            aliases=[models.AliasDescription(alias_name=a, collection_name=c) for a, c in self._aliases.items()]
        )

    async def get_collection_aliases(self, collection_name: str, **kwargs: Any) -> models.CollectionsAliasesResponse:
        self._check_open()
        return models.CollectionsAliasesResponse(
            aliases=[
                models.AliasDescription(alias_name=a, collection_name=c)
                for a, c in self._aliases.items()
                if c == collection_name
            ]
        )

    # -- payload indexes --

    async def create_payload_index(
        self,
        collection_name: str,
        field_name: str,
        field_schema: Any = None,
        field_type: Any = None,
        wait: bool = True,
        ordering: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("create_payload_index", kwargs)
        schema = field_schema if field_schema is not None else field_type
        if isinstance(schema, str):
            schema = models.PayloadSchemaType(schema)
        elif not isinstance(schema, models.PayloadSchemaType):
            kind = getattr(schema, "type", None)
            if kind is None:
                raise EdgeUnsupportedError(f"embedded Qdrant Edge: payload index schema {schema!r}")
            # An index's parameters (is_tenant, on_disk, ...) tune the server; the type is what filters need.
            schema = models.PayloadSchemaType(str(getattr(kind, "value", kind)))
        edge_schema = _SCHEMA_TO_EDGE[schema]
        return await self._update(
            collection_name, lambda _c: qe.UpdateOperation.create_field_index(field_name, edge_schema)
        )

    async def delete_payload_index(
        self,
        collection_name: str,
        field_name: str,
        wait: bool = True,
        ordering: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("delete_payload_index", kwargs)
        return await self._update(collection_name, lambda _c: qe.UpdateOperation.delete_field_index(field_name))

    # -- points --

    async def upsert(
        self,
        collection_name: str,
        points: Any,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("upsert", {"shard_key_selector": shard_key_selector, **kwargs})
        if isinstance(points, models.Batch):
            vectors = points.vectors
            if isinstance(vectors, dict):
                per_point: list[Any] = [{name: vs[i] for name, vs in vectors.items()} for i in range(len(points.ids))]
            else:
                per_point = list(vectors)
            payloads: list[Any] = list(points.payloads) if points.payloads else [None] * len(points.ids)
            structs = [
                models.PointStruct(id=i, vector=v, payload=p)
                for i, v, p in zip(points.ids, per_point, payloads, strict=True)
            ]
        else:
            structs = list(points)
        mode = {
            None: None,
            models.UpdateMode.UPSERT: qe.UpdateMode.Upsert,
            models.UpdateMode.INSERT_ONLY: qe.UpdateMode.InsertOnly,
            models.UpdateMode.UPDATE_ONLY: qe.UpdateMode.UpdateOnly,
        }[update_mode]
        condition = _filter(update_filter)

        # The points are converted in the worker thread too (about 100 us each with a payload of
        # ten fields): a batch would otherwise hold the step's event loop that long.
        def work() -> None:
            col = self._collection(collection_name)
            col.shard.update(qe.UpdateOperation.upsert_points([_edge_point(p) for p in structs], condition, mode))
            if col.wrote(len(structs)):
                self._index(collection_name, col)

        await self._run(work)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    async def upsert_parts(
        self, collection_name: str, points: Sequence[tuple[models.ExtendedPointId, Mapping[str, Any], dict[str, Any]]]
    ) -> None:
        """Upsert points given as ``(id, vectors by name, payload)``, with no qdrant-client model:
        a dense vector as a list of floats or a numpy row (made a list here, one point at a time),
        a sparse one as a ``SparseVector``, a JSON-ready payload. What :meth:`upsert` does with a
        ``PointStruct`` is done with the parts, in the worker thread."""

        def work() -> None:
            col = self._collection(collection_name)
            col.shard.update(qe.UpdateOperation.upsert_points([_parts_point(*p) for p in points]))
            if col.wrote(len(points)):
                self._index(collection_name, col)

        await self._run(work)

    async def update_vectors(
        self,
        collection_name: str,
        points: Sequence[models.PointVectors],
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        update_filter: models.Filter | None = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("update_vectors", {"shard_key_selector": shard_key_selector, **kwargs})
        edge = [
            qe.PointVectors(_point_id(p.id), {n: _vector_in(v) for n, v in p.vector.items()})
            if isinstance(p.vector, dict)
            else qe.PointVectors(_point_id(p.id), _vectors_in(p.vector))
            for p in points
        ]
        condition = _filter(update_filter)
        return await self._update(collection_name, lambda _c: qe.UpdateOperation.update_vectors(edge, condition))

    async def delete_vectors(
        self,
        collection_name: str,
        vectors: Sequence[str],
        points: Any,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("delete_vectors", {"shard_key_selector": shard_key_selector, **kwargs})
        names = list(vectors)
        return await self._update_selected(
            collection_name,
            points,
            lambda ids: qe.UpdateOperation.delete_vectors(ids, names),
            lambda flt: qe.UpdateOperation.delete_vectors_by_filter(flt, names),
        )

    async def delete(
        self,
        collection_name: str,
        points_selector: Any,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("delete", {"shard_key_selector": shard_key_selector, **kwargs})
        return await self._update_selected(
            collection_name,
            points_selector,
            qe.UpdateOperation.delete_points,
            qe.UpdateOperation.delete_points_by_filter,
        )

    async def set_payload(
        self,
        collection_name: str,
        payload: dict[str, Any],
        points: Any,
        key: str | None = None,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("set_payload", {"shard_key_selector": shard_key_selector, **kwargs})
        body = _payload_in(payload)
        return await self._update_selected(
            collection_name,
            points,
            lambda ids: qe.UpdateOperation.set_payload(ids, body, key),
            lambda flt: qe.UpdateOperation.set_payload_by_filter(flt, body, key),
        )

    async def overwrite_payload(
        self,
        collection_name: str,
        payload: dict[str, Any],
        points: Any,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("overwrite_payload", {"shard_key_selector": shard_key_selector, **kwargs})
        body = _payload_in(payload)
        return await self._update_selected(
            collection_name,
            points,
            lambda ids: qe.UpdateOperation.overwrite_payload(ids, body),
            lambda flt: qe.UpdateOperation.overwrite_payload_by_filter(flt, body),
        )

    async def delete_payload(
        self,
        collection_name: str,
        keys: Sequence[str],
        points: Any,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("delete_payload", {"shard_key_selector": shard_key_selector, **kwargs})
        names = list(keys)
        return await self._update_selected(
            collection_name,
            points,
            lambda ids: qe.UpdateOperation.delete_payload(ids, names),
            lambda flt: qe.UpdateOperation.delete_payload_by_filter(flt, names),
        )

    async def batch_update_points(
        self,
        collection_name: str,
        update_operations: Sequence[models.UpdateOperation],
        wait: bool = True,
        ordering: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> list[models.UpdateResult]:
        """Payload operations (set, delete) applied in order; any other kind is refused by name."""
        _check_kwargs("batch_update_points", kwargs)
        results = []
        for op in update_operations:
            if isinstance(op, models.SetPayloadOperation):
                sp = op.set_payload
                selector = sp.points if sp.points is not None else sp.filter
                results.append(await self.set_payload(collection_name, sp.payload, selector, key=sp.key))
            elif isinstance(op, models.DeletePayloadOperation):
                dp = op.delete_payload
                selector = dp.points if dp.points is not None else dp.filter
                results.append(await self.delete_payload(collection_name, dp.keys, selector))
            else:
                raise EdgeUnsupportedError(
                    f"embedded Qdrant Edge: batch_update_points() does not support {type(op).__name__} "
                    "(set_payload and delete_payload are)"
                )
        return results

    async def clear_payload(
        self,
        collection_name: str,
        points_selector: Any,
        wait: bool = True,
        ordering: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.UpdateResult:
        _check_kwargs("clear_payload", {"shard_key_selector": shard_key_selector, **kwargs})
        return await self._update_selected(
            collection_name,
            points_selector,
            qe.UpdateOperation.clear_payload,
            qe.UpdateOperation.clear_payload_by_filter,
        )

    # -- reads --

    async def retrieve(
        self,
        collection_name: str,
        ids: Sequence[Any],
        with_payload: Any = True,
        with_vectors: Any = False,
        consistency: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> list[models.Record]:
        _check_kwargs("retrieve", {"shard_key_selector": shard_key_selector, **kwargs})
        wanted = [_point_id(i) for i in ids]
        wp, wv = _with_payload(with_payload), _with_vectors(with_vectors)

        def work() -> list[models.Record]:
            found = self._collection(collection_name).shard.retrieve(wanted, wp, wv)
            return [
                models.Record(
                    id=_id_out(r.id), payload=r.payload if wp is not False else None, vector=_vectors_out(r.vector)
                )
                for r in found
            ]

        return await self._run(work)

    async def scroll(
        self,
        collection_name: str,
        scroll_filter: models.Filter | None = None,
        limit: int = 10,
        order_by: Any = None,
        offset: Any = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        consistency: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> tuple[list[models.Record], models.ExtendedPointId | None]:
        _check_kwargs("scroll", {"shard_key_selector": shard_key_selector, **kwargs})
        request = qe.ScrollRequest(
            offset=_point_id(offset) if offset is not None else None,
            limit=limit,
            filter=_filter(scroll_filter),
            with_payload=_with_payload(with_payload),
            with_vector=_with_vectors(with_vectors),
            order_by=_order_by(order_by) if order_by is not None else None,
        )

        def work() -> tuple[list[models.Record], models.ExtendedPointId | None]:
            found, next_offset = self._collection(collection_name).shard.scroll(request)
            records = [
                models.Record(
                    id=_id_out(r.id),
                    payload=r.payload if with_payload is not False else None,
                    vector=_vectors_out(r.vector),
                    order_value=r.order_value,
                )
                for r in found
            ]
            return records, (_id_out(next_offset) if next_offset is not None else None)

        return await self._run(work)

    async def count(
        self,
        collection_name: str,
        count_filter: models.Filter | None = None,
        exact: bool = True,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> models.CountResult:
        _check_kwargs("count", {"shard_key_selector": shard_key_selector, **kwargs})
        request = qe.CountRequest(exact=exact, filter=_filter(count_filter))
        n = await self._run(lambda: self._collection(collection_name).shard.count(request))
        return models.CountResult(count=n)

    async def facet(
        self,
        collection_name: str,
        key: str,
        facet_filter: models.Filter | None = None,
        limit: int = 10,
        exact: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> models.FacetResponse:
        request = qe.FacetRequest(key=key, limit=limit, exact=exact, filter=_filter(facet_filter))
        found = await self._run(lambda: self._collection(collection_name).shard.facet(request))
        return models.FacetResponse(hits=[models.FacetValueHit(value=h.value, count=h.count) for h in found.hits])

    async def _query_request(
        self,
        name: str,
        *,
        query: Any,
        using: str | None,
        prefetch: Any,
        filter: models.Filter | None,
        params: models.SearchParams | None,
        limit: int | None,
        offset: int | None,
        with_payload: Any,
        with_vectors: Any,
        score_threshold: float | None,
        lookup_from: Any,
    ) -> qe.QueryRequest:
        if lookup_from is not None:
            raise EdgeUnsupportedError("embedded Qdrant Edge: lookup_from is not supported")
        prefetches = [await self._prefetch(name, p) for p in _listed(prefetch)]
        return qe.QueryRequest(
            limit=limit if limit is not None else 10,
            offset=offset,
            query=await self._scoring(name, query, using),
            prefetches=prefetches or None,
            with_vector=_with_vectors(with_vectors),
            with_payload=_with_payload(with_payload),
            filter=_filter(filter),
            score_threshold=score_threshold,
            params=_search_params(params),
        )

    async def _prefetch(self, name: str, p: models.Prefetch) -> qe.Prefetch:
        if p.lookup_from is not None:
            raise EdgeUnsupportedError("embedded Qdrant Edge: prefetch lookup_from is not supported")
        return qe.Prefetch(
            limit=p.limit if p.limit is not None else 10,
            query=await self._scoring(name, p.query, p.using),
            prefetches=[await self._prefetch(name, q) for q in _listed(p.prefetch)] or None,
            params=_search_params(p.params),
            filter=_filter(p.filter),
            score_threshold=p.score_threshold,
        )

    async def _scoring(self, name: str, query: Any, using: str | None) -> Any:
        """A qdrant-client query (vector, NearestQuery, fusion, order_by, point id) as Edge's."""
        if query is None:
            return None
        if isinstance(query, models.NearestQuery):
            if query.mmr is not None:
                raise EdgeUnsupportedError("embedded Qdrant Edge: NearestQuery with mmr is not supported")
            query = query.nearest
        if isinstance(query, models.FusionQuery):
            if query.fusion == models.Fusion.RRF:
                return qe.Fusion.Rrf(k=RRF_DEFAULT_K)
            return qe.Fusion.Dbsf()
        if isinstance(query, models.RrfQuery):
            return qe.Fusion.Rrf(k=query.rrf.k if query.rrf.k is not None else RRF_DEFAULT_K, weights=query.rrf.weights)
        if isinstance(query, models.OrderByQuery):
            return _order_by(query.order_by)
        if isinstance(query, (int, uuid.UUID)) or (isinstance(query, str)):
            # Search by a stored point: its own vector, as the server does.
            found = await self.retrieve(name, [query], with_payload=False, with_vectors=[using or ""])
            if not found:
                raise ValueError(f"No point with id {query} found in collection {name}")
            vector = found[0].vector
            query = vector.get(using or "") if isinstance(vector, dict) else vector
        if isinstance(query, (list, models.SparseVector)) or hasattr(query, "tolist"):
            return qe.Query.Nearest(_vector_in(query), using=using or None)
        raise EdgeUnsupportedError(f"embedded Qdrant Edge: query of type {type(query).__name__} is not supported")

    async def query_points(
        self,
        collection_name: str,
        query: Any = None,
        using: str | None = None,
        prefetch: models.Prefetch | list[models.Prefetch] | None = None,
        query_filter: models.Filter | None = None,
        search_params: models.SearchParams | None = None,
        limit: int = 10,
        offset: int | None = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        score_threshold: float | None = None,
        lookup_from: Any = None,
        consistency: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> rest.QueryResponse:
        _check_kwargs("query_points", {"shard_key_selector": shard_key_selector, **kwargs})
        if _fused_here(query, prefetch, score_threshold, lookup_from):
            fused = await self._fused(
                collection_name,
                query,
                prefetch,
                query_filter,
                limit=limit,
                offset=offset,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
            return rest.QueryResponse(points=fused)
        request = await self._query_request(
            collection_name,
            query=query,
            using=using,
            prefetch=prefetch,
            filter=query_filter,
            params=search_params,
            limit=limit,
            offset=offset,
            with_payload=with_payload,
            with_vectors=with_vectors,
            score_threshold=score_threshold,
            lookup_from=lookup_from,
        )
        points = await self._run(lambda: self._query(collection_name, request, with_payload))
        return rest.QueryResponse(points=points)

    def _query(self, name: str, request: qe.QueryRequest, with_payload: Any) -> list[models.ScoredPoint]:
        found = self._collection(name).shard.query(request)
        return [
            models.ScoredPoint(
                id=_id_out(p.id),
                version=p.version,
                score=p.score,
                payload=p.payload if with_payload is not False else None,
                vector=_vectors_out(p.vector),
                order_value=p.order_value,
            )
            for p in found
        ]

    async def query_batch_points(
        self,
        collection_name: str,
        requests: Sequence[models.QueryRequest],
        consistency: Any = None,
        timeout: int | None = None,
        **kwargs: Any,
    ) -> list[rest.QueryResponse]:
        _check_kwargs("query_batch_points", kwargs)
        out = []
        for request in requests:
            if request.shard_key is not None:
                raise EdgeUnsupportedError("embedded Qdrant Edge: shard keys are not supported")
            with_payload = request.with_payload if request.with_payload is not None else False
            if _fused_here(request.query, request.prefetch, request.score_threshold, request.lookup_from):
                fused = await self._fused(
                    collection_name,
                    request.query,
                    request.prefetch,
                    request.filter,
                    limit=request.limit if request.limit is not None else 10,
                    offset=request.offset,
                    with_payload=with_payload,
                    with_vectors=request.with_vector if request.with_vector is not None else False,
                )
                out.append(rest.QueryResponse(points=fused))
                continue
            edge = await self._query_request(
                collection_name,
                query=request.query,
                using=request.using,
                prefetch=request.prefetch,
                filter=request.filter,
                params=request.params,
                limit=request.limit,
                offset=request.offset,
                with_payload=with_payload,
                with_vectors=request.with_vector if request.with_vector is not None else False,
                score_threshold=request.score_threshold,
                lookup_from=request.lookup_from,
            )
            points = await self._run(functools.partial(self._query, collection_name, edge, with_payload))
            out.append(rest.QueryResponse(points=points))
        return out

    async def _fused(
        self,
        name: str,
        query: Any,  # a FusionQuery or an RrfQuery (see _fused_here)
        prefetch: Any,
        root_filter: models.Filter | None,
        *,
        limit: int,
        offset: int | None,
        with_payload: Any,
        with_vectors: Any,
    ) -> list[models.ScoredPoint]:
        """A fusion of prefetch legs, fused here with qdrant-client's own RRF / DBSF (see :func:`_fused_here`)."""
        legs = []
        for p in _listed(prefetch):
            flt = p.filter if root_filter is None else root_filter if p.filter is None else _both(root_filter, p.filter)
            legs.append(
                qe.QueryRequest(
                    limit=p.limit if p.limit is not None else 10,
                    query=await self._scoring(name, p.query, p.using),
                    filter=_filter(flt),
                    score_threshold=p.score_threshold,
                    params=_search_params(p.params),
                    with_payload=False,
                    with_vector=False,
                )
            )
        wp, wv = _with_payload(with_payload), _with_vectors(with_vectors)
        skip = offset or 0

        def work() -> list[models.ScoredPoint]:
            shard = self._collection(name).shard
            responses = [
                [rest.ScoredPoint(id=_id_out(p.id), version=p.version, score=p.score) for p in shard.query(leg)]
                for leg in legs
            ]
            if isinstance(query, models.RrfQuery):
                fused = reciprocal_rank_fusion(responses, skip + limit, query.rrf.k, query.rrf.weights)
            elif query.fusion == models.Fusion.RRF:
                fused = reciprocal_rank_fusion(responses, skip + limit, RRF_DEFAULT_K)
            else:
                fused = distribution_based_score_fusion(responses, skip + limit)
            chosen = fused[skip : skip + limit]
            found: dict[Any, Any] = {}
            if chosen and (wp is not False or wv is not False):
                records = shard.retrieve([_point_id(p.id) for p in chosen], wp, wv)
                found = {_id_out(r.id): r for r in records}
            return [
                models.ScoredPoint(
                    id=p.id,
                    version=p.version,
                    score=p.score,
                    payload=found[p.id].payload if wp is not False and p.id in found else None,
                    vector=_vectors_out(found[p.id].vector) if wv is not False and p.id in found else None,
                )
                for p in chosen
            ]

        return await self._run(work)

    # -- lifecycle --

    async def optimize(self, collection_name: str) -> bool:
        """Build the HNSW and payload indexes of what was written since (Edge does not do it on its own)."""
        return await self._run(lambda: self._index(collection_name, self._collection(collection_name)))

    def indexing_seconds(self, collection_name: str) -> float:
        """Time this client has spent building the collection's indexes (as it wrote and on ``optimize``)."""
        return self._collection(collection_name).indexing_s

    @staticmethod
    def _index(name: str, col: _Collection) -> bool:
        started = time.monotonic()
        built = col.index()
        if built:
            log.info("embedded Qdrant: indexed %s in %.1fs", name, time.monotonic() - started)
        return built

    async def close(self, grpc_grace: float | None = None, **kwargs: Any) -> None:
        """Index what this client wrote, flush and close every shard, in a worker thread."""
        if self._closed:
            return
        with self._guard:
            opened = list(self._open.items())
            self._open.clear()
        self._closed = True
        await asyncio.to_thread(_close_all, opened)


def _unsupported(name: str) -> Callable[..., Any]:
    def method(self: EdgeQdrantClient, *args: Any, **kwargs: Any) -> Any:
        raise EdgeUnsupportedError(f"embedded Qdrant Edge: AsyncQdrantClient.{name}() is not supported")

    method.__name__ = name
    return method


# Every public AsyncQdrantClient method this class does not implement fails by name.
SUPPORTED_METHODS = sorted(
    n
    for n, v in vars(EdgeQdrantClient).items()
    if not n.startswith("_") and callable(v) and hasattr(AsyncQdrantClient, n)
)
for _name in dir(AsyncQdrantClient):
    if (
        not _name.startswith("_")
        and _name not in vars(EdgeQdrantClient)
        and callable(getattr(AsyncQdrantClient, _name))
    ):
        setattr(EdgeQdrantClient, _name, _unsupported(_name))


def _close_all(opened: list[tuple[str, _Collection]]) -> None:
    with contextlib.ExitStack() as stack:  # every shard closes, even if another one's indexing fails
        for _name, col in opened:
            stack.callback(col.shard.close)
        for name, col in opened:
            if col.written:
                EdgeQdrantClient._index(name, col)
            col.shard.flush()


def _fused_here(query: Any, prefetch: Any, score_threshold: float | None, lookup_from: Any) -> bool:
    """Whether a query is a fusion of plain prefetch legs, which the adapter fuses itself.

    Edge (like the Qdrant server) returns points of equal fused score in no fixed order, and in a
    rank fusion equal scores are common (each leg's first gets 1/k): the same query could rank
    differently from one process to the next. Each leg runs on Edge; the fusion is qdrant-client's
    own (local mode's), which keeps equal scores in leg order (the first leg's ranking first), so
    the answer is the same every time and the same as local mode's. Anything else (nested legs, a
    fused score threshold, ``lookup_from``) is left to Edge's own fusion.
    """
    legs = _listed(prefetch)
    return (
        isinstance(query, (models.FusionQuery, models.RrfQuery))
        and bool(legs)
        and score_threshold is None
        and lookup_from is None
        and all(not _listed(p.prefetch) and p.lookup_from is None for p in legs)
    )


def _both(a: models.Filter, b: models.Filter) -> models.Filter:
    return models.Filter(must=[a, b])


def _order_by(value: Any) -> qe.OrderBy:
    if isinstance(value, str):
        return qe.OrderBy(value)
    if isinstance(value, models.OrderBy):
        direction = None
        if value.direction is not None:
            direction = qe.Direction.Asc if value.direction == models.Direction.ASC else qe.Direction.Desc
        start: Any = value.start_from
        if isinstance(start, (dt.datetime, dt.date)):
            start = _datetime(start)
        return qe.OrderBy(value.key, direction=direction, start_from=start)
    raise EdgeUnsupportedError(f"embedded Qdrant Edge: order_by {value!r} is not supported")


# -- migration from qdrant-client's local mode -------------------------------------------------------

MIGRATION_PAGE = 512
BACKUP_SUFFIX = ".local-mode-backup"


def is_local_mode_folder(path: str | os.PathLike[str]) -> bool:
    """A folder qdrant-client's local mode wrote (``meta.json``, ``collection/``) and Edge has not taken."""
    root = Path(path)
    return (root / "meta.json").is_file() and not (root / STORE_FILE).exists()


async def migrate_local_mode(
    path: str | os.PathLike[str],
    indexes_for: Callable[[dict[str, Any]], Mapping[str, models.PayloadSchemaType]] | None = None,
) -> str:
    """Copy a qdrant-client local-mode folder into an Edge store at the same path; return a one-line report.

    Every collection keeps its vector params, metadata, aliases and points (vectors and
    payloads, read back with qdrant-client itself); ``indexes_for`` names the payload indexes
    to build from a collection's metadata (local mode kept none). The Edge store is built
    beside the folder and swapped in only when every count matches; the old folder is
    renamed aside, never deleted. The caller holds the folder's lock.
    """
    root = Path(path)
    staging = root.with_name(root.name + ".edge-migrating")
    shutil.rmtree(staging, ignore_errors=True)  # a migration that crashed starts over
    source = AsyncQdrantClient(path=str(root))
    target = EdgeQdrantClient(staging)
    totals = {"collections": 0, "points": 0}
    try:
        for description in (await source.get_collections()).collections:
            name = description.name
            info = await source.get_collection(name)
            params = info.config.params
            await target.create_collection(
                name,
                vectors_config=params.vectors,
                sparse_vectors_config=params.sparse_vectors,
                metadata=info.config.metadata,
            )
            for field, schema in (indexes_for(info.config.metadata or {}) if indexes_for else {}).items():
                await target.create_payload_index(name, field, field_schema=schema)
            offset: Any = None
            while True:
                records, offset = await source.scroll(
                    name, limit=MIGRATION_PAGE, offset=offset, with_payload=True, with_vectors=True
                )
                if records:
                    await target.upsert(
                        name,
                        [
                            models.PointStruct(id=r.id, vector=cast(Any, r.vector) or {}, payload=r.payload)
                            for r in records
                        ],
                    )
                if offset is None:
                    break
            expected = (await source.count(name, exact=True)).count
            copied = (await target.count(name, exact=True)).count
            if copied != expected:
                raise RuntimeError(
                    f"migrating Qdrant local folder {root}: collection {name} has {expected} points "
                    f"but {copied} were copied; the folder is left as it was"
                )
            totals["collections"] += 1
            totals["points"] += copied
        aliases = (await source.get_aliases()).aliases
        if aliases:
            await target.update_collection_aliases(
                [
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(collection_name=a.collection_name, alias_name=a.alias_name)
                    )
                    for a in aliases
                ]
            )
    finally:
        await source.close()
        await target.close()
    backup = root.with_name(root.name + BACKUP_SUFFIX)
    if backup.exists():
        backup = root.with_name(f"{root.name}{BACKUP_SUFFIX}-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(root, backup)
    os.replace(staging, root)
    return (
        f"Qdrant local folder {root} migrated from qdrant-client local mode to Qdrant Edge "
        f"({totals['collections']} collections, {totals['points']} points); the old folder is kept at {backup}"
    )
