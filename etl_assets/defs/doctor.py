"""The doctor as a Dagster job: the checks of ``etl-assets doctor`` runnable from the UI.

Launchpad config picks a tenant (default: every tenant). The step uses the run's own
resources (their clients open and close in the step's loop), logs the table, records it as
metadata, and fails with the fixes when any check fails.
"""

from typing import Any

import dagster as dg

from etl_assets.core.doctor import DoctorHandles, DoctorTargets, format_checks, run_checks
from etl_assets.core.settings import QdrantSettings
from etl_assets.core.sources.jira.doctor import jira_checks
from etl_assets.core.tenants import TenantRegistry, UnknownTenantError
from etl_assets.defs import names
from etl_assets.defs.resources import DatabaseResource, EmbeddingsResource, QdrantResource, SourceResource


class DoctorConfig(dg.Config):
    tenant: str | None = None  # one tenant id of the registry; None checks every tenant


def build_doctor_job(registry: TenantRegistry) -> dg.JobDefinition:
    @dg.op(name=names.DOCTOR_OP, description="Check Jira, the embeddings endpoint, Qdrant and the database.")
    async def doctor_checks(
        context: dg.OpExecutionContext,
        config: DoctorConfig,
        jira: SourceResource,
        database: DatabaseResource,
        embeddings: EmbeddingsResource,
        qdrant: QdrantResource,
    ) -> None:
        try:
            tenants = [registry.get(config.tenant).id] if config.tenant else None
        except UnknownTenantError as exc:
            raise dg.Failure(str(exc)) from None
        targets = DoctorTargets(
            database.url, embeddings.settings(), QdrantSettings(qdrant.url, qdrant.api_key, qdrant.path)
        )
        handles = DoctorHandles(embedder=embeddings.embedder, qdrant=qdrant.client)
        checks = await run_checks(registry, targets, tenants, source_checks=[jira_checks(jira.open)], handles=handles)
        table = "\n".join(format_checks(checks))
        context.log.info("doctor:\n" + table)
        failed = [c for c in checks if not c.ok]
        metadata: dict[str, Any] = {
            "checks": dg.MetadataValue.md("```\n" + table + "\n```"),
            "failed": len(failed),
            "passed": len(checks) - len(failed),
        }
        if failed:
            raise dg.Failure(
                f"{len(failed)} of {len(checks)} doctor checks failed: "
                + "; ".join(f"tenant {c.tenant} {c.name}: {c.fix}" for c in failed),
                metadata=metadata,
            )
        context.add_output_metadata(metadata)

    @dg.job(name=names.DOCTOR_JOB, description="Check every service a sync needs (etl-assets doctor).")
    def doctor() -> None:
        doctor_checks()

    return doctor
