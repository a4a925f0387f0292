"""Schedules and sensors: how tenants stay fresh without anyone clicking.

Every name comes from :mod:`etl_assets.defs.names`; incremental entities get their own job,
reconciliation schedule and change sensor, built from their spec.
"""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from etl_assets.core.pipeline import TenantRun, plan_tenant_run
from etl_assets.core.records import EntitySpec
from etl_assets.core.store.ops import read_sync_state
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs import names


def build_sync_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        names.SYNC_JOB,
        selection=dg.AssetSelection.all(),
        description="Sync one tenant: raw source responses, committed tables, then vectors.",
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
        scheduled: object = context.scheduled_execution_time  # None when evaluated by hand
        stamp = scheduled.isoformat() if isinstance(scheduled, datetime) else "manual"
        return [
            dg.RunRequest(
                run_key=f"{name}-{t}-{stamp}",
                partition_key=t,
                run_config=run_config or {},
                tags=names.tenant_tags(t, **(tags or {})),
            )
            for t in registry.ids
        ]

    return per_tenant


def tenant_run_keys(
    plan: TenantRun, source_keys: Mapping[str, Sequence[dg.AssetKey]] | None = None
) -> list[dg.AssetKey]:
    """The asset keys of a tenant's routine run: its entities' assets, and the other assets of their
    sources (``source_keys``: source -> keys, e.g. Jira's permission stage)."""
    keys = [key for spec in plan.entities for key in names.asset_keys(spec)]
    for source in dict.fromkeys(spec.source for spec in plan.entities):
        keys += (source_keys or {}).get(source, ())
    return keys


def build_sync_schedule(
    job: UnresolvedAssetJobDefinition,
    registry: TenantRegistry,
    cron: str,
    catalogue: tuple[EntitySpec, ...],
    *,
    source_keys: Mapping[str, Sequence[dg.AssetKey]] | None = None,
    first_sync_config: Mapping[str, Any] | None = None,
) -> dg.ScheduleDefinition:
    """One run per tenant on each tick, of what that tenant syncs (:func:`plan_tenant_run`): the
    sources it uses, and one it no longer uses only while rows of it remain to be removed. A
    tenant's first sync gets ``first_sync_config`` (the multiprocess executor, when runs choose)."""

    @dg.schedule(
        name=names.SYNC_SCHEDULE,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        required_resource_keys={"database"},
        description=(
            f"Every tenant's sync, on cron `{cron}` (ETL_SYNC_CRON): the sources each tenant uses, in one run per "
            "tenant" + (" (a first sync with each step in its own process)." if first_sync_config else ".")
        ),
    )
    def sync_all_tenants(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        scheduled: object = context.scheduled_execution_time  # None when evaluated by hand
        stamp = scheduled.isoformat() if isinstance(scheduled, datetime) else "manual"
        engine = context.resources.database.engine
        requests = []
        for tenant in registry.tenants:
            plan = plan_tenant_run(engine, catalogue, tenant)
            for note in plan.notes:
                context.log.info(note)
            if not plan.entities:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{names.SYNC_SCHEDULE}-{tenant.id}-{stamp}",
                    partition_key=tenant.id,
                    asset_selection=tenant_run_keys(plan, source_keys),
                    run_config=dict(first_sync_config or {}) if plan.first_sync else {},
                    tags=names.tenant_tags(tenant.id, **({names.FIRST_SYNC_TAG: "true"} if plan.first_sync else {})),
                )
            )
        return requests

    return sync_all_tenants


def build_automation_sensor(minimum_interval_s: int) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        names.AUTOMATION_SENSOR,
        target=dg.AssetSelection.groups(names.VECTORS_GROUP),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_s,
        description="Materializes a tenant's vectors after its table updated and its blocking checks passed.",
    )


def build_entity_job(spec: EntitySpec) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        names.entity_job(spec),
        selection=dg.AssetSelection.assets(
            names.raw_key(spec),
            names.table_key(spec),
            names.vector_key(spec),
            *(names.vector_key(link.spec) for link in spec.children),
        ),
        description=f"Sync one tenant's {spec.name}: changes since the watermark, the table, the vectors.",
    )


def build_reconcile_schedule(
    spec: EntitySpec, job: UnresolvedAssetJobDefinition, registry: TenantRegistry, cron: str
) -> dg.ScheduleDefinition:
    return per_tenant_schedule(
        names.reconcile_schedule(spec),
        job,
        registry,
        cron,
        f"List every tenant's live {spec.item} ids and mark the rest deleted, on cron `{cron}` (ETL_RECONCILE_CRON).",
        run_config=names.raw_run_config(spec, reconcile=True),
        tags={names.RECONCILE_TAG: "true"},
    )


def build_change_sensor(
    spec: EntitySpec,
    job: UnresolvedAssetJobDefinition,
    registry: TenantRegistry,
    minimum_interval_s: int,
    first_sync_config: Mapping[str, Any] | None = None,
) -> dg.SensorDefinition:
    """Polls each tenant's source for the newest change since the watermark and runs ``job`` for
    the tenants that changed. ``spec.newest_change`` asks the source in one cheap request."""
    newest_change = spec.newest_change
    if newest_change is None:
        raise ValueError(f"{spec.source}/{spec.name}: a change sensor needs spec.newest_change")
    name = names.change_sensor(spec)

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={spec.source, "database"},
        description=(
            f"Asks each tenant's {spec.source} whether any {spec.item} changed since the watermark (one cheap "
            f"request) and runs that tenant's {spec.name} only when something did. Every "
            f"{minimum_interval_s}s (ETL_CHANGE_SENSOR_INTERVAL_S)."
        ),
    )
    def change_sensor(context: dg.SensorEvaluationContext, **_invoked_with: object) -> dg.SensorResult:
        # The resources come from the context; a direct call (``sensor(context)``, as tests do) also
        # passes them as keyword arguments, which the daemon's path does not: accept and ignore those.
        source = getattr(context.resources, spec.source)
        database = context.resources.database
        cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        requests: list[dg.RunRequest] = []
        decisions: list[str] = []
        for tenant in registry.tenants:
            try:
                watermark = read_sync_state(database.engine, tenant.id, spec.name).watermark
                if watermark is None:
                    first = source.serves(tenant)
                    decisions.append(f"tenant {tenant.id}: never synced — run requested")
                    requests.append(
                        dg.RunRequest(
                            run_key=f"changes-{tenant.id}-first",
                            partition_key=tenant.id,
                            # A tenant without this source lists nothing: no first sync to spread out.
                            run_config=dict(first_sync_config or {}) if first else {},
                            tags=names.tenant_tags(tenant.id, **({names.FIRST_SYNC_TAG: "true"} if first else {})),
                        )
                    )
                    continue
                with source.open(tenant, database.engine) as client:
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
                    tags=names.tenant_tags(tenant.id),
                )
            )
        for line in decisions:
            context.log.info(line)
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if requests else "; ".join(decisions) or "no tenants",
        )

    return change_sensor


def build_automation(
    catalogue: tuple[EntitySpec, ...],
    registry: TenantRegistry,
    *,
    sync_cron: str,
    reconcile_cron: str,
    automation_interval_s: int,
    change_interval_s: int,
    source_keys: Mapping[str, Sequence[dg.AssetKey]] | None = None,
    first_sync_config: Mapping[str, Any] | None = None,
) -> tuple[list[UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """The jobs, schedules and sensors of a catalogue: one sync job and schedule, the vectors'
    automation sensor, and per incremental entity a job, a reconciliation schedule and (when the
    source can tell its newest change cheaply) a change sensor. ``source_keys``: a source's assets
    beyond its entities' (a tenant's scheduled run has them with the source); ``first_sync_config``:
    the run config of a run known to be a tenant's first sync."""
    sync = build_sync_job()
    jobs = [sync]
    schedules = [
        build_sync_schedule(
            sync, registry, sync_cron, catalogue, source_keys=source_keys, first_sync_config=first_sync_config
        )
    ]
    sensors: list[dg.SensorDefinition] = [build_automation_sensor(automation_interval_s)]
    for spec in catalogue:
        if not spec.incremental:
            continue
        job = build_entity_job(spec)
        jobs.append(job)
        schedules.append(build_reconcile_schedule(spec, job, registry, reconcile_cron))
        if spec.newest_change is not None:
            sensors.append(build_change_sensor(spec, job, registry, change_interval_s, first_sync_config))
    return jobs, schedules, sensors
