"""Dagster code location: one sync (five assets, four checks), job, schedule and
sensor per enabled data source in the CALPENDO_MWL_CONFIG file, plus the daily
worklist retention job."""

import dagster as dg

from calpendo_assets.config import enabled_sources, load_config
from calpendo_assets.core.source import DataSource
from calpendo_assets.defs.assets import build_source_assets
from calpendo_assets.defs.automation import build_job, build_schedule, build_sensor
from calpendo_assets.defs.resources import SOURCE_ACCESS_KEY, WorklistDatabase, source_access
from calpendo_assets.defs.retention import build_retention_defs


def build_definitions(sources: list[DataSource], **asset_options) -> dg.Definitions:
    # Retention is per worklist database, not per source: one job for all of them.
    retention_job, retention_schedule = build_retention_defs()
    assets, jobs, schedules, sensors = [], [retention_job], [retention_schedule], []
    for source in sources:
        assets.append(build_source_assets(source, **asset_options))
        job = build_job(source)
        jobs.append(job)
        schedules.append(build_schedule(source, job))
        sensors.append(build_sensor(source, job))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={"worklist_db": WorklistDatabase(), SOURCE_ACCESS_KEY: source_access(sources)},
        # A sync is one step: a subprocess per step would only add start-up time.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(enabled_sources(load_config()))
