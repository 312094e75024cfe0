"""mwl-api against hostile input over a real uvicorn, on SQLite and PostgreSQL: values
at the edge of what Python's dates, SQL integers and the database's text can hold are
client errors (422 naming the field), never a 500, and nothing is written."""

from __future__ import annotations

import re

import pytest
import requests
from sqlalchemy import func, select

from mwl_service.schema import WorklistHistory, WorklistItem
from tests.fixtures.api import PASSWORD
from tests.mwl_service.test_api_manual import api, walk_in  # noqa: F401 - api: the fixture

pytestmark = pytest.mark.postgres
JSON = {"Content-Type": "application/json"}


def written(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.scalar(select(func.count()).select_from(WorklistItem)),
                conn.scalar(select(func.count()).select_from(WorklistHistory)))


def fields(answer) -> set[str]:
    assert answer.status_code == 422, answer.text
    return {e["field"] for e in answer.json()["errors"]}


def test_an_offset_beyond_sql_integers_is_422(api):
    for offset in (2**63, 10**30):
        answer = api.call("GET", f"/api/v1/worklist?offset={offset}", user="tech")
        assert fields(answer) == {"offset"}


def test_a_day_at_the_end_of_the_calendar_is_422_not_a_crash(api):
    answer = api.call("GET", "/api/v1/mpps?date=9999-12-31", user="tech")
    assert fields(answer) == {"date"}
    assert api.call("GET", "/api/v1/worklist?date=9999-12-31", user="tech").status_code == 200


def test_starts_and_numbers_out_of_range_are_named(api):
    for start in ("0001-01-01T00:00+05:00", "9999-12-31T23:59-05:00"):
        answer = api.call("POST", "/api/v1/worklist", user="tech",
                          json=walk_in(scheduled_start=start))
        assert fields(answer) == {"scheduled_start"}
    huge = ('{"patient_id": "HX-4471", "patient_name": "Qwerty, Zed", "modality": "MR", '
            '"scheduled_start": "2026-03-10T14:30", "patient_weight": 1' + "0" * 400 + "}")
    answer = api.call("POST", "/api/v1/worklist", user="tech", data=huge, headers=JSON)
    assert fields(answer) == {"patient_weight"}
    assert written(api.engine) == (0, 0)


def test_a_lone_surrogate_is_named_as_bad_text(api):
    body = ('{"patient_id": "HX-4471", "patient_name": "Qwerty, Zed", "modality": "MR", '
            '"scheduled_start": "2026-03-10T14:30", "study_description": "x\\ud800"}')
    answer = api.call("POST", "/api/v1/worklist", user="tech", data=body, headers=JSON)
    assert fields(answer) == {"study_description"}
    assert written(api.engine) == (0, 0)
    item = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in()).json()
    path = f"/api/v1/worklist/{item['accession_number']}"
    patch = api.call("PATCH", path, user="tech", data='{"patient_comments": "\\udfff"}',
                     headers=JSON)
    assert fields(patch) == {"patient_comments"}
    cancel = api.call("DELETE", path, user="tech", data='{"reason": "\\ud800"}', headers=JSON)
    assert fields(cancel) == {"reason"}
    assert api.call("GET", path, user="tech").json()["step_status"] == "SCHEDULED"


def test_nul_in_a_path_query_or_reason_is_never_a_500(api):
    item = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in()).json()
    accession = item["accession_number"]
    for method, path in (
        ("GET", "/api/v1/worklist?patient_id=a%00b"),
        ("GET", "/api/v1/worklist?station=%00"),
        ("GET", "/api/v1/excluded?source=%00"),
        ("GET", "/api/v1/worklist/a%00b"),
        ("GET", "/api/v1/worklist/a%00b/history"),
        ("DELETE", f"/api/v1/worklist/{accession}?reason=a%00b"),
    ):
        answer = api.call(method, path, user="tech")
        # SQLite finds nothing; PostgreSQL cannot hold a NUL in text: a client error
        assert answer.status_code in (200, 404, 422), (path, answer.text)
        assert answer.headers["content-type"] == "application/json"
    cancel = api.call("DELETE", f"/api/v1/worklist/{accession}", user="tech",
                      json={"reason": "a\x00b"})
    assert fields(cancel) == {"reason"}
    login = api.call("POST", "/api/v1/login", json={"username": "te\x00ch", "password": "x" * 8})
    assert login.status_code in (401, 422), login.text
    assert api.call("GET", f"/api/v1/worklist/{accession}", user="tech").json()[
        "step_status"] == "SCHEDULED"


def test_a_bad_station_is_named_for_what_is_wrong_with_it(api):
    answer = api.call("POST", "/api/v1/worklist", user="tech",
                      json=walk_in(scheduled_station_ae_title="A" * 500))
    assert fields(answer) == {"scheduled_station_ae_title"}
    (error,) = answer.json()["errors"]
    assert "required" not in error["problem"]


def test_a_body_that_is_not_json_names_the_body(api):
    answer = api.call("POST", "/api/v1/worklist", user="tech", data='{"patient_id":',
                      headers=JSON)
    assert fields(answer) == {"body"}


def test_the_pages_forms_name_a_bad_station_and_refuse_a_control_character(api):
    page = requests.Session()
    login = page.post(f"{api.url}/login", data={"username": "tech", "password": PASSWORD},
                      allow_redirects=False, timeout=30)
    assert login.status_code == 303
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get(f"{api.url}/", timeout=30).text)[1]
    form = {"csrf": csrf, **walk_in(scheduled_station_ae_title="A" * 300)}
    bad = page.post(f"{api.url}/walk-ins", data=form, timeout=30)
    assert bad.status_code == 422
    assert "characters long" in bad.text and "required when" not in bad.text
    item = api.call("POST", "/api/v1/worklist", user="tech", json=walk_in()).json()
    cancel = page.post(f"{api.url}/items/{item['accession_number']}/cancel",
                       data={"csrf": csrf, "reason": "no\x01show"}, allow_redirects=False,
                       timeout=30)
    assert cancel.status_code == 422
    path = f"/api/v1/worklist/{item['accession_number']}"
    assert api.call("GET", path, user="tech").json()["step_status"] == "SCHEDULED"
