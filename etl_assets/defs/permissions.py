"""The permission stage: who may see each issue and comment, committed, then written to the points.

Two assets per tenant partition (``docs/permissions.md``):

- ``tables/permissions_table`` reads the committed projects, issues and comments, fetches the
  rules that decide access from Jira (schemes, roles, security levels, groups, users) and
  commits the responses as Jira sent them (``raw_jira_pages``, entity ``permissions``), the rules
  parsed from them and every point's access list in one transaction; changed lists are marked
  pending. A project whose rules the API user may not read fails safe (only an unrestricted
  search sees its issues) and is named in the metadata and the log.
- ``vectors/access_payloads`` then writes the pending lists to the Qdrant points as payload-only
  operations and clears the mark (the commit-first rule). It has no embeddings resource: a
  permission change can never re-embed anything.

Its own job and schedule (``ETL_PERMISSIONS_CRON``, every 30 minutes by default) keep access
fresh between syncs; the full sync job runs it too, after the vectors.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at runtime.

import time
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from etl_assets.core.access_sync import DEFAULT_ENTITIES, ensure_access_index
from etl_assets.core.catalogue import BY_NAME
from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.sources.jira import permission_tables
from etl_assets.core.sources.jira.permission_sync import RAW_ENTITY, apply_pending_access, sync_permission_tables
from etl_assets.core.store.retention import RawRetention
from etl_assets.core.tenants import TenantRegistry
from etl_assets.core.vectorstore import collection_name, server_errors_named
from etl_assets.defs import names
from etl_assets.defs.automation import per_tenant_schedule
from etl_assets.defs.resources import DatabaseResource, QdrantResource

# point-key kind -> the entity whose collection holds those points
POINT_KINDS = DEFAULT_ENTITIES


def build_permission_assets(
    registry: TenantRegistry, partitions: dg.PartitionsDefinition, retention: RawRetention | None = None
) -> list[dg.AssetsDefinition]:
    keep = (retention or RawRetention()).of(RAW_ENTITY)

    @dg.asset(
        key=names.PERMISSIONS_TABLE,
        deps=[names.table_key(BY_NAME["projects"]), names.table_key(BY_NAME["issues"])],
        group_name=names.PERMISSIONS_GROUP,
        kinds={"jira", "sql"},
        partitions_def=partitions,
        pool=names.source_pool(BY_NAME["issues"]),
        required_resource_keys={"jira", "database"},
        description=(
            "Who may browse each committed issue and comment: the projects' permission schemes, project roles, "
            "issue security levels, groups and users as Jira says them, and every point's access list, committed "
            "in one transaction (tables `perm_*`). Rules the API user may not read fail safe: only operators see "
            "those issues."
        ),
    )
    def permissions_table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        tenant = registry.get(context.partition_key)
        database: DatabaseResource = context.resources.database
        started = time.perf_counter()
        with database.engine.connect() as conn:
            projects = permission_tables.projects_for_permissions(conn, tenant.id)
            issues = permission_tables.issue_facts(conn, tenant.id)
        with context.resources.jira.open(tenant) as client:
            result = sync_permission_tables(
                database.engine, client, tenant.id, projects, issues, run_id=context.run.run_id, retention=keep
            )
        if result.fail_safe_projects:
            # One line for all of them: each log line is an event the run writes to Dagster's storage.
            reasons = "; ".join(f"{p}: {r}" for p, r in sorted(result.fail_safe_projects.items()))
            context.log.warning(
                f"tenant {tenant.id}: {len(result.fail_safe_projects)} project(s) fail safe (operators only): {reasons}"
            )
        meta: dict[str, Any] = {
            "tenant": tenant.id,
            "projects": len(projects),
            "points": result.points,
            "access_lists_changed": result.changed,
            "distinct_access_lists": result.distinct_lists,
            "fail_safe_points": result.fail_safe_points,
            "jira_requests": result.jira_requests,
            "raw_batch_id": result.raw_batch,
            "raw_pages": result.raw_pages,
            **(result.pruned.metadata() if result.pruned else {}),
            "duration_s": round(time.perf_counter() - started, 3),
        }
        if result.fail_safe_projects:
            meta["fail_safe_projects"] = dg.MetadataValue.md(
                "\n".join(f"- **{p}**: {r}" for p, r in sorted(result.fail_safe_projects.items()))
            )
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        key=names.ACCESS_PAYLOADS,
        deps=[
            names.PERMISSIONS_TABLE,
            *(names.vector_key(BY_NAME[entity]) for entity in POINT_KINDS.values()),
        ],
        group_name=names.PERMISSIONS_GROUP,
        kinds={"qdrant"},
        partitions_def=partitions,
        description=(
            "The committed access lists written to the points of `client_<tenant>_issues` and `_comments` as "
            "payload-only updates (`access`, keyword-indexed), after the permission tables committed. Never embeds."
        ),
    )
    async def access_payloads(
        context: dg.AssetExecutionContext, database: DatabaseResource, qdrant: QdrantResource
    ) -> dg.MaterializeResult:
        tenant = registry.get(context.partition_key)
        collections = {kind: collection_name(tenant.id, entity) for kind, entity in POINT_KINDS.items()}
        started = time.perf_counter()
        async with server_errors_named(qdrant.url):
            indexed = 0
            for name in collections.values():
                if await qdrant.client.collection_exists(name):
                    # qdrant-client's local mode has no payload indexes; a server and Qdrant Edge do
                    no_indexes = qdrant.local and not isinstance(qdrant.client, EdgeQdrantClient)
                    indexed += await ensure_access_index(qdrant.client, name, local=no_indexes)
            stats = await apply_pending_access(database.engine, qdrant.client, tenant.id, collections)
        return dg.MaterializeResult(
            metadata={
                "tenant": tenant.id,
                "points_updated": stats.points,
                "payload_writes": stats.payload_writes,
                "qdrant_requests": stats.requests,
                "access_indexes_created": indexed,
                "embedding_requests": 0,  # this step has no embedder: access never re-embeds
                "duration_s": round(time.perf_counter() - started, 3),
            }
        )

    return [permissions_table, access_payloads]


def build_permissions_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        names.PERMISSIONS_JOB,
        selection=dg.AssetSelection.assets(names.PERMISSIONS_TABLE, names.ACCESS_PAYLOADS),
        description="Refresh one tenant's access rules from Jira and write changed access lists to the points.",
    )


def build_permissions_schedule(
    job: UnresolvedAssetJobDefinition, registry: TenantRegistry, cron: str
) -> dg.ScheduleDefinition:
    return per_tenant_schedule(
        names.PERMISSIONS_SCHEDULE,
        job,
        registry,
        cron,
        f"Every tenant's permission sync, on cron `{cron}` (ETL_PERMISSIONS_CRON): payload writes only.",
    )
