"""mwl-api reading the worklist over a real uvicorn: filters, ordering, paging, one
item, DICOM JSON, history with who changed what, MPPS instances."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pydicom import Dataset

from mwl_service import mpps
from mwl_service.schema import COMPLETED, DISCONTINUED, SourceSyncState, utcnow
from tests.fixtures.api import api_user
from tests.fixtures.dicom import SITE_TZ, insert_item, mpps_attributes

pytestmark = pytest.mark.postgres
TZ = ZoneInfo(SITE_TZ)
# A SOP Class UID for a referenced study (Study Root Query/Retrieve FIND).
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def at(hour: int, minute: int = 0, days: int = 0) -> dt.datetime:
    day = dt.datetime.now(TZ).date() + dt.timedelta(days=days)
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TZ)


@pytest.fixture
def api(db_url, api_server):
    server = api_server(db_url)
    api_user(server.engine, "reader", "read")
    return server


def test_the_list_is_today_active_and_ordered_by_start(api):
    late = insert_item(api.engine, start=at(15), patient_id="LATE1")
    early = insert_item(api.engine, start=at(8), patient_id="EARLY1", source="mri")
    insert_item(api.engine, start=at(9), step_status=DISCONTINUED)
    insert_item(api.engine, start=at(10), step_status=COMPLETED)
    insert_item(api.engine, start=at(9, days=1))
    answer = api.call("GET", "/api/v1/worklist", user="reader")
    assert answer.status_code == 200
    body = answer.json()
    assert body["total"] == 2
    assert [i["patient_id"] for i in body["items"]] == ["EARLY1", "LATE1"]
    item = body["items"][0]
    assert item["accession_number"] == early["accession_number"]
    assert item["scheduled_start"] == at(8).isoformat()  # the site's offset
    assert item["source"] == "mri" and item["booking_id"] == early["booking_id"]
    assert item["step_status"] == "SCHEDULED" and item["patient_weight"] is None
    for internal in ("content_hash", "id", "step_status_owner", "scheduled_start_utc"):
        assert internal not in item
    assert body["items"][1]["study_instance_uid"] == late["study_instance_uid"]


def test_filters_paging_and_other_days(api):
    insert_item(api.engine, start=at(8), scheduled_station_ae_title="MRI3T\\MRI3T_B")
    insert_item(api.engine, start=at(9), scheduled_station_ae_title="EEGLAB", source="eeg")
    insert_item(api.engine, start=at(10), patient_id="P-FIND", source="eeg")
    insert_item(api.engine, start=at(11), step_status=COMPLETED, patient_id="P-DONE")
    tomorrow = insert_item(api.engine, start=at(7, days=1), patient_id="P-TOMORROW")

    def ids(query: str) -> list[str]:
        answer = api.call("GET", f"/api/v1/worklist?{query}", user="reader")
        assert answer.status_code == 200, answer.text
        return [i["patient_id"] for i in answer.json()["items"]]

    assert len(ids("station=MRI3T_B")) == 1
    assert len(ids("source=eeg")) == 2
    assert ids("patient_id=P-FIND") == ["P-FIND"]
    assert ids("status=completed") == ["P-DONE"]
    day = (dt.datetime.now(TZ).date() + dt.timedelta(days=1)).isoformat()
    assert ids(f"date={day}") == [tomorrow["patient_id"]]
    page = api.call("GET", "/api/v1/worklist?limit=2&offset=1", user="reader").json()
    assert page["total"] == 3 and len(page["items"]) == 2  # COMPLETED is not offered


def test_bad_query_values_are_422_naming_them(api):
    bad_date = api.call("GET", "/api/v1/worklist?date=31.12.2026", user="reader")
    bad_status = api.call("GET", "/api/v1/worklist?status=DONE", user="reader")
    bad_limit = api.call("GET", "/api/v1/worklist?limit=0", user="reader")
    assert bad_date.status_code == bad_status.status_code == bad_limit.status_code == 422
    assert bad_date.json()["errors"][0]["field"] == "date"
    assert bad_status.json()["errors"][0]["field"] == "status"
    assert bad_limit.json()["errors"][0]["field"] == "limit"
    assert "31.12.2026" not in bad_limit.text


def test_one_item_and_404(api):
    row = insert_item(api.engine, start=at(9), patient_weight="72.5", pregnancy_status=2)
    answer = api.call("GET", f"/api/v1/worklist/{row['accession_number']}", user="reader")
    assert answer.status_code == 200
    assert answer.json()["patient_weight"] == 72.5 and answer.json()["pregnancy_status"] == 2
    missing = api.call("GET", "/api/v1/worklist/0000000000000000", user="reader")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no worklist item with accession number 0000000000000000"}


def test_dicom_json_is_what_a_c_find_of_every_key_answers(api):
    row = insert_item(api.engine, start=at(9, 30), patient_name="Müller^Jürgen",
                      patient_weight="80", scheduled_station_ae_title="MRI3T",
                      referenced_studies=f"{STUDY_ROOT_FIND}\\1.2.3.4")
    answer = api.call("GET", "/api/v1/worklist", user="reader",
                      headers={"Accept": "application/dicom+json"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/dicom+json")
    assert answer.headers["X-Total-Count"] == "1"
    (found,) = answer.json()
    ds = Dataset.from_json(found)
    assert ds.PatientName == "Müller^Jürgen" and ds.PatientID == row["patient_id"]
    assert ds.AccessionNumber == row["accession_number"] and ds.PatientWeight == 80
    step = ds.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "MRI3T" and step.Modality == "MR"
    assert step.ScheduledProcedureStepStartDate == row["scheduled_start_date"]
    assert step.ScheduledProcedureStepStartTime == "093000"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    (study,) = ds.ReferencedStudySequence
    assert (study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID) == (
        STUDY_ROOT_FIND, "1.2.3.4")
    offset = at(9, 30).astimezone(TZ).strftime("%z")
    assert ds.TimezoneOffsetFromUTC == offset  # the site zone at the item's own start
    one = api.call("GET", f"/api/v1/worklist/{row['accession_number']}", user="reader",
                   headers={"Accept": "application/dicom+json"})
    assert Dataset.from_json(one.json()).StudyInstanceUID == row["study_instance_uid"]


def test_history_says_who_changed_what(api, db_url):
    row = insert_item(api.engine, start=at(9), source="mri")
    attrs = mpps_attributes(row["study_instance_uid"], row["accession_number"],
                            row["scheduled_procedure_step_id"])
    assert mpps.create_mpps(api.engine, "1.2.826.0.1.3680043.2.1125.7", attrs,
                            calling_ae_title="MRI3T").ok
    answer = api.call("GET", f"/api/v1/worklist/{row['accession_number']}/history",
                      user="reader")
    assert answer.status_code == 200
    (entry,) = answer.json()["items"]
    assert entry["changed_by"] == "mpps:MRI3T" and entry["event"] == "mpps_create"
    assert (entry["old_step_status"], entry["new_step_status"]) == ("SCHEDULED", "IN PROGRESS")
    changed = dt.datetime.fromisoformat(entry["changed_at"])
    assert changed.utcoffset() == changed.astimezone(TZ).utcoffset()  # the site's offset
    assert abs(changed - utcnow()) < dt.timedelta(minutes=1)
    mpps_list = api.call("GET", "/api/v1/mpps", user="reader").json()
    (instance,) = mpps_list["items"]
    assert instance["status"] == "IN PROGRESS" and instance["calling_ae_title"] == "MRI3T"
    assert instance["item"] == {"accession_number": row["accession_number"], "source": "mri",
                                "booking_id": row["booking_id"], "step_status": "IN PROGRESS"}
    assert instance["performed"]["performed_procedure_step_id"] == "PPS1"
    assert "Doe" not in str(mpps_list)  # no names from the stored MPPS attributes


def test_health_reports_each_sources_last_publish(api):
    published = utcnow() - dt.timedelta(minutes=5)
    with api.engine.begin() as conn:
        conn.execute(SourceSyncState.__table__.insert().values(
            source="mri", last_fetched_at=published, last_published_at=published,
            last_run_id="r1"))
    answer = api.call("GET", "/api/v1/health")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["database"], body["schema"]) == ("ok", "ok", "current")
    (source,) = body["sources"]
    assert source["name"] == "mri" and 290 < source["age_seconds"] < 400
    assert dt.datetime.fromisoformat(source["last_published_at"]) == published.replace(
        microsecond=published.microsecond)
