"""A REDCap source synced from the real simulator on loopback into a real worklist DB.

`sync.run_sync` at a fixed "now" (the simulator's own today); the oracle is the
simulator's store, never our code: which visits are dated in the window, what
Pylantir's code made of them.
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from calpendo_assets import sync
from calpendo_assets.config import load_config
from calpendo_sim.redcap import RowKey
from mwl_service.engine import make_engine
from mwl_service.schema import DISCONTINUED, SCHEDULED, WorklistItem
from tests.fixtures.redcap_sim import REDCAP_TODAY, REDCAP_TOKEN, pylantir_identifiers
from tests.fixtures.sim import ROOT

TZ = ZoneInfo("America/Edmonton")
NOW = dt.datetime.combine(REDCAP_TODAY, dt.time(12), TZ)  # window [2026-03-09, 2026-03-18)
FIRST, END = "2026-03-09", "2026-03-18"
ENV = {"REDCAP_API_TOKEN": REDCAP_TOKEN}


def write(tmp_path, url: str, name: str = "redcap-example.json", **config) -> str:
    data = json.loads((ROOT / "config" / name).read_text())
    data["data_sources"] = [s for s in data["data_sources"] if s.get("enabled", True)]
    data["data_sources"][0]["config"].update(url=url, **config)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def in_window(sim, start=FIRST, end=END) -> dict[str, dict]:
    """The simulator's visits dated in the window, by booking id."""
    return {sim.booking_id(k): v for k, v in sim.visits() if start <= v["mri_date"] < end}


def worklist(engine) -> dict[str, WorklistItem]:
    with Session(engine) as s:
        return {r.booking_id: r for r in s.scalars(select(WorklistItem))}


def run(source, engine, now=NOW):
    return sync.run_sync(source, engine, env=ENV, now=now)


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'worklist.db'}")
    yield eng
    eng.dispose()


@pytest.fixture
def example(redcap_sim, tmp_path, monkeypatch):
    monkeypatch.setenv("REDCAP_API_TOKEN", REDCAP_TOKEN)
    (source,) = load_config(write(tmp_path, redcap_sim.url), env={})
    return source


def test_one_export_per_sync_filtered_on_the_visit_date(redcap_sim, example, engine):
    redcap_sim.reset_counts()
    fetched, _, published = run(example, engine)
    [asked] = redcap_sim.record_requests()
    assert redcap_sim.request_count == 1 and fetched.fetch.requests == 1
    assert asked.params.get("filterLogic") == (
        f"([mri_date] >= '{FIRST}' and [mri_date] < '{END}') or [mri_date] = ''")
    assert fetched.fetch.complete and fetched.fetch.skipped == {}
    expected = in_window(redcap_sim)
    status = {bid: v["mri_status"] for bid, v in expected.items()}
    rows = worklist(engine)
    # Scheduled (1) and cancelled (3) visits have rows; completed (2) and no-shows (4) not.
    assert set(rows) == {b for b, s in status.items() if s in ("1", "3")} and len(rows) > 5
    for booking_id, row in rows.items():
        values = expected[booking_id]
        participant = redcap_sim.row(RowKey(booking_id.split(":")[0], "event_1_arm_1"))
        assert row.patient_id == participant["study_id"]
        assert row.step_status == (DISCONTINUED if status[booking_id] == "3" else SCHEDULED)
        local = dt.datetime.fromisoformat(f"{values['mri_date']} {values['mri_time']}")
        assert row.scheduled_start_utc.replace(tzinfo=dt.UTC) == local.replace(tzinfo=TZ).astimezone(dt.UTC)
        assert (row.scheduled_start_date, row.scheduled_start_time) == (
            local.strftime("%Y%m%d"), local.strftime("%H%M%S"))
        assert row.scheduled_station_ae_title == "MRI3T" and row.modality == "MR"
        lb = float(participant["mri_wt_lbs"])
        assert float(row.patient_weight) == pytest.approx(lb * 0.45359237, abs=0.051)
        assert row.patient_name == f"{participant['last_name']}^{participant['first_name']}"
    assert published.inserted == len(rows)
    # The same window again writes nothing.
    assert run(example, engine)[2].unchanged == len(rows)


def test_moved_deleted_redated_and_cancelled_visits(redcap_sim, example, engine):
    inside = redcap_sim.add_visit(date="2026-03-12", time="10:00")
    leaving = redcap_sim.add_visit(date="2026-03-13", time="11:00")
    coming = redcap_sim.add_visit(date="2026-05-01", time="12:00")
    doomed = redcap_sim.add_visit(date="2026-03-14", time="13:00")
    unbooked = redcap_sim.add_visit(date="2026-03-15", time="14:00")
    cancelled = redcap_sim.add_visit(date="2026-03-11", time="08:00")
    run(example, engine)
    visits = {"inside": inside, "leaving": leaving, "coming": coming, "doomed": doomed,
              "unbooked": unbooked, "cancelled": cancelled}
    ids = {name: redcap_sim.booking_id(key) for name, key in visits.items()}
    before = worklist(engine)
    assert {ids[k] for k in ("inside", "leaving", "doomed", "unbooked", "cancelled")} <= set(before)
    redcap_sim.move_visit(leaving, "2026-04-02")
    redcap_sim.move_visit(coming, "2026-03-15", "16:30")
    redcap_sim.move_visit(inside, "2026-03-16", "07:45")  # re-dated, still inside
    redcap_sim.move_visit(unbooked, None)  # the date cleared: no longer a booked visit
    redcap_sim.delete_visit(doomed)
    redcap_sim.cancel_visit(cancelled)
    published = run(example, engine)[2]
    after = worklist(engine)
    gone = "no longer in the source: deleted, moved out of the window, or status changed"
    for key in ("leaving", "doomed", "unbooked"):
        assert (after[ids[key]].step_status, after[ids[key]].discontinued_reason) == (DISCONTINUED, gone)
    assert after[ids["cancelled"]].step_status == DISCONTINUED
    assert after[ids["cancelled"]].discontinued_reason.endswith("REDCap mri_status = 3")
    assert after[ids["coming"]].scheduled_start_time == "163000"
    assert (after[ids["inside"]].scheduled_start_date, after[ids["inside"]].scheduled_start_time) == (
        "20260316", "074500")
    assert after[ids["inside"]].accession_number == before[ids["inside"]].accession_number
    assert published.cancelled == 4 and published.inserted == 1


def test_a_longitudinal_project_with_events(redcap_sim_factory, tmp_path, engine, monkeypatch):
    sim = redcap_sim_factory(longitudinal=True)
    monkeypatch.setenv("REDCAP_API_TOKEN", REDCAP_TOKEN)
    path = write(tmp_path, sim.url, events=["baseline_arm_1", "t2_arm_1"])
    (source,) = load_config(path, env={})
    run(source, engine)
    rows = worklist(engine)
    wanted = {b: v for b, v in in_window(sim).items() if ":t2_arm_1:" in b
              and v["mri_status"] in ("1", "3")}
    assert set(rows) == set(wanted) and rows
    assert all(b.split(":")[1:3] == ["t2_arm_1", "mri"] for b in rows)
    for booking_id, row in rows.items():  # participant fields come from baseline_arm_1
        participant = sim.row(RowKey(booking_id.split(":")[0], "baseline_arm_1"))
        assert (row.patient_id, row.patient_birth_date) == (
            participant["study_id"], participant["dob"].replace("-", ""))
    [asked] = sim.record_requests()
    assert asked.params.array("events") == ["baseline_arm_1", "t2_arm_1"]
    assert asked.params.array("fields")[0] == "record_id"


def test_dst_days_through_the_simulator(redcap_sim_factory, tmp_path, engine, monkeypatch):
    sim = redcap_sim_factory(visits=0, today=dt.date(2026, 3, 8))
    monkeypatch.setenv("REDCAP_API_TOKEN", REDCAP_TOKEN)
    (source,) = load_config(write(tmp_path, sim.url), env={})
    gap = sim.booking_id(sim.add_visit(date="2026-03-08", time="02:30"))
    after = sim.booking_id(sim.add_visit(date="2026-03-08", time="10:00"))
    before = sim.booking_id(sim.add_visit(date="2026-03-07", time="10:00"))
    run(source, engine, now=dt.datetime(2026, 3, 8, 12, tzinfo=TZ))
    rows = worklist(engine)
    assert (rows[gap].scheduled_start_time, rows[gap].scheduled_start_utc.hour) == ("033000", 9)
    assert (rows[after].scheduled_start_time, rows[after].scheduled_start_utc.hour) == ("100000", 16)
    assert (rows[before].scheduled_start_time, rows[before].scheduled_start_utc.hour) == ("100000", 17)


def test_pylantir_s_example_syncs_with_pylantir_s_identifiers(redcap_sim, tmp_path, engine,
                                                             monkeypatch):
    monkeypatch.setenv("REDCAP_API_URL", redcap_sim.url)
    monkeypatch.setenv("REDCAP_API_TOKEN", REDCAP_TOKEN)
    main, _ = load_config(str(ROOT / "config" / "pylantir-redcap-example.json"))
    redcap_sim.reset_counts()
    run(main, engine)
    rows = worklist(engine)
    assert [r.content for r in redcap_sim.requests] == ["record"]  # no metadata per sync
    expected = pylantir_identifiers(redcap_sim, FIRST, END)
    assert {b: (r.patient_id, r.patient_name) for b, r in rows.items()} == expected
    assert all(r.step_status == SCHEDULED for r in rows.values())  # as Pylantir sent them
    assert {r.scheduled_procedure_step_description for r in rows.values()} == {"BRAIN_MRI_3T"}
    assert {(r.scheduled_protocol_code_value, r.scheduled_protocol_coding_scheme_designator)
            for r in rows.values()} == {("BRAIN_MRI_3T", "GEHC")}
    # Identifiers are stable across syncs (Pylantir drew a new Study Instance UID each time).
    uids = {b: r.study_instance_uid for b, r in rows.items()}
    run(main, engine)
    assert {b: r.study_instance_uid for b, r in worklist(engine).items()} == uids
