"""The sync and mwl-api together: the real sync against the Calpendo simulator leaves
manual items alone, and the "not on the worklist" list names each bad booking's reason.

Everything runs in this process (simulator and uvicorn in threads), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from calpendo_assets import sync
from calpendo_assets.config import load_config
from calpendo_assets.core.credentials import Credentials
from mwl_service.schema import WorklistHistory
from tests.fixtures.api import api_user
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER

pytestmark = pytest.mark.postgres
TZ = ZoneInfo("America/Edmonton")
CREDS = Credentials(SIM_USER, SIM_PASSWORD)


def local(hour: int, days: int = 0) -> dt.datetime:
    return dt.datetime.combine(dt.datetime.now(TZ).date() + dt.timedelta(days=days),
                               dt.time(hour))


@pytest.fixture
def source(calpendo_sim, tmp_path):
    cfg = {"data_sources": [{
        "name": "mri", "type": "calpendo", "enabled": True, "sync_interval": 300,
        "operation_interval": {"start_time": [0, 0], "end_time": [0, 0]},
        "config": {"base_url": calpendo_sim.url, "resources": ["3T MRI", "EEG Lab"],
                   "status_filter": ["APPROVED"], "timezone": "America/Edmonton",
                   "past_days": 1, "future_days": 7, "retries": 0,
                   "resource_ae_title_mapping": {"3T MRI": "MRI3T"}},
    }]}
    path = tmp_path / "calpendo.json"
    path.write_text(json.dumps(cfg))
    return load_config(str(path))[0]


@pytest.fixture
def api(db_url, api_server):
    server = api_server(db_url)
    api_user(server.engine, "tech", "write")
    return server


def publish(source, engine, bookings_edit=None):
    """The real sync: fetch from the simulator, map, publish (with its excluded list)."""
    fetched = sync.fetch(source, CREDS)
    if bookings_edit is not None:
        bookings_edit(fetched.fetch.bookings)
    result = sync.transform(source, fetched)
    return sync.publish_rows(engine, source, result.frame, fetched, excluded=result.left_out)


def test_a_sync_leaves_manual_items_alone(calpendo_sim, source, api):
    start = local(11).isoformat()
    created = api.call("POST", "/api/v1/worklist", user="tech", json={
        "patient_id": "WALKIN7", "patient_name": "Doe, Walk", "scheduled_start": start,
        "scheduled_station_ae_title": "MRI3T"}).json()
    path = f"/api/v1/worklist/{created['accession_number']}"
    first = publish(source, api.engine)
    assert first.inserted > 0
    calpendo_sim.cancel_booking(calpendo_sim.add_booking("SUB7777", start=local(11)))
    second = publish(source, api.engine)
    assert (second.inserted, second.cancelled) == (1, 0)  # the cancelled booking, as such
    after = api.call("GET", path, user="tech").json()
    assert after == created  # not one field touched, updated_at included
    with api.engine.connect() as conn:
        who = conn.execute(select(WorklistHistory.changed_by).where(
            WorklistHistory.source == "manual")).scalars().all()
        sync_who = set(conn.execute(select(WorklistHistory.changed_by).where(
            WorklistHistory.source == "mri")).scalars().all())
    assert who == ["api:tech"] and sync_who == {"sync:mri"}
    listed = api.call("GET", "/api/v1/worklist?station=MRI3T&limit=1000", user="tech").json()
    assert created["accession_number"] in {i["accession_number"] for i in listed["items"]}
    assert {i["source"] for i in listed["items"]} == {"mri", "manual"}


def _clone(bookings: list[dict], template_id: int, new_id: int, **changes) -> dict:
    record = copy.deepcopy(next(b for b in bookings if b["id"] == template_id))
    record["id"] = new_id
    for path, value in changes.items():
        node = record
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return record


def test_the_excluded_list_names_each_bad_bookings_reason(calpendo_sim, source, api):
    good = calpendo_sim.add_booking("SUB4001", start=local(8))
    no_id = calpendo_sim.add_booking("", start=local(9))
    unmatched = calpendo_sim.add_booking("Phantom QA session", start=local(10))
    invalid = calpendo_sim.add_booking("X" * 70 + "1", start=local(11))
    mock = calpendo_sim.add_booking("SUB4005", resource="Mock Scanner", start=local(12))
    cancelled = calpendo_sim.add_booking("SUB4006", start=local(13))
    calpendo_sim.cancel_booking(cancelled, reason="Jane Doe is ill")
    far = local(9, days=30).strftime("%Y-%m-%d %H:%M:%S.0")

    def misbehave(bookings: list[dict]) -> None:
        # What a server ignoring the query would send: a status outside the filter, a
        # start outside the window, and the same booking twice.
        bookings.append(_clone(bookings, good, 990001, status="REQUESTED"))
        bookings.append(_clone(bookings, good, 990002, **{"dateRange.start": far}))
        bookings.append(_clone(bookings, good, good))

    publish(source, api.engine, misbehave)
    today = api.call("GET", "/api/v1/excluded?source=mri", user="tech")
    assert today.status_code == 200
    found = {e["booking_id"]: e for e in today.json()["items"]}
    kinds = {bid: found[str(bid)]["kind"] for bid in
             (no_id, unmatched, invalid, mock, cancelled, 990001)}
    assert kinds == {no_id: "no_patient_id", unmatched: "pattern_not_matched",
                     invalid: "invalid_dicom_value", mock: "resource_not_in_scope",
                     cancelled: "cancelled", 990001: "status_not_in_scope"}
    assert found[str(no_id)]["reason"] == "no patient ID or name"
    assert found[str(unmatched)]["reason"].startswith("regex did not match")
    assert found[str(invalid)]["reason"] == "invalid DICOM value: patient_id"
    assert found[str(mock)]["reason"].startswith("scoped out by resource")
    assert found[str(mock)]["resource"] == "Mock Scanner"
    assert found[str(990001)]["reason"].endswith("status REQUESTED")
    assert found[str(good)]["kind"] == "duplicate"
    assert str(good) in {i["booking_id"] for i in api.call(
        "GET", "/api/v1/worklist?source=mri&limit=1000", user="tech").json()["items"]}
    assert dt.datetime.fromisoformat(found[str(invalid)]["start"]) == local(11).replace(tzinfo=TZ)
    assert "Jane" not in today.text and "Phantom" not in today.text and "XXXX" not in today.text
    later = api.call("GET", f"/api/v1/excluded?date={local(9, days=30):%Y-%m-%d}",
                     user="tech").json()
    assert [(e["booking_id"], e["kind"]) for e in later["items"]] == [("990002", "outside_window")]
    # The next publish replaces the list: fixed bookings leave it.
    calpendo_sim.update_booking(unmatched, title="SUB4003")
    publish(source, api.engine)
    again = {e["booking_id"] for e in api.call(
        "GET", "/api/v1/excluded?source=mri", user="tech").json()["items"]}
    assert str(unmatched) not in again and "990001" not in again and str(mock) in again
