"""Tests for calpendo_assets.sources.calpendo: grammar (pure), the HTTP transport and the
window fetch (responses), and retries/parallelism against a real loopback server
(responses bypasses urllib3's Retry)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
import responses

from calpendo_assets.core.errors import (
    AuthRefusedError as CalpendoAuthError,
    BadAnswerError as CalpendoResponseError,
    NotFoundError as CalpendoNotFoundError,
    SourceError as CalpendoError,
)
from calpendo_assets.core.records import get_path
from calpendo_assets.sources.calpendo.biskits import normalise_biskit, operator_name
from calpendo_assets.sources.calpendo.fetch import (
    BOOKING_PATHS,
    FINGERPRINT_PATHS,
    FetchPlan,
    WindowFetch,
    get_details,
)
from calpendo_assets.sources.calpendo.http import CalpendoHttp, HttpSettings
from calpendo_assets.sources.calpendo.query import (
    WindowQuery,
    and_,
    cond,
    date_literal,
    or_,
    window_expression,
)


BASE = "http://cal.test/calpendo"
API = BASE + "/webdav"
USER, PASSWORD = "alice", "s3cret-Pw"
FAST = HttpSettings(timeout=5, retries=0, backoff_factor=0)
DAY = dt.date(2025, 2, 12)
NEXT_DAY = dt.date(2025, 2, 13)
WINDOW_EXPR = "AND/dateRange.start/GE/20250212/dateRange.start/LT/20250213/status/EQ/APPROVED/CLOSE"


def booking_query_url(paths: tuple[str, ...] | list[str], type_name="Calpendo.Booking") -> str:
    return f"{API}/q/{type_name}/{WINDOW_EXPR}?paths={','.join(paths)}"


OPERATOR_URL = booking_query_url(("id", "Operator"), "MRIScan")


@pytest.fixture
def client():
    with CalpendoHttp(BASE, USER, PASSWORD, FAST) as c:
        yield c


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def biskits(*items: dict) -> dict:
    return {"biskits": list(items)}


# --------------------------------------------------------------------------- grammar (pure)


def test_date_literal_formats():
    assert date_literal(dt.date(2021, 9, 6)) == "20210906"
    assert date_literal(dt.datetime(2014, 5, 26, 12, 0)) == "20140526T1200"
    # Minute precision: seconds are truncated.
    assert date_literal(dt.datetime(2014, 5, 26, 7, 5, 59)) == "20140526T0705"
    # Aware datetimes are taken as wall time in their own zone (caller converts to site time).
    aware = dt.datetime(2025, 3, 9, 3, 30, tzinfo=ZoneInfo("America/Edmonton"))
    assert date_literal(aware) == "20250309T0330"
    with pytest.raises(TypeError):
        date_literal("2025-02-12")


def test_cond_encodes_each_segment_and_null():
    assert cond("status", "EQ", "APPROVED") == "status/EQ/APPROVED"
    assert cond("title", "contains", "P 01/x") == "title/CONTAINS/P%2001%2Fx"
    assert cond("project", "EQ", None) == "project/EQ/__NULL__"
    assert cond("dateRange.start", "GE", dt.date(2025, 1, 2)) == "dateRange.start/GE/20250102"
    assert cond("cancelled", "EQ", False) == "cancelled/EQ/false"
    assert cond("title", "EQ", "a?b#c%d") == "title/EQ/a%3Fb%23c%25d"
    assert cond("resource.id", "EQ", 42) == "resource.id/EQ/42"


def test_cond_rejects_unknown_relation_and_empty_path():
    with pytest.raises(ValueError, match="LIKE"):
        cond("title", "LIKE", "x")
    with pytest.raises(ValueError):
        cond("", "EQ", "x")


def test_and_or_close_placement():
    a, b, c = cond("x", "EQ", 1), cond("y", "EQ", 2), cond("z", "EQ", 3)
    assert and_(a) == a
    assert or_(b) == b
    assert and_(a, b) == "AND/x/EQ/1/y/EQ/2/CLOSE"
    assert or_(a, b, c) == "OR/x/EQ/1/y/EQ/2/z/EQ/3/CLOSE"
    assert or_(and_(a, b), c) == "OR/AND/x/EQ/1/y/EQ/2/CLOSE/z/EQ/3/CLOSE"
    with pytest.raises(ValueError):
        or_()
    with pytest.raises(ValueError):
        and_()


def test_status_filter_is_anded_with_an_or_group():
    # The vendor's grammar example: the CLOSE after the OR group keeps the status out of the OR.
    expr = and_(
        cond("x", "GE", 1),
        or_(cond("a", "EQ", "p"), cond("a", "EQ", "q")),
        cond("status", "EQ", "APPROVED"),
    )
    assert expr == "AND/x/GE/1/OR/a/EQ/p/a/EQ/q/CLOSE/status/EQ/APPROVED/CLOSE"


def test_window_expression_exact_strings():
    assert window_expression(DAY, NEXT_DAY, ["approved", "Requested", "APPROVED"]) == (
        "AND/dateRange.start/GE/20250212/dateRange.start/LT/20250213"
        "/OR/status/EQ/APPROVED/status/EQ/REQUESTED/CLOSE/CLOSE"
    )
    assert window_expression(DAY, NEXT_DAY, "approved") == WINDOW_EXPR
    assert window_expression(DAY, NEXT_DAY, ["approved"]) == WINDOW_EXPR
    assert window_expression(dt.datetime(2025, 2, 12, 8), dt.datetime(2025, 2, 12, 18), []) == (
        "AND/dateRange.start/GE/20250212T0800/dateRange.start/LT/20250212T1800/CLOSE"
    )
    assert window_expression(DAY, NEXT_DAY, None).count("status") == 0


# --------------------------------------------------------------------------- normalisation


NESTED = {
    "id": 7,
    "biskitType": "MRIScan",
    "properties": {
        "title": "P001 - Doe^Jane",
        "status": "APPROVED",
        "dateRange": {"start": "2025-02-12 10:00:00.0", "finish": "2025-02-12 11:00:00.0"},
        "resource": {"name": "3T Prisma", "id": 3},
    },
}
FLAT = {
    "id": 7,
    "biskitType": "MRIScan",
    "title": "P001 - Doe^Jane",
    "status": "APPROVED",
    "dateRange.start": "2025-02-12 10:00:00.0",
    "dateRange.finish": "2025-02-12 11:00:00.0",
    "resource.name": "3T Prisma",
    "resource.id": 3,
}
EXPECTED = {
    "id": 7,
    "biskitType": "MRIScan",
    "title": "P001 - Doe^Jane",
    "status": "APPROVED",
    "dateRange": {"start": "2025-02-12 10:00:00.0", "finish": "2025-02-12 11:00:00.0"},
    "resource": {"name": "3T Prisma", "id": 3},
}


def test_normalise_nested_flat_and_flat_inside_properties_agree():
    flat_in_properties = {
        "id": 7,
        "biskitType": "MRIScan",
        "properties": {k: v for k, v in FLAT.items() if k not in ("id", "biskitType")},
    }
    assert normalise_biskit(NESTED) == EXPECTED
    assert normalise_biskit(FLAT) == EXPECTED
    assert normalise_biskit(flat_in_properties) == EXPECTED


def test_normalise_merges_mixed_forms_and_referenced_biskits():
    raw = {
        "id": "12",
        "biskitType": "Calpendo.Booking",
        "properties": {
            "id": "ignored",  # the envelope id wins
            "resource": {"id": 3, "biskitType": "Calpendo.Resource", "properties": {"name": "EEG"}},
            "project": "BRISKP",  # display string yields to the structured form below
        },
        "resource.formattedName": "EEG lab",
        "project.name": "BRISKP",
    }
    assert normalise_biskit(raw) == {
        "id": "12",
        "biskitType": "Calpendo.Booking",
        "resource": {
            "id": 3,
            "biskitType": "Calpendo.Resource",
            "name": "EEG",
            "formattedName": "EEG lab",
        },
        "project": {"name": "BRISKP"},
    }


def test_normalise_does_not_mutate_input_and_rejects_non_objects():
    before = json.dumps(NESTED, sort_keys=True)
    out = normalise_biskit(NESTED)
    out["resource"]["name"] = "changed"
    assert json.dumps(NESTED, sort_keys=True) == before
    with pytest.raises(TypeError):
        normalise_biskit(["not", "a", "biskit"])


def test_get_path():
    record = normalise_biskit(NESTED)
    assert get_path(record, "resource.name") == "3T Prisma"
    assert get_path(record, "dateRange.finish") == "2025-02-12 11:00:00.0"
    assert get_path(record, "project.name", "none") == "none"
    assert get_path(record, "title.length") is None
    assert get_path({"resource.name": "flat"}, "resource.name") == "flat"


def test_operator_name_shapes():
    assert operator_name("  Sam Tech ") == "Sam Tech"
    assert operator_name({"name": "stech", "formattedName": "Sam Tech"}) == "stech"
    assert operator_name({"formattedName": "Sam Tech"}) == "Sam Tech"
    assert operator_name({"id": 4}) is None
    assert operator_name("") is None
    assert operator_name(None) is None


def test_http_settings_validation():
    with pytest.raises(ValueError, match="max_workers"):
        HttpSettings(max_workers=0)
    with pytest.raises(ValueError, match="timeout"):
        HttpSettings(timeout=0)
    with pytest.raises(ValueError, match="retries"):
        HttpSettings(retries=-1)


# --------------------------------------------------------------------------- HTTP (responses)


def test_query_sends_basic_auth_and_exact_url(client, rsps):
    url = booking_query_url(("id", "title", "resource.name"))
    rsps.get(url, json=biskits(NESTED))
    result = client.query("Calpendo.Booking", WINDOW_EXPR, ["id", "title", "resource.name"])
    assert result == [EXPECTED]
    request = rsps.calls[0].request
    assert request.url == url
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert request.headers["Authorization"] == expected_auth
    assert request.headers["Accept"] == "application/json"


def test_query_url_keeps_encoded_values(client, rsps):
    expr = cond("title", "STARTS_WITH", "P 1/2")
    url = f"{API}/q/Calpendo.Booking/title/STARTS_WITH/P%201%2F2"
    rsps.get(url, json=biskits())
    assert client.query("Calpendo.Booking", expr) == []
    assert rsps.calls[0].request.url == url


@pytest.mark.parametrize(
    "base",
    [BASE, BASE + "/", BASE + "/webdav", BASE + "/webdav/", "http://bob:pw@cal.test/calpendo"],
)
def test_base_url_forms(base, rsps):
    rsps.get(f"{API}/q/Calpendo.Booking/id/EQ/1", json=biskits(FLAT))
    # Credentials embedded in the URL are used only when none are given explicitly.
    user, password = ("", "") if "@" in base else (USER, PASSWORD)
    with CalpendoHttp(base, user, password, FAST) as c:
        assert c.api_root == API  # no userinfo ever kept in a URL
        assert c.query("Calpendo.Booking", "id/EQ/1") == [EXPECTED]
    sent = rsps.calls[0].request.headers["Authorization"]
    assert base64.b64decode(sent.split()[1]).decode() in (f"{USER}:{PASSWORD}", "bob:pw")


def test_flat_json_query_answer(client, rsps):
    rsps.get(f"{API}/q/Calpendo.Booking/id/EQ/7", json=biskits(FLAT))
    assert client.query("Calpendo.Booking", "id/EQ/7") == [EXPECTED]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials(status, client, rsps, caplog):
    url = f"{API}/q/Calpendo.Booking/id/EQ/7"
    rsps.get(url, status=status, body=f"denied for {USER}")
    with caplog.at_level(logging.DEBUG), pytest.raises(CalpendoAuthError) as info:
        client.query("Calpendo.Booking", "id/EQ/7")
    message = str(info.value)
    assert message == f"Calpendo refused the credentials (HTTP {status}) for {url}"
    assert info.value.transient is False
    for secret in (USER, PASSWORD):
        assert secret not in message
        assert secret not in caplog.text


def test_query_404_names_the_url(client, rsps):
    url = f"{API}/q/NoSuchType/id/EQ/7"
    rsps.get(url, status=404)
    with pytest.raises(CalpendoNotFoundError, match="404") as info:
        client.query("NoSuchType", "id/EQ/7")
    assert url in str(info.value)
    assert isinstance(info.value, CalpendoError)


def test_server_error_names_status_and_url(client, rsps):
    url = f"{API}/q/Calpendo.Booking/id/EQ/7"
    rsps.get(url, status=500, body="java.lang.NullPointerException")
    with pytest.raises(CalpendoError) as info:
        client.query("Calpendo.Booking", "id/EQ/7")
    message = str(info.value)
    assert message == f"Calpendo answered HTTP 500, text/plain, 30 bytes for {url}"
    assert info.value.transient is True  # an outage: worth retrying later


def test_html_error_page_with_200(client, rsps):
    url = f"{API}/q/Calpendo.Booking/id/EQ/7"
    page = f"<html><body><h1>Login</h1>user {USER} password {PASSWORD}</body></html>"
    rsps.get(url, status=200, body=page, content_type="text/html")
    with pytest.raises(CalpendoResponseError) as info:
        client.query("Calpendo.Booking", "id/EQ/7")
    message = str(info.value)
    assert "HTML page" in message and url in message and "text/html" in message
    assert "Login" not in message  # never the body
    assert PASSWORD not in message and USER not in message
    assert info.value.transient is False


def test_malformed_json(client, rsps):
    url = f"{API}/q/Calpendo.Booking/id/EQ/7"
    rsps.get(url, body='{"biskits": [', content_type="application/json")
    with pytest.raises(CalpendoResponseError, match="malformed JSON") as info:
        client.query("Calpendo.Booking", "id/EQ/7")
    assert url in str(info.value)
    assert "(Expecting value: line 1 column 14, byte 13)" in str(info.value)
    assert "13 bytes" in str(info.value)


@pytest.mark.parametrize(
    "payload", [{"items": []}, [NESTED], {"biskits": "none"}, {"biskits": [1]}]
)
def test_json_without_biskits_list(payload, client, rsps):
    url = f"{API}/q/Calpendo.Booking/id/EQ/7"
    rsps.get(url, json=payload)
    with pytest.raises(CalpendoResponseError, match="biskits") as info:
        client.query("Calpendo.Booking", "id/EQ/7")
    assert url in str(info.value)


def test_get_detail_nested_wrapped_and_missing(client, rsps):
    rsps.get(f"{API}/b/Calpendo.Booking/7", json=NESTED)
    rsps.get(f"{API}/b/Calpendo.Booking/8", json=biskits(dict(FLAT, id=8)))
    rsps.get(f"{API}/b/Calpendo.Booking/9", status=404)
    assert client.get("Calpendo.Booking", 7) == EXPECTED
    assert client.get("Calpendo.Booking", "8") == dict(EXPECTED, id=8)
    assert client.get("Calpendo.Booking", 9) is None


def test_get_details_skips_404_with_warning_and_keeps_order(client, rsps, caplog):
    for i in (3, 1, 2):
        rsps.get(f"{API}/b/Calpendo.Booking/{i}", json=dict(FLAT, id=i))
    rsps.get(f"{API}/b/Calpendo.Booking/5", status=404)
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.sources.calpendo"):
        details, skipped = get_details(client, [3, 5, 1, 2, 3])
    assert [d["id"] for d in details] == [3, 1, 2]
    assert list(skipped) == ["5"] and "404" in skipped["5"]
    assert "booking 5 skipped" in caplog.text
    assert len(rsps.calls) == 4  # the duplicate id is fetched once


def test_get_details_raises_other_errors(client, rsps):
    rsps.get(f"{API}/b/Calpendo.Booking/1", status=401)
    with pytest.raises(CalpendoAuthError):
        get_details(client, [1])


def _mock_window(rsps, bookings, paths, operators=None):
    rsps.get(booking_query_url(paths), json=biskits(*bookings))
    if operators is None:
        rsps.get(OPERATOR_URL, status=404)
    else:
        rsps.get(OPERATOR_URL, json=biskits(*operators))


def fetch(client, start, end, statuses, strategy="bulk", extra_paths=()):
    """A whole fetch, the two steps in the order a sync runs them."""
    window = WindowFetch(client, WindowQuery(start, end, statuses))
    listing = window.listing(strategy, extra_paths)
    return window.complete(listing)


def test_a_whole_fetch_runs_the_plan(client, rsps):
    paths = (*BOOKING_PATHS, "project.id")
    _mock_window(rsps, [dict(NESTED, id=1)], paths, [{"id": 1, "Operator": "Sam Tech"}])
    plan = FetchPlan("bulk", ("project.id",))
    result = WindowFetch(client, WindowQuery(DAY, NEXT_DAY, ["APPROVED"])).run(plan)
    assert [b["Operator"] for b in result.bookings] == ["Sam Tech"]
    assert result.requests == 2 and result.complete


def test_the_window_query_is_built_once_for_every_request(client, rsps):
    query = WindowQuery(DAY, NEXT_DAY, ["approved"])
    assert query.expression == WINDOW_EXPR
    assert query.expression is query.expression  # computed once
    _mock_window(rsps, [FLAT], BOOKING_PATHS, [{"id": 7, "Operator": "op"}])
    WindowFetch(client, query).complete(WindowFetch(client, query).listing())
    assert [c.request.url.split("?")[0] for c in rsps.calls] == [
        f"{API}/q/Calpendo.Booking/{WINDOW_EXPR}",
        f"{API}/q/MRIScan/{WINDOW_EXPR}",
    ]


def test_fetch_window_bulk_two_requests_and_operator_merge(client, rsps):
    paths = (*BOOKING_PATHS, "project.id")
    rows = [dict(NESTED, id=i) for i in (1, 2, 3)]
    ops = [
        {"id": 1, "biskitType": "MRIScan", "properties": {"Operator": "Sam Tech"}},
        {"id": 2, "properties": {"Operator": {"name": "kim", "formattedName": "Kim L"}}},
        {"id": 3, "biskitType": "MRIScan", "properties": {"Operator": None}},
    ]
    _mock_window(rsps, rows, paths, ops)
    result = fetch(client, DAY, NEXT_DAY, ["approved"], extra_paths=["project.id", "id"])
    assert result.strategy == "bulk" and result.complete and result.skipped == {}
    assert result.requests == 2
    assert [b.get("Operator") for b in result.bookings] == ["Sam Tech", "kim", None]
    assert "Operator" not in result.bookings[2]
    assert rsps.calls[0].request.url == booking_query_url(paths)
    assert rsps.calls[1].request.url == OPERATOR_URL


def test_fetch_window_per_booking_requests_grow_with_n(client, rsps, caplog):
    ids = [10, 11, 12, 13]
    _mock_window(rsps, [{"id": i} for i in ids], ("id",), [{"id": 12, "Operator.name": "op"}])
    for i in ids[:-1]:
        rsps.get(f"{API}/b/Calpendo.Booking/{i}", json=dict(NESTED, id=i))
    rsps.get(f"{API}/b/Calpendo.Booking/13", status=404)
    with caplog.at_level(logging.WARNING):
        result = fetch(client, DAY, NEXT_DAY, "APPROVED", strategy="per_booking")
    assert result.strategy == "per_booking"
    assert result.requests == 1 + len(ids) + 1
    assert [b["id"] for b in result.bookings] == [10, 11, 12]
    assert result.bookings[2]["Operator"] == "op"
    assert result.skipped.keys() == {"13"} and result.complete is False
    assert "13" in caplog.text


def test_fetch_window_without_mriscan_type_warns(client, rsps, caplog):
    _mock_window(rsps, [FLAT], BOOKING_PATHS, operators=None)
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.sources.calpendo"):
        result = fetch(client, DAY, NEXT_DAY, ["APPROVED"])
    assert result.complete and result.bookings == [EXPECTED]
    assert "MRIScan" in caplog.text and "404" in caplog.text


def test_fetch_window_empty_and_missing_ids(client, rsps):
    rsps.get(booking_query_url(BOOKING_PATHS), json=biskits())
    empty = fetch(client, DAY, NEXT_DAY, ["APPROVED"])
    assert empty.bookings == [] and empty.complete and empty.requests == 1

    no_id = {"title": "x"}
    rsps.replace(responses.GET, booking_query_url(BOOKING_PATHS), json=biskits(FLAT, no_id))
    rsps.get(OPERATOR_URL, json=biskits())
    partial = fetch(client, DAY, NEXT_DAY, ["APPROVED"])
    assert [b["id"] for b in partial.bookings] == [7]
    assert partial.skipped == {"#1": "biskit without an id in the answer"}
    assert partial.complete is False


def test_fetch_window_rejects_unknown_strategy(client):
    with pytest.raises(ValueError, match="strategy"):
        fetch(client, DAY, NEXT_DAY, [], strategy="magic")


def test_fingerprint_is_order_independent_and_content_sensitive(client, rsps):
    url = booking_query_url(FINGERPRINT_PATHS)
    a, b = dict(FLAT, id=1), dict(FLAT, id=2)
    rsps.get(url, json=biskits(a, b))
    window = WindowFetch(client, WindowQuery(DAY, NEXT_DAY, ["APPROVED"]))
    first = window.fingerprint()
    rsps.replace(responses.GET, url, json=biskits(b, a))
    assert window.fingerprint() == first
    rsps.replace(responses.GET, url, json=biskits(a, dict(b, modified="2025-02-11 09:00:00.0")))
    changed = window.fingerprint()
    assert changed != first and len(changed) == 64
    assert {c.request.url for c in rsps.calls} == {url}


# --------------------------------------------------------------------------- real loopback server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server API)
        status, body = self.server.on_request(self.path)
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status in (429, 503):
            self.send_header("Retry-After", self.server.retry_after)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (timeout test): expected

    def log_message(self, *args):  # keep test output quiet
        pass


class LoopbackServer(ThreadingHTTPServer):
    """Answers via ``respond(path, hit_number) -> (status, body, delay)``; records concurrency."""

    daemon_threads = True

    def __init__(self, respond):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.retry_after = "0"
        self.paths: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def on_request(self, path):
        with self._lock:
            self.paths.append(path)
            hit = len(self.paths)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, body, delay = self.respond(path, hit)
            time.sleep(delay)  # inside the in-flight window, like a slow server
            return status, body
        finally:
            with self._lock:
                self.in_flight -= 1

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/calpendo"


@pytest.fixture
def serve():
    servers = []

    def start(respond):
        server = LoopbackServer(respond)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("failure", [503, 429])
def test_retries_transient_failures_then_succeeds(failure, serve):
    server = serve(lambda path, hit: (failure, "busy", 0) if hit <= 2 else (200, biskits(FLAT), 0))
    settings = HttpSettings(timeout=5, retries=3, backoff_factor=0)
    with CalpendoHttp(server.url, USER, PASSWORD, settings) as c:
        assert c.query("Calpendo.Booking", "id/EQ/7") == [EXPECTED]
        assert c.request_count == 1  # urllib3 retried below us
    assert len(server.paths) == 3


def test_gives_up_after_retries_with_status_and_url(serve):
    server = serve(lambda path, hit: (503, "maintenance", 0))
    settings = HttpSettings(timeout=5, retries=2, backoff_factor=0)
    with CalpendoHttp(server.url, USER, PASSWORD, settings) as c:
        with pytest.raises(CalpendoError) as info:
            c.query("Calpendo.Booking", "id/EQ/7")
    assert "HTTP 503" in str(info.value)
    assert f"{server.url}/webdav/q/Calpendo.Booking/id/EQ/7" in str(info.value)
    assert len(server.paths) == 3  # first attempt + 2 retries
    assert info.value.transient is True


@pytest.mark.parametrize("retries", [3, 0])
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_beyond_the_cap_fails_at_once(status, retries, serve):
    server = serve(lambda path, hit: (status, "come back in an hour", 0))
    server.retry_after = "3600"
    settings = HttpSettings(timeout=5, retries=retries, backoff_factor=0, max_retry_after=5)
    with CalpendoHttp(server.url, USER, PASSWORD, settings) as c:
        with pytest.raises(CalpendoError) as info:
            c.query("Calpendo.Booking", "id/EQ/7")
    assert str(info.value) == (
        f"Calpendo at {server.url}/webdav/q/Calpendo.Booking/id/EQ/7: HTTP {status} with "
        "Retry-After 3600 s, more than config.max_retry_after (5 s); not waiting"
    )
    # Not for a Dagster step retry either: it would ask again within a minute.
    assert info.value.transient is False
    assert len(server.paths) == 1  # no retry, and no hour-long sleep


def test_retry_after_within_the_cap_is_waited_for(serve):
    server = serve(lambda path, hit: (429, "busy", 0) if hit == 1 else (200, biskits(FLAT), 0))
    server.retry_after = "1"
    settings = HttpSettings(timeout=5, retries=3, backoff_factor=0, max_retry_after=1)
    with CalpendoHttp(server.url, USER, PASSWORD, settings) as c:
        assert c.query("Calpendo.Booking", "id/EQ/7") == [EXPECTED]
    assert len(server.paths) == 2


def test_auth_failure_is_not_retried(serve):
    server = serve(lambda path, hit: (401, "no", 0))
    with CalpendoHttp(server.url, USER, PASSWORD, HttpSettings(retries=3, backoff_factor=0)) as c:
        with pytest.raises(CalpendoAuthError):
            c.query("Calpendo.Booking", "id/EQ/7")
    assert len(server.paths) == 1


def test_connection_refused_becomes_calpendo_error():
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    settings = HttpSettings(timeout=2, retries=1, backoff_factor=0)
    with CalpendoHttp(base, "", "", settings) as c, pytest.raises(CalpendoError) as info:
        c.query("Calpendo.Booking", "id/EQ/7")
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/webdav/q/Calpendo.Booking/id/EQ/7" in message
    assert PASSWORD not in message
    assert info.value.transient is True


def test_read_timeout_becomes_calpendo_error(serve):
    server = serve(lambda path, hit: (200, biskits(), 1.0))
    settings = HttpSettings(timeout=0.2, retries=0, backoff_factor=0)
    with CalpendoHttp(server.url, USER, PASSWORD, settings) as c:
        with pytest.raises(CalpendoError) as info:
            c.query("Calpendo.Booking", "id/EQ/7")
    assert "Timeout" in str(info.value)


def test_get_details_runs_in_parallel(serve):
    def detail(path, hit):
        booking_id = int(path.rsplit("/", 1)[1])
        body = {"id": booking_id, "properties": {"title": f"P{booking_id}"}}
        return 200, body, 0.1

    server = serve(detail)
    ids = list(range(1, 11))
    settings = HttpSettings(timeout=5, retries=0, backoff_factor=0, max_workers=5)
    with CalpendoHttp(server.url, USER, PASSWORD, settings) as c:
        started = time.perf_counter()
        details, skipped = get_details(c, ids)
        elapsed = time.perf_counter() - started
    assert elapsed < 0.6, f"10 fetches of 0.1 s with 5 workers took {elapsed:.2f} s"
    assert [d["id"] for d in details] == ids and skipped == {}
    assert [d["title"] for d in details] == [f"P{i}" for i in ids]
    assert server.max_in_flight == 5


def test_a_short_password_does_not_mangle_the_error_text():
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = HttpSettings(timeout=2, retries=0, backoff_factor=0)
    with CalpendoHttp(f"http://127.0.0.1:{port}", "u", "1", settings) as c:
        with pytest.raises(CalpendoError) as info:
            c.query("Calpendo.Booking", "id/EQ/7")
    assert f"host='127.0.0.1', port={port}" in str(info.value)
