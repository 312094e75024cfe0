"""The REDCap simulator against the API subset it promises (README, "The REDCap simulator").

Everything except the pure logic-parser tests goes through a real server on 127.0.0.1
and real HTTP (requests), form-encoded POSTs as REDCap clients send them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from calpendo_sim.redcap import DEMO_TOKEN, Project, RedcapSimulator, RowKey, generate_rows
from calpendo_sim.redcap.logic import LogicError, evaluate, parse
from calpendo_sim.redcap.project import METADATA_KEYS
from tests.fixtures.redcap_sim import REDCAP_RECORDS, REDCAP_TODAY, REDCAP_TOKEN, REDCAP_VISITS

NO_PERMISSION = "You do not have permissions to use the API"
STRUCTURAL = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
WINDOW = ("2026-03-09", "2026-03-17")  # [today - 1, today + 7)
IN_WINDOW = f"[mri_date] >= '{WINDOW[0]}' and [mri_date] < '{WINDOW[1]}'"


# --------------------------------------------------------------------------- helpers


def post(sim: RedcapSimulator, data, token: str | None = REDCAP_TOKEN) -> requests.Response:
    pairs = list(data.items()) if isinstance(data, dict) else list(data)
    if token is not None:
        pairs.insert(0, ("token", token))
    return requests.post(sim.url, data=pairs, timeout=10)


def export(sim: RedcapSimulator, *pairs: tuple[str, str], fields: tuple[str, ...] = (),
           **params: str) -> list[dict]:
    data = [("content", "record"), ("format", "json"), ("type", "flat"),
            *((f"fields[{i}]", name) for i, name in enumerate(fields)), *pairs,
            *params.items()]
    response = post(sim, data)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return response.json()


def error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["error"]


def keys_of(rows: list[dict]) -> list[tuple]:
    return [(r["record_id"], r.get("redcap_event_name", ""), r.get("redcap_repeat_instrument", ""),
             r.get("redcap_repeat_instance", "")) for r in rows]


def visit_dates(sim: RedcapSimulator) -> dict[RowKey, str]:
    return {key: values["mri_date"] for key, values in sim.visits()}


# --------------------------------------------------------------------------- token, errors


def test_version_is_plain_text(redcap_sim):
    response = post(redcap_sim, {"content": "version"})
    assert response.status_code == 200
    assert response.text == "15.7.6"
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"


@pytest.mark.parametrize("token", [None, "", "0" * 32, DEMO_TOKEN, REDCAP_TOKEN[:-1],
                                   REDCAP_TOKEN + "0", f"{REDCAP_TOKEN}'--"])
def test_a_bad_or_missing_token_is_403_whatever_else_is_asked(redcap_sim, token):
    response = post(redcap_sim, {"content": "record", "format": "json"}, token=token)
    assert error(response, 403) == NO_PERMISSION
    assert response.text == '{"error":"You do not have permissions to use the API"}'
    # The token is checked before the content: an invalid content is still a 403.
    assert error(post(redcap_sim, {"content": "nonsense", "format": "json"}, token), 403)


def test_error_bodies_follow_return_format_then_format_then_xml(redcap_sim):
    xml = post(redcap_sim, {"content": "version"}, token="wrong")
    assert xml.status_code == 403
    assert xml.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert xml.text == ('<?xml version="1.0" encoding="UTF-8" ?><hash><error>'
                        f"{NO_PERMISSION}</error></hash>")
    csv = post(redcap_sim, {"content": "record", "format": "json", "returnFormat": "csv"},
               token="wrong")
    assert (csv.status_code, csv.text) == (403, f"ERROR: {NO_PERMISSION}")
    as_json = post(redcap_sim, {"content": "record", "format": "xml", "returnFormat": "json"},
                   token="wrong")
    assert error(as_json, 403) == NO_PERMISSION


def test_only_post_on_the_api_path(redcap_sim):
    response = requests.get(redcap_sim.url, params={"token": REDCAP_TOKEN}, timeout=10)
    assert response.status_code == 501
    assert "The requested method is not implemented." in response.text
    elsewhere = requests.post(redcap_sim.url.replace("/api/", "/apx/"),
                              data={"token": REDCAP_TOKEN, "content": "version"}, timeout=10)
    assert elsewhere.status_code == 404


def test_content_errors_and_read_only_rights(redcap_sim):
    bad = post(redcap_sim, {"content": "recrod", "format": "json"})
    assert error(bad, 400) == 'The value of the parameter "content" is not valid'
    assert "content=event" in error(post(redcap_sim, {"content": "event", "format": "json"}), 400)
    imported = post(redcap_sim, {"content": "record", "format": "json", "data": "[]"})
    assert error(imported, 403) == "You do not have API Import/Update privileges"


# --------------------------------------------------------------------------- project, metadata


def test_project_information(redcap_sim_factory):
    classic = post(redcap_sim_factory(), {"content": "project", "format": "json"}).json()
    longitudinal = post(redcap_sim_factory(longitudinal=True, repeating=False),
                        {"content": "project", "format": "json"}).json()
    assert len(classic) == 26 and classic["project_id"] == 1402
    assert (classic["is_longitudinal"], classic["has_repeating_instruments_or_events"]) == (0, 1)
    assert (longitudinal["is_longitudinal"],
            longitudinal["has_repeating_instruments_or_events"]) == (1, 0)
    assert classic["project_title"] == "Youth Brain Imaging Study (simulated)"


def test_metadata_is_the_data_dictionary(redcap_sim):
    rows = post(redcap_sim, {"content": "metadata", "format": "json"}).json()
    assert all(list(row) == list(METADATA_KEYS) for row in rows)
    by_name = {row["field_name"]: row for row in rows}
    assert by_name["mri_date"]["form_name"] == "mri"
    assert by_name["mri_date"]["text_validation_type_or_show_slider_number"] == "date_ymd"
    assert by_name["last_name"]["identifier"] == "y"
    assert by_name["demo_sex"]["select_choices_or_calculations"] == "1, Male | 2, Female | 3, Other"
    some = post(redcap_sim, {"content": "metadata", "format": "json", "fields[0]": "dob",
                             "fields[1]": "mri_time"}).json()
    assert [row["field_name"] for row in some] == ["dob", "mri_time"]


# --------------------------------------------------------------------------- flat export


def test_an_export_without_fields_has_every_field_on_every_row(redcap_sim):
    rows = export(redcap_sim)
    every = Project().export_fields()
    assert rows and all(list(row) == [every[0], *STRUCTURAL[1:], *every[1:]] for row in rows)
    participant = [r for r in rows if r["redcap_repeat_instrument"] == ""]
    visits = [r for r in rows if r["redcap_repeat_instrument"] == "mri"]
    assert len(participant) == REDCAP_RECORDS and len(visits) == REDCAP_VISITS
    assert all(r["redcap_repeat_instance"] == "" and r["mri_date"] == "" and r["dob"]
               for r in participant)
    assert all(isinstance(r["redcap_repeat_instance"], int) and r["dob"] == "" for r in visits)
    assert all(r["mri_complete"] in ("0", "2") and r["participant_complete"] == "" for r in visits)


def test_fields_as_an_array_or_comma_separated_come_in_dictionary_order(redcap_sim):
    as_array = export(redcap_sim, fields=("mri_time", "record_id", "dob"))
    as_text = export(redcap_sim, ("fields", "mri_time, record_id,dob"))
    assert as_array == as_text
    assert list(as_array[0]) == ["record_id", *STRUCTURAL[1:], "dob", "mri_time"]


def test_the_structural_columns_come_only_with_the_record_id(redcap_sim):
    rows = export(redcap_sim, fields=("mri_date",))
    assert all(list(row) == ["mri_date"] for row in rows)
    assert len(rows) == len(visit_dates(redcap_sim))  # only rows holding a requested value


def test_unknown_fields_events_and_forms_are_400_naming_them(redcap_sim_factory):
    classic, longitudinal = redcap_sim_factory(), redcap_sim_factory(longitudinal=True)
    base = {"content": "record", "format": "json"}
    fields = post(classic, {**base, "fields[0]": "record_id", "fields[1]": "nope",
                            "fields[2]": "redcap_event_name"})
    assert error(fields, 400) == ("The following values in the parameter \"fields\" are not "
                                  "valid: 'nope', 'redcap_event_name'")
    events = post(longitudinal, {**base, "events[0]": "t1_arm_1", "events[1]": "t9_arm_1"})
    assert error(events, 400) == ("The following values in the parameter \"events\" are not "
                                  "valid: 't9_arm_1'")
    forms = post(classic, {**base, "forms[0]": "scans"})
    assert "\"forms\" are not valid: 'scans'" in error(forms, 400)
    assert error(post(classic, {**base, "type": "eav"}), 400)
    assert post(classic, {**base, "events[0]": "t9_arm_1"}).status_code == 200  # classic: ignored


def test_raw_or_label(redcap_sim):
    raw = export(redcap_sim, fields=("record_id", "demo_sex", "mri_status"))
    labels = export(redcap_sim, fields=("record_id", "demo_sex", "mri_status"), rawOrLabel="label")
    assert {r["demo_sex"] for r in raw} - {""} <= {"1", "2", "3"}
    assert {r["demo_sex"] for r in labels} - {""} <= {"Male", "Female", "Other"}
    assert "Scheduled" in {r["mri_status"] for r in labels}


def test_records_parameter(redcap_sim):
    rows = export(redcap_sim, ("records[0]", "2"), ("records[1]", "5"), fields=("record_id",))
    assert {row["record_id"] for row in rows} == {"2", "5"}


# --------------------------------------------------------------------------- filterLogic


def test_a_filter_on_the_visit_date_drops_the_non_repeating_rows(redcap_sim):
    fields = ("record_id", "dob", "mri_date")
    rows = export(redcap_sim, fields=fields, filterLogic=IN_WINDOW)
    expected = {key for key, day in visit_dates(redcap_sim).items() if WINDOW[0] <= day < WINDOW[1]}
    assert set(keys_of(rows)) == {(k.record, "", k.instrument, k.instance) for k in expected}
    assert expected and all(row["dob"] == "" for row in rows)  # no participant data at all


def test_admitting_the_blank_date_brings_the_non_repeating_rows_back(redcap_sim):
    rows = export(redcap_sim, fields=("record_id", "dob", "mri_date", "mri_status"),
                  filterLogic=f"({IN_WINDOW}) or [mri_date] = ''")
    participants = [r for r in rows if r["redcap_repeat_instrument"] == ""]
    visits = [r for r in rows if r["redcap_repeat_instrument"] == "mri"]
    assert len(participants) == REDCAP_RECORDS and all(r["dob"] for r in participants)
    undated = [k for k, v in redcap_sim.store.rows() if k.instrument and not v["mri_date"]]
    in_window = [d for d in visit_dates(redcap_sim).values() if WINDOW[0] <= d < WINDOW[1]]
    assert undated, "the seed plans some visits without a date"
    assert len(visits) == len(in_window) + len(undated)
    # An instance row exists only where a requested field holds a value: without
    # mri_status, the undated visits have nothing to show and are left out.
    dates_only = export(redcap_sim, fields=("record_id", "mri_date"),
                        filterLogic=f"({IN_WINDOW}) or [mri_date] = ''")
    assert len([r for r in dates_only if r["redcap_repeat_instance"]]) == len(in_window)


@pytest.mark.parametrize("logic, expected", [
    ("[mri_date] = '2026-03-10'", lambda d: d == "2026-03-10"),
    ("[mri_date] <> '2026-03-10' and [mri_date] <> ''", lambda d: d not in ("2026-03-10", "")),
    ("[mri_date] != '2026-03-10' AND [mri_date] != ''", lambda d: d not in ("2026-03-10", "")),
    ("[mri_date] < '2026-03-10'", lambda d: d < "2026-03-10"),  # blank sorts first, as in PHP
    ("[mri_date] <= '2026-03-10' and [mri_date] > ''", lambda d: "" < d <= "2026-03-10"),
    ("[mri_date] >= '2026-03-12' or ([mri_date] = \"2026-03-10\")",
     lambda d: d >= "2026-03-12" or d == "2026-03-10"),
    ("([mri_date] > '2026-03-09') && ([mri_date] < '2026-03-11' || [mri_date] = '')",
     lambda d: "2026-03-09" < d < "2026-03-11"),
])
def test_comparisons_are_evaluated_on_each_visit_row(redcap_sim, logic, expected):
    rows = export(redcap_sim, fields=("record_id", "mri_date", "mri_status"), filterLogic=logic)
    got = {(r["record_id"], r["redcap_repeat_instance"]) for r in rows if r["redcap_repeat_instance"]}
    wanted = {(k.record, k.instance) for k, values in redcap_sim.store.rows()
              if k.instrument and expected(values["mri_date"])}
    assert got == wanted and wanted


def test_numbers_compare_as_numbers_and_participant_fields_reach_visit_rows(redcap_sim):
    record = redcap_sim.add_participant(mri_wt_lbs="99.5", demo_sex="3")
    key = redcap_sim.add_visit(record)
    rows = export(redcap_sim, fields=("record_id", "mri_wt_lbs"),
                  filterLogic="[mri_wt_lbs] < 100 and [demo_sex] = '3'")
    assert (record, "", "", "") in keys_of(rows)  # '99.5' < '100' as text would be false
    visit_rows = export(redcap_sim, fields=("record_id", "mri_date"),
                        filterLogic=f"[demo_sex] = '3' and [record_id] = '{record}' and "
                                    "[mri_date] <> ''")
    assert keys_of(visit_rows) == [(record, "", "mri", key.instance)]


@pytest.mark.parametrize("logic", ["[mri_date] >= 2026-03-09", "[mri_date] >=", "[mri_date]",
                                   "([mri_date] = '')", "[mri_date] = 'x' and", "[mri_date] =< ''",
                                   "[mri_date] = 'unterminated", "([mri_date] = ''",
                                   "[no_such_field] = ''", "[t1_arm_1][mri_date] = ''"])
def test_bad_filter_logic_is_400(redcap_sim, logic):
    response = post(redcap_sim, {"content": "record", "format": "json", "filterLogic": logic})
    if logic == "([mri_date] = '')":  # the one valid expression here
        assert response.status_code == 200
        return
    assert error(response, 400).startswith('The value of the parameter "filterLogic" is not valid')


def test_logic_parser_unit():
    tree = parse("[a] = '1' or [b] > 2 and ([c] <> '' or [e1][d] <= '0')")
    values = {"a": "0", "b": "3", "c": "", "d": "-1"}
    assert evaluate(tree, lambda ref: values[ref.field]) is True
    values["d"] = "1"
    assert evaluate(tree, lambda ref: values[ref.field]) is False
    for bad in ("", "[a] = '1' '2'", "[a] ~ 1", "1"):
        with pytest.raises(LogicError):
            parse(bad)


# --------------------------------------------------------------------------- events


def test_longitudinal_rows_carry_the_event_and_events_select(redcap_sim_factory):
    sim = redcap_sim_factory(longitudinal=True)
    rows = export(sim, fields=("record_id", "dob", "mri_date"))
    assert {r["redcap_event_name"] for r in rows} <= {"baseline_arm_1", "t1_arm_1", "t2_arm_1",
                                                      "t3_arm_1"}
    assert all(bool(r["dob"]) == (r["redcap_event_name"] == "baseline_arm_1") for r in rows)
    assert all(r["mri_date"] == "" for r in rows if r["redcap_repeat_instrument"] == "")
    only = export(sim, ("events[0]", "t2_arm_1"), fields=("record_id", "mri_date"))
    assert only and {r["redcap_event_name"] for r in only} == {"t2_arm_1"}
    explicit = export(sim, fields=("record_id", "dob"),
                      filterLogic=f"[baseline_arm_1][dob] = '{rows[0]['dob']}'")
    assert {r["record_id"] for r in explicit} == {rows[0]["record_id"]}


def test_record_event_visits_without_repetition(redcap_sim_factory):
    sim = redcap_sim_factory(longitudinal=True, repeating=False, records=6, visits=10)
    rows = export(sim, fields=("record_id", "mri_date"), filterLogic="[mri_date] <> ''")
    assert len(rows) == 10 and all(list(r) == ["record_id", "redcap_event_name", "mri_date"]
                                   for r in rows)
    assert {sim.booking_id(k) for k, _ in sim.visits()} == {
        f"{r['record_id']}:{r['redcap_event_name']}::" for r in rows}
    first = sim.visits()[0][0].record  # [record_id] reads on every event, not only baseline
    own = export(sim, fields=("record_id", "mri_date"),
                 filterLogic=f"[record_id] = '{first}' and [mri_date] <> ''")
    assert own and {r["record_id"] for r in own} == {first}
    assert len(own) == len([k for k, _ in sim.visits() if k.record == first])
    with pytest.raises(ValueError, match="do not fit"):
        RedcapSimulator(records=2, visits=3, repeating=False)


# --------------------------------------------------------------------------- edits while running


def test_add_move_cancel_delete_while_serving(redcap_sim):
    key = redcap_sim.add_visit(date=dt.date(2026, 3, 12), time="14:30", mri_protocol="QA")
    assert redcap_sim.booking_id(key) == f"{key.record}::mri:1"
    pick = lambda: [r for r in export(redcap_sim, fields=("record_id", "mri_date", "mri_time",  # noqa: E731
                                                          "mri_status", "mri_protocol"))
                    if (r["record_id"], r["redcap_repeat_instance"]) == (key.record, key.instance)]
    assert [(r["mri_date"], r["mri_time"], r["mri_status"]) for r in pick()] == [
        ("2026-03-12", "14:30", "1")]
    redcap_sim.move_visit(key, dt.date(2026, 3, 20))
    assert pick()[0]["mri_date"] == "2026-03-20" and pick()[0]["mri_time"] == "14:30"
    redcap_sim.move_visit(key, "2026-03-11", dt.time(7, 45))
    assert (pick()[0]["mri_date"], pick()[0]["mri_time"]) == ("2026-03-11", "07:45")
    redcap_sim.cancel_visit(key)
    assert pick()[0]["mri_status"] == "3"
    redcap_sim.delete_visit(key)
    assert pick() == []
    redcap_sim.delete_record(key.record)
    assert key.record not in {r["record_id"] for r in export(redcap_sim, fields=("record_id",))}


def test_date_range_selects_records_by_modification_time(redcap_sim):
    time.sleep(1.1)  # the seed's records were saved over a second before `before`
    before = dt.datetime.now(redcap_sim.zone).replace(tzinfo=None, microsecond=0)
    redcap_sim.update_visit(redcap_sim.visits()[-1][0], mri_notes="moved by phone")
    rows = export(redcap_sim, fields=("record_id",), dateRangeBegin=f"{before:%Y-%m-%d %H:%M:%S}")
    assert {r["record_id"] for r in rows} == {redcap_sim.visits()[-1][0].record}


# --------------------------------------------------------------------------- instrumentation


def test_requests_are_counted_and_logged_without_the_token(redcap_sim):
    redcap_sim.reset_counts()
    post(redcap_sim, {"content": "version"})
    export(redcap_sim, fields=("record_id",), filterLogic="[mri_date] = ''")
    post(redcap_sim, {"content": "record"}, token="bad")
    assert redcap_sim.request_count == 3
    records = redcap_sim.record_requests()
    assert [r.status for r in records] == [200, 403]
    assert records[0].params.get("filterLogic") == "[mri_date] = ''"
    assert records[0].params.array("fields") == ["record_id"]
    assert all("token" not in r.params.names() for r in redcap_sim.requests)


def test_injected_failures_latency_and_stop(redcap_sim):
    redcap_sim.fail_requests(503, count=1)
    assert post(redcap_sim, {"content": "version"}).status_code == 503
    assert post(redcap_sim, {"content": "version"}).status_code == 200
    redcap_sim.fail_requests(400, count=None, body='{"error":"boom"}',
                             content_type="application/json")
    assert error(post(redcap_sim, {"content": "version"}), 400) == "boom"
    redcap_sim.clear_failures()
    redcap_sim.latency = 0.3
    started = time.monotonic()
    post(redcap_sim, {"content": "version"})
    assert time.monotonic() - started >= 0.3
    url = redcap_sim.url
    redcap_sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data={"token": REDCAP_TOKEN, "content": "version"}, timeout=5)


# --------------------------------------------------------------------------- seed


def test_the_seed_is_deterministic_and_realistic():
    rows = generate_rows(Project(), REDCAP_RECORDS, REDCAP_VISITS, 42, REDCAP_TODAY)
    assert rows == generate_rows(Project(), REDCAP_RECORDS, REDCAP_VISITS, 42, REDCAP_TODAY)
    assert rows != generate_rows(Project(), REDCAP_RECORDS, REDCAP_VISITS, 43, REDCAP_TODAY)
    visits = [values for key, values in rows if key.instrument]
    days = [v["mri_date"] for v in visits]
    assert days[:3] == ["2026-03-10"] * 3
    assert any(d and not WINDOW[0] <= d < WINDOW[1] for d in days)  # some outside the window
    assert "" in days  # some planned without a date
    people = [values for key, values in rows if not key.instrument]
    assert all(re.fullmatch(r"CPIP-\d{4}", p["study_id"]) for p in people)
    assert all(re.fullmatch(r"\d+\.\d", p["mri_wt_lbs"]) for p in people)
    assert any(not (p["first_name"] + p["last_name"]).isascii() for p in people)
    with pytest.raises(ValueError, match="empty visit window"):
        generate_rows(Project(), 2, 2, 1, REDCAP_TODAY, days=0, past_days=0)


# --------------------------------------------------------------------------- CLI


@pytest.mark.external
def test_the_console_script_serves_until_sigterm_without_printing_the_token():
    script = Path(sys.executable).with_name("redcap-sim")
    token = "C0FFEE0123456789ABCDEF0123456789"
    env = {**os.environ, "REDCAP_API_TOKEN": token}
    proc = subprocess.Popen(
        [str(script), "--port", "0", "--records", "4", "--visits", "5", "--quiet",
         "--today", "2026-03-10", "--longitudinal", "--latency", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/", url), url
        rows = requests.post(url, data={"token": token, "content": "record", "format": "json",
                                        "fields[0]": "record_id", "fields[1]": "mri_date"},
                             timeout=10).json()
        assert len([r for r in rows if r["mri_date"]]) == 5
        assert {r["redcap_event_name"] for r in rows} >= {"baseline_arm_1"}
        refused = requests.post(url, data={"token": DEMO_TOKEN, "content": "version"}, timeout=10)
        assert refused.status_code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert token not in out + err
    assert "stopped" in err
