"""Schedules and sensors: how tenants stay fresh without anyone clicking."""
# No "from __future__ import annotations": Dagster resolves the sensor's resource annotations at runtime.

import json

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from etl_assets.core.sources.jira.jql import newest_change
from etl_assets.core.store.ops import read_sync_state
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs.resources import DatabaseResource, JiraResource

SYNC_JOB = "jira_sync"


def build_sync_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        SYNC_JOB,
        selection=dg.AssetSelection.all(),
        description="Sync one tenant: raw Jira responses, committed tables, then vectors.",
    )


def per_tenant_schedule(
    name: str,
    job: UnresolvedAssetJobDefinition,
    registry: TenantRegistry,
    cron: str,
    description: str,
    *,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    timezone: str = "UTC",
) -> dg.ScheduleDefinition:
    """A schedule that asks for one run of ``job`` per tenant partition on each tick."""

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone=timezone, description=description)
    def per_tenant(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        return [
            dg.RunRequest(
                run_key=f"{name}-{t}-{stamp}",
                partition_key=t,
                run_config=run_config or {},
                tags={"etl/tenant": t, **(tags or {})},
            )
            for t in registry.ids
        ]

    return per_tenant


def build_sync_schedule(
    job: UnresolvedAssetJobDefinition, registry: TenantRegistry, cron: str
) -> dg.ScheduleDefinition:
    return per_tenant_schedule(
        "sync_all_tenants", job, registry, cron, f"Every tenant's full sync, on cron '{cron}' (ETL_SYNC_CRON)."
    )


def build_automation_sensor(minimum_interval_s: int) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "vectors_follow_tables",
        target=dg.AssetSelection.groups("vectors"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_s,
        description="Materializes a tenant's vectors after its table updated and its blocking checks passed.",
    )


ISSUES_JOB = "jira_issues_sync"
RECONCILE_OP_CONFIG = {"ops": {"jira__raw__raw_jira_issues": {"config": {"reconcile": True}}}}


def build_issues_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        ISSUES_JOB,
        selection=dg.AssetSelection.assets(
            dg.AssetKey(["jira", "raw", "raw_jira_issues"]),
            dg.AssetKey(["tables", "issues_table"]),
            dg.AssetKey(["vectors", "issues_vectors"]),
        ),
        description="Sync one tenant's issues: changes since the watermark, the table, the vectors.",
    )


def build_reconcile_schedule(
    job: UnresolvedAssetJobDefinition, registry: TenantRegistry, cron: str
) -> dg.ScheduleDefinition:
    return per_tenant_schedule(
        "reconcile_issue_deletions",
        job,
        registry,
        cron,
        f"List every tenant's live issue ids and mark the rest deleted, on cron '{cron}' (ETL_RECONCILE_CRON).",
        run_config=RECONCILE_OP_CONFIG,
        tags={"etl/reconcile": "true"},
    )


def build_change_sensor(
    job: UnresolvedAssetJobDefinition, registry: TenantRegistry, minimum_interval_s: int
) -> dg.SensorDefinition:
    @dg.sensor(
        name="jira_issue_changes",
        job=job,
        minimum_interval_seconds=minimum_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Asks each tenant's Jira whether any issue changed since the watermark (one search/jql request, "
            f"one issue, one field) and runs that tenant's issues only when something did. Every "
            f"{minimum_interval_s}s (ETL_CHANGE_SENSOR_INTERVAL_S)."
        ),
    )
    def jira_issue_changes(
        context: dg.SensorEvaluationContext, jira: JiraResource, database: DatabaseResource
    ) -> dg.SensorResult:
        cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        requests: list[dg.RunRequest] = []
        decisions: list[str] = []
        for tenant in registry.tenants:
            try:
                watermark = read_sync_state(database.engine, tenant.id, "issues").watermark
                if watermark is None:
                    decisions.append(f"tenant {tenant.id}: never synced — run requested")
                    requests.append(
                        dg.RunRequest(
                            run_key=f"changes-{tenant.id}-first",
                            partition_key=tenant.id,
                            tags={"etl/tenant": tenant.id},
                        )
                    )
                    continue
                with jira.open(tenant) as client:
                    newest = newest_change(client, tenant, watermark)
            except Exception as exc:  # noqa: BLE001 - one tenant's outage must not hide the others' changes
                decisions.append(f"tenant {tenant.id}: skipped, probe failed: {exc}")
                continue
            if newest is None or newest <= watermark:
                decisions.append(f"tenant {tenant.id}: skipped, nothing changed since {watermark.isoformat()}")
                continue
            seen = cursor.get(tenant.id)
            if seen == newest.isoformat():
                decisions.append(f"tenant {tenant.id}: skipped, change at {newest.isoformat()} already requested")
                continue
            cursor[tenant.id] = newest.isoformat()
            decisions.append(
                f"tenant {tenant.id}: changed at {newest.isoformat()} (watermark {watermark.isoformat()}) — run requested"
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"changes-{tenant.id}-{newest.isoformat()}",
                    partition_key=tenant.id,
                    tags={"etl/tenant": tenant.id},
                )
            )
        for line in decisions:
            context.log.info(line)
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if requests else "; ".join(decisions) or "no tenants",
        )

    return jira_issue_changes
