"""Assemble dg.Definitions from the entity catalogue, the tenant registry and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.factory import EmbeddingConfigError, EmbeddingSettings
from etl_assets.core.records import EntitySpec
from etl_assets.core.settings import DEFAULT_DATABASE_URL
from etl_assets.core.tenants import TenantRegistry
from etl_assets.core.vectorstore import QdrantSettings
from etl_assets.defs.assets import build_raw_asset, build_table_asset, build_vector_asset
from etl_assets.defs.automation import build_automation
from etl_assets.defs.resources import (
    DatabaseResource,
    EmbeddingsResource,
    JiraResource,
    QdrantResource,
)


def _secret(env: Mapping[str, str], name: str) -> Any:
    # EnvVar keeps the value out of the run config and the UI; None when unset.
    return dg.EnvVar(name) if env.get(name) else None


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise EmbeddingConfigError(f"{name} must be a positive integer, got {value!r}")
    return number


def resources_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resources bound from the environment; secrets stay EnvVars so no value lands in run config.

    Settings are checked here, when the definitions load, so that a misconfiguration fails
    before any step does work (with the multiprocess executor, a step only opens the
    resources it uses: a bad embeddings setting would otherwise surface after the fetches).
    """
    env = os.environ if env is None else env
    emb = EmbeddingSettings.from_env(env)
    emb.validate()
    chunk_tokens = _positive_int(env, "EMBEDDING_CHUNK_TOKENS")
    qd = QdrantSettings.from_env(env)
    if qd.url:
        parts = urlsplit(qd.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"QDRANT_URL is not an http(s) URL of a Qdrant server: {qd.url!r} "
                "(unset it to use the local folder QDRANT_PATH)"
            )
    return {
        "jira": JiraResource(),
        "database": DatabaseResource(url=_secret(env, "DATABASE_URL") or DEFAULT_DATABASE_URL),
        "embeddings": EmbeddingsResource(
            provider=emb.provider,
            model=emb.model,
            dimensions=emb.dimensions,
            api_key=_secret(env, "OPENAI_API_KEY"),
            base_url=emb.base_url,
            concurrency=emb.concurrency,
            batch_inputs=emb.batch_inputs,
            batch_tokens=emb.batch_tokens,
            chunk_tokens=chunk_tokens,
            rpm=emb.rpm,
            tpm=emb.tpm,
            pool_limit=emb.pool_limit,
        ),
        "qdrant": QdrantResource(url=qd.url, api_key=_secret(env, "QDRANT_API_KEY"), path=qd.path),
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
    by_name = {s.name: s for s in catalogue}
    for spec in catalogue:
        missing = [target for _, target in spec.references if target not in by_name]
        if missing:
            raise ValueError(f"entity {spec.name!r} references {', '.join(missing)}, which the catalogue lacks")
    assets: list[dg.AssetsDefinition] = []
    for spec in catalogue:
        assets.append(build_raw_asset(spec, registry, partitions))
        assets.append(build_table_asset(spec, registry, partitions, dialect, by_name))
        assets.append(build_vector_asset(spec, registry, partitions, provider_kind))
    jobs, schedules, sensors = build_automation(
        catalogue,
        registry,
        sync_cron=env.get("ETL_SYNC_CRON") or "0 * * * *",
        reconcile_cron=env.get("ETL_RECONCILE_CRON") or "30 3 * * *",
        automation_interval_s=int(env.get("ETL_AUTOMATION_INTERVAL_S") or 30),
        change_interval_s=int(env.get("ETL_CHANGE_SENSOR_INTERVAL_S") or 300),
    )
    executor_kind = env.get("ETL_EXECUTOR") or ("in_process" if not env.get("QDRANT_URL") else "multiprocess")
    if executor_kind not in ("in_process", "multiprocess"):
        raise ValueError(f"ETL_EXECUTOR must be 'in_process' or 'multiprocess', got {executor_kind!r}")
    executor = dg.in_process_executor if executor_kind == "in_process" else dg.multiprocess_executor
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
        executor=executor,
    )
