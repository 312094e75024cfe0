"""The plugin's fetch against answers shaped as REDCap 15 builds them (narrow `responses` tests).

What a real server does that these tests hold us to (REDCap 15.7's API/record/export.php
and Records::getData / applyFilteringLogic):
- ``fields`` takes variable names: a checkbox option's column (``race___2``) passes the
  API's check but getData drops it, so nothing of it comes back unless ``race`` is asked
  for; ``redcap_data_access_group`` is not a field, ``exportDataAccessGroups`` adds it;
- ``redcap_repeat_instance`` is the PHP array key, so JSON carries a number on an
  instance's row and ``""`` on a non-repeating row; values are strings, non-ASCII text
  escaped (``\\u00e9``), a value keeps the spaces it was saved with;
- a ``filterLogic`` REDCap cannot use is not an error: applyFilteringLogic gives up and
  getData exports every row, so the exact window is the client's to keep.
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import responses

from calpendo_assets.config import parse_config
from calpendo_assets.core.window import Window
from calpendo_assets.sources.redcap.plugin import RedcapPlugin
from calpendo_assets.sources.redcap.request import visit_request

TZ = ZoneInfo("America/Edmonton")
URL = "https://redcap.example.org/api/"
TOKEN = "0123456789ABCDEF0123456789ABCDEF"
WEEK = Window(dt.datetime(2026, 3, 9, tzinfo=TZ), dt.datetime(2026, 3, 17, tzinfo=TZ),
              "America/Edmonton")


def source(field_mapping: dict, **config):
    entry = {"name": "scans", "type": "redcap",
             "config": {"url": URL, "resource": "3T MRI", **config},
             "field_mapping": field_mapping}
    return parse_config({"data_sources": [entry]}, env={})[0]


def row(record: str, instance: int | str = "", instrument: str = "", **values) -> dict:
    """One flat row: the record id, then the structural columns, then the fields."""
    return {"record_id": record, "redcap_repeat_instrument": instrument,
            "redcap_repeat_instance": instance, **values}


def answer(rows: list[dict]) -> None:
    # json.dumps escapes non-ASCII as PHP's json_encode does.
    responses.add(responses.POST, URL, body=json.dumps(rows), status=200,
                  content_type="application/json; charset=utf-8")


def asked() -> list[tuple[str, str]]:
    return parse_qsl(responses.calls[0].request.body, keep_blank_values=True)


def fetch(src, monkeypatch):
    monkeypatch.setenv("REDCAP_API_TOKEN", TOKEN)
    return RedcapPlugin().fetch_entries(src, WEEK)


def test_a_checkbox_column_is_asked_for_by_its_field_and_the_dag_by_its_flag():
    request = visit_request("record_id", ["race___2", "race____1", "redcap_data_access_group",
                                          "dob"], "mri_date", dt.date(2026, 3, 9),
                            dt.date(2026, 3, 17))
    assert request.fields == ("record_id", "race", "dob", "mri_date")
    form = dict(request.form())
    assert form["exportDataAccessGroups"] == "true"
    plain = visit_request("record_id", ["dob"], "mri_date", dt.date(2026, 3, 9),
                          dt.date(2026, 3, 17))
    assert dict(plain.form())["exportDataAccessGroups"] == "false"


@responses.activate
def test_checkbox_options_and_the_dag_reach_the_visit(monkeypatch):
    src = source({"study_id": "patient_id", "race___2": "patient_comments",
                  "redcap_data_access_group": "scheduled_procedure_step_location"})
    answer([
        row("7", study_id="CPIP-1007", race___1="0", race___2="1", mri_date="",
            redcap_data_access_group="calgary"),
        row("7", 1, "mri", study_id="", race___1="", race___2="", mri_date="2026-03-10",
            mri_time="09:30", redcap_data_access_group="calgary"),
    ])
    found = fetch(src, monkeypatch)
    sent = asked()
    assert [v for k, v in sent if k.startswith("fields[")] == [
        "record_id", "study_id", "race", "mri_time", "mri_date"]
    assert ("exportDataAccessGroups", "true") in sent
    [record] = found.bookings
    assert (record["race___2"], record["redcap_data_access_group"]) == ("1", "calgary")


@responses.activate
def test_numbers_for_instances_escaped_text_and_spaces(monkeypatch):
    src = source({"study_id": "patient_id", "last_name": "patient_name"})
    answer([
        row("7", study_id=" CPIP-1007 ", last_name="Bélanger", mri_date=""),
        row("7", 2, "mri", study_id="", last_name="", mri_date=" 2026-03-10 ",
            mri_time=" 9:05 "),
    ])
    found = fetch(src, monkeypatch)
    assert found.complete and found.skipped == {}
    [record] = found.bookings
    assert record["id"] == "7::mri:2"
    assert record["last_name"] == "Bélanger" and record["study_id"] == " CPIP-1007 "
    assert record["dateRange"] == {"start": "2026-03-10 09:05:00"}


@responses.activate
def test_an_unfiltered_answer_still_gives_the_exact_window(monkeypatch):
    """Whole records, every instance: only the visits starting in the window are kept."""
    src = source({"study_id": "patient_id"})
    answer([
        row("7", study_id="CPIP-1007", mri_date=""),
        row("7", 1, "mri", mri_date="2026-03-08", mri_time="23:59"),  # the day before
        row("7", 2, "mri", mri_date="2026-03-09", mri_time="00:00"),  # the first minute
        row("7", 3, "mri", mri_date="2026-03-16", mri_time="23:59"),  # the last minute
        row("7", 4, "mri", mri_date="2026-03-17", mri_time="00:00"),  # the end, excluded
        row("8", study_id="CPIP-1008", mri_date=""),
        row("8", 1, "mri", mri_date="2027-01-01", mri_time="10:00"),
    ])
    found = fetch(src, monkeypatch)
    assert found.complete
    assert sorted(r["id"] for r in found.bookings) == ["7::mri:2", "7::mri:3"]
    assert {r["study_id"] for r in found.bookings} == {"CPIP-1007"}


@responses.activate
def test_a_project_without_repeating_instruments(monkeypatch):
    """No redcap_repeat_* columns at all: with repeat_instrument left at "mri" the dated
    rows are set aside (nothing cancelled), with null each record is the visit."""
    rows = [{"record_id": "7", "study_id": "CPIP-1007", "mri_date": "2026-03-10",
             "mri_time": "09:30"},
            {"record_id": "8", "study_id": "CPIP-1008", "mri_date": "", "mri_time": ""}]
    answer(rows)
    found = fetch(source({"study_id": "patient_id"}), monkeypatch)
    assert not found.complete and found.bookings == []
    assert found.skipped == {"#0": "config.date_field 'mri_date' is filled on a row outside "
                                   "any repeating instrument, but config.repeat_instrument "
                                   "is 'mri'"}
    answer(rows)
    found = fetch(source({"study_id": "patient_id"}, repeat_instrument=None), monkeypatch)
    assert found.complete and [r["id"] for r in found.bookings] == ["7:::"]
