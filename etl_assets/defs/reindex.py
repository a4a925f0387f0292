"""The re-index job: move one tenant's collections to another embedding model from the launchpad.

``action: reindex`` builds every (chosen) entity's collection with the target model beside the
served one, runs the blocking gates and switches the alias (``core/reindex.py``);
``rollback`` points the alias back at the previous generation; ``drop`` deletes the
generations no alias serves. The API key stays the environment's (``OPENAI_API_KEY``): it
is never launchpad config.
"""

import functools
from typing import Any

import dagster as dg
from sqlalchemy import Engine

from etl_assets.core import pipeline
from etl_assets.core.catalogue import BY_NAME, CATALOGUE
from etl_assets.core.embeddings.base import EmbeddingError, ModelMismatchError
from etl_assets.core.embeddings.factory import open_embedder
from etl_assets.core.reindex import (
    DEFAULT_TOLERANCE,
    Gate,
    QualitySample,
    ReindexError,
    building,
    drop_unserved,
    quality,
    quality_gate,
    reindex,
    rollback,
)
from etl_assets.core.settings import EmbeddingSettings
from etl_assets.core.sources.jira.sample import generate_sample_site, labelled_queries
from etl_assets.core.store import ops
from etl_assets.core.tenants import TenantRegistry, UnknownTenantError
from etl_assets.core.vectorstore import Collection, QdrantServerError, collection_name, server_errors_named
from etl_assets.core.vectorsync import sync_vectors
from etl_assets.defs import names
from etl_assets.defs.resources import DatabaseResource, EmbeddingsResource, QdrantResource

ACTIONS = ("reindex", "rollback", "drop")
QUALITY_ENTITY = "issues"  # the labelled queries are about issues


class ReindexConfig(dg.Config):
    tenant: str
    action: str = "reindex"  # reindex | rollback | drop
    entities: list[str] = []  # default: every entity
    provider: str | None = None  # target model settings (openai | local); unset: as configured
    model: str | None = None
    dimensions: int | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # environment variable with the target endpoint's key; unset: the current key
    batch_inputs: int | None = None  # most inputs per request for the target endpoint (its limit if unset)
    swap: bool = True  # false: build and check only; a later run with true switches (catching up first)
    tolerance: float = DEFAULT_TOLERANCE  # allowed drop of recall@5 and MRR on the labelled queries
    quality_sample_issues: int = 300  # size of the labelled sample site the models are compared on


def target_settings(current: EmbeddingSettings, config: ReindexConfig) -> EmbeddingSettings:
    return settings_from_record(
        current,
        {
            "provider": config.provider,
            "model": config.model,
            "dimensions": config.dimensions,
            "base_url": config.base_url,
            "batch_inputs": config.batch_inputs,
            "api_key_env": config.api_key_env,
        },
    )


def settings_from_record(current: EmbeddingSettings, record: dict[str, Any]) -> EmbeddingSettings:
    """The current settings with the target's changes (unset fields: as configured). The key is
    read from the environment variable the record names: a key never travels in config or metadata."""
    fields = ("provider", "model", "dimensions", "base_url", "batch_inputs", "chunk_tokens")
    changes: dict[str, Any] = {k: record[k] for k in fields if record.get(k) is not None}
    if ("model" in changes or "provider" in changes) and "dimensions" not in changes:
        changes["dimensions"] = None  # the old model's size is not the new one's: the new model's default
    key_env = record.get("api_key_env")
    if key_env:
        value = dg.EnvVar(key_env).get_value()
        if not value:
            raise EmbeddingError(f"environment variable {key_env} (the re-index target's api_key_env) is not set")
        changes["api_key"] = value
    return EmbeddingSettings(**{**current.model_dump(), **changes})


def target_record(target: EmbeddingSettings, config: ReindexConfig, dimensions: int) -> dict[str, Any]:
    """What a building generation records for the syncs that follow it: settings, never the key."""
    return {
        "provider": target.provider,
        "model": target.model,
        "dimensions": dimensions,
        "base_url": target.base_url,
        "chunk_tokens": target.chunk_tokens,
        "api_key_env": config.api_key_env,
    }


def build_reindex_job(registry: TenantRegistry) -> dg.JobDefinition:
    @dg.op(name=names.REINDEX_OP, description="Re-index a tenant's collections with another model; switch when safe.")
    async def reindex_collections(
        context: dg.OpExecutionContext,
        config: ReindexConfig,
        database: DatabaseResource,
        embeddings: EmbeddingsResource,
        qdrant: QdrantResource,
    ) -> None:
        try:
            tenant = registry.get(config.tenant).id
        except UnknownTenantError as exc:
            raise dg.Failure(str(exc)) from None
        if config.action not in ACTIONS:
            raise dg.Failure(f"action {config.action!r} is not one of {', '.join(ACTIONS)}")
        unknown = [e for e in config.entities if e not in BY_NAME]
        if unknown:
            raise dg.Failure(f"entities {unknown} are not in the catalogue ({', '.join(BY_NAME)})")
        specs = [BY_NAME[e] for e in config.entities] if config.entities else list(CATALOGUE)
        metadata: dict[str, Any] = {}
        try:
            async with server_errors_named(qdrant.url):
                if config.action == "rollback":
                    for spec in specs:
                        metadata[spec.name] = await rollback(qdrant.client, tenant, spec.name)
                    context.add_output_metadata(metadata)
                    return
                if config.action == "drop":
                    for spec in specs:
                        metadata[spec.name] = ", ".join(await drop_unserved(qdrant.client, tenant, spec.name))
                    context.add_output_metadata(metadata)
                    return
                await _reindex(context, config, tenant, specs, database, embeddings, qdrant, metadata)
        except (ReindexError, QdrantServerError, EmbeddingError, ModelMismatchError) as exc:
            raise dg.Failure(str(exc), metadata=metadata) from None

    @dg.job(name=names.REINDEX_JOB, description="Move a tenant to another embedding model without downtime.")
    def reindex_embeddings() -> None:
        reindex_collections()

    return reindex_embeddings


async def _reindex(
    context: dg.OpExecutionContext,
    config: ReindexConfig,
    tenant: str,
    specs: list[Any],
    database: DatabaseResource,
    embeddings: EmbeddingsResource,
    qdrant: QdrantResource,
    metadata: dict[str, Any],
) -> None:
    engine = database.engine
    old = embeddings.embedder
    target = target_settings(embeddings.settings(), config)
    site = generate_sample_site(n_issues=config.quality_sample_issues)
    sample = QualitySample(BY_NAME[QUALITY_ENTITY], site.issues, labelled_queries(site))
    failed = []
    async with open_embedder(target) as new:
        gate: Gate | None = None

        async def quality_check() -> Gate:
            nonlocal gate
            if gate is None:  # one comparison of the two models serves every entity
                gate = quality_gate(await quality(sample, old), await quality(sample, new), config.tolerance)
                context.log.info(f"quality: {gate.detail}")
            return gate

        for spec in specs:

            async def live_ids(candidates: list[str], spec: Any = spec) -> set[str]:
                return pipeline.live_external_ids(engine, spec, tenant, candidates)

            outcome = await reindex(
                qdrant.client,
                spec=spec,
                tenant_id=tenant,
                embedder=new,
                pages=functools.partial(ops.iter_rows, engine, spec, tenant, access=True),
                live_ids=live_ids,
                count_rows=functools.partial(ops.count_rows, engine, spec, tenant),
                local=qdrant.local,
                quality_check=quality_check,
                swap=config.swap,
                concurrency=target.concurrency,
                serving=old,
                target_record=target_record(target, config, new.dimensions),
                max_chunk_tokens=target.chunk_tokens,
            )
            context.log.info(outcome.summary())
            metadata[spec.name] = outcome.summary()
            metadata[f"{spec.name}_rows_embedded"] = outcome.rows_embedded
            if not outcome.passed:
                failed.append(outcome.summary())
    context.add_output_metadata(metadata)
    if failed:
        raise ReindexError("re-index gates failed, the alias was not switched: " + "; ".join(failed))


async def follow_reindex(
    context: dg.AssetExecutionContext,
    spec: Any,
    tenant: str,
    engine: Engine,
    current: EmbeddingSettings,
    qdrant: QdrantResource,
) -> dict[str, Any]:
    """Apply this sync's changes to every generation a re-index is building for ``spec``, with the
    target model recorded in that generation (the vector step calls this after the served one).

    A failure here (the target endpoint down, its key variable unset) is logged and put in the
    metadata but does not fail the step: the served index is in sync, and the re-index's own
    catch-up pass embeds whatever the build missed before its gates (content hashes).
    """
    meta: dict[str, Any] = {}
    for name, record in await building(qdrant.client, collection_name(tenant, spec.name)):
        collection = Collection(qdrant.client, name, tenant, spec.name, local=qdrant.local)

        async def live_ids(candidates: list[str]) -> set[str]:
            return pipeline.live_external_ids(engine, spec, tenant, candidates)

        try:
            settings = settings_from_record(current, record)
            async with server_errors_named(qdrant.url), open_embedder(settings) as embedder:
                result = await sync_vectors(
                    spec=spec,
                    tenant_id=tenant,
                    pages=functools.partial(ops.iter_rows, engine, spec, tenant, access=True),
                    live_ids=live_ids,
                    embedder=embedder,
                    collection=collection,
                    concurrency=settings.concurrency,
                    max_chunk_tokens=settings.chunk_tokens,
                    fingerprint=functools.partial(ops.live_fingerprint, engine, spec, tenant, access=True),
                )
        except (EmbeddingError, ModelMismatchError, QdrantServerError, ValueError) as exc:
            # ValueError: settings recorded by the re-index that no longer validate.
            line = f"re-index build {name} not followed ({record.get('model')}): {str(exc).splitlines()[0]}"
            context.log.warning(line + "; the re-index's catch-up pass will embed what it missed")
            meta["reindex_follow_error"] = line
            continue
        context.log.info(f"re-index build {name}: {result.rows_changed} changed rows embedded with {embedder.model}")
        meta["reindex_followed"] = name
        meta["reindex_rows_changed"] = result.rows_changed
    return meta
