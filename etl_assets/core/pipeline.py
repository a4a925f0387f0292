"""Plain functions the assets call: what to fetch, and the checks on what landed.

Kept free of Dagster so they can be tested, and reused by the CLI, without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select

from etl_assets.core.fanout import AdaptiveLimit, LimitStats, fewer_collections, run_fanned_out
from etl_assets.core.progress import Progress
from etl_assets.core.records import EntitySpec, FetchRequest, RawPage
from etl_assets.core.store import ops
from etl_assets.core.tenants import Tenant


@dataclass(frozen=True)
class FetchPlan:
    kind: str  # "full" | "incremental" | "ids"
    request: FetchRequest
    reason: str | None = None  # a reconciliation listing: why it runs


def plan_fetches(
    engine: Engine,
    spec: EntitySpec,
    tenant: Tenant,
    *,
    full_resync: bool = False,
    reconcile: bool = False,
    overlap: timedelta = timedelta(minutes=10),
    reconcile_every: int = 12,
    page_size: int = 50,
) -> tuple[list[FetchPlan], ops.SyncState]:
    """Full listings for small entities; for issues, changes since the watermark (less an
    overlap, because JQL has minute granularity and the search index lags), plus a listing
    of live ids when reconciliation is due or asked for."""
    if not spec.incremental:
        return [FetchPlan("full", FetchRequest(tenant, page_size=page_size))], ops.SyncState(None, 0, None)
    state = ops.read_sync_state(engine, tenant.id, spec.name)
    if spec.fan_out is not None and ops.unsealed_fan_out(engine, tenant.id, spec.name) is not None:
        # A fan-out a killed or failed run left unfinished: resume it (it is a full fetch, and its
        # catch-up covers what changed meanwhile) before anything else.
        return [FetchPlan("full", FetchRequest(tenant, page_size=page_size), "resume the unfinished fan-out")], state
    if full_resync or state.watermark is None:
        # Everything, and what is not in it is gone: a full fetch is its own reconciliation.
        return [FetchPlan("full", FetchRequest(tenant, page_size=page_size))], state
    plans = [FetchPlan("incremental", FetchRequest(tenant, since=state.watermark - overlap, page_size=page_size))]
    reason = None
    if reconcile:
        reason = "asked for (reconcile: true)"
    elif reconcile_every > 0 and state.syncs_since_reconcile + 1 >= reconcile_every:
        reason = f"{state.syncs_since_reconcile + 1} incremental syncs since the last one (reconcile_every)"
    if reason is not None:
        plans.append(reconcile_plan(spec, tenant, reason, page_size))
    return plans, state


@dataclass(frozen=True)
class TenantRun:
    """What a routine (scheduled) run of one tenant includes: see :func:`plan_tenant_run`."""

    entities: tuple[EntitySpec, ...]  # whose raw, table and vector steps the run includes
    first_sync: bool  # an incremental entity was never synced, or its fan-out is unfinished
    notes: tuple[str, ...]  # why a source is left out, or kept though unused; why it is a first sync


def plan_tenant_run(engine: Engine, catalogue: Iterable[EntitySpec], tenant: Tenant) -> TenantRun:
    """The entities a routine run of ``tenant`` syncs, and whether it is a first sync.

    A source the tenant uses is always in. A source it does not use is in only while the
    database holds something of it for the tenant (rows, live or marked deleted, or landed raw
    records): its steps then list nothing, mark the rows deleted and remove their points. Left
    out, it costs the run nothing; that is safe because a tenant that never had a row of a
    source never had a point of it either. A first sync (an incremental entity whose table step
    never committed, or a fan-out a killed run left unfinished) is the run worth spreading over
    processes; every other run finds little to do.
    """
    by_source: dict[str, list[EntitySpec]] = {}
    for spec in catalogue:
        by_source.setdefault(spec.source, []).append(spec)
    entities: list[EntitySpec] = []
    notes: list[str] = []
    first_sync = False
    for source, specs in by_source.items():
        if tenant.section(source) is None:
            if not ops.holds_data(engine, specs, tenant.id):
                notes.append(f"{source}: not used by tenant {tenant.id}, nothing of it stored: left out")
                continue
            notes.append(f"{source}: not used by tenant {tenant.id}, but rows of it are stored: kept to remove them")
        entities += specs
        if tenant.section(source) is None:
            continue
        for spec in specs:
            if not spec.incremental or spec.parent is not None:
                continue
            if not ops.ever_synced(engine, tenant.id, spec.name):
                notes.append(f"{spec.name}: never synced for tenant {tenant.id}: a first sync")
                first_sync = True
            elif spec.fan_out is not None and ops.unsealed_fan_out(engine, tenant.id, spec.name) is not None:
                notes.append(f"{spec.name}: an unfinished fan-out for tenant {tenant.id}: a first sync resumed")
                first_sync = True
    return TenantRun(tuple(entities), first_sync, tuple(notes))


def reconcile_plan(spec: EntitySpec, tenant: Tenant, reason: str, page_size: int = 50) -> FetchPlan:
    """The listing that finds what vanished: live ids, or whole records where ids are not cheap."""
    kind = "full" if spec.reconcile_in_full else "ids"
    return FetchPlan(kind, FetchRequest(tenant, ids_only=True, page_size=page_size), reason)


class FetchRun:
    """The plans of one raw step, in order, with the prompt-deletion check between them.

    Iterate it and land each plan's pages before asking for the next: once an incremental
    fetch has landed and no listing is planned, ``spec.live_estimate`` asks the source how many
    objects it holds. Fewer than the live rows the table will hold after this run (its live rows
    plus the new ones just landed) means something vanished or left the tenant's scope, and the
    reconciliation listing follows in the same run. The estimate is a trigger, never the truth:
    one that lags new objects costs an id listing it did not need; one that lags a deletion
    hides it until the next run, whose comparison (stateless) sees it.
    """

    def __init__(self, engine: Engine, spec: EntitySpec, tenant: Tenant, client: Any, plans: list[FetchPlan]):
        self.engine, self.spec, self.tenant, self.client = engine, spec, tenant, client
        self.plans = list(plans)
        self.estimate: int | None = None
        self.expected: int | None = None

    def __iter__(self) -> Iterator[FetchPlan]:
        yield from list(self.plans)
        estimate = self.spec.live_estimate
        if estimate is None or [p.kind for p in self.plans] != ["incremental"]:
            return
        self.estimate = estimate(self.client, self.tenant)
        if self.estimate is None:
            return
        self.expected = ops.live_rows_after_pending(self.engine, self.spec, self.tenant.id)
        if self.estimate < self.expected:
            page_size = self.plans[0].request.page_size
            reason = f"estimate {self.estimate} < {self.expected} live rows"
            self.plans.append(reconcile_plan(self.spec, self.tenant, reason, page_size))
            yield self.plans[-1]

    @property
    def reason(self) -> str | None:
        return next((p.reason for p in self.plans if p.reason), None)

    def metadata(self) -> dict[str, Any]:
        """What an operator reads on the raw step: the estimate, and why it reconciled (if it did)."""
        meta: dict[str, Any] = {}
        if self.estimate is not None:
            meta |= {"live_estimate": self.estimate, "live_rows_expected": self.expected}
        if self.reason is not None:
            meta["reconcile_reason"] = self.reason
        return meta


def fetch(spec: EntitySpec, client: Any, plan: FetchPlan) -> Iterator[RawPage]:
    return spec.fetch(client, plan.request)


# -- fan-out: a big full read, parallel and resumable ------------------------------------------------


@dataclass(frozen=True)
class FanOutOptions:
    """How a full read fans out (the source resource's settings)."""

    concurrency: int = 12  # most requests in flight (the adaptive limit starts at half)
    min_records: int = 2000  # smaller listings keep the simple paged path


@dataclass
class FanOutResult:
    resumed: bool
    listed: int  # ids in the listing
    landed_before: int  # ids whose records a previous run had landed (a resume)
    requests: int = 0  # chunk requests (each with its follow-up pages)
    records: int = 0
    pages: int = 0
    bytes: int = 0
    catch_up_records: int = 0
    listing_batch: int = 0
    batch_id: int = 0
    fetch_s: float = 0.0
    limit: LimitStats = field(default_factory=LimitStats)

    def metadata(self) -> dict[str, Any]:
        return {
            "fan_out": "resumed" if self.resumed else "started",
            "fan_out_listed": self.listed,
            "fan_out_landed_before": self.landed_before,
            "fan_out_requests": self.requests,
            "fan_out_fetch_s": round(self.fetch_s, 3),
            "catch_up_records": self.catch_up_records,
            "ids_batch_id": self.listing_batch,
            "batch_id": self.batch_id,
            "pages": self.pages,
            "records": self.records,
            "bytes": self.bytes,
            **self.limit.metadata("fan_out"),
        }


@dataclass
class _Answer:
    pages: list[RawPage]
    records: int
    landed: bool = False
    error: BaseException | None = None


class _GroupLanding:
    """Lands answers from many threads one transaction at a time (page numbers are taken in the
    transaction, and SQLite writes one at a time anyway), each answer a checkpoint. Answers that
    arrive while a transaction is being written are landed together by the next one: a group
    commit, one commit (one fsync) for all of them, so landing keeps up when commits are slow.
    :meth:`land` returns once the caller's answer is committed (or raises what landing it raised).
    """

    def __init__(self, land: Callable[[list[RawPage], int], int]) -> None:
        self._land = land
        self._writing = threading.Lock()  # held while a transaction is written
        self._queue_lock = threading.Lock()
        self._queue: list[_Answer] = []
        self.transactions = 0

    def land(self, pages: list[RawPage], records: int) -> None:
        mine = _Answer(pages, records)
        with self._queue_lock:
            self._queue.append(mine)
        with self._writing:
            if not mine.landed:  # nobody took it along meanwhile: write it and whatever waits
                with self._queue_lock:
                    group, self._queue = self._queue, []
                failed: BaseException | None = RuntimeError("landing was interrupted")
                try:
                    self._land([p for a in group for p in a.pages], sum(a.records for a in group))
                    self.transactions += 1
                    failed = None
                except Exception as exc:  # noqa: BLE001 - not swallowed: every answer of the group raises it
                    failed = exc
                finally:
                    for answer in group:
                        answer.error, answer.landed = failed, True
        if mine.error is not None:
            raise mine.error


def fetch_fanned_out(
    engine: Engine,
    spec: EntitySpec,
    tenant: Tenant,
    client: Any,
    *,
    options: FanOutOptions,
    overlap: timedelta = timedelta(minutes=10),
    page_size: int = 50,
    run_id: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> FanOutResult | None:
    """A full read of ``spec`` as a fan-out (``spec.fan_out``), landed as it arrives; None when the
    listing is smaller than ``options.min_records`` (nothing landed: take the paged path).

    1. List the live ids cheaply and land the listing (or find the listing of an unfinished
       fan-out: then only ids without landed records are fetched — a resume). Once the listing
       is known to be big enough, what the fetches begin with (``begin``: e.g. a field listing)
       is asked for beside the rest of it.
    2. Fetch the records of ``chunk`` ids per request, up to ``options.concurrency`` requests at
       once under an :class:`~etl_assets.core.fanout.AdaptiveLimit`; land each answer as it
       arrives (a checkpoint: a kill loses only the requests in flight).
    3. Catch up: records are fetched at different moments, so what changed since the listing
       began (less ``overlap``) is read once more, the way an incremental sync reads it (with
       what ``begin`` gave, when the spec has a ``catch_up``); the watermark the table step
       derives is then true for every record.
    4. Seal: the listing and the records become visible to the table step together.
    """
    fan = spec.fan_out
    assert fan is not None, f"{spec.name} has no fan-out"
    batches = ops.unsealed_fan_out(engine, tenant.id, spec.name)
    resumed = batches is not None
    begin = FetchRequest(tenant, page_size=page_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fan-out-begin") as beside:
        begun: Future[tuple[list[RawPage], Any]] | None = None
        if batches is None:
            listing: list[RawPage] = []
            ids: list[str] = []
            records = 0
            for page in fan.list_ids(client, FetchRequest(tenant, ids_only=True, page_size=page_size)):
                listing.append(page)
                found = spec.records(page.json())
                records += len(found)
                ids += ops.record_ids(found)
                if begun is None and records >= options.min_records:
                    # A fan-out it is: what it begins with (e.g. a field listing) is asked for
                    # while the rest of the listing arrives.
                    begun = beside.submit(fan.begin, client, begin)
            if records < options.min_records:
                return None
            batches = ops.start_fan_out(engine, spec, tenant.id, listing, run_id=run_id, records=records)
            # What ops.fan_out_ids would read back from the listing just landed; nothing has landed.
            listed, landed = list(dict.fromkeys(ids)), set[str]()
        else:
            listed, landed = ops.fan_out_ids(engine, spec, tenant.id, batches)
        first, ask = begun.result() if begun is not None else fan.begin(client, begin)
    todo = [i for i in listed if i not in landed]
    result = FanOutResult(resumed, len(listed), len(landed & set(listed)))
    result.listing_batch, result.batch_id = batches.listing, batches.content
    started = time.perf_counter()

    def land(pages: list[RawPage], records: int | None = None) -> int:
        result.pages += len(pages)
        result.bytes += sum(len(p.body) for p in pages)
        return ops.append_fan_out(engine, spec, tenant.id, batches, pages, records)

    land(first)
    limit = AdaptiveLimit(options.concurrency)
    chunks = [todo[i : i + fan.chunk] for i in range(0, len(todo), fan.chunk)]
    # Each answer is landed by the worker that fetched it, after its place under the limit is free
    # again, so the next request goes out while it is stored.
    landing = _GroupLanding(lambda pages, records: ops.append_fan_out(engine, spec, tenant.id, batches, pages, records))

    def land_answer(_ids: list[str], answer: tuple[list[RawPage], int]) -> tuple[list[RawPage], int]:
        pages, records = answer
        landing.land(pages, records)
        return pages, records

    observed = hasattr(client, "observe")
    if observed:
        client.observe = limit.observe
    try:
        with fewer_collections():
            for _chunk, (pages, records) in run_fanned_out(
                chunks, lambda ids: fan.fetch(client, ask, ids), limit, then=land_answer
            ):
                result.requests += 1
                result.pages += len(pages)
                result.bytes += sum(len(p.body) for p in pages)
                result.records += records
                if progress is not None:
                    progress(
                        Progress(
                            f"{spec.name} of tenant {tenant.id} (fan-out)",
                            result.landed_before + result.records,
                            len(listed),
                            time.perf_counter() - started,
                            "records",
                        )
                    )
    finally:
        if observed:
            client.observe = None
    result.fetch_s = time.perf_counter() - started
    result.limit = limit.stats
    since = FetchRequest(tenant, since=batches.started_at - overlap, page_size=page_size)
    catch_up = list(fan.catch_up(client, ask, since) if fan.catch_up is not None else spec.fetch(client, since))
    result.catch_up_records = land(catch_up)
    result.records += result.catch_up_records
    ops.seal_fan_out(engine, batches)
    return result


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any]
    blocking: bool = True


def references_description(spec: EntitySpec) -> str:
    """What the ``references_resolve`` check asks of ``spec``'s live rows."""
    targets = ", ".join(target for _, target in spec.references)
    return f"Every reference of a live row ({targets}) resolves to a row of the same tenant."


def table_checks(
    engine: Engine, spec: EntitySpec, tenant_id: str, catalogue: Mapping[str, EntitySpec]
) -> list[CheckOutcome]:
    """Checks on the committed table, read through a fresh connection after the commit.

    ``catalogue`` resolves ``spec.references``: the catalogue the definitions were built from.
    """
    with engine.connect() as conn:
        dups = ops.duplicate_ids(conn, spec, tenant_id)
        orphans = ops.rows_without_tenant(conn, spec)
        outcomes = [
            CheckOutcome(
                "no_duplicate_ids",
                not dups,
                "no Jira id appears twice for the tenant",
                {"duplicates": len(dups), "examples": ", ".join(dups[:5])},
            ),
            CheckOutcome(
                "no_rows_without_tenant",
                orphans == 0,
                "every row carries a tenant id",
                {"rows_without_tenant": orphans},
            ),
        ]
        if spec.references:
            dangling = ops.dangling_references(conn, spec, tenant_id, catalogue)
            outcomes.append(
                CheckOutcome(
                    "references_resolve",
                    not any(dangling.values()),
                    references_description(spec),
                    {f"dangling_{k}": v for k, v in dangling.items()},
                )
            )
    return outcomes


def live_external_ids(engine: Engine, spec: EntitySpec, tenant_id: str, candidates: list[str]) -> set[str]:
    table = spec.table
    out: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(candidates), 500):
            part = candidates[start : start + 500]
            out.update(
                r[0]
                for r in conn.execute(
                    select(table.c.external_id).where(
                        table.c.tenant_id == tenant_id,
                        table.c.deleted_at.is_(None),
                        table.c.external_id.in_(part),
                        *([spec.indexed(table)] if spec.indexed is not None else []),
                    )
                )
            )
    return out
