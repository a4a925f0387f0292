"""Qdrant: collection naming, creation with a recorded model, upserts and deletes.

One collection per tenant and entity, ``client_<tenant>_<entity>``. Each collection
records the embedding model and dimension it was built with; opening it with another
is an error, never a silent mix of vector spaces.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from filelock import FileLock, Timeout
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from etl_assets.core.edge_client import EdgeQdrantClient, is_local_mode_folder, migrate_local_mode
from etl_assets.core.embeddings.base import ModelMismatchError
from etl_assets.core.http import display_url as display_url  # importers (the CLI) find it here too
from etl_assets.core.http import host_port, one_line, transport_reason
from etl_assets.core.settings import QdrantSettings as QdrantSettings
from etl_assets.core.tenants import validate_tenant_id

log = logging.getLogger(__name__)

POINT_NAMESPACE = uuid.UUID("5b0f8f0e-3c1e-5a8e-9f57-6574c2d1a001")
SCHEMA_VERSION = 1
# Request sizes for Qdrant's API. Its REST server refuses bodies over 32 MiB by default
# (service.max_request_size_mb); a 1536-dimension point is ~20 KB as JSON, so 256 points
# stay near 5 MB and the byte budget is the backstop for larger vectors or payloads.
UPSERT_MAX_POINTS = 256
UPSERT_MAX_BYTES = 16 * 1024 * 1024
DELETE_MAX_IDS = 1000
RETRIEVE_MAX_IDS = 1000
# Collection metadata key under which the engine records the state it last completed.
SYNC_MARKER_KEY = "etl_vector_sync"


def collection_name(tenant_id: str, entity: str) -> str:
    validate_tenant_id(tenant_id)
    if not entity.isidentifier():
        raise ValueError(f"entity {entity!r} is not a valid collection suffix")
    return f"client_{tenant_id}_{entity}"


def point_id(tenant_id: str, entity: str, external_id: str, chunk: int = 0) -> str:
    """Deterministic point id: the same row and chunk always land on the same point."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant_id}\x1f{entity}\x1f{external_id}\x1f{chunk}"))


# Every collection indexes these; an entity's spec adds its own filter fields (payload_indexes).
BASE_PAYLOAD_INDEXES = {"tenant_id": "keyword", "external_id": "keyword"}


def payload_schema(kind: str) -> models.PayloadSchemaType:
    """The Qdrant schema of a payload index kind named in an entity spec."""
    return {
        "keyword": models.PayloadSchemaType.KEYWORD,
        "integer": models.PayloadSchemaType.INTEGER,
        "datetime": models.PayloadSchemaType.DATETIME,
        "bool": models.PayloadSchemaType.BOOL,
    }[kind]


@dataclass
class ExistingPoint:
    id: str
    external_id: str | None
    content_hash: str | None
    chunks: int | None


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

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool: ...

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingPoint]: ...

    async def upsert(self, points: list[models.PointStruct]) -> None: ...

    async def delete_ids(self, ids: Iterable[str]) -> int: ...

    def scroll_external_ids(self, *, page: int = 1000) -> AsyncIterator[list[PointRef]]: ...

    async def count(self, **filters: Any) -> int: ...

    async def read_marker(self) -> dict[str, Any] | None:
        """What the last complete sync recorded (see ``sync_vectors``), if anything."""
        ...

    async def write_marker(self, marker: dict[str, Any] | None) -> None: ...


def _approx_bytes(point: models.PointStruct) -> int:
    # JSON size estimate: ~12 characters per float, and the payload's strings plus a little
    # per field (str() of the payload would cost more than the upsert's own encoding).
    vector = point.vector
    floats = len(vector) if isinstance(vector, list) else 0
    payload = point.payload or {}
    strings = sum(len(v) for v in payload.values() if isinstance(v, str))
    return 12 * floats + strings + 32 * len(payload) + 64


def upsert_batches(
    points: Sequence[models.PointStruct], *, max_points: int = UPSERT_MAX_POINTS, max_bytes: int = UPSERT_MAX_BYTES
) -> Iterator[list[models.PointStruct]]:
    """Consecutive slices of ``points``, each within the point count and approximate byte budget."""
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

    async def ensure(self, *, model: str, dimensions: int, indexes: dict[str, str] | None = None) -> bool:
        """Create the collection if needed; refuse one built with another model. True if created."""
        if await self.client.collection_exists(self.name):
            info = await self.client.get_collection(self.name)
            params = info.config.params.vectors
            size = params.size if isinstance(params, models.VectorParams) else None
            meta = info.config.metadata or {}
            built_with = meta.get("embedding_model")
            if size != dimensions or (built_with is not None and built_with != model):
                raise ModelMismatchError(
                    f"collection {self.name} was built with model {built_with!r} ({size} dimensions) "
                    f"but the configured embeddings are {model!r} ({dimensions} dimensions); "
                    "set EMBEDDING_MODEL / EMBEDDING_DIMENSIONS to match, or delete the collection "
                    "in Qdrant so the next run rebuilds it"
                )
            return False
        await self.client.create_collection(
            self.name,
            vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
            metadata={
                "embedding_model": model,
                "dimensions": dimensions,
                "tenant_id": self.tenant_id,
                "entity": self.entity,
                "schema_version": SCHEMA_VERSION,
            },
        )
        # qdrant-client's local mode ignores payload indexes (and warns about them); Edge builds them.
        if not self.local or isinstance(self.client, EdgeQdrantClient):
            for field_name, kind in {**BASE_PAYLOAD_INDEXES, **(indexes or {})}.items():
                await self.client.create_payload_index(self.name, field_name, field_schema=payload_schema(kind))
        return True

    async def model(self) -> tuple[str | None, int | None]:
        info = await self.client.get_collection(self.name)
        params = info.config.params.vectors
        size = params.size if isinstance(params, models.VectorParams) else None
        return (info.config.metadata or {}).get("embedding_model"), size

    async def existing(self, ids: Sequence[str]) -> dict[str, ExistingPoint]:
        out: dict[str, ExistingPoint] = {}
        ids = list(ids)
        for start in range(0, len(ids), RETRIEVE_MAX_IDS):
            points = await self.client.retrieve(
                self.name,
                ids=ids[start : start + RETRIEVE_MAX_IDS],
                with_payload=["external_id", "content_hash", "chunks"],
                with_vectors=False,
            )
            for p in points:
                payload = p.payload or {}
                out[str(p.id)] = ExistingPoint(
                    str(p.id), payload.get("external_id"), payload.get("content_hash"), payload.get("chunks")
                )
        return out

    async def upsert(self, points: list[models.PointStruct]) -> None:
        """Write ``points`` in requests sized for Qdrant's API (see ``UPSERT_MAX_*``)."""
        for batch in upsert_batches(points):
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

    async def count(self, **filters: Any) -> int:
        flt = None
        if filters:
            flt = models.Filter(
                must=[models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in filters.items()]
            )
        return (await self.client.count(self.name, count_filter=flt, exact=True)).count


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
    return {field_name: payload_schema(kind) for field_name, kind in kinds.items()}


class QdrantLockTimeout(RuntimeError):
    pass


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
    url: str | None, api_key: str | None, path: str, lock_timeout_s: float = 900.0
) -> AsyncIterator[AsyncQdrantClient]:
    """Open an AsyncQdrantClient in this loop and close it on exit.

    With a URL, qdrant-client talks to the server. Without one, the folder ``path`` holds an
    embedded Qdrant Edge store (:class:`EdgeQdrantClient`); one process at a time owns it:
    we take an inter-process lock first and wait for it, so concurrent steps queue instead
    of failing. A folder that qdrant-client's local mode wrote is migrated on first use.
    """
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
        if is_local_mode_folder(path):
            log.warning("%s", await migrate_local_mode(path, migrated_payload_indexes))
        client = EdgeQdrantClient(path)
        try:
            yield client
        finally:
            await client.close()
    finally:
        lock.release()
