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

from etl_assets.core import pipeline
from etl_assets.core.catalogue import BY_NAME, CATALOGUE
from etl_assets.core.embeddings.base import EmbeddingError, ModelMismatchError
from etl_assets.core.embeddings.factory import open_embedder
from etl_assets.core.reindex import (
    DEFAULT_TOLERANCE,
    Gate,
    QualitySample,
    ReindexError,
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
from etl_assets.core.vectorstore import QdrantServerError, server_errors_named
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
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "provider": config.provider,
            "model": config.model,
            "dimensions": config.dimensions,
            "base_url": config.base_url,
            "batch_inputs": config.batch_inputs,
        }.items()
        if v is not None
    }
    if ("model" in changes or "provider" in changes) and "dimensions" not in changes:
        changes["dimensions"] = None  # the old model's size is not the new one's: the new model's default
    if config.api_key_env:
        # Read by name from the step's environment: a key never travels in run config.
        changes["api_key"] = dg.EnvVar(config.api_key_env).get_value()
    return EmbeddingSettings(**{**current.model_dump(), **changes})


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
                pages=functools.partial(ops.iter_rows, engine, spec, tenant),
                live_ids=live_ids,
                count_rows=functools.partial(ops.count_rows, engine, spec, tenant),
                local=qdrant.local,
                quality_check=quality_check,
                swap=config.swap,
                concurrency=target.concurrency,
                serving=old,
            )
            context.log.info(outcome.summary())
            metadata[spec.name] = outcome.summary()
            metadata[f"{spec.name}_rows_embedded"] = outcome.rows_embedded
            if not outcome.passed:
                failed.append(outcome.summary())
    context.add_output_metadata(metadata)
    if failed:
        raise ReindexError("re-index gates failed, the alias was not switched: " + "; ".join(failed))
