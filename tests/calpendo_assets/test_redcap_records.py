"""REDCap visits as records, and those records through the shared mapping step (pure).

The visits here are what `merge_visits` makes of an export (flat dicts with their
booking id); the rows are what `bookings_to_rows` makes of the plugin's records, the
same step every source type goes through.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from calpendo_assets.config import parse_config
from calpendo_assets.core.window import Window
from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.sources.redcap.records import visit_start, window_records
from mwl_service.schema import DISCONTINUED, SCHEDULED

TZ = ZoneInfo("America/Edmonton")
URL = "https://redcap.example.org/api/"


def source(config=None, field_mapping=None, name="scans"):
    entry = {"name": name, "type": "redcap", "config": {"url": URL, **(config or {})},
             "field_mapping": field_mapping or {"study_id": "patient_id"}}
    return parse_config({"data_sources": [entry]}, env={})[0]


def window(first: dt.date, days: int) -> Window:
    start = dt.datetime.combine(first, dt.time(0), TZ)
    return Window(start, dt.datetime.combine(first + dt.timedelta(days=days), dt.time(0), TZ),
                  "America/Edmonton")


WEEK = window(dt.date(2026, 3, 9), 8)


def visit(instance=1, date="2026-03-10", time="09:30", **fields) -> dict:
    return {"id": f"7::mri:{instance}", "record_id": "7", "redcap_event_name": "",
            "redcap_repeat_instrument": "mri", "redcap_repeat_instance": instance,
            "study_id": "CPIP-1007", "mri_date": date, "mri_time": time, **fields}


def records(src, visits, win=WEEK):
    return window_records(visits, src.settings, win, src.name)


def test_a_visit_becomes_a_record_of_its_fields_and_the_shared_keys():
    src = source({"resource": "3T MRI", "status_field": "mri_status",
                  "status_mapping": {"3": "CANCELLED", "2": "EXCLUDED"}})
    found = records(src, [visit(status="x", mri_status="1", mri_wt_lbs="165")])
    [record] = found.records
    assert found.skipped == {}
    assert record["id"] == "7::mri:1" and record["study_id"] == "CPIP-1007"
    assert record["dateRange"] == {"start": "2026-03-10 09:30:00"}
    assert (record["durationInMinutes"], record["resource"], record["mri_wt_lbs"]) == (
        60, {"name": "3T MRI"}, "165")
    # The plugin's own keys win over REDCap fields of the same name.
    assert (record["status"], record["cancelled"]) == ("SCHEDULED", False)
    assert "cancellationReason" not in record


@pytest.mark.parametrize("raw, state", [
    ("1", "SCHEDULED"), ("3", "CANCELLED"), (" 3 ", "CANCELLED"), ("2", "EXCLUDED"),
    ("", "SCHEDULED"), (None, "SCHEDULED"), ("9", "SCHEDULED"), ("no-show", "EXCLUDED"),
])
def test_status_mapping(raw, state):
    src = source({"status_field": "mri_status",
                  "status_mapping": {"3": "CANCELLED", "2": "EXCLUDED", "No-Show": "EXCLUDED"}})
    [record] = records(src, [visit(mri_status=raw)]).records
    assert record["status"] == state and record["cancelled"] == (state == "CANCELLED")
    if state == "CANCELLED":
        assert record["cancellationReason"] == f"REDCap mri_status = {raw.strip()}"


def test_without_a_status_field_every_visit_is_scheduled():
    [record] = records(source(), [visit(mri_status="3")]).records
    assert record["status"] == "SCHEDULED"


def test_duration_and_resource_fields():
    src = source({"duration_field": "mri_minutes", "duration_minutes": 45,
                  "resource_field": "mri_scanner"})
    found = records(src, [visit(1, mri_minutes="90", mri_scanner="1"),
                          visit(2, mri_minutes="", mri_scanner="2"),
                          visit(3, mri_minutes="1h", mri_scanner="1"),
                          visit(4, mri_scanner="")])
    assert [(r["durationInMinutes"], r["resource"]["name"]) for r in found.records] == [
        (90, "1"), (45, "2"), (45, "1")]
    # A visit without a scanner is set aside (kept as it was), named by its id only.
    assert found.skipped == {"7::mri:4": "config.resource_field 'mri_scanner' is blank"}
    # No resource configured: the source's name (its AE title follows from it).
    [record] = records(source(name="cpip_redcap"), [visit()]).records
    assert record["resource"] == {"name": "cpip_redcap"}


def test_the_exact_window_is_applied_here():
    src = source()
    found = records(src, [visit(1, "2026-03-09", "00:00"), visit(2, "2026-03-16", "23:59"),
                          visit(3, "2026-03-17", "00:00"), visit(4, "2026-03-08", "23:30"),
                          visit(5, "2026-03-12", "")])
    assert [r["id"] for r in found.records] == ["7::mri:1", "7::mri:2", "7::mri:5"]
    # Dated without a readable time: a record without a start ("no start time" later).
    assert "dateRange" not in found.records[2]
    # A date and time in one field: the export's day filter is widened, the window is not.
    src = source({"date_field": "scan_at", "time_field": None})
    visits = [{**visit(1), "scan_at": "2026-03-16 23:00"}, {**visit(2), "scan_at": "2026-03-09 07:15:30"},
              {**visit(3), "scan_at": "2026-03-17 00:30"}]
    found = records(src, visits, window(dt.date(2026, 3, 9), 8))
    assert [r["dateRange"]["start"] for r in found.records] == [
        "2026-03-16 23:00:00", "2026-03-09 07:15:30"]


def test_an_unreadable_date_is_set_aside_without_its_value():
    src = source()
    found = records(src, [visit(1, "10/03/2026"), visit(2, "2026-02-30")])
    assert found.records == []
    assert found.skipped == {"7::mri:1": "config.date_field 'mri_date' is not a date (YYYY-MM-DD)",
                             "7::mri:2": "config.date_field 'mri_date' is not a date (YYYY-MM-DD)"}
    assert visit_start(visit(time="25:00"), src.settings) == (dt.date(2026, 3, 10), None)


def rows_of(src, visits, win=WEEK):
    found = records(src, visits, win)
    return bookings_to_rows(found.records, src, skipped=found.skipped)


def test_local_times_across_dst_changes():
    src = source()
    spring = window(dt.date(2026, 3, 7), 3)
    result = rows_of(src, [visit(1, "2026-03-07", "10:00"), visit(2, "2026-03-08", "02:30"),
                           visit(3, "2026-03-08", "10:00")], spring)
    frame = result.frame.set_index("booking_id")
    assert frame.loc["7::mri:1", "scheduled_start_utc"] == dt.datetime(2026, 3, 7, 17, tzinfo=dt.UTC)
    # 02:30 does not exist on the spring-forward day: 03:30 MDT, with a warning.
    assert (frame.loc["7::mri:2", "scheduled_start_time"],
            frame.loc["7::mri:2", "scheduled_start_utc"]) == (
        "033000", dt.datetime(2026, 3, 8, 9, 30, tzinfo=dt.UTC))
    assert frame.loc["7::mri:3", "scheduled_start_utc"] == dt.datetime(2026, 3, 8, 16, tzinfo=dt.UTC)
    assert any("7::mri:2" in w and "DST gap" in w for w in result.warnings)
    fall = rows_of(src, [visit(1, "2026-11-01", "01:30")], window(dt.date(2026, 11, 1), 1))
    [row] = fall.frame.to_dict("records")
    assert (row["scheduled_start_date"], row["scheduled_start_time"]) == ("20261101", "013000")
    assert row["scheduled_start_utc"] == dt.datetime(2026, 11, 1, 7, 30, tzinfo=dt.UTC)


def test_weights_in_pounds_are_served_in_kilograms():
    by_units = source({"units": {"patient_weight": "lb"}},
                      {"study_id": "patient_id", "mri_wt_lbs": "patient_weight"})
    by_column = source(field_mapping={"study_id": "patient_id", "mri_wt_lbs": "patient_weight_lb"})
    for src in (by_units, by_column):
        result = rows_of(src, [visit(1, mri_wt_lbs="165"), visit(2, mri_wt_lbs="165 lb"),
                               visit(3, mri_wt_lbs="70 kg"), visit(4)])
        weights = dict(zip(result.frame.booking_id, result.frame.patient_weight))
        assert weights == {"7::mri:1": "74.8", "7::mri:2": "74.8", "7::mri:3": "70",
                           "7::mri:4": ""}  # no weight: empty, never a default


def test_cancelled_and_excluded_visits():
    src = source({"status_field": "mri_status",
                  "status_mapping": {"3": "CANCELLED", "2": "EXCLUDED"}})
    result = rows_of(src, [visit(1, mri_status="1"), visit(2, mri_status="3"),
                           visit(3, mri_status="2")])
    frame = result.frame.set_index("booking_id")
    assert frame.loc["7::mri:1", "step_status"] == SCHEDULED
    assert frame.loc["7::mri:2", "step_status"] == DISCONTINUED
    assert frame.loc["7::mri:2", "discontinued_reason"].endswith(": REDCap mri_status = 3")
    assert "7::mri:3" not in frame.index and result.excluded == {"status not in filter": 1}


def test_pylantir_identifiers_from_a_pylantir_config():
    src = source({"site_id": "792", "protocol": "BRAIN_MRI_3T"},
                 {"study_id": "study_id", "mri_instance": "session_id", "family_id": "family_id"})
    result = rows_of(src, [visit(2, family_id="FAM-0412", mri_instance="2"),
                           visit(3, family_id="", mri_instance="3")])
    frame = result.frame.set_index("booking_id")
    assert (frame.loc["7::mri:2", "patient_id"], frame.loc["7::mri:2", "patient_name"]) == (
        "sub_1007_ses_2_fam_0412", "cpip-id-1007^fa-0412")
    assert frame.loc["7::mri:2", "scheduled_procedure_step_description"] == "BRAIN_MRI_3T"
    # Pylantir made "sub_1007_ses_3_fam_" of a record without a family: here it is not
    # published (a half identifier names nobody), with a warning naming the visit.
    assert frame.loc["7::mri:3", "skip_reason"] == "no patient ID"
    assert "booking 7::mri:3: patient_id template: no value for {family}; left empty" in result.warnings
