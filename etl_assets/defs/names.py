"""Every Dagster name derived from the entity catalogue, in one place.

Asset keys, op names, groups, pools, jobs, schedules, sensors, tags and launchpad config
paths are computed here from an :class:`EntitySpec`; nothing else in the project spells
them. The keys say where the data lives and read as nouns, and their last part reads on
its own, because the UI's graph labels a node by the last part only:

- ``<source>/raw/raw_<source>_<entity>``: the responses as the source sent them;
- ``tables/<entity>_table``: the committed table;
- ``vectors/<entity>_vectors``: the Qdrant collection ``client_<tenant>_<entity>``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from etl_assets.core.records import EntitySpec

# Run tags: every run belongs to one tenant (the partition), said again as a tag so runs can
# be filtered and queued per tenant (deploy/dagster.yaml limits one run per partition).
TENANT_TAG = "etl/tenant"
RECONCILE_TAG = "etl/reconcile"
FIRST_SYNC_TAG = "etl/first_sync"  # a run the schedule or a sensor knew to be a tenant's first sync

TABLES_GROUP = "tables"
VECTORS_GROUP = "vectors"
EMBEDDINGS_POOL = "embeddings"

SYNC_JOB = "jira_sync"  # every asset of a tenant; the name operators already schedule by
SYNC_SCHEDULE = "sync_all_tenants"
AUTOMATION_SENSOR = "vectors_follow_tables"


def _ident(text: str) -> str:
    return text.replace(" ", "_").replace("-", "_")


def raw_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey([spec.source, "raw", f"raw_{spec.source}_{spec.name}"])


def table_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["tables", f"{spec.name}_table"])


def vector_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["vectors", f"{spec.name}_vectors"])


def asset_keys(spec: EntitySpec) -> tuple[dg.AssetKey, ...]:
    """The entity's assets: raw, table and vectors; a child entity (comments), fetched and committed
    by its parent's steps, has only its vectors."""
    if spec.parent is not None:
        return (vector_key(spec),)
    return raw_key(spec), table_key(spec), vector_key(spec)


def op_name(key: dg.AssetKey) -> str:
    """The op (step) name Dagster gives an asset: its key path joined by '__'."""
    return key.to_python_identifier()


def raw_group(spec: EntitySpec) -> str:
    return f"{spec.source}_raw"


def source_pool(spec: EntitySpec) -> str:
    """The Dagster pool capping concurrent requests to one source across runs."""
    return spec.source


def entity_job(spec: EntitySpec) -> str:
    """The job that syncs one incremental entity of a tenant (raw, table, vectors)."""
    return f"{spec.source}_{spec.name}_sync"


def reconcile_schedule(spec: EntitySpec) -> str:
    return f"reconcile_{_ident(spec.item)}_deletions"


def change_sensor(spec: EntitySpec) -> str:
    return f"{spec.source}_{_ident(spec.item)}_changes"


def raw_run_config(spec: EntitySpec, **config: Any) -> dict[str, Any]:
    """Run config setting the raw asset's launchpad options (``RawFetchConfig``)."""
    return {"ops": {op_name(raw_key(spec)): {"config": config}}}


def tenant_tags(tenant_id: str, **extra: str) -> dict[str, str]:
    return {TENANT_TAG: tenant_id, **extra}


# Operator jobs (launchpad): check every service a sync needs; move a tenant to a new model.
DOCTOR_JOB = "doctor"
DOCTOR_OP = "doctor_checks"
REINDEX_JOB = "reindex_embeddings"
REINDEX_OP = "reindex_collections"

# The permission stage (Jira): the committed access rules, then the points' access payloads.
PERMISSIONS_GROUP = "permissions"
PERMISSIONS_TABLE = dg.AssetKey(["tables", "permissions_table"])
ACCESS_PAYLOADS = dg.AssetKey(["vectors", "access_payloads"])
PERMISSIONS_JOB = "jira_permissions_sync"
PERMISSIONS_SCHEDULE = "permissions_all_tenants"

# Database maintenance: space freed by raw retention given back (SQLite), on a schedule.
MAINTENANCE_JOB = "raw_maintenance"
MAINTENANCE_OP = "reclaim_raw_space"
MAINTENANCE_SCHEDULE = "raw_maintenance_weekly"
