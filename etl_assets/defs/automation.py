"""Schedules and sensors: how tenants stay fresh without anyone clicking."""

from __future__ import annotations

import dagster as dg

from etl_assets.core.tenants import TenantRegistry

SYNC_JOB = "jira_sync"


def build_sync_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        SYNC_JOB,
        selection=dg.AssetSelection.all(),
        description="Sync one tenant: raw Jira responses, committed tables, then vectors.",
    )


def build_sync_schedule(job: dg.UnresolvedAssetJobDefinition, registry: TenantRegistry, cron: str,
                        timezone: str = "UTC") -> dg.ScheduleDefinition:  # fmt: skip
    @dg.schedule(
        name="sync_all_tenants",
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description=f"Every tenant's full sync, on cron '{cron}' (ETL_SYNC_CRON).",
    )
    def sync_all_tenants(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        return [
            dg.RunRequest(run_key=f"sync-{tenant_id}-{stamp}", partition_key=tenant_id, tags={"etl/tenant": tenant_id})
            for tenant_id in registry.ids
        ]

    return sync_all_tenants


def build_automation_sensor(minimum_interval_s: int) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "vectors_follow_tables",
        target=dg.AssetSelection.groups("vectors"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_s,
        description="Materializes a tenant's vectors after its table updated and its blocking checks passed.",
    )
