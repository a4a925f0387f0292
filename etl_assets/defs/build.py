"""Assemble dg.Definitions from the entity catalogue, the tenant registry and the environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.records import EntitySpec
from etl_assets.core.settings import Settings, SettingsError
from etl_assets.core.sources.jira.permission_sync import RAW_ENTITY as PERMISSIONS_RAW_ENTITY
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs.assets import build_raw_asset, build_table_asset, build_vector_asset
from etl_assets.defs.automation import build_automation
from etl_assets.defs.doctor import build_doctor_job
from etl_assets.defs.executor import first_sync_run_config, run_executor
from etl_assets.defs.maintenance import build_maintenance_job, build_maintenance_schedule
from etl_assets.defs.names import ACCESS_PAYLOADS, PERMISSIONS_TABLE
from etl_assets.defs.permissions import build_permission_assets, build_permissions_job, build_permissions_schedule
from etl_assets.defs.reindex import build_reindex_job
from etl_assets.defs.resources import (
    DatabaseResource,
    EmbeddingsResource,
    QdrantResource,
    source_resources,
)


def _secret(field: str, value: str | None) -> Any:
    # Bound by name (EnvVar): the value never lands in run config, the UI or the event log.
    return dg.EnvVar(Settings.env_name(field)) if value else None


def resources_from_settings(settings: Settings) -> dict[str, Any]:
    """The resources the settings describe; secrets stay EnvVars so no value lands in run config.

    The settings were checked when they were read, as the definitions load, so that a
    misconfiguration fails before any step does work (with the multiprocess executor, a step
    only opens the resources it uses: a bad embeddings setting would otherwise surface after
    the fetches).
    """
    qdrant = settings.qdrant
    database = DatabaseResource(url=_secret("database_url", settings.database_url) or settings.database)
    return {
        **source_resources(),
        "database": database,
        "embeddings": EmbeddingsResource(
            **{
                **settings.embedding.model_dump(),
                "api_key": _secret("api_key", settings.embedding.api_key),
                "fallback_api_key": _secret("fallback_api_key", settings.embedding.fallback_api_key),
            }
        ),
        "qdrant": QdrantResource(
            url=qdrant.url,
            api_key=_secret("qdrant_api_key", qdrant.api_key),
            path=qdrant.path,
            engine=qdrant.engine,
        ),
    }


def build_definitions(
    *,
    registry: TenantRegistry | None = None,
    resources: dict[str, Any] | None = None,
    catalogue: tuple[EntitySpec, ...] = CATALOGUE,
    env: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> dg.Definitions:
    """The definitions for ``settings`` (default: read from ``env``, else the process environment, once).

    Raises a ConfigError (one line naming the variable, or the tenants file and line) for a
    wrong setting or tenants file, before anything runs.
    """
    settings = settings or Settings.load(env)
    registry = registry or TenantRegistry.load(settings.tenants_file)
    resources = resources or resources_from_settings(settings)
    # A caller naming only some sources' resources gets the others' defaults (on its database).
    resources = {**source_resources(), **resources}
    partitions = dg.StaticPartitionsDefinition(registry.ids)
    dialect = "postgres" if settings.database.startswith("postgres") else "sqlite"
    provider_kind = "openai" if resources["embeddings"].provider == "openai" else "pytorch"
    by_name = {s.name: s for s in catalogue}
    for spec in catalogue:
        missing = [target for _, target in spec.references if target not in by_name]
        if spec.parent is not None and spec.parent not in by_name:
            missing.append(spec.parent)
        if missing:
            raise ValueError(f"entity {spec.name!r} references {', '.join(missing)}, which the catalogue lacks")
    retention = settings.raw_retention
    landed = {s.name for s in catalogue if s.parent is None} | {PERMISSIONS_RAW_ENTITY}
    unknown = sorted(retention.entities - landed)
    if unknown:
        raise SettingsError(
            f"ETL_RAW_KEEP_BATCHES / ETL_RAW_KEEP_DAYS name {', '.join(unknown)}, which no raw step lands "
            f"(entities: {', '.join(sorted(landed))})"
        )
    assets: list[dg.AssetsDefinition] = []
    for spec in catalogue:
        if spec.parent is not None:
            # A child entity (comments): its rows are committed by its parent's table step, so it
            # has only a vector asset, which follows the parent's table.
            assets.append(build_vector_asset(spec, registry, partitions, provider_kind, by_name[spec.parent]))
            continue
        assets.append(build_raw_asset(spec, registry, partitions))
        assets.append(build_table_asset(spec, registry, partitions, dialect, by_name, retention))
        assets.append(build_vector_asset(spec, registry, partitions, provider_kind))
    permissions = "issues" in by_name and "projects" in by_name
    jobs, schedules, sensors = build_automation(
        catalogue,
        registry,
        sync_cron=settings.sync_cron,
        reconcile_cron=settings.reconcile_cron,
        automation_interval_s=settings.automation_interval_s,
        change_interval_s=settings.change_sensor_interval_s,
        # The permission stage belongs to Jira: a tenant's run has it when it has Jira's entities.
        source_keys={by_name["issues"].source: [PERMISSIONS_TABLE, ACCESS_PAYLOADS]} if permissions else {},
        first_sync_config=first_sync_run_config(settings.first_sync_multiprocess),
    )
    if permissions:
        # Jira's access rules: who may find each issue and comment (docs/permissions.md).
        assets += build_permission_assets(registry, partitions, retention)
        permissions_job = build_permissions_job()
        jobs.append(permissions_job)
        schedules.append(build_permissions_schedule(permissions_job, registry, settings.permissions_cron))
    maintenance = build_maintenance_job()
    schedules.append(build_maintenance_schedule(maintenance, settings.maintenance_cron))
    all_jobs: list[Any] = [*jobs, build_doctor_job(registry), build_reindex_job(registry), maintenance]
    return dg.Definitions(
        assets=assets,
        jobs=all_jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
        executor=run_executor(settings.executor_kind),
    )
