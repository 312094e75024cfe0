"""Manual items over a real uvicorn: create, change, discontinue; 409 for sync-owned
items, 422 naming every bad field, 413, JSON errors, CORS, and no names in the logs."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from mwl_service import manual, mpps
from mwl_service.schema import (
    MANUAL_SOURCE,
    WorklistHistory,
    WorklistItem,
    accession_number,
    step_id,
    study_instance_uid,
)
from tests.fixtures.api import api_user
from tests.fixtures.dicom import SITE_TZ, insert_item, mpps_attributes

pytestmark = pytest.mark.postgres
TZ = ZoneInfo(SITE_TZ)
NAME = "Zyxwv, Quentin"  # a name no other text contains
PATIENT = "QZ-90817"


def walk_in(**extra) -> dict:
    today = dt.datetime.now(TZ).date()
    return {"patient_id": PATIENT, "patient_name": NAME,
            "scheduled_start": f"{today.isoformat()}T14:30",
            "scheduled_station_ae_title": "MRI3T", **extra}


@pytest.fixture
def api(db_url, api_server):
    server = api_server(db_url)
    api_user(server.engine, "tech", "write")
    return server


def rows(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(WorklistItem))


def test_a_walk_in_is_created_with_derived_identifiers(api):
    insert_item(api.engine, scheduled_station_ae_title="MRI3T", modality="MR")
    answer = api.call("POST", "/api/v1/worklist", user="tech",
                      json=walk_in(patient_weight=72.5, study_description="Walk-in brain"))
    assert answer.status_code == 201, answer.text
    item = answer.json()
    bid = item["booking_id"]
    assert item["source"] == MANUAL_SOURCE == "manual"
    assert item["accession_number"] == accession_number("manual", bid)
    assert item["study_instance_uid"] == study_instance_uid("manual", bid)
    assert item["scheduled_procedure_step_id"] == step_id("manual", bid)
    assert item["patient_name"] == "Zyxwv^Quentin" and item["patient_weight"] == 72.5
    start = dt.datetime.fromisoformat(item["scheduled_start"])
    assert start.astimezone(TZ).time() == dt.time(14, 30)  # no offset: site wall time
    assert item["modality"] == "MR"  # the station's usual modality
    assert item["step_status"] == "SCHEDULED"
    assert answer.headers["Location"] == f"/api/v1/worklist/{item['accession_number']}"
    history = api.call("GET", f"/api/v1/worklist/{item['accession_number']}/history",
                       user="tech").json()["items"]
    assert [(h["event"], h["changed_by"]) for h in history] == [("insert", "api:tech")]


def test_referenced_studies_as_pairs_or_text_and_bad_uids_named(api):
    study_root = "1.2.840.10008.5.1.4.1.2.2.1"
    pairs = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in(
        referenced_studies=[[study_root, "1.2.3.4"], [study_root, "1.2.3.5"]])).json()
    assert pairs["referenced_studies"] == f"{study_root}\\1.2.3.4\\{study_root}\\1.2.3.5"
    text = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in(
        patient_id="QZ-90818", referenced_studies=f"{study_root}, 1.2.3.6")).json()
    assert text["referenced_studies"] == f"{study_root}\\1.2.3.6"
    bad = api.call("POST", "/api/v1/worklist", user="tech",
                   json=walk_in(patient_id="QZ-90819", referenced_studies=[["1.2.x", "1.2"]]))
    assert bad.status_code == 422 and "referenced_studies" in bad.text
    odd = api.call("POST", "/api/v1/worklist", user="tech",
                   json=walk_in(patient_id="QZ-90819", referenced_studies=study_root))
    assert odd.status_code == 422 and "referenced_studies" in odd.text


def test_an_offset_is_kept_and_a_modality_alone_will_do(api):
    body = walk_in(scheduled_start="2026-03-10T21:00:00Z", modality="ct")
    del body["scheduled_station_ae_title"]
    item = api.call("POST", "/api/v1/worklist", user="tech", json=body).json()
    assert item["scheduled_start"] == "2026-03-10T15:00:00-06:00"  # MDT since March 8
    assert item["modality"] == "CT" and item["scheduled_station_ae_title"] == ""


def test_every_bad_field_is_named_and_nothing_is_written(api, api_logs):
    body = {"patient_id": "A\\B", "patient_name": "x^" * 10, "scheduled_start": "tomorrow",
            "patient_birth_date": "1980-02-30", "patient_sex": "Q", "modality": "M-R",
            "duration_minutes": 0, "unknown_field": 1, "patient_weight": -3}
    answer = api.call("POST", "/api/v1/worklist", user="tech", json=body)
    assert answer.status_code == 422
    named = {e["field"] for e in answer.json()["errors"]}
    assert named == {"patient_id", "patient_name", "scheduled_start", "patient_birth_date",
                     "patient_sex", "modality", "duration_minutes", "unknown_field",
                     "patient_weight"}
    assert answer.json()["detail"].startswith("invalid fields: ")
    missing = api.call("POST", "/api/v1/worklist", user="tech", json={"patient_name": NAME})
    assert {e["field"] for e in missing.json()["errors"]} == {"patient_id", "scheduled_start"}
    neither = walk_in()
    del neither["scheduled_station_ae_title"]
    answer = api.call("POST", "/api/v1/worklist", user="tech", json=neither)
    assert {e["field"] for e in answer.json()["errors"]} == {"scheduled_station_ae_title",
                                                              "modality"}
    not_object = api.call("POST", "/api/v1/worklist", user="tech", json=[1, 2])
    assert not_object.status_code == 422
    assert rows(api.engine) == 0
    assert not any("A\\B" in line or "tomorrow" in line for line in api_logs)


def test_a_manual_item_is_changed_and_discontinued_never_deleted(api):
    item = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in()).json()
    path = f"/api/v1/worklist/{item['accession_number']}"
    changed = api.call("PATCH", path, user="tech",
                       json={"study_description": "Phantom QA", "duration_minutes": 30})
    assert changed.status_code == 200
    assert changed.json()["study_description"] == "Phantom QA"
    bad = api.call("PATCH", path, user="tech", json={"patient_id": "", "modality": "%"})
    assert {e["field"] for e in bad.json()["errors"]} == {"patient_id", "modality"}
    gone = api.call("DELETE", path, user="tech", json={"reason": "participant did not come"})
    assert gone.status_code == 200
    assert gone.json()["step_status"] == "DISCONTINUED"
    assert gone.json()["discontinued_reason"] == "participant did not come"
    again = api.call("DELETE", path, user="tech")
    assert again.status_code == 200 and again.json()["discontinued_at"] == gone.json()[
        "discontinued_at"]
    assert api.call("PATCH", path, user="tech", json={"study_description": "x"}).status_code == 409
    assert rows(api.engine) == 1
    history = api.call("GET", f"{path}/history", user="tech").json()["items"]
    assert [(h["event"], h["new_step_status"]) for h in history] == [
        ("insert", "SCHEDULED"), ("update", "SCHEDULED"), ("cancel", "DISCONTINUED")]
    assert history[1]["changed_fields"] == ["duration_minutes", "study_description"]
    assert history[2]["reason"] == "participant did not come"


def test_sync_owned_items_are_409_naming_the_source(api):
    row = insert_item(api.engine, source="mri3t")
    path = f"/api/v1/worklist/{row['accession_number']}"
    for method, body in (("PATCH", {"study_description": "x"}), ("DELETE", None)):
        answer = api.call(method, path, user="tech", json=body)
        assert answer.status_code == 409
        assert answer.json()["source"] == "mri3t"
        assert "data source 'mri3t'" in answer.json()["detail"]
    assert api.call("DELETE", "/api/v1/worklist/0000000000000001", user="tech").status_code == 404


def test_a_scanner_owned_manual_item_is_left_to_the_scanner(api):
    item = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in()).json()
    attrs = mpps_attributes(item["study_instance_uid"], item["accession_number"],
                            item["scheduled_procedure_step_id"])
    assert mpps.create_mpps(api.engine, "1.2.3.4.5.6", attrs, calling_ae_title="MRI3T").ok
    path = f"/api/v1/worklist/{item['accession_number']}"
    answer = api.call("DELETE", path, user="tech")
    assert answer.status_code == 409 and "scanner" in answer.json()["detail"]
    assert api.call("GET", path, user="tech").json()["step_status"] == "IN PROGRESS"


def test_bodies_over_64_kib_are_413(api):
    big = walk_in(patient_comments="x" * (70 * 1024))
    answer = api.call("POST", "/api/v1/worklist", user="tech", json=big)
    assert answer.status_code == 413
    assert answer.json() == {"detail": "the request body is larger than 65536 bytes"}

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"patient_comments": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}'

    streamed = api.call("POST", "/api/v1/worklist", user="tech", data=chunks(),
                        headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert rows(api.engine) == 0


def test_an_internal_error_is_json_without_its_message(api, api_logs, monkeypatch):
    def broken(*_args, **_kw):
        raise ValueError(f"cannot store {NAME} {PATIENT}")

    monkeypatch.setattr(manual, "create_item", broken)
    answer = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in())
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error"}
    assert any("unhandled ValueError in POST /api/v1/worklist" in line for line in api_logs)


def test_cors_is_off_unless_an_origin_is_given(db_url, api_server):
    preflight = {"Origin": "https://ris.example.org", "Access-Control-Request-Method": "GET"}
    closed = api_server(db_url)
    answer = closed.call("OPTIONS", "/api/v1/worklist", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers
    opened = api_server(db_url, cors_origins=("https://ris.example.org",))
    answer = opened.call("OPTIONS", "/api/v1/worklist", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "https://ris.example.org"


def test_no_name_or_patient_id_reaches_the_logs(api, api_logs):
    item = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in()).json()
    acc = item["accession_number"]
    for path in (f"/api/v1/worklist?patient_id={PATIENT}", f"/api/v1/worklist/{PATIENT}",
                 f"/api/v1/worklist/{acc}", f"/?q={NAME}", f"/api/v1/nothing/{PATIENT}"):
        api.call("GET", path, user="tech")
    api.call("PATCH", f"/api/v1/worklist/{acc}", user="tech",
             json={"patient_name": "Zyxwv, Quentina", "patient_id": "A\\" + PATIENT})
    api.call("DELETE", f"/api/v1/worklist/{acc}?reason=ok", user="tech")
    text = "\n".join(api_logs)
    assert '"GET /api/v1/worklist/{accession_number}" 404' in text  # the template, not the ID
    assert '"GET /api/v1/worklist" 200' in text and '"GET (no route)" 404' in text
    for secret in (PATIENT, "Zyxwv", "Quentin"):
        assert secret not in text
    with api.engine.connect() as conn:
        details = conn.scalars(select(WorklistHistory.details)).all()
    assert any("Zyxwv" in json.dumps(d) for d in details)  # history keeps it, logs do not
