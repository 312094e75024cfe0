"""The REDCap client pieces (request, transport, merge) against the real redcap-sim on
loopback; `responses` only for the narrow error shapes the simulator does not produce."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import requests
import responses

from calpendo_sim.redcap import RowKey
from calpendo_assets.core.errors import (AuthRefusedError, BadAnswerError, SourceError,
                                            SourceUnavailableError)
from calpendo_assets.sources.redcap.request import (RecordRequest, answer_fingerprint,
                                                    field_name, visit_days, visit_request,
                                                    visit_window_logic)
from calpendo_assets.sources.redcap.transport import RedcapClient, RedcapHttp
from calpendo_assets.sources.redcap.visits import booking_id, merge_visits
from tests.fixtures.redcap_sim import REDCAP_TOKEN

START, END = dt.datetime(2026, 3, 9), dt.datetime(2026, 3, 17)  # today - 1 .. today + 7
FIELDS = ("study_id", "family_id", "first_name", "last_name", "dob", "demo_sex", "mri_wt_lbs",
          "mri_instance", "mri_time", "mri_scanner", "mri_protocol", "mri_status")
FAST = RedcapHttp(timeout=5, retries=1, backoff_factor=0)
URL = "https://redcap.example.org/api/"


def sync(client: RedcapClient, events=(), repeat_instrument: str | None = "mri",
         start=START, end=END) -> dict[str, dict]:
    """What a plugin's fetch does with these pieces: one export, merged into visits."""
    request = visit_request("record_id", FIELDS, "mri_date", start, end, events)
    merged = merge_visits(client.export_records(request), repeat_instrument=repeat_instrument)
    assert merged.skipped == {}
    return {visit["id"]: visit for visit in merged.visits}


def expected_ids(sim, start="2026-03-09", end="2026-03-17") -> set[str]:
    return {sim.booking_id(key) for key, values in sim.visits()
            if start <= values["mri_date"] < end}


@pytest.fixture
def client(redcap_sim):
    with RedcapClient(redcap_sim.url, REDCAP_TOKEN, FAST) as client:
        yield client


# --------------------------------------------------------------------------- the request


def test_the_request_asks_for_the_record_id_first_and_the_window_with_blank_dates():
    request = visit_request("record_id", ["dob", "redcap_event_name", "mri_date", "dob"],
                            "mri_date", dt.date(2026, 12, 1), dt.date(2026, 12, 5), ["t1_arm_1"])
    assert request.fields == ("record_id", "dob", "mri_date")
    assert request.filter_logic == ("([mri_date] >= '2026-12-01' and [mri_date] < '2026-12-05') "
                                    "or [mri_date] = ''")
    form = request.form()
    assert ("content", "record") in form and ("format", "json") in form
    assert ("type", "flat") in form and ("rawOrLabel", "raw") in form
    assert ("returnFormat", "json") in form and ("events[0]", "t1_arm_1") in form
    assert [value for key, value in form if key.startswith("fields[")] == list(request.fields)
    assert all(key != "token" for key, _ in form)


def test_window_days_and_names():
    assert visit_days(dt.datetime(2026, 3, 9), dt.datetime(2026, 3, 17)) == (
        dt.date(2026, 3, 9), dt.date(2026, 3, 17))
    assert visit_days(dt.datetime(2026, 3, 9, 8), dt.datetime(2026, 3, 16, 0, 30)) == (
        dt.date(2026, 3, 9), dt.date(2026, 3, 17))
    with pytest.raises(ValueError, match="empty"):
        visit_days(dt.date(2026, 3, 9), dt.date(2026, 3, 9))
    assert visit_window_logic("scan_dt", dt.date(2026, 1, 1), dt.date(2026, 1, 2),
                              admit_undated=False) == (
        "[scan_dt] >= '2026-01-01' and [scan_dt] < '2026-01-02'")
    for bad in ("MRI_date", "mri date", "x] = '' or [y", "1st", ""):
        with pytest.raises(ValueError):
            field_name(bad)


# --------------------------------------------------------------------------- against the simulator


def test_one_request_fetches_the_window_with_participant_values_merged(redcap_sim, client):
    redcap_sim.reset_counts()
    visits = sync(client)
    assert set(visits) == expected_ids(redcap_sim) and len(visits) > 5
    [asked] = redcap_sim.record_requests()
    assert redcap_sim.request_count == 1
    assert asked.params.get("filterLogic") == (
        "([mri_date] >= '2026-03-09' and [mri_date] < '2026-03-17') or [mri_date] = ''")
    for visit in visits.values():
        participant = redcap_sim.row(RowKey(visit["record_id"],
                                            redcap_sim.project.participant_event))
        assert (visit["dob"], visit["mri_wt_lbs"], visit["last_name"]) == (
            participant["dob"], participant["mri_wt_lbs"], participant["last_name"])
        assert visit["redcap_repeat_instrument"] == "mri" and visit["mri_time"]
        assert visit["id"] == f"{visit['record_id']}::mri:{visit['redcap_repeat_instance']}"


def test_moved_deleted_cancelled_and_redated_visits(redcap_sim, client):
    inside = redcap_sim.add_visit(date="2026-03-12", time="10:00")
    leaving = redcap_sim.add_visit(date="2026-03-13", time="11:00")
    coming = redcap_sim.add_visit(date="2026-05-01", time="12:00")
    doomed = redcap_sim.add_visit(date="2026-03-14", time="13:00")
    before = sync(client)
    ids = {name: redcap_sim.booking_id(key) for name, key in
           (("inside", inside), ("leaving", leaving), ("coming", coming), ("doomed", doomed))}
    assert {ids["inside"], ids["leaving"], ids["doomed"]} <= set(before)
    assert ids["coming"] not in before
    redcap_sim.move_visit(leaving, "2026-04-02")
    redcap_sim.move_visit(coming, "2026-03-15", "16:30")
    redcap_sim.move_visit(inside, "2026-03-16")  # re-dated, still inside
    redcap_sim.delete_visit(doomed)
    redcap_sim.cancel_visit(redcap_sim.add_visit(record=inside.record, date="2026-03-11"))
    after = sync(client)
    assert set(after) == expected_ids(redcap_sim)
    assert ids["leaving"] not in after and ids["doomed"] not in after
    assert (after[ids["coming"]]["mri_date"], after[ids["coming"]]["mri_time"]) == (
        "2026-03-15", "16:30")
    assert after[ids["inside"]]["mri_date"] == "2026-03-16"  # the same id after re-dating
    assert after[f"{inside.record}::mri:2"]["mri_status"] == "3"


def test_a_longitudinal_project_with_events(redcap_sim_factory):
    sim = redcap_sim_factory(longitudinal=True)
    with RedcapClient(sim.url, REDCAP_TOKEN, FAST) as client:
        visits = sync(client)
        assert set(visits) == expected_ids(sim)
        assert all(v["id"] == f"{v['record_id']}:{v['redcap_event_name']}:mri:"
                              f"{v['redcap_repeat_instance']}" for v in visits.values())
        assert all(v["dob"] and v["mri_wt_lbs"] for v in visits.values())  # from baseline_arm_1
        only_t2 = sync(client, events=("baseline_arm_1", "t2_arm_1"))
    assert set(only_t2) == {i for i in visits if ":t2_arm_1:" in i}
    assert all(v["dob"] for v in only_t2.values())


@pytest.mark.parametrize("longitudinal", [False, True])
def test_projects_where_a_record_or_record_event_is_the_visit(redcap_sim_factory, longitudinal):
    sim = redcap_sim_factory(longitudinal=longitudinal, repeating=False, records=12, visits=10)
    with RedcapClient(sim.url, REDCAP_TOKEN, FAST) as client:
        visits = sync(client, repeat_instrument=None)
    assert set(visits) == expected_ids(sim) and visits
    for visit in visits.values():
        event = visit["redcap_event_name"] if longitudinal else ""
        assert visit["id"] == f"{visit['record_id']}:{event}::"
        assert visit["dob"] and visit["mri_date"]


def test_the_fingerprint_follows_the_window(redcap_sim, client):
    request = visit_request("record_id", FIELDS, "mri_date", START, END)
    first = client.fingerprint(request)
    assert client.fingerprint(request) == first
    rows = client.export_records(request)
    assert answer_fingerprint(request, list(reversed(rows))) == first
    other = RecordRequest(request.fields[:-1], filter_logic=request.filter_logic)
    assert answer_fingerprint(other, rows) != first
    redcap_sim.update_visit(redcap_sim.visits()[0][0], mri_time="07:15")
    assert client.fingerprint(request) != first


def test_probe_asks_version_and_project(redcap_sim, client):
    redcap_sim.reset_counts()
    text = client.probe()
    assert text == f"REDCap 15.7.6 at {redcap_sim.url}: project 1402, classic, " \
                   "with repeating instruments"
    assert [r.content for r in redcap_sim.requests] == ["version", "project"]


# --------------------------------------------------------------------------- errors


def assert_clean(exc: SourceError, caplog, *secrets: str) -> None:
    for secret in (REDCAP_TOKEN, *secrets):
        assert secret not in str(exc) and secret not in repr(exc.args)
        assert secret not in caplog.text


def test_a_refused_token_names_url_and_status_never_the_token(redcap_sim, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "ABCDEF0123456789ABCDEF0123456789"
    with RedcapClient(redcap_sim.url, wrong, FAST) as client:
        with pytest.raises(AuthRefusedError) as caught:
            client.export_records(visit_request("record_id", FIELDS, "mri_date", START, END))
    assert str(caught.value) == (f"REDCap at {redcap_sim.url} refused the API token (HTTP 403): "
                                 "You do not have permissions to use the API")
    assert caught.value.transient is False
    assert_clean(caught.value, caplog, wrong)


def test_an_error_body_is_a_bad_answer_quoting_redcap(redcap_sim, client, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BadAnswerError) as caught:
        client.export_records(visit_request("record_id", ["scan_weight"], "mri_date", START, END))
    assert str(caught.value) == (
        f"REDCap answered HTTP 400 for {redcap_sim.url}: The following values in the "
        "parameter \"fields\" are not valid: 'scan_weight'")
    with pytest.raises(BadAnswerError, match="filterLogic"):
        client.export_records(RecordRequest(("record_id",), filter_logic="[mri_date] >="))
    assert_clean(caught.value, caplog)


def test_outages_are_transient(redcap_sim, client, caplog):
    request = visit_request("record_id", FIELDS, "mri_date", START, END)
    redcap_sim.fail_requests(503, count=None)
    redcap_sim.reset_counts()
    with pytest.raises(SourceUnavailableError, match="HTTP 503") as caught:
        client.export_records(request)
    assert caught.value.transient and redcap_sim.request_count == 1 + FAST.retries
    redcap_sim.fail_requests(500, count=1)
    with pytest.raises(SourceUnavailableError, match="HTTP 500"):
        client.export_records(request)  # 500 is not retried: REDCap's own failure
    redcap_sim.clear_failures()
    url = redcap_sim.url
    redcap_sim.stop()
    with pytest.raises(SourceUnavailableError, match="ConnectionRefused|NewConnectionError") as down:
        client.export_records(request)
    assert url in str(down.value) and down.value.transient
    assert_clean(down.value, caplog)


def test_answers_that_are_not_the_promised_json(redcap_sim, client, caplog):
    request = visit_request("record_id", FIELDS, "mri_date", START, END)
    names = [values["last_name"] for _, values in redcap_sim.store.rows() if "last_name" in values]
    redcap_sim.fail_requests(200, body="<html><body>Please log in</body></html>")
    with pytest.raises(BadAnswerError, match="an HTML page") as html:
        client.export_records(request)
    redcap_sim.fail_requests(200, body=f'{{"rows": ["{names[0]}"]}}',
                             content_type="application/json")
    with pytest.raises(BadAnswerError, match="an object, not a list of rows") as shape:
        client.export_records(request)
    redcap_sim.fail_requests(200, body=f'[{{"record_id": "1"}}, "{names[1]}"]',
                             content_type="application/json")
    with pytest.raises(BadAnswerError, match="row 1 is a string") as row:
        client.export_records(request)
    for caught in (html, shape, row):
        assert not caught.value.transient
        assert_clean(caught.value, caplog, *names[:2])


def test_a_client_needs_a_plain_url_and_a_token():
    with pytest.raises(ValueError, match="credentials"):
        RedcapClient("https://user:pw@redcap.example.org/api/", REDCAP_TOKEN)
    with pytest.raises(ValueError):
        RedcapClient("redcap.example.org/api/", REDCAP_TOKEN)
    with pytest.raises(AuthRefusedError, match="no REDCap API token"):
        RedcapClient(URL, "")
    assert REDCAP_TOKEN not in repr(RedcapClient(URL, REDCAP_TOKEN))


@responses.activate
@pytest.mark.parametrize("status, body, kind, text", [
    (401, '{"error":"x"}', AuthRefusedError, "refused the API token (HTTP 401): x"),
    (403, '<?xml version="1.0" encoding="UTF-8" ?><hash><error>You do not have API Export '
          'privileges</error></hash>', AuthRefusedError, "(HTTP 403): You do not have API "
                                                         "Export privileges"),
    (400, "ERROR: The value of the parameter \"content\" is not valid", BadAnswerError,
     "HTTP 400 for https://redcap.example.org/api/: The value of the parameter"),
    (400, f'{{"error":"token {REDCAP_TOKEN} rejected"}}', BadAnswerError, "token *** rejected"),
    (404, "<html>Not Found</html>", BadAnswerError, "ending in /api/"),
    (302, "", BadAnswerError, "a redirect"),
    (429, "slow down", SourceUnavailableError, "HTTP 429"),
    (502, "", SourceUnavailableError, "HTTP 502"),
])
def test_error_shapes(status, body, kind, text):
    responses.add(responses.POST, URL, body=body, status=status,
                  headers={"Location": "https://elsewhere.example.org/api/"} if status == 302
                  else {})
    with pytest.raises(kind) as caught:
        RedcapClient(URL, REDCAP_TOKEN, RedcapHttp(retries=0)).version()
    assert text in str(caught.value) and REDCAP_TOKEN not in str(caught.value)
    assert type(caught.value) is kind
    sent = responses.calls[0].request
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert f"token={REDCAP_TOKEN}" in sent.body and REDCAP_TOKEN not in sent.url


@responses.activate
def test_a_library_error_quoting_the_token_is_masked():
    responses.add(responses.POST, URL,
                  body=requests.ConnectionError(f"boom while sending token={REDCAP_TOKEN}"))
    with pytest.raises(SourceUnavailableError) as caught:
        RedcapClient(URL, REDCAP_TOKEN, RedcapHttp(retries=0)).version()
    assert "token=***" in str(caught.value) and REDCAP_TOKEN not in str(caught.value)


# --------------------------------------------------------------------------- merge, ids


def test_booking_ids_leave_unused_parts_empty_and_escape_separators():
    assert booking_id("12", "t1_arm_1", "mri", 3) == "12:t1_arm_1:mri:3"
    assert booking_id("12") == "12:::"
    assert booking_id("12", "", "", 2) == "12:::2"
    assert booking_id("a:b%c", None, "", "") == "a%3Ab%25c:::"


def test_merge_rules():
    rows = [
        {"record_id": "1", "redcap_event_name": "base", "redcap_repeat_instrument": "",
         "redcap_repeat_instance": "", "dob": "2010-01-02", "sex": "2", "mri_date": ""},
        {"record_id": "1", "redcap_event_name": "t1", "redcap_repeat_instrument": "",
         "redcap_repeat_instance": "", "dob": "", "sex": "1", "mri_date": ""},
        {"record_id": "1", "redcap_event_name": "t1", "redcap_repeat_instrument": "mri",
         "redcap_repeat_instance": 1, "dob": "", "sex": "", "mri_date": "2026-03-10"},
        {"record_id": "1", "redcap_event_name": "t1", "redcap_repeat_instrument": "mri",
         "redcap_repeat_instance": 2, "dob": "", "sex": "", "mri_date": ""},  # not dated yet
        {"record_id": "1", "redcap_event_name": "t1", "redcap_repeat_instrument": "other",
         "redcap_repeat_instance": 1, "dob": "", "sex": "", "mri_date": "2026-03-10"},
        {"record_id": "", "redcap_event_name": "t1", "redcap_repeat_instrument": "mri",
         "redcap_repeat_instance": 4, "dob": "", "sex": "", "mri_date": "2026-03-10"},
        {"record_id": "1", "redcap_event_name": "t1", "redcap_repeat_instrument": "mri",
         "redcap_repeat_instance": 1, "dob": "", "sex": "", "mri_date": "2026-03-11"},
    ]
    merged = merge_visits(rows)
    [visit] = merged.visits
    assert visit["id"] == "1:t1:mri:1" and visit["mri_date"] == "2026-03-10"
    assert (visit["dob"], visit["sex"]) == ("2010-01-02", "1")  # own event first, then others
    # Real REDCap blanks mri_date on another instrument's row: dated there, the config is wrong.
    assert merged.skipped == {"#4": "config.date_field 'mri_date' is filled on repeating "
                                    "instrument 'other', but config.repeat_instrument is 'mri'",
                              "#5": "row without a record_id", "#6": "a second row for the same visit"}
    repeating_event = [{"record_id": "7", "redcap_event_name": "scan", "redcap_repeat_instrument": "",
                        "redcap_repeat_instance": 2, "mri_date": "2026-03-12", "dob": ""},
                       {"record_id": "7", "redcap_event_name": "base", "redcap_repeat_instrument": "",
                        "redcap_repeat_instance": "", "mri_date": "", "dob": "2001-05-06"}]
    [event_visit] = merge_visits(repeating_event, repeat_instrument=None).visits
    assert (event_visit["id"], event_visit["dob"]) == ("7:scan::2", "2001-05-06")
