"""Dagster code location: one sync (five assets, four checks), job, schedule and
sensor per enabled data source in the CALPENDO_MWL_CONFIG file, plus the daily
worklist retention job."""

import dagster as dg

from calpendo_assets.assets import build_source_assets
from calpendo_assets.automation import build_job, build_schedule, build_sensor
from calpendo_assets.config import DataSource, enabled_sources, load_config
from calpendo_assets.resources import CalpendoResource, WorklistDatabase, calpendo_from_env
from calpendo_assets.retention_job import build_retention_defs


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
        resources={"worklist_db": WorklistDatabase(), "calpendo": _calpendo(sources)},
        # A sync is one step: a subprocess per step would only add start-up time.
        executor=dg.in_process_executor,
    )


def _calpendo(sources: list[DataSource]) -> CalpendoResource:
    # Credentials from the environment only where a source needs them: a site with
    # only `file` sources runs without CALPENDO_USERNAME/CALPENDO_PASSWORD.
    if any(source.plugin.needs_credentials for source in sources):
        return calpendo_from_env()
    return CalpendoResource(username="", password="")


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(enabled_sources(load_config()))
