"""Per data source: the `NAME_sync` job, its schedule and its change-detecting sensor."""

import datetime as dt

import dagster as dg

from calpendo_assets.core.source import DataSource
from calpendo_assets.core.window import in_operation_interval
from calpendo_assets.defs.resources import SourceAccess

# One cheap window query per 10 s per source: with the run queue's 1 s dequeue
# interval and a one-step run, a change reaches the worklist in well under 20 s.
SENSOR_INTERVAL_SECONDS = 10


def cron_for_interval(seconds: int) -> str:
    """Cron for 'every `seconds`', at minute granularity.

    Minute intervals that do not divide 60 restart at each full hour (cron's */n);
    intervals of an hour or more run on the hour every whole number of hours (again
    restarting at midnight); a day or more runs once a day at midnight.
    """
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours = max(1, round(minutes / 60))
    if hours >= 24:
        return "0 0 * * *"  # at most daily: the window is whole days anyway
    return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"


def build_job(source: DataSource):
    return dg.define_asset_job(
        name=f"{source.name}_sync",
        # The source's group: its five assets and their checks, however they change.
        selection=dg.AssetSelection.groups(source.name),
        executor_def=dg.in_process_executor,
        description=f"Sync the bookings of '{source.name}' into the worklist.",
    )


def build_schedule(source: DataSource, job) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{source.name}_schedule",
        job=job,
        cron_schedule=cron_for_interval(source.sync_interval),
        execution_timezone=source.settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,  # only enabled sources get one
        description=f"Every {source.sync_interval}s within the operation interval "
        f"({source.settings.timezone}).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        local = context.scheduled_execution_time.astimezone(source.tz)
        if not in_operation_interval(source, local.time()):
            return dg.SkipReason(f"{local:%H:%M} is outside the operation interval")
        return dg.RunRequest()

    return _schedule


def build_sensor(source: DataSource, job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{source.name}_sensor",
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Polls the booking window cheaply; runs a sync only when it changed.",
    )
    def _sensor(context: dg.SensorEvaluationContext, calpendo: SourceAccess):
        now = dt.datetime.now(dt.timezone.utc)
        if not in_operation_interval(source, now.astimezone(source.tz).time()):
            return dg.SkipReason("outside the operation interval")
        try:
            fingerprint = calpendo.fingerprint(source, logger=context.log)
        except Exception as exc:  # noqa: BLE001 - whatever the source plugin raises
            # An outage is a skipped tick, not a sensor error: the next tick tries again.
            return dg.SkipReason(f"window query failed: {type(exc).__name__}: {exc}")
        count, _, previous = (context.cursor or "0:").partition(":")
        if fingerprint == previous:
            return dg.SkipReason("booking window unchanged")
        # The cursor counts changes, so A -> B -> A -> B gives four distinct keys, while
        # re-evaluating one tick gives the same key (Dagster launches it once).
        change = int(count) + 1
        context.update_cursor(f"{change}:{fingerprint}")
        return dg.RunRequest(run_key=f"{source.name}-change-{change}-{fingerprint[:12]}")

    return _sensor
