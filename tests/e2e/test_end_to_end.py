"""Simulator -> NAME_sync job -> worklist DB -> real `mwl-service` -> DCMTK `findscu -W`.

The oracle is the simulator's own booking store, not our code: today's APPROVED
3T MRI bookings with a participant ID in the title must be on the station's
worklist at their Calpendo wall-clock times, and nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from calpendo_assets.config import load_config
from calpendo_assets.definitions import build_definitions
from tests.fixtures.dicom import run_findscu

pytestmark = pytest.mark.external

STATION = "MRI3T"  # the shipped config's AE title for "3T MRI"


def expected_today(sim) -> dict[str, str]:
    """Booking id -> local HHMMSS for today's approved 3T bookings with an ID in the title."""
    today = sim.today.strftime("%Y-%m-%d")
    out = {}
    for b in sim.bookings():
        p = b["properties"]
        start = p["dateRange"]["start"]  # "YYYY-MM-DD HH:MM:SS.0", site wall clock
        if (
            p["status"] == "APPROVED"
            and p["resource"]["name"] == "3T MRI"
            and start.startswith(today)
            and re.search(r"\d", p.get("title") or "")
        ):
            out[str(b["id"])] = start[11:19].replace(":", "")
    return out


def test_todays_bookings_reach_the_scanner(calpendo_sim, pipeline_env, mwl_service_process):
    sources = load_config(pipeline_env["CALPENDO_MWL_CONFIG"])
    defs = build_definitions([s for s in sources if s.enabled], retry_policy=None)
    job = defs.resolve_job_def(f"{pipeline_env['source_names'][0]}_sync")
    assert job.execute_in_process().success

    server = mwl_service_process(pipeline_env["WORKLIST_DB_URL"])
    today = calpendo_sim.today.strftime("%Y%m%d")
    answers = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        [
            "PatientName",
            "PatientID",
            "RequestedProcedureID",
            "AccessionNumber",
            f"(0040,0100)[0].ScheduledStationAETitle={STATION}",
            f"(0040,0100)[0].ScheduledProcedureStepStartDate={today}",
            "(0040,0100)[0].ScheduledProcedureStepStartTime",
            "(0040,0100)[0].Modality",
        ],
    )
    expected = expected_today(calpendo_sim)
    assert len(expected) >= 5  # the seed always books today's first scans
    got = {}
    for ds in answers:
        sps = ds.ScheduledProcedureStepSequence[0]
        assert sps.ScheduledStationAETitle == STATION
        assert sps.ScheduledProcedureStepStartDate == today
        assert sps.Modality == "MR"
        assert ds.AccessionNumber and ds.PatientID
        got[str(ds.RequestedProcedureID)] = sps.ScheduledProcedureStepStartTime
    assert got == expected
    names = {str(ds.PatientID): str(ds.PatientName) for ds in answers}
    assert names["SUB0003"] == "Müller^Jürgen"
    assert names["SUB0004"] == "山田^太郎"


def next_transition(tz: ZoneInfo, after: dt.date, backwards: bool) -> dt.date:
    """The next day on which the zone's clocks go back (or forward), from zoneinfo."""
    day = after
    for _ in range(400):
        day += dt.timedelta(days=1)
        before = dt.datetime.combine(day, dt.time(0, 0), tz).utcoffset()
        later = dt.datetime.combine(day, dt.time(12, 0), tz).utcoffset()
        if before != later and (later < before) == backwards:
            return day
    raise AssertionError(f"no DST change within a year in {tz}")


@pytest.mark.parametrize(
    ("backwards", "wall_clock", "served"),
    [
        (True, dt.time(1, 30), "013000"),  # ambiguous: served at the wall-clock time booked
        (False, dt.time(2, 30), "033000"),  # does not exist: moved forward an hour
    ],
)
def test_local_times_across_dst_changes(
    calpendo_sim, pipeline_env, mwl_service_process, backwards, wall_clock, served
):
    source = load_config(pipeline_env["CALPENDO_MWL_CONFIG"])[0]
    day = next_transition(source.tz, calpendo_sim.today, backwards)
    # Widen the window to reach that day.
    days_ahead = (day - calpendo_sim.today).days + 2
    future_days = max(source.settings.future_days, days_ahead)
    source = dataclasses.replace(source, settings=source.settings.model_copy(update={"future_days": future_days}))
    bid = calpendo_sim.add_booking(
        title="SUB7777 - Clock Change", resource="3T MRI",
        start=dt.datetime.combine(day, wall_clock), minutes=30, status="APPROVED",
    )
    defs = build_definitions([source], retry_policy=None)
    assert defs.resolve_job_def(f"{source.name}_sync").execute_in_process().success

    server = mwl_service_process(pipeline_env["WORKLIST_DB_URL"])
    answers = run_findscu(
        server.host, server.port, server.ae_title,
        ["PatientID=SUB7777", "RequestedProcedureID",
         "(0040,0100)[0].ScheduledProcedureStepStartDate",
         "(0040,0100)[0].ScheduledProcedureStepStartTime"],
    )
    assert len(answers) == 1
    sps = answers[0].ScheduledProcedureStepSequence[0]
    assert str(answers[0].RequestedProcedureID) == str(bid)
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == (
        day.strftime("%Y%m%d"), served)
