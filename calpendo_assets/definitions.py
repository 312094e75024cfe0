"""Dagster code location: one set of assets, checks, job, schedule and sensor per
enabled data source in the CALPENDO_MWL_CONFIG file."""

import dagster as dg

from calpendo_assets.assets import build_source_assets
from calpendo_assets.automation import build_job, build_schedule, build_sensor
from calpendo_assets.checks import build_source_checks
from calpendo_assets.config import DataSource, enabled_sources, load_config
from calpendo_assets.resources import WorklistDatabase


def build_definitions(sources: list[DataSource], **asset_options) -> dg.Definitions:
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    for source in sources:
        assets += build_source_assets(source, **asset_options)
        checks += build_source_checks(source)
        job = build_job(source)
        jobs.append(job)
        schedules.append(build_schedule(source, job))
        sensors.append(build_sensor(source, job))
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        # Intermediate values hold participant names and titles: keep them in memory
        # for the run only, never pickled under DAGSTER_HOME. The published worklist
        # is the product; a sync is cheap to re-run whole. In-memory values need one
        # process per run, so every job (UI-launched ones too) runs in-process.
        resources={"worklist_db": WorklistDatabase(), "io_manager": dg.mem_io_manager},
        executor=dg.in_process_executor,
    )


defs = build_definitions(enabled_sources(load_config()))
