"""The vector stage: committed rows in, Qdrant points out, only what changed re-embedded.

Rows come from the database through the caller's own connection (never handed over in
memory by the table step), a bounded page at a time. The work is a pipeline:

1. **Read** (worker thread): the next page of rows, with each row's text, content hash
   and chunk-0 point id. Reading runs ahead of the rest by ``prefetch_pages`` pages.
2. **Compare** (event loop): one lookup per page of the chunk-0 points. A row whose
   stored hash matches (and whose other chunks are all there) is unchanged: it is never
   tokenized, let alone embedded.
3. **Split** (worker thread): changed rows are tokenized once and cut into chunks of at
   most ``max_chunk_tokens`` tokens.
4. **Pack and embed**: chunks from consecutive pages are packed into requests of at most
   ``max_batch_inputs`` inputs and ``max_batch_tokens`` tokens (read from the embedder
   each time, since it lowers its token cap once the server announces a TPM limit), and
   up to ``concurrency`` requests are in flight.
5. **Upsert**: answered chunks are written while the next requests are in flight, by group
   commit: a writer takes everything answered since the last write, in calls of at most the
   collection's ``upsert_points`` (256 for a Qdrant server's requests; 4,096 for the embedded
   engine, Qdrant Edge, which pays per call, not per point). Writes grow only while the writer
   is the bottleneck; while the embedder is, each answer is written as it comes, so a run
   stopped or killed midway has written what was answered before it.

Memory is bounded by the page size and by what the batches alive (packed, in flight, or
answered and not yet written) may hold together: ``2 * concurrency`` full requests' worth of
inputs (which become vectors) and of tokens (texts), plus at most ``UPSERT_CONCURRENCY`` writes'
worth of answered vectors whose request has finished. It never grows with the tenant's size: when the allowance is used up,
reading waits. Small requests (under a TPM limit the embedder asks for slices of it) leave
room for many of them, so the next minute's work is ready when the budget opens again.

A provider may refuse a chunk as too large even alone (a gateway counting tokens its own way,
a small context window). The embedder then hands it back with a lower input size learned from
the refusal, and the row is cut again, all of it, at that size: each new chunk is its own
point, the row's first chunks are dropped wherever they are in the pipeline, and its new
points are written after the last batch (so no stale write can land after them). Rows cut from
then on get the smaller size, and the collection records it (``read_provider_limits``), so
that later runs cut rows to fit from the start and a no-change run compares as unchanged.

Then a sweep removes points whose row is deleted or gone, points whose id is not the
deterministic id of their row and chunk, and chunks that disagree with their row's chunk
0 (left behind when an earlier run failed half way). When the collection holds exactly
the points the live rows call for (its count equals the expected count, and every one of
them was seen or written by this run) there is nothing the sweep could find, so it is
skipped: that is what keeps a no-op re-run cheap.

With a ``fingerprint`` (a digest of the live rows' ids and row hashes, cheap to read),
even the comparison can be skipped: a complete sync records that digest, with the model,
dimensions, chunk size and resulting point count, in the collection's metadata. When the
next run finds the same digest and the same point count, and the first page of rows
compares unchanged (which catches a changed text format), nothing can have changed, and
the run ends there. Any other run clears the record before it writes anything and
records the new state only once it has completed.

Errors propagate: the first failure cancels and awaits every other task, and is raised as
itself (not wrapped in an ``ExceptionGroup``). Whatever was written before it is valid
(points are written only with their vectors, ids are deterministic), and the next run
re-embeds whatever is missing or stale (including answered vectors not yet written), so runs
converge.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from qdrant_client import models

from etl_assets.core.embeddings.base import (
    Embedder,
    EmbeddingError,
    InputTooLargeError,
    embed_or_refuse,
    split_counted,
)
from etl_assets.core.progress import Progress
from etl_assets.core.records import EntitySpec, jsonable
from etl_assets.core.sparse import document_vector
from etl_assets.core.vectorstore import Collection, ExistingPoint, NewPoint, VectorCollection, point_id

log = logging.getLogger(__name__)

PAYLOAD_TEXT_CHARS = 2000
UPSERT_CONCURRENCY = 2
ALIVE_TOKENS_PER_SLOT = 300_000  # one full OpenAI request


@dataclass
class VectorSyncResult:
    collection: str
    model: str
    dimensions: int
    rows_live: int = 0
    rows_changed: int = 0
    rows_unchanged: int = 0
    chunks_embedded: int = 0
    points_upserted: int = 0
    points_deleted: int = 0
    surplus_chunks_deleted: int = 0
    collection_created: bool = False
    pages_read: int = 0
    embedding_batches: int = 0  # requests the engine packed (the provider may split one further)
    sweep: str = "full"  # "full" or "skipped" (the collection held exactly the expected points)
    # "rows": every row's hash compared with its points; "fingerprint": the live rows are
    # exactly those of the last complete sync (and the first page was spot-checked)
    change_detection: str = "rows"
    # A collection built before hybrid search, upgraded by this run to named dense + BM25 vectors:
    # points whose dense vector was carried over (not re-embedded).
    upgraded_points: int = 0
    # Unchanged rows whose points carried another access list than the committed one: rewritten
    # as a payload (never re-embedded).
    access_rewritten: int = 0
    # Rows one of whose chunks the provider refused as too large even alone: cut again, all their
    # chunks, at the smaller input size the refusal taught (each chunk its own point).
    rows_rechunked: int = 0
    # The size rows are cut at by the end of the step: the configured or model limit, lowered
    # to what the provider takes once a refusal (in this run or an earlier one) taught it.
    chunk_tokens: int = 0
    # Payload indexes this run created for row-dependent filter fields (a tenant's custom fields).
    payload_indexes_created: int = 0
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out["duration_s"] = round(self.duration_s, 3)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class PlannedChunk:
    id: str
    text: str
    tokens: int
    payload: dict[str, Any]
    # The chunk's BM25 vector: computed here, in the worker thread that splits, at no embedding cost.
    sparse: models.SparseVector | None = None


@dataclass(frozen=True)
class _Row:
    row: dict[str, Any]
    external_id: str
    text: str
    digest: str
    head_id: str  # point id of chunk 0


@dataclass
class _Rechunked:
    """A row cut again after the provider refused one of its chunks: its new chunks and vectors."""

    row: _Row
    old_chunks: int  # how many chunks the row was first cut into in this step
    chunks: list[PlannedChunk] = field(default_factory=list)
    vectors: list[Any] = field(default_factory=list)


def content_hash(model: str, dimensions: int, text: str) -> str:
    return hashlib.sha256(f"{model}\x1f{dimensions}\x1f{text}".encode()).hexdigest()


def row_text(spec: EntitySpec, row: dict[str, Any]) -> str:
    return spec.text(row).strip() or f"{spec.name} {row['external_id']}"


def _chunks(
    spec: EntitySpec,
    tenant_id: str,
    row: dict[str, Any],
    text: str,
    digest: str,
    model: str,
    pieces: list[tuple[str, int]],
) -> list[PlannedChunk]:
    base = {
        "tenant_id": tenant_id,
        "entity": spec.name,
        "source": spec.source,
        "external_id": row["external_id"],
        **{k: jsonable(v) for k, v in spec.payload(row).items()},
        "content_hash": digest,
        "embedding_model": model,
        "chunks": len(pieces),
    }
    if row.get("access") is not None:
        # Who may find the points (guarantee 4); not part of the content hash: a permission
        # change rewrites this payload, never the vectors.
        base["access"] = list(row["access"])
    chunks = []
    for i, (piece, tokens) in enumerate(pieces):
        payload = {**base, "chunk": i, "text": piece[:PAYLOAD_TEXT_CHARS]}
        chunks.append(
            PlannedChunk(
                point_id(tenant_id, spec.name, row["external_id"], i), piece, tokens, payload, document_vector(piece)
            )
        )
    return chunks


def chunk_point(chunk: PlannedChunk, dense: Any) -> NewPoint:
    """The point of one chunk: its dense embedding (as the embedder returned it) and its BM25 vector."""
    sparse = chunk.sparse if chunk.sparse is not None else document_vector(chunk.text)
    return NewPoint(chunk.id, dense, sparse, chunk.payload)


def split_row(
    spec: EntitySpec, row: dict[str, Any], text: str, embedder: Embedder, max_tokens: int
) -> list[tuple[str, int]]:
    """``text`` (the row's :func:`row_text`) in chunks of at most ``max_tokens`` tokens, with their
    counts: part by part for an entity with ``sections`` (no chunk spans two), else as one."""
    parts = [p.strip() for p in spec.sections(row)] if spec.sections is not None else []
    if not any(parts):
        return split_counted(embedder, text, max_tokens)
    return [chunk for part in parts if part for chunk in split_counted(embedder, part, max_tokens)]


def plan_row(
    spec: EntitySpec, tenant_id: str, row: dict[str, Any], embedder: Embedder, max_tokens: int
) -> list[PlannedChunk]:
    """The points one row becomes: its text in chunks of at most ``max_tokens`` tokens."""
    text = row_text(spec, row)
    digest = content_hash(embedder.model, embedder.dimensions, text)
    return _chunks(spec, tenant_id, row, text, digest, embedder.model, split_row(spec, row, text, embedder, max_tokens))


class Packer:
    """Chunks, in order, into requests within an input count and a token budget.

    The limits come with each chunk: the embedder lowers its token cap once the server
    announces a TPM, and the next request should already respect it. A chunk larger than
    the token budget goes alone.
    """

    def __init__(self) -> None:
        self.batch: list[PlannedChunk] = []
        self.tokens = 0

    def add(self, chunk: PlannedChunk, *, max_inputs: int, max_tokens: int) -> tuple[list[PlannedChunk], int] | None:
        """Add ``chunk``; returns the request (chunks, tokens) it closed, if it did not fit in it."""
        full = None
        if self.batch and (len(self.batch) >= max_inputs or self.tokens + chunk.tokens > max_tokens):
            full = self.take()
        self.batch.append(chunk)
        self.tokens += chunk.tokens
        return full

    def take(self) -> tuple[list[PlannedChunk], int]:
        """The request being packed (possibly empty), and start a new one."""
        batch, tokens = self.batch, self.tokens
        self.batch, self.tokens = [], 0
        return batch, tokens


def _first_error(group: BaseExceptionGroup) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)

    walk(group)
    if not leaves:
        return group
    first = leaves[0]
    if len(leaves) > 1:
        first.add_note(f"({len(leaves) - 1} other task(s) of the same vector sync failed too)")
    return first


class _Allowance:
    """Inputs and tokens that the batches alive may hold together (see the module docstring)."""

    def __init__(self, inputs: int, tokens: int) -> None:
        self.inputs, self.tokens = inputs, tokens
        self.used_inputs = self.used_tokens = 0
        self.changed = asyncio.Condition()

    async def acquire(self, inputs: int, tokens: int) -> None:
        async with self.changed:
            # A batch larger than the whole allowance still goes, alone.
            await self.changed.wait_for(
                lambda: (
                    self.used_inputs == 0
                    or (self.used_inputs + inputs <= self.inputs and self.used_tokens + tokens <= self.tokens)
                )
            )
            self.used_inputs += inputs
            self.used_tokens += tokens

    async def release(self, inputs: int, tokens: int) -> None:
        async with self.changed:
            self.used_inputs -= inputs
            self.used_tokens -= tokens
            self.changed.notify_all()


class _Sync:
    """The state of one :func:`sync_vectors` call."""

    def __init__(
        self,
        *,
        spec: EntitySpec,
        tenant_id: str,
        embedder: Embedder,
        collection: VectorCollection,
        result: VectorSyncResult,
        concurrency: int,
        max_batch_inputs: int | None,
        max_batch_tokens: int | None,
        chunk_tokens: int,
        upsert_points: int,
        progress: Callable[[Progress], None] | None = None,
        total_rows: int | None = None,
    ) -> None:
        self.spec, self.tenant_id, self.embedder, self.collection = spec, tenant_id, embedder, collection
        self.result = result
        self.max_batch_inputs, self.max_batch_tokens = max_batch_inputs, max_batch_tokens
        self.chunk_tokens = chunk_tokens
        self.upsert_points = upsert_points
        self.in_flight = asyncio.Semaphore(concurrency)
        max_inputs, max_tokens = self._caps()
        # Tokens alive are texts (a few bytes each), so their allowance does not shrink with the
        # request size; inputs alive become vectors, so theirs follows the request size.
        self.alive = _Allowance(2 * concurrency * max_inputs, 2 * concurrency * max(max_tokens, ALIVE_TOKENS_PER_SLOT))
        self.upserting = asyncio.Semaphore(UPSERT_CONCURRENCY)
        self.packer = Packer()
        self.expected_points = 0  # points the live rows call for, each seen or written by this run
        # Progress counts rows whose points are all in place: unchanged ones when compared,
        # changed ones when their last chunk is written (batches finish out of order).
        self.progress, self.total_rows = progress, total_rows
        self.started = time.perf_counter()
        self.rows_done = 0
        self.chunks_left: dict[str, int] = {}
        # Changed rows whose chunks are not all written yet, with the number of chunks they were
        # cut into: what a refused chunk's row is cut again from.
        self.planned: dict[str, tuple[_Row, int]] = {}
        # Rows cut again in this step (see _rechunk): their first chunks are stale, their new
        # points are written once every batch has finished (see write_rechunked).
        self.rechunked: dict[str, _Rechunked] = {}
        self.row_filters: dict[str, tuple[str, str]] = {}  # indexed and recorded in this run
        # Answered chunks with their vectors, not yet taken by a writer (see step 5).
        self.answered: list[tuple[PlannedChunk, Any]] = []

    # -- 1. read -------------------------------------------------------------------------

    def _describe(self, rows: list[dict[str, Any]]) -> list[_Row]:
        model, dims, entity = self.embedder.model, self.embedder.dimensions, self.spec.name
        out = []
        for row in rows:
            text = row_text(self.spec, row)
            ext = row["external_id"]
            out.append(_Row(row, ext, text, content_hash(model, dims, text), point_id(self.tenant_id, entity, ext, 0)))
        return out

    async def read(self, pages: Callable[[], Iterator[list[dict[str, Any]]]], queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        rows_iter: Iterator[list[dict[str, Any]]] | None = None
        pending: asyncio.Future | None = None

        def step() -> list[_Row] | None:
            nonlocal rows_iter
            if rows_iter is None:
                rows_iter = iter(pages())
            page = next(rows_iter, None)
            return None if page is None else self._describe(page)

        try:
            while True:
                pending = loop.run_in_executor(None, step)
                # shield: if we are cancelled, the thread still finishes its page, and the
                # finally below waits for it before closing the iterator it is using.
                page = await asyncio.shield(pending)
                pending = None
                await queue.put(page)
                if page is None:
                    return
        finally:
            if pending is not None:
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()  # retrieved: the error that matters is already raised
            close = getattr(rows_iter, "close", None)
            if close is not None:
                await loop.run_in_executor(None, close)

    # -- 2. compare ------------------------------------------------------------------------

    async def compare(self, page: list[_Row]) -> list[tuple[_Row, ExistingPoint | None]]:
        """The rows of ``page`` that need embedding, each with its stored chunk 0 (if any)."""
        heads = await self.collection.existing([r.head_id for r in page])
        changed: list[tuple[_Row, ExistingPoint | None]] = []
        multi: list[tuple[_Row, ExistingPoint, list[str]]] = []
        # Unchanged rows whose points carry another access list than the committed one.
        access: dict[tuple[str, ...] | None, list[str]] = {}

        def unchanged(r: _Row, head: ExistingPoint, ids: list[str]) -> None:
            self.result.rows_unchanged += 1
            self.rows_done += 1
            self.expected_points += 1 + len(ids)
            if "access" in r.row:  # the entity has access lists: the points follow the committed one
                want = None if r.row["access"] is None else tuple(r.row["access"])
                if head.access != want:
                    access.setdefault(want, []).extend([r.head_id, *ids])

        for r in page:
            head = heads.get(r.head_id)
            if head is None or head.content_hash != r.digest:
                changed.append((r, head))
                continue
            n = head.chunks if isinstance(head.chunks, int) and head.chunks > 1 else 1
            if n == 1:
                unchanged(r, head, [])
            else:
                ids = [point_id(self.tenant_id, self.spec.name, r.external_id, i) for i in range(1, n)]
                multi.append((r, head, ids))
        if multi:
            rest = await self.collection.existing([i for _, _, ids in multi for i in ids])
            for r, head, ids in multi:
                if all((p := rest.get(i)) is not None and p.content_hash == r.digest for i in ids):
                    unchanged(r, head, ids)
                else:
                    changed.append((r, head))
        if access:
            await self.collection.set_access(access)
            self.result.access_rewritten += sum(1 for ids in access.values() for _ in ids)
        return changed

    # -- 3. split --------------------------------------------------------------------------

    def chunk_size(self) -> int:
        """Tokens per chunk now. The embedder lowers its input size when the provider refused a
        chunk as too large: rows cut from then on get smaller chunks."""
        return max(1, min(self.chunk_tokens, self.embedder.max_input_tokens))

    def _split(self, changed: list[tuple[_Row, ExistingPoint | None]]) -> list[list[PlannedChunk]]:
        size = self.chunk_size()
        return [self._plan(r, size) for r, _ in changed]

    def _plan(self, r: _Row, size: int) -> list[PlannedChunk]:
        pieces = split_row(self.spec, r.row, r.text, self.embedder, size)
        return _chunks(self.spec, self.tenant_id, r.row, r.text, r.digest, self.embedder.model, pieces)

    async def index_row_filters(self, page: list[_Row]) -> None:
        """Index the row-dependent filter fields (spec ``row_filters``) this page is the first to carry,
        before any of its points is written, so a filter on them never meets an unindexed point."""
        if self.spec.row_filters is None:
            return
        new: dict[str, tuple[str, str]] = {}
        for r in page:
            for key, field_kind in self.spec.row_filters(r.row).items():
                if key not in self.row_filters and key not in new:
                    new[key] = field_kind
        if new:
            self.result.payload_indexes_created += len(await self.collection.ensure_row_filters(new))
            self.row_filters |= new

    async def process(self, page: list[_Row], tg: asyncio.TaskGroup) -> None:
        self.result.pages_read += 1
        self.result.rows_live += len(page)
        await self.index_row_filters(page)
        changed = await self.compare(page)
        self.report()
        if not changed:
            return
        planned = await asyncio.to_thread(self._split, changed)
        surplus: list[str] = []
        for (r, head), chunks in zip(changed, planned, strict=True):
            self.result.rows_changed += 1
            self.expected_points += len(chunks)
            self.chunks_left[r.external_id] = len(chunks)
            self.planned[r.external_id] = (r, len(chunks))
            if head is not None and isinstance(head.chunks, int) and head.chunks > len(chunks):
                surplus += [
                    point_id(self.tenant_id, self.spec.name, r.external_id, i) for i in range(len(chunks), head.chunks)
                ]
        if surplus:
            self.result.surplus_chunks_deleted += await self.collection.delete_ids(surplus)
        for chunks in planned:
            for chunk in chunks:
                await self.add(chunk, tg)

    # -- 4. pack and embed, 5. upsert --------------------------------------------------------

    def _caps(self) -> tuple[int, int]:
        inputs, tokens = self.embedder.max_batch_inputs, self.embedder.max_batch_tokens
        if self.max_batch_inputs:
            inputs = min(inputs, self.max_batch_inputs)
        if self.max_batch_tokens:
            tokens = min(tokens, self.max_batch_tokens)
        return max(1, inputs), max(1, tokens)

    async def add(self, chunk: PlannedChunk, tg: asyncio.TaskGroup) -> None:
        max_inputs, max_tokens = self._caps()
        full = self.packer.add(chunk, max_inputs=max_inputs, max_tokens=max_tokens)
        if full is not None:
            await self.dispatch(tg, *full)

    async def flush(self, tg: asyncio.TaskGroup) -> None:
        await self.dispatch(tg, *self.packer.take())

    async def dispatch(self, tg: asyncio.TaskGroup, batch: list[PlannedChunk], tokens: int) -> None:
        if not batch:
            return
        await self.alive.acquire(len(batch), tokens)  # back-pressure: reading waits while the allowance is used
        try:
            tg.create_task(self.embed_and_upsert(batch, tokens))
        except BaseException:
            await self.alive.release(len(batch), tokens)
            raise

    async def embed_and_upsert(self, packed: list[PlannedChunk], tokens: int) -> None:
        try:
            # Chunks of a row cut again since they were packed are stale: not worth embedding.
            batch = [c for c in packed if c.payload["external_id"] not in self.rechunked]
            if not batch:
                return
            async with self.in_flight:
                vectors, refused = await self._embed(batch)
                self.result.embedding_batches += 1
                self.result.chunks_embedded += len(batch) - len(refused)
                for ext in dict.fromkeys(batch[i].payload["external_id"] for i in refused):
                    if ext not in self.rechunked:  # another batch may have refused a chunk of it first
                        await self._rechunk(ext)
            # The refused chunks' rows are cut again (and written by write_rechunked): theirs are
            # dropped here, and again when written, since a row may be cut again in between.
            self.answered += [
                (c, vectors[i]) for i, c in enumerate(batch) if c.payload["external_id"] not in self.rechunked
            ]
            await self.write_answered()
        finally:
            await self.alive.release(len(packed), tokens)

    async def write_answered(self) -> None:
        """Write every answered chunk waiting, in calls of at most ``upsert_points`` (group commit).

        Whoever gets a writer's slot takes what all requests answered meanwhile, so writes grow only
        while the writer is the bottleneck (on the embedded engine, up to 4,096 points a call, which
        costs per call, not per point) and stay one request's size while the embedder is: a run
        stopped or killed loses at most what was answered and not yet written, never more than
        the requests in flight and the writes under way."""
        async with self.upserting:
            while self.answered:
                part, self.answered = self.answered[: self.upsert_points], self.answered[self.upsert_points :]
                await self.write(part)

    async def write(self, answered: list[tuple[PlannedChunk, Any]]) -> None:
        # Checked when written: a row may be cut again while its chunks wait or an earlier write runs.
        part = [(c, v) for c, v in answered if c.payload["external_id"] not in self.rechunked]
        if not part:
            return
        points = [chunk_point(c, v) for c, v in part]
        await self.collection.write(points)
        self.result.points_upserted += len(points)
        self._written([c for c, _ in part])

    async def _embed(self, chunks: list[PlannedChunk]) -> tuple[Any, set[int]]:
        """Vectors for ``chunks``, and the positions of those the provider refused as too large."""
        try:
            vectors, refused = await embed_or_refuse(
                self.embedder, [c.text for c in chunks], [c.tokens for c in chunks]
            )
        except InputTooLargeError as exc:  # one token refused: name the record, which only we know
            raise EmbeddingError(f"{exc} ({self._name(chunks[exc.index])})") from None
        if len(vectors) != len(chunks):
            raise EmbeddingError(f"model {self.embedder.model}: asked for {len(chunks)} embeddings, got {len(vectors)}")
        return vectors, set(refused)

    async def _rechunk(self, ext: str) -> None:
        """Cut a row again, all of it, after the provider refused one of its chunks as too large.

        The refusal lowered the embedder's input size below the refused chunk's, so the row's
        new chunks are smaller; each becomes its own point, with the deterministic id of its row
        and chunk. Its chunks from the first cut are stale from now on: batches drop them before
        embedding or writing, and the new points are written by :meth:`write_rechunked` after
        every batch has finished, so that no write of a stale chunk can land after them. A chunk
        refused again cuts the row smaller again; only one of a single token fails.
        """
        row, old_chunks = self.planned.pop(ext)
        self.chunks_left.pop(ext, None)
        redo = self.rechunked[ext] = _Rechunked(row, old_chunks)  # before any await: claimed
        self.result.rows_rechunked += 1
        known: dict[str, Any] = {}  # vectors of chunk texts an earlier cut already embedded
        while True:
            size = self.chunk_size()
            chunks = await asyncio.to_thread(self._plan, row, size)
            todo = [c for c in chunks if c.text not in known]
            vectors, refused = await self._embed(todo)
            self.result.embedding_batches += 1
            self.result.chunks_embedded += len(todo) - len(refused)
            known.update((c.text, vectors[i]) for i, c in enumerate(todo) if i not in refused)
            if not refused:
                break
            log.info("%s: %s cut again below %d tokens", self.collection.name, self._name(todo[min(refused)]), size)
        redo.chunks, redo.vectors = chunks, [known[c.text] for c in chunks]
        self.expected_points += len(chunks) - old_chunks

    async def write_rechunked(self) -> None:
        """Write the rows cut again (see :meth:`_rechunk`), and drop chunks of theirs the new cut has no use for."""
        for ext, redo in self.rechunked.items():
            points = [chunk_point(c, v) for c, v in zip(redo.chunks, redo.vectors, strict=True)]
            for start in range(0, len(points), self.upsert_points):
                await self.collection.write(points[start : start + self.upsert_points])
            self.result.points_upserted += len(points)
            if len(points) < redo.old_chunks:
                surplus = [
                    point_id(self.tenant_id, self.spec.name, ext, i) for i in range(len(points), redo.old_chunks)
                ]
                self.result.surplus_chunks_deleted += await self.collection.delete_ids(surplus)
            self.rows_done += 1
        if self.rechunked:
            self.report()

    def _name(self, chunk: PlannedChunk) -> str:
        p = chunk.payload
        key = f"Jira key {p['key']}, " if p.get("key") else ""
        return (
            f"tenant {self.tenant_id}, entity {self.spec.name}, {key}id {p.get('external_id')}, chunk {p.get('chunk')}"
        )

    # -- progress ----------------------------------------------------------------------------

    def _written(self, chunks: list[PlannedChunk]) -> None:
        for c in chunks:
            ext = c.payload["external_id"]
            left = self.chunks_left.get(ext, 0) - 1
            if left > 0:
                self.chunks_left[ext] = left
            elif self.chunks_left.pop(ext, None) is not None:
                self.planned.pop(ext, None)
                self.rows_done += 1
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress(Progress(self.collection.name, self.rows_done, self.total_rows, elapsed))

    # -- the sweep ---------------------------------------------------------------------------

    async def sweep(self, live_ids: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        if await self.collection.count() == self.expected_points:
            self.result.sweep = "skipped"
            return
        self.result.sweep = "full"
        tenant, entity = self.tenant_id, self.spec.name
        async for refs in self.collection.scroll_external_ids():
            ext_ids = sorted({r.external_id for r in refs if r.external_id})
            alive = await live_ids(ext_ids) if ext_ids else set()
            doomed = []
            later: list[tuple[Any, str]] = []  # (ref, external id): chunks > 0 of live rows, checked vs chunk 0
            for r in refs:
                ext = r.external_id
                if ext is None or ext not in alive or r.id != point_id(tenant, entity, ext, r.chunk or 0):
                    doomed.append(r.id)
                elif r.chunk:
                    later.append((r, ext))
            if later:
                heads = await self.collection.existing([point_id(tenant, entity, ext, 0) for _, ext in later])
                for r, ext in later:
                    head = heads.get(point_id(tenant, entity, ext, 0))
                    count = head.chunks if head is not None and isinstance(head.chunks, int) else 1
                    if head is None or head.content_hash != r.content_hash or r.chunk >= count:
                        doomed.append(r.id)
            if doomed:
                self.result.points_deleted += await self.collection.delete_ids(doomed)


def _sync_state(spec: EntitySpec, tenant_id: str, embedder: Embedder, chunk_tokens: int, fingerprint: str) -> str:
    parts = ("v1", spec.name, tenant_id, embedder.model, str(embedder.dimensions), str(chunk_tokens), fingerprint)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _limits_record(embedder: Embedder, input_tokens: int) -> dict[str, Any]:
    """What a collection records about its provider: the largest input it takes, for which model
    and endpoint (another endpoint may take more)."""
    return {"model": embedder.model, "endpoint": getattr(embedder, "endpoint", None), "input_tokens": input_tokens}


def _recorded_input_tokens(limits: dict[str, Any] | None, embedder: Embedder) -> int | None:
    """The recorded input size, if it was learned from this model on this endpoint."""
    if not limits:
        return None  # nothing recorded: the embedder's endpoint is not asked (its client is made on first use)
    want = _limits_record(embedder, 0)
    if limits.get("model") != want["model"] or limits.get("endpoint") != want["endpoint"]:
        return None
    value = limits.get("input_tokens")
    return value if isinstance(value, int) and value > 0 else None


def _lowest_of(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


async def _first_page(pages: Callable[[], Iterator[list[dict[str, Any]]]]) -> list[dict[str, Any]] | None:
    def first() -> list[dict[str, Any]] | None:
        rows = iter(pages())
        try:
            return next(rows, None)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    return await asyncio.to_thread(first)


async def _each_page(pages: Callable[[], Iterator[list[dict[str, Any]]]]) -> AsyncIterator[list[dict[str, Any]]]:
    """The pages of ``pages()``, each read in a worker thread; the iterator is closed there too."""
    rows = await asyncio.to_thread(lambda: iter(pages()))
    try:
        while (page := await asyncio.to_thread(next, rows, None)) is not None:
            yield page
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


async def _upgrade(collection: Collection, sync: _Sync, pages: Callable[[], Iterator[list[dict[str, Any]]]]) -> int:
    """Give a dense-only collection named dense + BM25 vectors without re-embedding.

    Each committed row whose stored points are current (same content hash, every chunk
    there) has its dense vectors copied and its BM25 vectors computed from the row's own
    chunk texts (re-split with the embedder's tokenizer, no embedding request). Rows whose
    points are stale or missing are left out: the sync that follows embeds them as usual.
    """
    spec, embedder = sync.spec, sync.embedder
    indexes = dict(spec.payload_indexes)
    log.warning("%s: built before hybrid search (dense vector only); adding BM25 vectors", collection.name)
    staging = await collection.begin_upgrade(model=embedder.model, dimensions=embedder.dimensions, indexes=indexes)
    carried = 0
    async for page in _each_page(pages):
        described = sync._describe(page)
        heads = await collection.existing([r.head_id for r in described])
        current: list[tuple[_Row, ExistingPoint | None]] = [
            (r, None) for r in described if (h := heads.get(r.head_id)) is not None and h.content_hash == r.digest
        ]
        planned = await asyncio.to_thread(sync._split, current)
        stored = await collection.dense_vectors([c.id for chunks in planned for c in chunks])
        points = [
            chunk_point(c, stored[c.id][0])
            for chunks in planned
            if all(c.id in stored and stored[c.id][1].get("content_hash") == c.payload["content_hash"] for c in chunks)
            for c in chunks
        ]
        if points:
            await staging.write(points)
            carried += len(points)
    await collection.finish_upgrade(staging, model=embedder.model, dimensions=embedder.dimensions, indexes=indexes)
    return carried


async def sync_vectors(
    *,
    spec: EntitySpec,
    tenant_id: str,
    pages: Callable[[], Iterator[list[dict[str, Any]]]],
    live_ids: Callable[[list[str]], Awaitable[set[str]]],
    embedder: Embedder,
    collection: VectorCollection,
    concurrency: int = 4,
    max_batch_inputs: int | None = None,
    max_batch_tokens: int | None = None,
    max_chunk_tokens: int | None = None,
    upsert_batch_points: int | None = None,
    prefetch_pages: int = 2,
    fingerprint: Callable[[], str] | None = None,
    progress: Callable[[Progress], None] | None = None,
    total_rows: Callable[[], int] | None = None,
) -> VectorSyncResult:
    """Bring ``collection`` to exactly the live rows produced by ``pages``.

    ``pages`` returns an iterator of pages (lists) of the live committed rows; it is
    called, iterated and closed in a worker thread, so database reads stay off the event
    loop and overlap embedding. ``live_ids`` answers which of a list of external ids are
    live rows (for the orphan sweep). ``fingerprint`` (optional, called in a worker
    thread) returns a digest of the live rows' ids and row hashes; see the module
    docstring. ``upsert_batch_points`` (default: the collection's ``upsert_points``) is the
    most points per write (see step 5 there).

    ``progress`` (e.g. a :class:`~etl_assets.core.progress.ProgressLog`) is told, after each
    page compared and each batch written, how many rows have all their points in place;
    ``total_rows`` (called once, in a worker thread, only with ``progress``) counts the live
    rows, for the percentage and ETA.
    """
    started = time.perf_counter()
    result = VectorSyncResult(collection.name, embedder.model, embedder.dimensions)
    result.collection_created = await collection.ensure(
        model=embedder.model, dimensions=embedder.dimensions, indexes=dict(spec.payload_indexes)
    )
    # The largest input the provider took, as a refusal taught an earlier run: rows are cut to fit
    # from the start, and a row cut small then compares unchanged with what this run would cut.
    limits = None if result.collection_created else await collection.read_provider_limits()
    recorded = _recorded_input_tokens(limits, embedder)
    chunk_tokens = min(max_chunk_tokens or embedder.max_input_tokens, embedder.max_input_tokens)
    chunk_tokens = _lowest_of(chunk_tokens, recorded) or chunk_tokens
    result.chunk_tokens = chunk_tokens

    def new_sync(into: VectorSyncResult, **extra: Any) -> _Sync:
        return _Sync(
            spec=spec,
            tenant_id=tenant_id,
            embedder=embedder,
            collection=collection,
            result=into,
            concurrency=max(1, concurrency),
            max_batch_inputs=max_batch_inputs,
            max_batch_tokens=max_batch_tokens,
            chunk_tokens=chunk_tokens,
            upsert_points=max(1, upsert_batch_points or collection.upsert_points),
            **extra,
        )

    if isinstance(collection, Collection) and not result.collection_created and await collection.dense_only():
        result.upgraded_points = await _upgrade(
            collection, new_sync(VectorSyncResult(collection.name, embedder.model, embedder.dimensions)), pages
        )

    state, digest = None, ""
    if fingerprint is not None:
        digest = await asyncio.to_thread(fingerprint)
        state = _sync_state(spec, tenant_id, embedder, chunk_tokens, digest)
        marker = None if result.collection_created else await collection.read_marker()
        if marker is not None and marker.get("state") == state and await collection.count() == marker.get("points"):
            page = await _first_page(pages)
            probe = new_sync(VectorSyncResult(collection.name, embedder.model, embedder.dimensions))
            if page is None or not await probe.compare(probe._describe(page)):
                result.rows_live = result.rows_unchanged = int(marker.get("rows") or 0)
                result.sweep, result.change_detection = "skipped", "fingerprint"
                result.duration_s = time.perf_counter() - started
                return result
        await collection.write_marker(None)  # until this run completes, nothing vouches for the collection

    total = await asyncio.to_thread(total_rows) if progress is not None and total_rows is not None else None
    sync = new_sync(result, progress=progress, total_rows=total)
    queue: asyncio.Queue[list[_Row] | None] = asyncio.Queue(maxsize=max(1, prefetch_pages))
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tg:  # a failure cancels, and awaits, every other task
            tg.create_task(sync.read(pages, queue))
            while (rows := await queue.get()) is not None:
                await sync.process(rows, tg)
            await sync.flush(tg)
    except BaseExceptionGroup as group:
        failure = _first_error(group)
        if failure is group:
            raise
    if failure is not None:
        # The failing task's own exception, raised outside the handler so that its cause and
        # context (e.g. the transport error under a qdrant-client exception) stay as they were.
        raise failure
    await sync.write_answered()  # normally empty: every request's task writes before it ends
    await sync.write_rechunked()
    learned = _lowest_of(recorded, getattr(embedder, "learned_input_tokens", None))
    if learned is not None and learned != recorded:
        await collection.write_provider_limits(_limits_record(embedder, learned))
    result.chunk_tokens = sync.chunk_size()
    await sync.sweep(live_ids)
    sync.report()  # the final count (a ProgressLog writes it when it wrote earlier lines)
    if state is not None:
        # With the size rows are cut at now (lowered if a refusal taught a smaller input size), which
        # is what the next run starts from: its state then matches this one.
        state = _sync_state(spec, tenant_id, embedder, result.chunk_tokens, digest)
        await collection.write_marker({"state": state, "points": await collection.count(), "rows": result.rows_live})
    result.duration_s = time.perf_counter() - started
    log.info(
        "%s: %d live rows, %d changed, %d chunks embedded in %d batches, %d points deleted, %.1fs",
        collection.name,
        result.rows_live,
        result.rows_changed,
        result.chunks_embedded,
        result.embedding_batches,
        result.points_deleted + result.surplus_chunks_deleted,
        result.duration_s,
    )
    return result
