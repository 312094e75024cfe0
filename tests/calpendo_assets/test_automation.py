"""Schedules and sensors: cadence, operation interval, change detection."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from calpendo_assets.defs.automation import build_job, build_schedule, build_sensor, cron_for_interval
from calpendo_assets.config import load_config
from calpendo_assets.core.settings import OperationInterval
from calpendo_assets.defs.resources import SourceAccess, source_access
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER


@pytest.mark.parametrize(
    ("seconds", "cron"),
    [
        (60, "* * * * *"),
        (300, "*/5 * * * *"),
        (420, "*/7 * * * *"),
        (3600, "0 * * * *"),
        (7200, "0 */2 * * *"),
        (86400, "0 0 * * *"),
        (7 * 86400, "0 0 * * *"),
    ],
)
def test_cron_for_interval(seconds, cron):
    assert cron_for_interval(seconds) == cron


@pytest.fixture
def source(pipeline_env):
    return load_config(pipeline_env["CALPENDO_MWL_CONFIG"])[0]


def test_schedule_runs_only_inside_operation_interval(source):
    office = dataclasses.replace(
        source, operation_interval=OperationInterval(start_time=(7, 0), end_time=(18, 30))
    )
    schedule = build_schedule(office, build_job(office))
    assert schedule.name == f"{source.name}_schedule"
    assert schedule.execution_timezone == source.settings.timezone
    tz = ZoneInfo(source.settings.timezone)

    def tick(hour, minute):
        when = dt.datetime(2026, 3, 9, hour, minute, tzinfo=tz)
        ctx = dg.build_schedule_context(scheduled_execution_time=when)
        return schedule.evaluate_tick(ctx)

    assert len(tick(7, 0).run_requests) == 1
    assert len(tick(18, 25).run_requests) == 1
    assert tick(18, 30).run_requests == [] and "outside" in tick(18, 30).skip_message
    assert tick(6, 55).run_requests == []


def context(cursor=None, resource=None):
    resource = resource or SourceAccess(username=SIM_USER, password=SIM_PASSWORD)
    return dg.build_sensor_context(cursor=cursor, resources={"calpendo": resource})


def test_sensor_requests_a_run_only_when_the_window_changed(calpendo_sim, source):
    sensor = build_sensor(source, build_job(source))
    assert sensor.name == f"{source.name}_sensor"
    assert sensor.minimum_interval_seconds == 10

    calpendo_sim.reset_counts()
    first = sensor.evaluate_tick(context())
    assert calpendo_sim.request_count == 1  # one cheap window query per tick
    assert len(first.run_requests) == 1 and first.cursor
    key = first.run_requests[0].run_key

    again = sensor.evaluate_tick(context(first.cursor))
    assert again.run_requests == [] and "unchanged" in again.skip_message

    booking = next(b for b in calpendo_sim.bookings() if b["properties"]["status"] == "APPROVED")
    calpendo_sim.update_booking(booking["id"], title="SUB4321 - Changed Title")
    changed = sensor.evaluate_tick(context(first.cursor))
    assert len(changed.run_requests) == 1
    assert changed.cursor != first.cursor
    assert changed.run_requests[0].run_key != key
    # Same tick evaluated twice gives the same key: Dagster will not launch it twice.
    repeat = sensor.evaluate_tick(context(first.cursor))
    assert repeat.run_requests[0].run_key == changed.run_requests[0].run_key

    # Changing back and forth (A -> B -> A -> B) launches a run every time.
    calpendo_sim.update_booking(booking["id"], title=booking["properties"]["title"])
    back = sensor.evaluate_tick(context(changed.cursor))
    calpendo_sim.update_booking(booking["id"], title="SUB4321 - Changed Title")
    forth = sensor.evaluate_tick(context(back.cursor))
    keys = [r.run_requests[0].run_key for r in (first, changed, back, forth)]
    assert len(set(keys)) == 4


def test_sensor_without_credentials_names_the_missing_variable(source, monkeypatch):
    monkeypatch.delenv("CALPENDO_PASSWORD")
    sensor = build_sensor(source, build_job(source))
    with pytest.raises(Exception, match="CALPENDO_PASSWORD"):
        sensor.evaluate_tick(context(resource=source_access([source])))


def test_sensor_skips_while_calpendo_is_down(calpendo_sim, source):
    # Retried as configured, without the seconds of back-off between the tries.
    source = dataclasses.replace(
        source, settings=source.settings.model_copy(update={"backoff_factor": 0}))
    calpendo_sim.fail_requests(status=503, count=None)
    try:
        result = build_sensor(source, build_job(source)).evaluate_tick(context())
    finally:
        calpendo_sim.clear_failures()
    assert result.run_requests == [] and "window query failed" in result.skip_message
