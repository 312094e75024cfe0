"""Simulator -> NAME_sync job -> worklist DB -> real `mwl-service` -> DCMTK `findscu -W`.

The oracle is the simulator's own booking store, not our code: today's APPROVED
3T MRI bookings with a participant ID in the title must be on the station's
worklist at their Calpendo wall-clock times, and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import io
import json
import re
import shlex
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from calpendo_assets.config import load_config
from calpendo_assets.definitions import build_definitions
from tests.fixtures.dicom import run_findscu
from tests.fixtures.sim import ROOT

pytestmark = pytest.mark.external

STATION = "MRI3T"  # the shipped config's AE title for "3T MRI"


def todays_scans(sim) -> dict[str, dict]:
    """Booking id -> properties of today's approved 3T bookings with an ID in the title."""
    today = sim.today.strftime("%Y-%m-%d")
    out = {}
    for b in sim.bookings():
        p = b["properties"]
        if (
            p["status"] == "APPROVED"
            and p["resource"]["name"] == "3T MRI"
            and p["dateRange"]["start"].startswith(today)  # site wall clock
            and re.search(r"\d", p.get("title") or "")
        ):
            out[str(b["id"])] = p
    return out


def expected_today(sim) -> dict[str, str]:
    """Booking id -> local HHMMSS of today's scans."""
    return {bid: p["dateRange"]["start"][11:19].replace(":", "")
            for bid, p in todays_scans(sim).items()}


def expected_mr_fields(p: dict, config: dict) -> tuple:
    """What a console must get for a scan, from the simulator's properties and the
    shipped config's codes: weight in kg (0.1), size in m (Height is in cm), the
    protocol and procedure codes with their versions."""
    weight = "" if p["Weight"] is None else format(
        Decimal(p["Weight"]).quantize(Decimal("0.1"), ROUND_HALF_UP).normalize(), "f")
    size = "" if p["Height"] is None else format(
        (Decimal(p["Height"]) / 100).quantize(Decimal("0.01"), ROUND_HALF_UP).normalize(), "f")
    protocol = config["scheduled_protocol_codes"].get((p["project"] or {}).get("name"))
    procedure = config["requested_procedure_codes"][""]

    def code(c):
        return () if c is None else (c["code_value"], c["coding_scheme_designator"],
                                     c["coding_scheme_version"], c["code_meaning"])
    return weight, size, code(protocol), code(procedure)


def code_items(sequence) -> tuple:
    return tuple((c.CodeValue, c.CodingSchemeDesignator, c.CodingSchemeVersion, c.CodeMeaning)
                 for c in sequence)


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
            "PatientWeight",
            "PatientSize",
            "RequestedProcedureCodeSequence",
            "(0040,0100)[0].ScheduledProtocolCodeSequence",
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

    # The MR fields a console needs, through the shipped config's mapping and codes.
    shipped = json.loads(Path(pipeline_env["CALPENDO_MWL_CONFIG"]).read_text())
    config = shipped["data_sources"][0]["config"]
    scans = todays_scans(calpendo_sim)
    mr = {}
    for ds in answers:
        protocol = ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
        mr[str(ds.RequestedProcedureID)] = (
            str(ds.PatientWeight or ""), str(ds.PatientSize or ""), *map(code_items, (
                protocol, ds.RequestedProcedureCodeSequence)))
    expected_mr = {}
    for bid, props in scans.items():
        weight, size, protocol, procedure = expected_mr_fields(props, config)
        expected_mr[bid] = (weight, size, (protocol,) if protocol else (), (procedure,))
    assert mr == expected_mr
    # Not empty ones: today's first scans are weighed and measured, every scan has codes.
    assert sum(1 for weight, size, *_ in mr.values() if weight and size) >= 5
    for _, _, protocol, procedure in mr.values():
        assert protocol and protocol[0][2] and procedure[0][2]  # CodingSchemeVersion


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


def demo_findscu_keys(source, mwl_port: int) -> list[str]:
    """The -k keys of the findscu command `make demo` prints (deploy/demo.py)."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "deploy" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    printed = io.StringIO()
    args = argparse.Namespace(mwl_aet="CALPENDO_MWL", mwl_port=mwl_port, api_port=8000)
    with contextlib.redirect_stdout(printed):
        demo.print_next_steps(
            "http://127.0.0.1:3000", args, source, "http://127.0.0.1:8089", redcap=[])
    text = printed.getvalue()
    command = text[text.index("findscu -W"):].split("\n\n")[0].replace("\\\n", " ")
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words) if word == "-k"]


def test_the_demos_findscu_command_shows_the_mr_fields(
    calpendo_sim, pipeline_env, mwl_service_process
):
    (source, *_) = load_config(pipeline_env["CALPENDO_MWL_CONFIG"])
    defs = build_definitions([source], retry_policy=None)
    assert defs.resolve_job_def(f"{source.name}_sync").execute_in_process().success
    server = mwl_service_process(pipeline_env["WORKLIST_DB_URL"])
    keys = demo_findscu_keys(source, server.port)
    answers = run_findscu(server.host, server.port, server.ae_title, keys)
    scans = todays_scans(calpendo_sim)
    mr_scans = [a for a in answers if a.ScheduledProcedureStepSequence[0].Modality == "MR"]
    assert len(mr_scans) == len(scans) >= 5
    weighed = [a for a in mr_scans if a.PatientWeight is not None]
    assert len(weighed) >= 5  # today's first scans: never empty in the demo
    for a in weighed:
        assert 45 <= float(a.PatientWeight) <= 140 and 1.5 <= float(a.PatientSize) <= 2.0
        (protocol,) = a.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
        assert protocol.CodingSchemeDesignator == "99CALPENDO" and protocol.CodingSchemeVersion
        (procedure,) = a.RequestedProcedureCodeSequence
        assert procedure.CodeValue == "RESEARCH" and procedure.CodingSchemeVersion
