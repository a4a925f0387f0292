"""Raw, table and vector assets, each built by one factory from the entity catalogue."""
# No "from __future__ import annotations" here: Dagster reads these annotations at runtime.

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import dagster as dg
from pydantic import Field
from sqlalchemy import Engine

from etl_assets.core import pipeline
from etl_assets.core.embeddings.base import EmbeddingError
from etl_assets.core.progress import ProgressLog, counted
from etl_assets.core.records import EntitySpec
from etl_assets.core.store import ops
from etl_assets.core.store.retention import RawRetention
from etl_assets.core.tenants import TenantRegistry
from etl_assets.core.vectorstore import Collection, QdrantServerError, collection_name, server_errors_named
from etl_assets.core.vectorsync import sync_vectors
from etl_assets.defs.names import (
    EMBEDDINGS_POOL,
    TABLES_GROUP,
    VECTORS_GROUP,
    raw_group,
    raw_key,
    source_pool,
    table_key,
    vector_key,
)
from etl_assets.defs.reindex import follow_reindex
from etl_assets.defs.resources import DatabaseResource, EmbeddingsResource, QdrantResource


class RawFetchConfig(dg.Config):
    """Launchpad options for a raw fetch. Ignored by entities that are always listed in full."""

    full_resync: bool = Field(
        default=False, description="Fetch every issue again, not only changes since the watermark."
    )
    reconcile: bool = Field(default=False, description="Also list live issue ids and mark the rest deleted.")
    overlap_minutes: int = Field(default=10, description="Re-read this much before the watermark (JQL is per minute).")
    reconcile_every: int = Field(
        default=12, description="Reconcile automatically every N incremental syncs (0: never)."
    )


def build_raw_asset(
    spec: EntitySpec, registry: TenantRegistry, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(spec),
        name=None,
        group_name=raw_group(spec),
        kinds={spec.source},
        partitions_def=partitions,
        pool=source_pool(spec),
        # The source's resource is the one named after it (``jira``): it opens a client per tenant.
        required_resource_keys={spec.source, "database"},
        description=(
            f"{spec.title} as the source returned them (`{spec.endpoint}`), landed unchanged in `raw_jira_pages` "
            "with tenant, entity, fetch time and a hash — the record the tables are rebuilt from. For a tenant "
            "that does not use this source, an empty listing (its table and collection stay empty)."
        ),
    )
    def raw_asset(context: dg.AssetExecutionContext, config: RawFetchConfig) -> dg.MaterializeResult:
        source = getattr(context.resources, spec.source)
        database: DatabaseResource = context.resources.database
        tenant = registry.get(context.partition_key)
        # A tenant without this source gets an empty full listing from its client (nothing asked):
        # rows of a source removed from a tenant are then marked deleted and leave the index.
        served = source.serves(tenant)
        started = time.perf_counter()
        plans, state = pipeline.plan_fetches(
            database.engine,
            spec,
            tenant,
            full_resync=config.full_resync or not served,
            reconcile=config.reconcile,
            overlap=timedelta(minutes=config.overlap_minutes),
            reconcile_every=config.reconcile_every,
            page_size=source.listing_size,
        )
        meta: dict[str, Any] = {}
        with source.open(tenant, database.engine) as client:
            run = pipeline.FetchRun(database.engine, spec, tenant, client, plans)
            for plan in run:  # may add the reconciliation listing when the source's estimate says so
                # A full read of an entity that can fan out (a first sync, a full re-sync, a resume)
                # is fetched in parallel and landed as it arrives; a small listing keeps the paged path.
                if plan.kind == "full" and spec.fan_out is not None:
                    fanned = pipeline.fetch_fanned_out(
                        database.engine,
                        spec,
                        tenant,
                        client,
                        options=source.fan_out_options(),
                        overlap=timedelta(minutes=config.overlap_minutes),
                        page_size=source.listing_size,
                        run_id=context.run.run_id,
                        progress=ProgressLog(context.log),
                    )
                    if fanned is not None:
                        meta |= fanned.metadata()
                        continue
                landed = ops.land_raw(
                    database.engine,
                    spec,
                    tenant.id,
                    counted(
                        pipeline.fetch(spec, client, plan),
                        ProgressLog(context.log),
                        f"{spec.name} of tenant {tenant.id}",
                        size=lambda page: len(spec.records(page.json())),
                        unit="records",
                    ),
                    kind=plan.kind,
                    run_id=context.run.run_id,
                )
                prefix = "" if plan.kind in ("full", "incremental") else f"{plan.kind}_"
                meta |= {
                    f"{prefix}batch_id": landed.batch_id,
                    f"{prefix}pages": landed.pages,
                    f"{prefix}records": landed.records,
                    f"{prefix}bytes": landed.bytes,
                }
            stats = client.stats
        meta |= {
            "tenant": tenant.id,
            **({} if served else {"source_configured": False}),
            "fetch": "+".join(p.kind for p in run.plans),
            **run.metadata(),
            f"{spec.source}_requests": stats.requests,
            f"{spec.source}_retries": stats.retries,
            f"{spec.source}_429s": stats.throttled,
            **(stats.metadata() if hasattr(stats, "metadata") else {}),  # a source's own figures
            "duration_s": round(time.perf_counter() - started, 3),
        }
        if spec.incremental:
            meta["watermark_before"] = state.watermark.isoformat() if state.watermark else "none (first sync)"
            since = plans[0].request.since
            meta["fetched_since"] = since.isoformat() if since else "everything"
        context.log.info(f"{spec.name}: landed {meta.get('records')} records for tenant {tenant.id}")
        return dg.MaterializeResult(metadata=meta)

    return raw_asset


def _check_results(outcomes: list[pipeline.CheckOutcome], key: dg.AssetKey) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=o.name,
            asset_key=key,
            passed=o.passed,
            metadata=o.metadata,
            severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
        )
        for o in outcomes
    ]


TABLE_CHECKS = {
    "no_duplicate_ids": "No source id appears twice for a tenant.",
    "no_rows_without_tenant": "Every row carries its tenant id.",
}


def build_table_asset(
    spec: EntitySpec,
    registry: TenantRegistry,
    partitions: dg.PartitionsDefinition,
    dialect: str,
    catalogue: dict[str, EntitySpec],
    retention: RawRetention | None = None,
) -> dg.AssetsDefinition:
    key = table_key(spec)
    keep = (retention or RawRetention()).of(spec.name)
    checks = dict(TABLE_CHECKS)
    if spec.references:
        checks["references_resolve"] = pipeline.references_description(spec)
    check_specs = [dg.AssetCheckSpec(name, asset=key, blocking=True, description=d) for name, d in checks.items()]
    check_specs.append(
        dg.AssetCheckSpec(
            "no_rejected_records",
            asset=key,
            blocking=False,
            description="No record of this run was quarantined to rejected_records.",
        )
    )
    deps = [raw_key(spec)] + [table_key(catalogue[target]) for _, target in spec.references]

    @dg.asset(
        key=key,
        deps=deps,
        group_name=TABLES_GROUP,
        kinds={dialect},
        partitions_def=partitions,
        check_specs=check_specs,
        description=(
            f"{spec.title}: normalized rows in table `{spec.table.name}`, one per `(tenant_id, external_id)`, "
            "upserted from the pending raw batches in one transaction that commits before the asset "
            "returns; rows whose source object disappeared are marked deleted. After the commit, consumed raw "
            f"batches beyond the retention ({keep.describe()}) are pruned."
        ),
    )
    def table_asset(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        tenant = registry.get(context.partition_key)
        started = time.perf_counter()
        # Committed when this returns; the raw retention is applied after the commit.
        result = ops.build_table(database.engine, spec, tenant.id, retention=keep)
        for reason in result.rejected_reasons[:20]:
            context.log.warning(f"{spec.name}: rejected a record: {reason}")
        outcomes = pipeline.table_checks(database.engine, spec, tenant.id, catalogue)
        outcomes.append(
            pipeline.CheckOutcome(
                "no_rejected_records",
                result.rejected == 0,
                "records quarantined by this run",
                {"rejected": result.rejected},
                blocking=False,
            )
        )
        meta = {
            **result.metadata(),
            "tenant": tenant.id,
            "table": spec.table.name,
            "database": database.display_url,
            "duration_s": round(time.perf_counter() - started, 3),
        }
        if result.watermark is None:
            meta.pop("watermark", None)
        return dg.MaterializeResult(metadata=meta, check_results=_check_results(outcomes, key))

    return table_asset


VECTOR_CHECKS = {
    "points_match_live_rows": "Distinct rows in the collection equal live rows in the table.",
    "vector_size_matches_model": "The collection's vector size is the embedding model's dimension.",
}


def vector_automation() -> dg.AutomationCondition:
    # Follow the table: after it updates, once its blocking checks have passed.
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def build_vector_asset(
    spec: EntitySpec,
    registry: TenantRegistry,
    partitions: dg.PartitionsDefinition,
    provider_kind: str,
    parent: EntitySpec | None = None,
) -> dg.AssetsDefinition:
    """``parent``: for a child entity, the entity whose table step commits its rows."""
    key = vector_key(spec)
    check_specs = [dg.AssetCheckSpec(n, asset=key, description=d) for n, d in VECTOR_CHECKS.items()]
    table = f"`{spec.table.name}` (committed with {parent.name})" if parent is not None else "the table"

    @dg.asset(
        key=key,
        deps=[table_key(parent or spec)],
        group_name=VECTORS_GROUP,
        kinds={"qdrant", provider_kind},
        partitions_def=partitions,
        automation_condition=vector_automation(),
        check_specs=check_specs,
        pool=EMBEDDINGS_POOL,
        description=(
            f"{spec.title} as Qdrant points in collection `client_<tenant>_{spec.name}`. Reads committed rows "
            f"of {table} through its own connection, embeds only new or changed rows, removes points of deleted rows."
        ),
    )
    async def vector_asset(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        embeddings: EmbeddingsResource,
        qdrant: QdrantResource,
    ) -> dg.MaterializeResult:
        tenant = registry.get(context.partition_key)
        engine = database.engine
        collection = Collection(
            qdrant.client, collection_name(tenant.id, spec.name), tenant.id, spec.name, local=qdrant.local
        )

        async def live_ids(candidates: list[str]) -> set[str]:
            return pipeline.live_external_ids(engine, spec, tenant.id, candidates)

        try:
            return await _sync_and_check(
                context, spec, tenant.id, engine, embeddings, collection, live_ids, qdrant=qdrant, key=key
            )
        except (QdrantServerError, EmbeddingError) as exc:
            # The message names the setting and host; the library's frames would bury it.
            raise dg.Failure(description=str(exc)) from None

    return vector_asset


async def _sync_and_check(
    context: dg.AssetExecutionContext,
    spec: EntitySpec,
    tenant_id: str,
    engine: Engine,
    embeddings: EmbeddingsResource,
    collection: Collection,
    live_ids: Callable[[list[str]], Awaitable[set[str]]],
    *,
    qdrant: QdrantResource,
    key: dg.AssetKey,
) -> dg.MaterializeResult:
    """Sync the collection with the committed rows, then check points against rows."""
    embedder = embeddings.embedder
    stats_before = embedder.stats.copy()
    async with server_errors_named(qdrant.url):  # Qdrant's failures name QDRANT_URL
        result = await sync_vectors(
            spec=spec,
            tenant_id=tenant_id,
            pages=lambda: ops.iter_rows(engine, spec, tenant_id, access=True),
            live_ids=live_ids,
            embedder=embedder,
            collection=collection,
            concurrency=embeddings.concurrency,
            max_chunk_tokens=embeddings.chunk_tokens,
            fingerprint=lambda: ops.live_fingerprint(engine, spec, tenant_id, access=True),
            progress=ProgressLog(context.log),
            total_rows=lambda: ops.count_rows(engine, spec, tenant_id),
        )
        live_rows = ops.count_rows(engine, spec, tenant_id)
        distinct = await collection.count(chunk=0)
        model, size = await collection.model()
        outcomes = [
            pipeline.CheckOutcome(
                "points_match_live_rows",
                distinct == live_rows,
                "",
                {"rows_with_points": distinct, "live_rows": live_rows},
            ),
            pipeline.CheckOutcome(
                "vector_size_matches_model",
                size == embedder.dimensions and model == embedder.model,
                "",
                {"vector_size": size or 0, "model": str(model), "expected": embedder.dimensions},
            ),
        ]
        meta = {
            **result.metadata(),
            **embedder.stats.since(stats_before).metadata(),
            # OpenAI-compatible providers: the caps refusals taught, the endpoint in use
            **getattr(embedder, "step_metadata", dict)(),
            "tenant": tenant_id,
            "points_total": await collection.count(),
        }
        # A re-index building this collection with another model follows the change too.
        meta |= await follow_reindex(context, spec, tenant_id, engine, embeddings.settings(), qdrant)
    return dg.MaterializeResult(metadata=meta, check_results=_check_results(outcomes, key))
