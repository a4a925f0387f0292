"""Database maintenance: give the space freed by raw pruning back to the file system, on a schedule.

The table steps prune consumed raw batches after each commit (``ETL_RAW_KEEP_BATCHES`` /
``ETL_RAW_KEEP_DAYS``). SQLite keeps the freed pages in its file for reuse; this job runs
``VACUUM`` when they are at least a tenth of the file — once a week by default
(``ETL_MAINTENANCE_CRON``), never inside a sync, because VACUUM needs the database to itself
for a moment. PostgreSQL: the job reports that autovacuum does this and changes nothing.
"""

import dagster as dg

from etl_assets.core.store.retention import reclaim_space
from etl_assets.defs import names
from etl_assets.defs.resources import DatabaseResource


def build_maintenance_job() -> dg.JobDefinition:
    @dg.op(name=names.MAINTENANCE_OP, description="SQLite: VACUUM when pruning freed 10 % of the file.")
    def reclaim_raw_space(context: dg.OpExecutionContext, database: DatabaseResource) -> None:
        result = reclaim_space(database.engine)
        context.log.info(f"raw maintenance on {database.display_url}: {result.action}")
        context.add_output_metadata({"database": database.display_url, **result.metadata()})

    @dg.job(
        name=names.MAINTENANCE_JOB,
        description="Reclaim the database space freed by raw retention (SQLite VACUUM; PostgreSQL: autovacuum).",
    )
    def raw_maintenance() -> None:
        reclaim_raw_space()

    return raw_maintenance


def build_maintenance_schedule(job: dg.JobDefinition, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=names.MAINTENANCE_SCHEDULE,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        description=f"Reclaim space freed by raw retention, on cron `{cron}` (ETL_MAINTENANCE_CRON).",
    )
