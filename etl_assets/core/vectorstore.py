"""Qdrant: collection naming, creation with a recorded model, upserts and deletes.

One collection per tenant and entity, ``client_<tenant>_<entity>``. Each collection
records the embedding model and dimension it was built with; opening it with another
is an error, never a silent mix of vector spaces.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from filelock import FileLock, Timeout
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from etl_assets.core.edge_client import STORE_FILE as EDGE_STORE_FILE
from etl_assets.core.edge_client import EdgeQdrantClient, is_local_mode_folder, migrate_local_mode
from etl_assets.core.embeddings.base import ModelMismatchError
from etl_assets.core.errors import ConfigError
from etl_assets.core.http import display_url as display_url  # importers (the CLI) find it here too
from etl_assets.core.http import host_port, one_line, transport_reason
from etl_assets.core.settings import QdrantSettings as QdrantSettings
from etl_assets.core.sparse import DENSE_VECTOR, SPARSE_VECTOR, SPARSE_VERSION, sparse_vector_params
from etl_assets.core.tenants import validate_tenant_id

log = logging.getLogger(__name__)

POINT_NAMESPACE = uuid.UUID("5b0f8f0e-3c1e-5a8e-9f57-6574c2d1a001")
SCHEMA_VERSION = 1
# Request sizes for Qdrant's API. Its REST server refuses bodies over 32 MiB by default
# (service.max_request_size_mb); a 1536-dimension point is ~20 KB as JSON, so 256 points
# stay near 5 MB and the byte budget is the backstop for larger vectors or payloads.
UPSERT_MAX_POINTS = 256
UPSERT_MAX_BYTES = 16 * 1024 * 1024
# The embedded engine (Qdrant Edge, in-process) has no request to size: a write is one call
# into the engine, and what it costs per call (a hop to a worker thread and back, which a busy
# machine makes wait for the scheduler twice, and the engine's per-call work) is paid per call,
# not per point. Its writes are 16x larger, with no byte budget (estimating it costs a few
# microseconds a point); the cap bounds what one write holds converted at once (Edge's copy of
# the points, about 3 KB each at 384 dimensions) and what the vector step writes at once.
EDGE_UPSERT_MAX_POINTS = 4096
DELETE_MAX_IDS = 1000
RETRIEVE_MAX_IDS = 1000
# Collection metadata key under which the engine records the state it last completed.
SYNC_MARKER_KEY = "etl_vector_sync"
# Collection metadata key under which the engine records what it learned about the provider's
# limits (the largest input it takes), so that later runs chunk rows to fit from the start.
PROVIDER_LIMITS_KEY = "embedding_provider_limits"
# Collection metadata key recording which vectors the points carry (see VectorLayout).
VECTORS_KEY = "vectors"
# Suffix of the collection an upgrade to named vectors fills before it replaces the original.
UPGRADE_SUFFIX = "__named"
# Metadata of a collection being re-filled from its staging copy (cleared when complete).
UPGRADE_PENDING_KEY = "upgrade_pending"


def collection_name(tenant_id: str, entity: str) -> str:
    validate_tenant_id(tenant_id)
    if not entity.isidentifier():
        raise ValueError(f"entity {entity!r} is not a valid collection suffix")
    return f"client_{tenant_id}_{entity}"


def point_id(tenant_id: str, entity: str, external_id: str, chunk: int = 0) -> str:
    """Deterministic point id: the same row and chunk always land on the same point."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant_id}\x1f{entity}\x1f{external_id}\x1f{chunk}"))


# Who may find a point (guarantee 4): the principals a search's filter matches (see access_sync).
ACCESS_PAYLOAD = "access"
# Every collection indexes these; an entity's spec adds its own filter fields (payload_indexes).
BASE_PAYLOAD_INDEXES = {
    "tenant_id": "keyword",
    "external_id": "keyword",
    "source": "keyword",
    ACCESS_PAYLOAD: "keyword",
}


# Collection metadata key recording the row-dependent filter fields the sync has indexed (an
# entity spec's ``row_filters``: a tenant's custom fields): {payload field: {"kind", "name"}}.
ROW_FILTERS_KEY = "row_filters"


def payload_schema(kind: str) -> models.PayloadSchemaType:
    """The Qdrant schema of a payload index kind named in an entity spec."""
    return {
        "keyword": models.PayloadSchemaType.KEYWORD,
        "integer": models.PayloadSchemaType.INTEGER,
        "float": models.PayloadSchemaType.FLOAT,
        "datetime": models.PayloadSchemaType.DATETIME,
        "bool": models.PayloadSchemaType.BOOL,
    }[kind]


def recorded_filters(metadata: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    """The row-dependent filter fields a collection's metadata records: {payload field: (kind, name)}."""
    record = (metadata or {}).get(ROW_FILTERS_KEY)
    out: dict[str, tuple[str, str]] = {}
    for key, entry in (record if isinstance(record, dict) else {}).items():
        if isinstance(entry, dict) and entry.get("kind") in ("keyword", "integer", "float", "datetime", "bool"):
            out[str(key)] = (str(entry["kind"]), str(entry.get("name") or key))
    return out


@dataclass(frozen=True)
class VectorLayout:
    """Which vectors a collection's points carry.

    ``dense`` is the name of the dense vector: ``"dense"`` for collections built since hybrid
    search, ``""`` (Qdrant's unnamed default vector) for those built before. ``sparse`` is the
    BM25 vector's name, or None when the points have none (an older collection, until
    :func:`~etl_assets.core.vectorsync.sync_vectors` upgrades it).
    """

    dense: str
    size: int | None
    sparse: str | None = None
    sparse_version: str | None = None

    @property
    def using(self) -> str | None:
        """The ``using`` argument that addresses the dense vector in a query."""
        return self.dense or None

    @property
    def hybrid(self) -> bool:
        return self.sparse is not None

    def record(self) -> dict[str, Any]:
        return {"dense": self.dense, "sparse": self.sparse, "sparse_version": self.sparse_version}


NAMED_LAYOUT = VectorLayout(DENSE_VECTOR, None, SPARSE_VECTOR, SPARSE_VERSION)


def layout_of(info: models.CollectionInfo) -> VectorLayout:
    """The vectors a collection holds, from its config (the recorded layout says which is BM25)."""
    params = info.config.params.vectors
    recorded = (info.config.metadata or {}).get(VECTORS_KEY)
    recorded = recorded if isinstance(recorded, dict) else {}
    sparse_names = set((info.config.params.sparse_vectors or {}).keys())
    if isinstance(params, models.VectorParams):
        dense, size = "", params.size
    elif isinstance(params, dict) and DENSE_VECTOR in params:
        dense, size = DENSE_VECTOR, params[DENSE_VECTOR].size
    else:
        dense, size = "", None
    sparse = SPARSE_VECTOR if SPARSE_VECTOR in sparse_names else None
    return VectorLayout(dense, size, sparse, recorded.get("sparse_version") if sparse else None)


@dataclass
class ExistingPoint:
    id: str
    external_id: str | None
    content_hash: str | None
    chunks: int | None
    access: tuple[str, ...] | None = None  # the point's access list (None: it has none)


class PointRef(NamedTuple):
    """What the orphan sweep needs to know about a stored point."""

    id: str
    external_id: str | None
    chunk: int | None
    content_hash: str | None


class VectorCollection(Protocol):
    """What the vector engine needs from a collection; :class:`Collection` is the Qdrant one.

    The benchmark stands in a sink that discards vectors, so that the engine's own memory
    and speed can be measured without the store's.
    """

    name: str

    @property
    def upsert_points(self) -> int:
        """Most points per :meth:`write` call the vector engine makes."""
        ...

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool: ...

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingPoint]: ...

    async def write(self, points: Sequence[NewPoint]) -> None: ...

    async def set_access(self, lists: Mapping[tuple[str, ...] | None, Sequence[str]]) -> int: ...

    async def delete_ids(self, ids: Iterable[str]) -> int: ...

    def scroll_external_ids(self, *, page: int = 1000) -> AsyncIterator[list[PointRef]]: ...

    async def count(self, **filters: Any) -> int: ...

    async def read_marker(self) -> dict[str, Any] | None:
        """What the last complete sync recorded (see ``sync_vectors``), if anything."""
        ...

    async def write_marker(self, marker: dict[str, Any] | None) -> None: ...

    async def read_provider_limits(self) -> dict[str, Any] | None:
        """What earlier syncs learned about the provider's limits (see ``sync_vectors``), if anything."""
        ...

    async def write_provider_limits(self, limits: dict[str, Any]) -> None: ...

    async def ensure_row_filters(self, fields: Mapping[str, tuple[str, str]]) -> list[str]:
        """Index and record row-dependent filter fields (see :meth:`Collection.ensure_row_filters`)."""
        ...


def _approx_bytes(point: models.PointStruct) -> int:
    # JSON size estimate: ~12 characters per float, and the payload's strings plus a little
    # per field (str() of the payload would cost more than the upsert's own encoding).
    vector = point.vector
    floats = 0
    for v in vector.values() if isinstance(vector, dict) else [vector]:
        if isinstance(v, list):
            floats += len(v)
        elif isinstance(v, models.SparseVector):
            floats += 2 * len(v.indices)
    payload = point.payload or {}
    strings = sum(len(v) for v in payload.values() if isinstance(v, str))
    return 12 * floats + strings + 32 * len(payload) + 64


class NewPoint(NamedTuple):
    """A point the vector step writes, as its parts: no qdrant-client model is made for it on the
    embedded engine, which takes the parts as they are (see :meth:`Collection.write`)."""

    id: models.ExtendedPointId
    dense: Any  # the embedder's vector: a list of floats or a numpy row
    sparse: models.SparseVector
    payload: dict[str, Any]


def _dense_list(vector: Any) -> list[float]:
    return vector.tolist() if hasattr(vector, "tolist") else list(vector)


def new_point(point_id_: models.ExtendedPointId, vector: Any, payload: dict[str, Any]) -> models.PointStruct:
    """A point whose parts this project built: a string or integer id, vectors as lists of floats (and
    ``SparseVector`` models), a JSON-ready payload. They are already what qdrant-client's model holds,
    so pydantic's validation is skipped: it costs more per point than Qdrant Edge's own conversion
    (it checks every float of the vector), and a server validates the request anyway."""
    return models.PointStruct.model_construct(id=point_id_, vector=vector, payload=payload)


def upsert_batches(
    points: Sequence[models.PointStruct],
    *,
    max_points: int = UPSERT_MAX_POINTS,
    max_bytes: int | None = UPSERT_MAX_BYTES,
) -> Iterator[list[models.PointStruct]]:
    """Consecutive slices of ``points``, each within the point count and approximate byte budget (if any)."""
    if max_bytes is None:
        for start in range(0, len(points), max_points):
            yield list(points[start : start + max_points])
        return
    batch: list[models.PointStruct] = []
    size = 0
    for point in points:
        n = _approx_bytes(point)
        if batch and (len(batch) >= max_points or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(point)
        size += n
    if batch:
        yield batch


@dataclass
class Collection:
    """One tenant's collection for one entity, on an open AsyncQdrantClient."""

    client: AsyncQdrantClient
    name: str
    tenant_id: str
    entity: str
    local: bool = False

    @property
    def embedded(self) -> bool:
        """Qdrant Edge in this process: writes are calls into the engine, not requests."""
        return isinstance(self.client, EdgeQdrantClient)

    @property
    def upsert_points(self) -> int:
        """Points per write: a server's request-size cap, or the embedded engine's larger calls."""
        return EDGE_UPSERT_MAX_POINTS if self.embedded else UPSERT_MAX_POINTS

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool:
        """Create the collection if needed; refuse one built with another model. True if created.

        A new collection has named vectors: ``dense`` and the sparse ``bm25`` (IDF modifier).
        One built before hybrid search (an unnamed dense vector only) is accepted here and
        upgraded by the sync (:meth:`dense_only`, :meth:`begin_upgrade`).
        """
        info = await self._info()
        # An interrupted upgrade (see below) leaves the collection missing, dense-only or marked
        # as being re-filled; only then is there a staging copy to look for. A missing one is
        # looked for in the collection list, so that creating a collection addresses no other.
        if info is None:
            listed = {c.name for c in (await self.client.get_collections()).collections}
            pending = self.staging_name in listed
        else:
            pending = not layout_of(info).hybrid or bool((info.config.metadata or {}).get(UPGRADE_PENDING_KEY))
        if pending:
            await self._recover_upgrade(model=model, dimensions=dimensions, indexes=indexes)
            info = await self._info()
        if info is not None:
            size = layout_of(info).size
            meta = info.config.metadata or {}
            built_with = meta.get("embedding_model")
            if size != dimensions or (built_with is not None and built_with != model):
                raise ModelMismatchError(
                    f"collection {self.name} was built with model {built_with!r} ({size} dimensions) "
                    f"but the configured embeddings are {model!r} ({dimensions} dimensions); "
                    "set EMBEDDING_MODEL / EMBEDDING_DIMENSIONS to match, or delete the collection "
                    "in Qdrant so the next run rebuilds it"
                )
            # A collection built before a filter field was indexed (a spec's new field, or a custom
            # field whose index an earlier run recorded but did not finish) gets the index now.
            wanted = {**BASE_PAYLOAD_INDEXES, **(indexes or {})}
            wanted |= {key: kind for key, (kind, _) in recorded_filters(meta).items()}
            await self._add_indexes(info, wanted)
            return False
        await self._create(self.name, model=model, dimensions=dimensions, indexes=indexes)
        return True

    async def _info(self) -> models.CollectionInfo | None:
        if not await self.client.collection_exists(self.name):
            return None
        return await self.client.get_collection(self.name)

    async def _create(
        self, name: str, *, model: str, dimensions: int, indexes: dict[str, str] | None, **extra: Any
    ) -> None:
        await self.client.create_collection(
            name,
            vectors_config={DENSE_VECTOR: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE_VECTOR: sparse_vector_params()},
            metadata={
                "embedding_model": model,
                "dimensions": dimensions,
                "tenant_id": self.tenant_id,
                "entity": self.entity,
                "schema_version": SCHEMA_VERSION,
                VECTORS_KEY: NAMED_LAYOUT.record(),
                **extra,
            },
        )
        # qdrant-client's local mode ignores payload indexes (and warns about them); Edge builds them.
        if self.has_payload_indexes:
            for field_name, kind in {**BASE_PAYLOAD_INDEXES, **(indexes or {})}.items():
                await self.client.create_payload_index(name, field_name, field_schema=payload_schema(kind))

    @property
    def has_payload_indexes(self) -> bool:
        """A server and Qdrant Edge keep payload indexes; qdrant-client's local mode has none."""
        return not self.local or isinstance(self.client, EdgeQdrantClient)

    async def _add_indexes(self, info: models.CollectionInfo, wanted: Mapping[str, str]) -> list[str]:
        """Create the payload indexes of ``wanted`` (field -> kind) the collection lacks; returns them.

        An index that exists with another type is left as it is and named in a warning: replacing
        it would drop the filter for every point written with the old type until it is re-written.
        """
        if not self.has_payload_indexes:
            return []
        present = info.payload_schema or {}
        created = []
        for field_name, kind in wanted.items():
            schema = payload_schema(kind)
            have = present.get(field_name)
            if have is None:
                await self.client.create_payload_index(self.name, field_name, field_schema=schema)
                created.append(field_name)
            elif have.data_type != schema:
                log.warning(
                    "%s: payload field %s is indexed as %s, its values are now %s; filters on it may miss points "
                    "(delete the index in Qdrant and re-run the vector step to rebuild it)",
                    self.name,
                    field_name,
                    have.data_type.value,
                    schema.value,
                )
        return created

    async def ensure_row_filters(self, fields: Mapping[str, tuple[str, str]]) -> list[str]:
        """Index the row-dependent filter ``fields`` ({payload field: (kind, name)}, an entity spec's
        ``row_filters``) and record them in the collection's metadata; returns the indexes created.

        A field recorded earlier keeps its first kind (see :meth:`_add_indexes`); the record only grows,
        so a custom field a tenant stops listing stays filterable on the points that still carry it.
        """
        info = await self.client.get_collection(self.name)
        meta = info.config.metadata or {}
        recorded = recorded_filters(meta)
        new = {key: value for key, value in fields.items() if key not in recorded}
        created = await self._add_indexes(info, {key: kind for key, (kind, _) in new.items()})
        if new:
            record = {key: {"kind": kind, "name": name} for key, (kind, name) in {**recorded, **new}.items()}
            await self.client.update_collection(self.name, metadata={ROW_FILTERS_KEY: record})
        return created

    async def layout(self) -> VectorLayout:
        return layout_of(await self.client.get_collection(self.name))

    async def dense_only(self) -> bool:
        """True for a collection built before hybrid search: its points have no BM25 vector."""
        return not (await self.layout()).hybrid

    # -- upgrading a dense-only collection (no re-embedding) -----------------------------------
    #
    # Qdrant cannot turn an unnamed vector into a named one, nor rename a collection, so the
    # upgrade builds ``<name>__named`` (dense vectors copied, BM25 computed from the committed
    # rows by the sync), marks it complete, drops the original, re-creates it with named
    # vectors and copies the points back. A run that dies part way resumes from what is left
    # (:meth:`_recover_upgrade`): nothing is dropped before its copy is complete.

    @property
    def staging_name(self) -> str:
        return self.name + UPGRADE_SUFFIX

    def _staging(self) -> Collection:
        return Collection(self.client, self.staging_name, self.tenant_id, self.entity, self.local)

    async def begin_upgrade(self, *, model: str, dimensions: int, indexes: dict[str, str] | None) -> Collection:
        """A fresh, empty staging collection with named vectors, for :meth:`finish_upgrade`."""
        if await self.client.collection_exists(self.staging_name):
            await self.client.delete_collection(self.staging_name)
        await self._create(self.staging_name, model=model, dimensions=dimensions, indexes=indexes)
        return self._staging()

    async def dense_vectors(self, ids: Sequence[str]) -> dict[str, tuple[list[float], dict[str, Any]]]:
        """Stored dense vector and payload of each of ``ids`` that exists (any layout)."""
        layout = await self.layout()
        out: dict[str, tuple[list[float], dict[str, Any]]] = {}
        ids = list(ids)
        for start in range(0, len(ids), RETRIEVE_MAX_IDS):
            points = await self.client.retrieve(
                self.name, ids=ids[start : start + RETRIEVE_MAX_IDS], with_payload=True, with_vectors=True
            )
            for p in points:
                vector = p.vector.get(layout.dense) if isinstance(p.vector, dict) else p.vector
                if isinstance(vector, list) and vector and isinstance(vector[0], float):
                    out[str(p.id)] = ([float(x) for x in vector], p.payload or {})
        return out

    async def finish_upgrade(
        self, staging: Collection, *, model: str, dimensions: int, indexes: dict[str, str] | None
    ) -> int:
        """Replace this collection by ``staging`` (see above); returns the points carried over."""
        await self.client.update_collection(staging.name, metadata={"upgrade_complete": True})
        await self.client.delete_collection(self.name)
        return await self._copy_back(staging, model=model, dimensions=dimensions, indexes=indexes)

    async def _copy_back(
        self, staging: Collection, *, model: str, dimensions: int, indexes: dict[str, str] | None
    ) -> int:
        if not await self.client.collection_exists(self.name):
            await self._create(
                self.name, model=model, dimensions=dimensions, indexes=indexes, **{UPGRADE_PENDING_KEY: True}
            )
        copied = 0
        offset: Any = None
        while True:
            points, offset = await self.client.scroll(
                staging.name, limit=UPSERT_MAX_POINTS, offset=offset, with_payload=True, with_vectors=True
            )
            if points:
                batch = [
                    models.PointStruct(id=p.id, vector=_named_vectors(p.vector), payload=p.payload) for p in points
                ]
                await self.upsert(batch)
                copied += len(batch)
            if offset is None:
                break
        await self.client.delete_collection(staging.name)
        await self.client.update_collection(self.name, metadata={UPGRADE_PENDING_KEY: None})
        log.info("%s: upgraded to named dense + BM25 vectors, %d points carried over", self.name, copied)
        return copied

    async def _recover_upgrade(self, *, model: str, dimensions: int, indexes: dict[str, str] | None) -> None:
        if not await self.client.collection_exists(self.staging_name):
            if await self.client.collection_exists(self.name):  # copied back; only the mark was left
                await self.client.update_collection(self.name, metadata={UPGRADE_PENDING_KEY: None})
            return
        info = await self.client.get_collection(self.staging_name)
        if (info.config.metadata or {}).get("upgrade_complete"):
            # The original was dropped (or is being re-filled): finish the copy.
            if await self.client.collection_exists(self.name) and await self.dense_only():
                await self.client.delete_collection(self.name)  # the crash came between marking and dropping
            log.warning("%s: resuming an interrupted upgrade to named vectors", self.name)
            await self._copy_back(self._staging(), model=model, dimensions=dimensions, indexes=indexes)
        else:
            # An upgrade that died while filling the staging collection: the original is intact.
            await self.client.delete_collection(self.staging_name)

    async def model(self) -> tuple[str | None, int | None]:
        info = await self.client.get_collection(self.name)
        return (info.config.metadata or {}).get("embedding_model"), layout_of(info).size

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingPoint]:
        out: dict[str, ExistingPoint] = {}
        ids = list(ids)
        for start in range(0, len(ids), RETRIEVE_MAX_IDS):
            points = await self.client.retrieve(
                self.name,
                ids=ids[start : start + RETRIEVE_MAX_IDS],
                with_payload=["external_id", "content_hash", "chunks", ACCESS_PAYLOAD],
                with_vectors=False,
            )
            for p in points:
                payload = p.payload or {}
                acl = payload.get(ACCESS_PAYLOAD)
                out[str(p.id)] = ExistingPoint(
                    str(p.id),
                    payload.get("external_id"),
                    payload.get("content_hash"),
                    payload.get("chunks"),
                    tuple(acl) if isinstance(acl, list) else None,
                )
        return out

    async def set_access(self, lists: Mapping[tuple[str, ...] | None, Sequence[str]]) -> int:
        """Payload only: give each access list to its points (None: remove the list), in one request."""
        ops: list[models.UpdateOperation] = []
        for acl, ids in lists.items():
            for start in range(0, len(ids), DELETE_MAX_IDS):
                chosen: list[models.ExtendedPointId] = list(ids[start : start + DELETE_MAX_IDS])
                if acl is None:
                    ops.append(
                        models.DeletePayloadOperation(
                            delete_payload=models.DeletePayload(keys=[ACCESS_PAYLOAD], points=chosen)
                        )
                    )
                else:
                    ops.append(
                        models.SetPayloadOperation(
                            set_payload=models.SetPayload(payload={ACCESS_PAYLOAD: list(acl)}, points=chosen)
                        )
                    )
        if ops:
            await self.client.batch_update_points(self.name, update_operations=ops, wait=True)
        return sum(len(ids) for ids in lists.values())

    async def write(self, points: Sequence[NewPoint]) -> None:
        """Write the vector step's points (see :meth:`upsert` for the sizes of the calls).

        The embedded engine is handed each point's parts and converts them one point at a time,
        in its worker thread. Making a qdrant-client ``PointStruct`` and a list copy of the dense
        vector for every point first, and holding them all through the call, cost the adapter a
        fifth to a quarter of Qdrant Edge's own write rate (``benchmarks/bench_store.py``). A
        server or local mode gets ``PointStruct`` objects, made for the request."""
        if isinstance(self.client, EdgeQdrantClient):
            for start in range(0, len(points), EDGE_UPSERT_MAX_POINTS):
                await self.client.upsert_parts(
                    self.name,
                    [
                        (p.id, {DENSE_VECTOR: p.dense, SPARSE_VECTOR: p.sparse}, p.payload)
                        for p in points[start : start + EDGE_UPSERT_MAX_POINTS]
                    ],
                )
            return
        await self.upsert(
            [new_point(p.id, {DENSE_VECTOR: _dense_list(p.dense), SPARSE_VECTOR: p.sparse}, p.payload) for p in points]
        )

    async def upsert(self, points: list[models.PointStruct]) -> None:
        """Write ``points`` in requests sized for Qdrant's API (``UPSERT_MAX_*``), or in the embedded
        engine's larger calls (``EDGE_UPSERT_MAX_POINTS``)."""
        max_bytes = None if self.embedded else UPSERT_MAX_BYTES
        for batch in upsert_batches(points, max_points=self.upsert_points, max_bytes=max_bytes):
            await self.client.upsert(self.name, points=batch, wait=True)

    async def delete_ids(self, ids: Iterable[str], *, batch: int = DELETE_MAX_IDS) -> int:
        wanted: list[models.ExtendedPointId] = list(ids)
        for start in range(0, len(wanted), batch):
            await self.client.delete(
                self.name, points_selector=models.PointIdsList(points=wanted[start : start + batch]), wait=True
            )
        return len(wanted)

    async def scroll_external_ids(self, *, page: int = 1000) -> AsyncIterator[list[PointRef]]:
        """Every point's id, external id, chunk number and content hash, a page at a time."""
        offset: Any = None
        while True:
            points, offset = await self.client.scroll(
                self.name,
                limit=page,
                offset=offset,
                with_payload=["external_id", "chunk", "content_hash"],
                with_vectors=False,
            )
            if points:
                yield [_ref(p.id, p.payload) for p in points]
            if offset is None:
                return

    async def read_marker(self) -> dict[str, Any] | None:
        info = await self.client.get_collection(self.name)
        value = (info.config.metadata or {}).get(SYNC_MARKER_KEY)
        return value if isinstance(value, dict) else None

    async def write_marker(self, marker: dict[str, Any] | None) -> None:
        await self.client.update_collection(self.name, metadata={SYNC_MARKER_KEY: marker})

    async def read_provider_limits(self) -> dict[str, Any] | None:
        info = await self.client.get_collection(self.name)
        value = (info.config.metadata or {}).get(PROVIDER_LIMITS_KEY)
        return value if isinstance(value, dict) else None

    async def write_provider_limits(self, limits: dict[str, Any]) -> None:
        await self.client.update_collection(self.name, metadata={PROVIDER_LIMITS_KEY: limits})

    async def count(self, **filters: Any) -> int:
        flt = None
        if filters:
            flt = models.Filter(
                must=[models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in filters.items()]
            )
        return (await self.client.count(self.name, count_filter=flt, exact=True)).count


def _named_vectors(vector: Any) -> dict[str, Any]:
    return dict(vector) if isinstance(vector, dict) else {}


def _ref(point_id_: Any, payload: dict[str, Any] | None) -> PointRef:
    payload = payload or {}
    chunk = payload.get("chunk")
    return PointRef(
        str(point_id_),
        payload.get("external_id"),
        chunk if isinstance(chunk, int) else None,
        payload.get("content_hash"),
    )


def migrated_payload_indexes(metadata: dict[str, Any]) -> dict[str, models.PayloadSchemaType]:
    """The payload indexes a collection migrated from local mode gets: those ``ensure`` creates."""
    from etl_assets.core.catalogue import BY_NAME  # here: the catalogue imports the sources

    spec = BY_NAME.get(str(metadata.get("entity")))
    kinds = {**BASE_PAYLOAD_INDEXES, **(spec.payload_indexes if spec is not None else {})}
    kinds |= {key: kind for key, (kind, _) in recorded_filters(metadata).items()}
    return {field_name: payload_schema(kind) for field_name, kind in kinds.items()}


class QdrantLockTimeout(RuntimeError):
    pass


class QdrantConfigError(ConfigError):
    """QDRANT_PATH and QDRANT_ENGINE disagree."""


class QdrantServerError(RuntimeError):
    """The Qdrant server failed or could not be reached; the message names QDRANT_URL."""


@contextlib.asynccontextmanager
async def server_errors_named(url: str | None) -> AsyncIterator[None]:
    """Re-raise qdrant-client's transport and HTTP errors as one line naming QDRANT_URL and the host.

    qdrant-client's own messages say what failed but not where, and span lines (an HTTP
    error quotes the raw body); an operator with several environments needs QDRANT_URL.
    The qdrant-client exception stays attached as the cause. For a server that cannot be
    reached, its traceback and the httpx/httpcore chain under it are dropped: they show
    only the client library's frames, the message already says why (ConnectError, ...),
    and a run whose vector steps all hit a closed port printed ~150 lines per step.
    An HTTP error keeps its traceback: it shows which call the server refused.
    Local mode (no URL) raises its errors unchanged.
    """
    try:
        yield
    except UnexpectedResponse as exc:
        if not url:
            raise
        raise QdrantServerError(
            f"{_named(url)} failed: UnexpectedResponse: HTTP {exc.status_code} {exc.reason_phrase} from "
            f"{host_port(url)}: {_said(exc)}"
        ) from exc
    except ResponseHandlingException as exc:
        if not url:
            raise
        reason = transport_reason(exc)
        if reason.startswith("Connect"):
            what = f"cannot connect to {host_port(url)}"
        elif "Timeout" in reason:
            what = f"no answer in time from {host_port(url)}"
        else:
            what = f"the connection to {host_port(url)} broke"
        error = QdrantServerError(f"{_named(url)} failed: ResponseHandlingException ({reason}): {what}")
        exc.__traceback__ = None
        exc.__cause__ = None
        exc.__suppress_context__ = True
        raise error from exc


def _named(url: str) -> str:
    return f"Qdrant server QDRANT_URL={display_url(url)}"


def _said(exc: UnexpectedResponse) -> str:
    """Qdrant's own reason (``status.error`` of its JSON answer), else the body's start, on one line."""
    try:
        body = exc.structured()
    except ValueError:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    if isinstance(status, dict) and status.get("error"):
        return one_line(str(status["error"]))
    return one_line(exc.content.decode("utf-8", "replace") or "no message", 200)


@contextlib.asynccontextmanager
async def open_qdrant(
    url: str | None, api_key: str | None, path: str, lock_timeout_s: float = 900.0, engine: str = "edge"
) -> AsyncIterator[AsyncQdrantClient]:
    """Open an AsyncQdrantClient in this loop and close it on exit.

    With a URL, qdrant-client talks to the server. Without one, the folder ``path`` holds the
    embedded store of ``engine`` (QDRANT_ENGINE): qdrant-client's local mode ("local"), or a
    Qdrant Edge store (:class:`EdgeQdrantClient`, "edge"; a folder that local mode wrote is
    migrated on first use). One process at a time owns the folder: we take an inter-process
    lock first and wait for it, so concurrent steps queue instead of failing.
    """
    client: AsyncQdrantClient
    if url:
        client = AsyncQdrantClient(url=url, api_key=api_key, timeout=60)
        try:
            yield client
        finally:
            await client.close()
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(path).with_suffix(".etl-lock")))
    try:
        lock.acquire(timeout=lock_timeout_s)
    except Timeout:
        raise QdrantLockTimeout(
            f"Qdrant local folder {path} stayed locked by another process for {lock_timeout_s:.0f}s"
        ) from None
    try:
        if engine == "edge":
            if is_local_mode_folder(path):
                log.warning("%s", await migrate_local_mode(path, migrated_payload_indexes))
            client = EdgeQdrantClient(path)
        elif (Path(path) / EDGE_STORE_FILE).exists():
            raise QdrantConfigError(f"QDRANT_PATH={path} holds a Qdrant Edge store: set QDRANT_ENGINE=edge to open it")
        else:
            client = AsyncQdrantClient(path=path)
        try:
            yield client
        finally:
            await client.close()
    finally:
        lock.release()
