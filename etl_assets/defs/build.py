"""Assemble dg.Definitions from the entity catalogue, the tenant registry and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from etl_assets.core.entities import BY_NAME, CATALOGUE, EntitySpec
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs.assets import build_raw_asset, build_table_asset, build_vector_asset
from etl_assets.defs.automation import build_automation_sensor, build_sync_job, build_sync_schedule
from etl_assets.defs.resources import (
    DEFAULT_DATABASE_URL,
    DEFAULT_QDRANT_PATH,
    DatabaseResource,
    EmbeddingsResource,
    JiraResource,
    QdrantResource,
)


def _secret(env: Mapping[str, str], name: str) -> Any:
    # EnvVar keeps the value out of the run config and the UI; None when unset.
    return dg.EnvVar(name) if env.get(name) else None


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def resources_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    provider = env.get("EMBEDDING_PROVIDER") or ("openai" if env.get("OPENAI_API_KEY") else "local")
    if provider not in ("openai", "local"):
        raise ValueError(f"EMBEDDING_PROVIDER must be 'openai' or 'local', got {provider!r}")
    return {
        "jira": JiraResource(),
        "database": DatabaseResource(url=_secret(env, "DATABASE_URL") or DEFAULT_DATABASE_URL),
        "embeddings": EmbeddingsResource(
            provider=provider,
            model=env.get("EMBEDDING_MODEL") or None,
            dimensions=_int(env, "EMBEDDING_DIMENSIONS"),
            api_key=_secret(env, "OPENAI_API_KEY"),
            base_url=env.get("OPENAI_BASE_URL") or None,
            concurrency=_int(env, "EMBEDDING_CONCURRENCY") or 4,
        ),
        "qdrant": QdrantResource(
            url=env.get("QDRANT_URL") or None,
            api_key=_secret(env, "QDRANT_API_KEY"),
            path=env.get("QDRANT_PATH") or DEFAULT_QDRANT_PATH,
        ),
    }


def build_definitions(
    *,
    registry: TenantRegistry | None = None,
    resources: dict[str, Any] | None = None,
    catalogue: tuple[EntitySpec, ...] = CATALOGUE,
    env: Mapping[str, str] | None = None,
) -> dg.Definitions:
    env = os.environ if env is None else env
    registry = registry or TenantRegistry.load(env.get("ETL_TENANTS_FILE") or None)
    resources = resources or resources_from_env(env)
    partitions = dg.StaticPartitionsDefinition(registry.ids)
    db_url = env.get("DATABASE_URL") or ""
    dialect = "postgres" if db_url.startswith("postgres") else "sqlite"
    provider_kind = "openai" if resources["embeddings"].provider == "openai" else "pytorch"
    by_name = {s.name: s for s in catalogue} | {k: v for k, v in BY_NAME.items() if k not in {s.name for s in catalogue}}
    assets: list[dg.AssetsDefinition] = []
    for spec in catalogue:
        assets.append(build_raw_asset(spec, registry, partitions))
        assets.append(build_table_asset(spec, registry, partitions, dialect, by_name))
        assets.append(build_vector_asset(spec, registry, partitions, provider_kind))
    job = build_sync_job(partitions)
    executor_kind = env.get("ETL_EXECUTOR") or ("in_process" if not env.get("QDRANT_URL") else "multiprocess")
    if executor_kind not in ("in_process", "multiprocess"):
        raise ValueError(f"ETL_EXECUTOR must be 'in_process' or 'multiprocess', got {executor_kind!r}")
    executor = dg.in_process_executor if executor_kind == "in_process" else dg.multiprocess_executor
    return dg.Definitions(
        assets=assets,
        jobs=[job],
        schedules=[build_sync_schedule(job, registry, env.get("ETL_SYNC_CRON") or "0 * * * *")],
        sensors=[build_automation_sensor(int(env.get("ETL_AUTOMATION_INTERVAL_S") or 30))],
        resources=resources,
        executor=executor,
    )
