"""The daily worklist retention job: purge rows past the retention age.

A thin Dagster wrapper around :func:`mwl_service.retention.purge` (history kept,
see there). Its output metadata says what it purged, in counts only: no patient
data reaches Dagster's event log.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from calpendo_assets.defs.resources import WorklistDatabase
from mwl_service.retention import DEFAULT_PURGE_DAYS, purge

JOB_NAME = "worklist_retention"
SCHEDULE_NAME = "worklist_retention_schedule"
OP_NAME = "purge_old_worklist_rows"
DEFAULT_CRON = "15 3 * * *"  # daily, at night


class RetentionConfig(dg.Config):
    purge_after_days: int = Field(
        default=DEFAULT_PURGE_DAYS,
        ge=1,
        description="Delete worklist rows (and their MPPS instances) whose scheduled start "
        "is older than this many days; their history is kept.",
    )


@dg.op(
    name=OP_NAME,
    out=dg.Out(dg.Nothing),
    description="Purge worklist rows past the retention age; history kept.",
)
def purge_old_worklist_rows(
    context: dg.OpExecutionContext, config: RetentionConfig, worklist_db: WorklistDatabase
):
    result = purge(worklist_db.get_engine(), dt.timedelta(days=config.purge_after_days))
    context.log.info(
        "Purged %d worklist rows and %d MPPS instances scheduled before %s; "
        "%d history events kept",
        result.worklist_items, result.mpps_instances, result.cutoff.isoformat(),
        result.history_kept,
    )
    return dg.Output(
        None,
        metadata={
            "purged_worklist_items": dg.MetadataValue.int(result.worklist_items),
            "purged_mpps_instances": dg.MetadataValue.int(result.mpps_instances),
            "history_events_kept": dg.MetadataValue.int(result.history_kept),
            "purge_events_written": dg.MetadataValue.int(result.purge_events),
            "cutoff": dg.MetadataValue.timestamp(result.cutoff),
            "purge_after_days": dg.MetadataValue.int(config.purge_after_days),
        },
    )


def build_retention_defs(
    *,
    purge_after_days: int = DEFAULT_PURGE_DAYS,
    cron_schedule: str = DEFAULT_CRON,
    execution_timezone: str = "UTC",
) -> list:
    """The retention job and its daily schedule, for the code location's Definitions."""

    @dg.job(
        name=JOB_NAME,
        config=dg.RunConfig(ops={OP_NAME: RetentionConfig(purge_after_days=purge_after_days)}),
        description=f"Purge worklist rows scheduled more than {purge_after_days} days ago "
        "(history kept).",
        tags={"calpendo_mwl/maintenance": "retention"},
    )
    def worklist_retention():
        purge_old_worklist_rows()

    schedule = dg.ScheduleDefinition(
        name=SCHEDULE_NAME,
        job=worklist_retention,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily retention purge ({cron_schedule}, {execution_timezone}).",
    )
    return [worklist_retention, schedule]
