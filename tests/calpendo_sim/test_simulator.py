"""The Calpendo simulator against its contract (docs/architecture.md, "The Calpendo contract").

Everything except the pure parser tests goes through a real server on 127.0.0.1 and
real HTTP (requests), as a client would see it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import pytest
import requests

from calpendo_sim import CalpendoSimulator, generate_bookings
from calpendo_sim.errors import BadRequest
from calpendo_sim.query import Condition, Group, parse_expression
from calpendo_sim.schema import SUBTYPE_FIELDS
from tests.fixtures.sim import SIM_BOOKINGS, SIM_PASSWORD, SIM_USER

AUTH = (SIM_USER, SIM_PASSWORD)
TODAY = dt.date(2025, 2, 12)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.0$")
DOCUMENTED_PROPERTIES = {
    "title", "status", "formattedName", "dateRange", "resource", "project",
    "durationInMinutes", "created", "modified", "booker", "owner", "cancelled",
    "cancellationReason",
}


# --------------------------------------------------------------------------- helpers


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A wall-clock time in February 2025 (TODAY is the 12th)."""
    return dt.datetime(2025, 2, day, hour, minute)


def query_url(sim: CalpendoSimulator, type_name: str, expression: str | list[str],
              paths: str | None = None) -> str:
    """Build ``webdav/q/TYPE/EXPR`` percent-encoding each token, as the contract requires."""
    tokens = expression.split("/") if isinstance(expression, str) else expression
    url = f"{sim.url}/webdav/q/{quote(type_name, safe='')}/" + "/".join(
        quote(token, safe="") for token in tokens)
    return url if paths is None else f"{url}?paths={paths}"


def query(sim, type_name, expression, paths=None, auth=AUTH) -> requests.Response:
    return requests.get(query_url(sim, type_name, expression, paths), auth=auth, timeout=10)


def biskits(sim, type_name, expression, paths=None) -> list[dict]:
    response = query(sim, type_name, expression, paths)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["biskits"]


def detail(sim, type_name, booking_id, auth=AUTH) -> requests.Response:
    return requests.get(f"{sim.url}/webdav/b/{type_name}/{booking_id}", auth=auth, timeout=10)


@pytest.fixture
def site(calpendo_sim_factory):
    """An empty simulator on a fixed day plus five known bookings, by nickname."""
    sim = calpendo_sim_factory(bookings=0, today=TODAY)
    ids = {
        "jane": sim.add_booking(title="SUB0001 - Jane Doe", start=at(12, 8), minutes=30),
        "bare": sim.add_booking(title="SUB0002", start=at(12, 10), minutes=90,
                                status="REQUESTED", operator=None),
        "eeg": sim.add_booking(title="BRISK-003_Smith", resource="EEG Lab", start=at(13, 9),
                               minutes=120),
        "qa": sim.add_booking(title="phantom QA", resource="Mock Scanner", start=at(11, 18, 30),
                              minutes=45, project=None),
        "yamada": sim.add_booking(title="SUB0005 - 山田^太郎", start=at(14, 12),
                                  status="TENTATIVE", operator="Nguyen, Minh"),
    }
    sim.cancel_booking(ids["eeg"], reason="participant ill")
    sim.ids = ids  # type: ignore[attr-defined]
    sim.names = {v: k for k, v in ids.items()}  # type: ignore[attr-defined]
    return sim


def matched(sim, expression, type_name="Calpendo.Booking") -> set[str]:
    """Nicknames of the bookings a query returns."""
    return {sim.names[b["id"]] for b in biskits(sim, type_name, expression)}


# --------------------------------------------------------------------------- parser (pure)


def test_parser_close_ends_group_and_missing_close_extends_it():
    closed = parse_expression("AND/x/GE/1/OR/a/EQ/p/a/EQ/q/CLOSE/status/EQ/APPROVED".split("/"))
    assert isinstance(closed, Group) and closed.op == "AND"
    assert [type(o).__name__ for o in closed.operands] == ["Condition", "Group", "Condition"]
    assert len(closed.operands[1].operands) == 2
    assert closed.operands[2] == Condition("status", "EQ", "APPROVED", 13)

    open_ = parse_expression("AND/x/GE/1/OR/a/EQ/p/a/EQ/q/status/EQ/APPROVED".split("/"))
    assert len(open_.operands) == 2
    assert [c.path for c in open_.operands[1].operands] == ["a", "a", "status"]


@pytest.mark.parametrize("tokens, message", [
    ([], "missing query expression"),
    (["AND"], "AND at segment 1 has no operands"),
    (["OR", "CLOSE"], "has no operands"),
    (["CLOSE"], "does not close any group"),
    (["title", "EQ"], "expected a value"),
    (["title"], "expected a relation"),
    (["title", "LIKE", "x"], "unknown relation 'LIKE'"),
    (["a", "EQ", "1", "b", "EQ", "2"], "unexpected 'b' at segment 4"),
    (["AND", "a", "EQ", "1", "CLOSE", "CLOSE"], "unexpected 'CLOSE'"),
    (["", "EQ", "x"], "empty property path"),
])
def test_parser_rejects_malformed_expressions(tokens, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        parse_expression(tokens)


# --------------------------------------------------------------------------- auth and routing


def test_basic_auth_is_required_on_every_request(calpendo_sim):
    url = query_url(calpendo_sim, "Calpendo.Booking", "status/EQ/APPROVED")
    for auth in (None, (SIM_USER, "wrong"), ("calpendo", "calpendo")):
        response = requests.get(url, auth=auth, timeout=10)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Calpendo"'
    bad_header = requests.get(url, headers={"Authorization": "Basic !!notbase64"}, timeout=10)
    assert bad_header.status_code == 401
    # Unknown URLs are not revealed to unauthenticated clients either.
    assert requests.get(f"{calpendo_sim.url}/webdav/x", timeout=10).status_code == 401
    assert requests.get(url, auth=AUTH, timeout=10).status_code == 200


@pytest.mark.parametrize("path", [
    "/", "/webdav", "/webdav/q/", "/webdav/x/Calpendo.Booking/1", "/api/q/Calpendo.Booking/id/GT/0",
    "/webdav/q/NoSuchType/id/GT/0", "/webdav/b/NoSuchType/1001", "/webdav/b/Calpendo.Booking",
    "/webdav/b/Calpendo.Booking/999999", "/webdav/b/Calpendo.Booking/abc",
    "/webdav/b/Calpendo.Booking/1001/extra",
])
def test_unknown_urls_types_and_ids_are_404(calpendo_sim, path):
    response = requests.get(calpendo_sim.url + path, auth=AUTH, timeout=10)
    assert response.status_code == 404, response.text


# --------------------------------------------------------------------------- grammar over HTTP


def test_close_ands_the_status_with_the_or_group(site):
    expr = "AND/durationInMinutes/GE/1/OR/title/EQ/SUB0002/title/EQ/phantom QA/CLOSE/status/EQ/APPROVED"
    assert matched(site, expr) == {"qa"}  # SUB0002 is only REQUESTED


def test_without_close_the_status_becomes_another_or_branch(site):
    expr = "AND/durationInMinutes/GE/1/OR/title/EQ/SUB0002/title/EQ/phantom QA/status/EQ/APPROVED"
    assert matched(site, expr) == {"bare", "qa", "jane"}


def test_trailing_closes_may_be_omitted_or_given(site):
    base = "AND/status/NE/CANCELLED/OR/resource.name/EQ/EEG Lab/resource.name/EQ/Mock Scanner"
    assert matched(site, base) == {"qa"}
    assert matched(site, base + "/CLOSE/CLOSE") == {"qa"}


def test_nand_and_nor_negate_their_groups(site):
    assert matched(site, "NAND/resource.name/EQ/3T MRI/status/EQ/APPROVED") == {
        "bare", "eeg", "qa", "yamada"}
    assert matched(site, "NOR/status/EQ/APPROVED/status/EQ/CANCELLED") == {"bare", "yamada"}
    assert matched(site, "NOR/resource.name/EQ/3T MRI") == {"eeg", "qa"}
    assert matched(site, "AND/NOR/status/EQ/APPROVED/CLOSE/resource.name/EQ/3T MRI") == {
        "bare", "yamada"}


@pytest.mark.parametrize("expr, expected", [
    ("title/EQ/SUB0002", {"bare"}),
    ("title/EQ/sub0002", set()),  # case-sensitive, as a database compares
    ("title/NE/SUB0002", {"jane", "eeg", "qa", "yamada"}),
    ("title/CONTAINS/Jane", {"jane"}),
    ("title/CONTAINS/jane", set()),
    ("title/DOES_NOT_CONTAIN/SUB", {"eeg", "qa"}),
    ("title/STARTS_WITH/SUB", {"jane", "bare", "yamada"}),
    ("title/DOES_NOT_START_WITH/SUB", {"eeg", "qa"}),
    ("title/ENDS_WITH/Smith", {"eeg"}),
    ("title/DOES_NOT_END_WITH/Smith", {"jane", "bare", "qa", "yamada"}),
    ("title/CONTAINS/山田", {"yamada"}),
    ("title/LT/C", {"eeg"}),  # "BRISK..." < "C" < "SUB..." < "phantom..." (code points)
    ("title/GE/p", {"qa"}),
    ("status/EQ/TENTATIVE", {"yamada"}),
    ("status/NE/APPROVED", {"bare", "eeg", "yamada"}),
    ("durationInMinutes/GT/60", {"bare", "eeg"}),  # numeric: "120" > "60"
    ("durationInMinutes/LE/45", {"jane", "qa"}),
    ("durationInMinutes/EQ/120", {"eeg"}),
    ("resource.name/EQ/3T MRI", {"jane", "bare", "yamada"}),
    ("resource.name/STARTS_WITH/3T", {"jane", "bare", "yamada"}),
    ("dateRange.start/GE/20250212", {"jane", "bare", "eeg", "yamada"}),
    ("dateRange.start/LT/20250212T1000", {"qa", "jane"}),
    ("dateRange.start/LE/20250212T1000", {"qa", "jane", "bare"}),
    ("dateRange.start/EQ/20250212T0800", {"jane"}),
    ("dateRange.finish/GT/20250213T1000", {"eeg", "yamada"}),
    ("AND/dateRange.start/GE/20250212/dateRange.start/LT/20250213", {"jane", "bare"}),
    ("cancelled/EQ/true", {"eeg"}),
    ("cancelled/NE/true", {"jane", "bare", "qa", "yamada"}),
    ("cancellationReason/EQ/__NULL__", {"jane", "bare", "qa", "yamada"}),
    ("cancellationReason/NE/__NULL__", {"eeg"}),
    ("cancellationReason/EQ/participant ill", {"eeg"}),
    # SQL semantics: comparing null is unknown, not true, and NOT unknown stays unknown.
    ("cancellationReason/NE/other", {"eeg"}),
    ("NOR/cancellationReason/EQ/other", {"eeg"}),
    ("project/EQ/__NULL__", {"qa"}),
    ("project.name/EQ/__NULL__", {"qa"}),
    ("project.formattedName/STARTS_WITH/BRISKP (Brain network", {"jane", "bare", "eeg", "yamada"}),
    ("booker.name/EQ/Dr. Priya Raman", {"jane", "bare", "eeg", "qa", "yamada"}),
])
def test_relations(site, expr, expected):
    assert matched(site, expr) == expected


def test_numeric_id_comparison(site):
    first, last = site.ids["jane"], site.ids["yamada"]
    assert matched(site, f"id/EQ/{first}") == {"jane"}
    assert matched(site, f"AND/id/GT/{first}/id/LT/{last}") == {"bare", "eeg", "qa"}


def test_segments_are_percent_decoded_after_splitting(site):
    odd = site.add_booking(title="a/b c+d%", start=at(12, 15))
    site.names[odd] = "odd"
    assert matched(site, ["title", "EQ", "a/b c+d%"]) == {"odd"}
    assert matched(site, ["title", "STARTS_WITH", "a/"]) == {"odd"}


@pytest.mark.parametrize("expr, message", [
    ("AND", "no operands"),
    ("title/EQ", "expected a value"),
    ("title/LIKE/x", "unknown relation"),
    ("title/EQ/a/status/EQ/APPROVED", "after a complete expression"),
    ("nosuch/EQ/1", "has no property 'nosuch'"),
    ("resource.nosuch/EQ/1", "has no property 'resource.nosuch'"),
    ("title.name/EQ/x", "'title' is a string, not an object"),
    ("durationInMinutes/EQ/abc", "'abc' is not an integer"),
    ("durationInMinutes/CONTAINS/1", "CONTAINS does not apply to the int property"),
    ("dateRange.start/GE/2025-02-12", "not a date literal"),
    ("dateRange.start/GE/20251340", "not a valid date"),
    ("dateRange.start/GE/20250212T12", "not a date literal"),
    ("status/EQ/approved", "'approved' is not one of APPROVED"),
    ("status/CONTAINS/APP", "CONTAINS does not apply to the enum property"),
    ("cancelled/EQ/yes", "not a boolean"),
    ("resource/EQ/3T MRI", "'resource' is an object"),
    ("title/LT/__NULL__", "only EQ and NE can compare with __NULL__"),
    ("title/MEMBER_OF/x", "applies to collection properties"),
])
def test_malformed_queries_answer_400_with_a_reason(site, expr, message):
    response = query(site, "Calpendo.Booking", expr)
    assert response.status_code == 400
    assert message in response.text


def test_missing_expression_and_bad_encoding_are_400(site):
    for url in (f"{site.url}/webdav/q/Calpendo.Booking",
                f"{site.url}/webdav/q/Calpendo.Booking/",
                f"{site.url}/webdav/q/Calpendo.Booking/title/EQ/%FF"):
        response = requests.get(url, auth=AUTH, timeout=10)
        assert response.status_code == 400, url


def test_unknown_type_is_404_even_with_a_bad_expression(site):
    assert query(site, "Calpendo.Nope", "AND").status_code == 404


# --------------------------------------------------------------------------- types and paths


def test_operator_is_only_on_the_mriscan_subtype(site):
    for paths, expr in (("title,Operator.name", "status/EQ/APPROVED"),
                        ("title", "Operator.name/EQ/Tech, Anna")):
        response = query(site, "Calpendo.Booking", expr, paths)
        assert response.status_code == 400
        assert "'Operator'" in response.text and "MRIScan" in response.text
    found = biskits(site, "MRIScan", "Operator.name/EQ/Tech, Anna", "title,Operator")
    assert [(b["id"], b["properties"]["Operator"]["name"]) for b in found] == [
        (site.ids["jane"], "Tech, Anna")]
    assert set(found[0]["properties"]["Operator"]) == {"id", "name", "formattedName"}
    assert matched(site, "Operator/EQ/__NULL__", "MRIScan") == {"bare"}


def test_subtype_queries_return_only_that_subtype(calpendo_sim):
    everything = biskits(calpendo_sim, "Calpendo.Booking", "id/GT/0", "resource.name")
    assert len(everything) == SIM_BOOKINGS
    by_type = {}
    for b in everything:
        by_type.setdefault(b["biskitType"], set()).add(b["id"])
    assert set(by_type) == {"MRIScan", "EEGBooking", "Calpendo.Booking"}
    for subtype in ("MRIScan", "EEGBooking"):
        found = biskits(calpendo_sim, subtype, "id/GT/0")
        assert {b["id"] for b in found} == by_type[subtype]
        assert {b["biskitType"] for b in found} == {subtype}
    resources = {b["biskitType"]: b["properties"]["resource"]["name"] for b in everything}
    assert resources == {"MRIScan": "3T MRI", "EEGBooking": "EEG Lab",
                         "Calpendo.Booking": "Mock Scanner"}


def test_paths_come_back_nested_under_properties(site):
    found = biskits(site, "MRIScan", "title/EQ/SUB0001 - Jane Doe",
                    "title,dateRange.start,resource,project.name,durationInMinutes,cancelled,"
                    "cancellationReason,Operator.name")
    assert found == [{
        "id": site.ids["jane"], "biskitType": "MRIScan",
        "properties": {
            "title": "SUB0001 - Jane Doe",
            "dateRange": {"start": "2025-02-12 08:00:00.0"},
            "resource": {"id": 1, "name": "3T MRI", "formattedName": "3T MRI"},
            "project": {"name": "BRISKP"},
            "durationInMinutes": 30, "cancelled": False, "cancellationReason": None,
            "Operator": {"name": "Tech, Anna"},
        }}]


def test_path_through_a_null_object_is_null(site):
    [qa] = biskits(site, "Calpendo.Booking", "title/EQ/phantom QA", "project.name,project.id")
    assert qa["properties"] == {"project": None}
    [bare] = biskits(site, "MRIScan", "title/EQ/SUB0002", "Operator.name")
    assert bare["properties"] == {"Operator": None}


def test_without_paths_only_id_type_and_formatted_name(site):
    assert biskits(site, "Calpendo.Booking", "title/EQ/SUB0001 - Jane Doe") == [{
        "id": site.ids["jane"], "biskitType": "MRIScan",
        "properties": {"formattedName": "[2025-02-12 08:00:00.0, 2025-02-12 08:30:00.0]"}}]


def test_paths_with_an_unknown_or_empty_name_are_400(site):
    for paths in ("title,nosuch", "title,,status", "", "title, status"):
        assert query(site, "Calpendo.Booking", "id/GT/0", paths).status_code == 400, paths


def test_flat_keys_mode(calpendo_sim_factory):
    sim = calpendo_sim_factory(bookings=0, today=TODAY, flat_keys=True)
    bid = sim.add_booking(title="SUB0009", start=at(12, 9), operator=None, project=None)
    found = biskits(sim, "MRIScan", "title/EQ/SUB0009",
                    "title,resource.name,dateRange,Operator.name,project.name")
    assert found == [{"id": bid, "biskitType": "MRIScan", "title": "SUB0009",
                      "resource.name": "3T MRI",
                      "dateRange": {"start": "2025-02-12 09:00:00.0",
                                    "finish": "2025-02-12 10:00:00.0"},
                      "Operator.name": None, "project.name": None}]
    whole = detail(sim, "MRIScan", bid).json()
    assert whole["id"] == bid and "properties" not in whole
    assert whole["resource.name"] == "3T MRI" and whole["dateRange.start"] == "2025-02-12 09:00:00.0"
    assert whole["Operator.name"] is None and whole["Operator.formattedName"] is None


# --------------------------------------------------------------------------- b/TYPE/ID


def test_detail_returns_every_property(site):
    jane = site.ids["jane"]
    response = detail(site, "Calpendo.Booking", jane)
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["biskitType"]) == (jane, "MRIScan")
    props = body["properties"]
    assert set(props) == DOCUMENTED_PROPERTIES  # no Operator through the base type
    assert props["formattedName"] == "[2025-02-12 08:00:00.0, 2025-02-12 08:30:00.0]"
    assert props["dateRange"] == {"start": "2025-02-12 08:00:00.0",
                                  "finish": "2025-02-12 08:30:00.0"}
    assert props["durationInMinutes"] == 30 and props["status"] == "APPROVED"
    assert props["project"]["formattedName"] == "BRISKP (Brain network models in stroke patients)"
    assert set(props["booker"]) == {"id", "name"} and set(props["owner"]) == {"id", "name"}
    assert TIMESTAMP.match(props["created"]) and TIMESTAMP.match(props["modified"])

    as_scan = detail(site, "MRIScan", jane).json()["properties"]
    assert as_scan["Operator"]["name"] == "Tech, Anna"
    # The subtype's own properties besides; this booking was never weighed.
    assert (as_scan["Weight"], as_scan["Height"]) == (None, None)
    assert {k: v for k, v in as_scan.items() if k not in SUBTYPE_FIELDS["MRIScan"]} == props


def test_detail_of_another_subtype_is_404(site):
    assert detail(site, "EEGBooking", site.ids["jane"]).status_code == 404
    assert detail(site, "MRIScan", site.ids["qa"]).status_code == 404
    assert detail(site, "Calpendo.Booking", site.ids["qa"]).json()["biskitType"] == "Calpendo.Booking"


# --------------------------------------------------------------------------- store mutations


def test_added_booking_is_visible_with_defaults(site):
    bid = site.add_booking(title="SUB0100 - New Person", start=at(12, 16), minutes=45)
    body = detail(site, "MRIScan", bid).json()["properties"]
    assert body["title"] == "SUB0100 - New Person"
    assert body["dateRange"]["finish"] == "2025-02-12 16:45:00.0"
    assert body["Operator"]["name"] == "Tech, Anna" and body["status"] == "APPROVED"
    assert site.get_booking(bid)["properties"] == body
    assert bid in {b["id"] for b in site.bookings()}


def test_update_changes_title_and_bumps_modified(site):
    jane = site.ids["jane"]
    before = site.get_booking(jane)["properties"]
    site.update_booking(jane, title="SUB0001 - Jane Smith")
    site.update_booking(jane, status="DENIED")
    [after] = biskits(site, "Calpendo.Booking", f"id/EQ/{jane}", "title,status,created,modified")
    assert after["properties"]["title"] == "SUB0001 - Jane Smith"
    assert after["properties"]["status"] == "DENIED"
    assert after["properties"]["created"] == before["created"]
    assert after["properties"]["modified"] > before["modified"]
    assert matched(site, "title/EQ/SUB0001 - Jane Doe") == set()


def test_modified_strictly_increases_on_rapid_changes(site):
    seen = []
    for n in range(3):
        site.update_booking(site.ids["bare"], title=f"SUB0002 v{n}")
        seen.append(site.get_booking(site.ids["bare"])["properties"]["modified"])
    assert seen == sorted(set(seen))


def test_move_booking_changes_the_window_it_falls_in(site):
    jane = site.ids["jane"]
    site.move_booking(jane, at(15, 14))
    assert jane not in {b["id"] for b in biskits(
        site, "Calpendo.Booking", "AND/dateRange.start/GE/20250212/dateRange.start/LT/20250213")}
    props = site.get_booking(jane)["properties"]
    assert props["formattedName"] == "[2025-02-15 14:00:00.0, 2025-02-15 14:30:00.0]"
    site.move_booking(jane, at(15, 14), minutes=75)
    props = site.get_booking(jane)["properties"]
    assert props["durationInMinutes"] == 75 and props["dateRange"]["finish"] == "2025-02-15 15:15:00.0"


def test_cancel_and_delete(site):
    bare = site.ids["bare"]
    site.cancel_booking(bare, reason="scanner fault")
    [found] = biskits(site, "Calpendo.Booking", f"id/EQ/{bare}",
                      "status,cancelled,cancellationReason")
    assert found["properties"] == {"status": "CANCELLED", "cancelled": True,
                                   "cancellationReason": "scanner fault"}
    site.update_booking(bare, status="APPROVED")  # un-cancelling clears flag and reason
    assert site.get_booking(bare)["properties"]["cancelled"] is False
    assert site.get_booking(bare)["properties"]["cancellationReason"] is None

    site.delete_booking(bare)
    assert detail(site, "Calpendo.Booking", bare).status_code == 404
    assert bare not in {b["id"] for b in biskits(site, "Calpendo.Booking", "id/GT/0")}
    with pytest.raises(KeyError):
        site.get_booking(bare)
    assert site.add_booking(title="next", start=at(12, 9)) > site.ids["yamada"]  # ids not reused


def test_invalid_store_changes_are_rejected(site):
    with pytest.raises(ValueError):
        site.update_booking(site.ids["jane"], status="approved")
    with pytest.raises(ValueError):
        site.add_booking(title="x", resource="EEG Lab", operator="Tech, Anna")
    with pytest.raises(ValueError):
        site.update_booking(site.ids["jane"], formattedName="x")
    with pytest.raises(KeyError):
        site.update_booking(424242, title="x")


def test_extra_properties_become_queryable_on_their_type(site):
    bid = site.add_booking(title="SUB0200", start=at(12, 13), protocolName="T1w MPRAGE")
    site.names[bid] = "extra"
    assert matched(site, "protocolName/STARTS_WITH/T1w", "MRIScan") == {"extra"}
    assert query(site, "Calpendo.Booking", "protocolName/EQ/x").status_code == 400


# --------------------------------------------------------------------------- failures, latency


def test_injected_failures_then_recovery(calpendo_sim):
    url = query_url(calpendo_sim, "Calpendo.Booking", "id/GT/0")
    calpendo_sim.fail_requests(status=503, count=2)
    assert [requests.get(url, auth=AUTH, timeout=10).status_code for _ in range(3)] == [503, 503, 200]

    page = "<html><body><h1>Proxy Error</h1></body></html>"
    calpendo_sim.fail_requests(status=200, count=None, body=page)
    for _ in range(2):
        response = requests.get(url, auth=AUTH, timeout=10)
        assert response.status_code == 200 and response.text == page
        assert response.headers["Content-Type"].startswith("text/html")
    calpendo_sim.clear_failures()
    assert requests.get(url, auth=AUTH, timeout=10).json()["biskits"]


def test_request_count(calpendo_sim):
    calpendo_sim.reset_counts()
    url = query_url(calpendo_sim, "Calpendo.Booking", "id/GT/0")
    requests.get(url, auth=AUTH, timeout=10)
    requests.get(url, timeout=10)  # 401s count too: they reached the server
    assert calpendo_sim.request_count == 2
    calpendo_sim.reset_counts()
    assert calpendo_sim.request_count == 0


def test_latency_applies_per_request_and_requests_run_in_parallel(calpendo_sim):
    calpendo_sim.latency = 0.2
    url = query_url(calpendo_sim, "Calpendo.Booking", "status/EQ/APPROVED", "title")
    durations: list[float] = []

    def fetch() -> None:
        start = time.perf_counter()
        assert requests.get(url, auth=AUTH, timeout=10).status_code == 200
        durations.append(time.perf_counter() - start)

    threads = [threading.Thread(target=fetch) for _ in range(10)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = time.perf_counter() - start
    assert len(durations) == 10 and min(durations) >= 0.2
    assert total < 1.0, f"10 parallel requests with 0.2 s latency took {total:.2f} s"


def test_keep_alive_requests_do_not_stall(calpendo_sim):
    """Sequential requests on one pooled connection: no ~40 ms Nagle/delayed-ACK stall each."""
    session = requests.Session()
    session.auth = AUTH
    ids = [b["id"] for b in calpendo_sim.bookings()][:30]
    start = time.perf_counter()
    for bid in ids:
        assert session.get(f"{calpendo_sim.url}/webdav/b/Calpendo.Booking/{bid}",
                           timeout=10).status_code == 200
    elapsed = time.perf_counter() - start
    assert elapsed < 0.6, f"30 keep-alive requests took {elapsed:.2f} s"


def test_stop_closes_pooled_connections(calpendo_sim_factory):
    sim = calpendo_sim_factory(bookings=3)
    session = requests.Session()
    session.auth = AUTH
    url = query_url(sim, "Calpendo.Booking", "id/GT/0")
    assert session.get(url, timeout=5).status_code == 200
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=5)
    sim.stop()  # idempotent


def test_window_query_over_5000_bookings_is_complete(calpendo_sim_factory):
    sim = calpendo_sim_factory(bookings=5000, seed=7)
    first, last = sim.today - dt.timedelta(days=1), sim.today + dt.timedelta(days=7)
    expr = (f"AND/dateRange.start/GE/{first:%Y%m%d}/dateRange.start/LT/{last:%Y%m%d}/CLOSE")
    paths = ("id,biskitType,title,status,formattedName,dateRange.start,dateRange.finish,"
             "resource.name,resource.id,project.name,project.formattedName,durationInMinutes,"
             "created,modified,booker.name,owner.name,cancelled,cancellationReason")
    response = requests.get(query_url(sim, "Calpendo.Booking", expr, paths), auth=AUTH, timeout=30)
    assert response.status_code == 200
    assert len(response.json()["biskits"]) == 5000


# --------------------------------------------------------------------------- seed data


def test_generator_is_deterministic():
    one = generate_bookings(200, seed=5, today=TODAY)
    assert one == generate_bookings(200, seed=5, today=TODAY)
    assert one != generate_bookings(200, seed=6, today=TODAY)
    assert [b["id"] for b in one] == list(range(1001, 1201))


def test_simulator_serves_the_generated_bookings(calpendo_sim_factory):
    sim = calpendo_sim_factory(bookings=40, seed=3, today=TODAY)
    assert sim.bookings() == generate_bookings(40, seed=3, today=TODAY)


@pytest.mark.parametrize("days, past_days", [(7, 1), (1, 0), (3, 5)])
def test_generated_bookings_stay_in_the_window_and_office_hours(days, past_days):
    bookings = generate_bookings(1000, seed=11, today=TODAY, days=days, past_days=past_days)
    low = dt.datetime.combine(TODAY - dt.timedelta(days=past_days), dt.time())
    high = dt.datetime.combine(TODAY + dt.timedelta(days=days), dt.time())
    for b in bookings:
        rng = b["properties"]["dateRange"]
        start = dt.datetime.strptime(rng["start"], "%Y-%m-%d %H:%M:%S.0")
        finish = dt.datetime.strptime(rng["finish"], "%Y-%m-%d %H:%M:%S.0")
        assert low <= start < high
        assert dt.time(7) <= start.time() and finish <= dt.datetime.combine(start.date(), dt.time(19))


def test_generated_data_is_varied_and_consistent():
    bookings = generate_bookings(300, seed=42, today=TODAY)
    props = [b["properties"] for b in bookings]
    todays_scans = [p for p in props if p["dateRange"]["start"].startswith("2025-02-12")
                    and p["resource"]["name"] == "3T MRI" and p["status"] == "APPROVED"]
    assert len(todays_scans) >= 5
    assert {p["status"] for p in props} == {"APPROVED", "REQUESTED", "TENTATIVE", "DENIED",
                                            "CANCELLED"}
    assert {p["resource"]["name"] for p in props} == {"3T MRI", "EEG Lab", "Mock Scanner"}
    for b in bookings:
        p = b["properties"]
        expected_type = {"3T MRI": "MRIScan", "EEG Lab": "EEGBooking",
                         "Mock Scanner": "Calpendo.Booking"}[p["resource"]["name"]]
        assert b["biskitType"] == expected_type
        assert ("Operator" in p) == (expected_type == "MRIScan")
        assert p["cancelled"] == (p["status"] == "CANCELLED")
        assert (p["cancellationReason"] is not None) == p["cancelled"]
        assert p["formattedName"] == f"[{p['dateRange']['start']}, {p['dateRange']['finish']}]"
        assert p["created"] <= p["modified"] < "2025-02-12"
    titles = [p["title"] for p in props]
    assert {"", "TBD", "phantom QA", "call Bob re: consent"} <= set(titles)
    assert any(re.fullmatch(r"SUB\d{4}", t) for t in titles)
    assert any(re.fullmatch(r"SUB\d{4} - [A-Za-z]+ [A-Za-z]+", t) for t in titles)
    assert any(re.fullmatch(r"BRISK-\d{3}_[A-Za-z]+", t) for t in titles)
    assert any(re.fullmatch(r"SUB\d{4} - \S+\^\S+", t) and not t.isascii() for t in titles)
    assert titles[:5] == ["SUB0001", "SUB0002 - Jane Doe", "SUB0003 - Müller^Jürgen",
                          "SUB0004 - 山田^太郎", "BRISK-005_Smith"]


def test_mr_scans_carry_weight_and_height_as_a_sites_custom_properties():
    bookings = generate_bookings(400, seed=42, today=TODAY)
    scans = [b["properties"] for b in bookings if b["biskitType"] == "MRIScan"]
    others = [b["properties"] for b in bookings if b["biskitType"] != "MRIScan"]
    assert not any("Weight" in p or "Height" in p for p in others)
    weighed = [p for p in scans if p["Weight"] is not None]
    assert all(p["Height"] is not None for p in weighed)
    assert 0.8 < len(weighed) / len(scans) < 0.98  # some were never weighed: no value
    for p in weighed:
        assert re.fullmatch(r"\d{2,3}\.\d", p["Weight"]) and 45 <= float(p["Weight"]) <= 140
        assert re.fullmatch(r"\d{3}", p["Height"]) and 150 <= int(p["Height"]) <= 200
    assert all(p["Weight"] for p in scans[:5])  # today's first scans, for the demo
    assert len({p["Weight"] for p in weighed}) > len(weighed) // 2
    assert generate_bookings(400, seed=42, today=TODAY) == bookings  # deterministic


def test_empty_window_is_rejected():
    with pytest.raises(ValueError):
        generate_bookings(5, today=TODAY, days=0, past_days=0)


# --------------------------------------------------------------------------- CLI


@pytest.mark.external
def test_cli_serves_until_sigterm_without_printing_the_password():
    env = {**os.environ, "CALPENDO_USERNAME": "cli-user", "CALPENDO_PASSWORD": "cli-secret-pw"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calpendo_sim", "--port", "0", "--bookings", "8", "--quiet",
         "--latency", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        response = requests.get(f"{url}/webdav/q/Calpendo.Booking/id/GT/0",
                                auth=("cli-user", "cli-secret-pw"), timeout=10)
        assert len(response.json()["biskits"]) == 8
        assert requests.get(f"{url}/webdav/q/Calpendo.Booking/id/GT/0", timeout=10,
                            auth=("calpendo", "calpendo")).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "cli-secret-pw" not in out + err
    assert "stopped" in err


@pytest.mark.external
def test_cli_help_describes_the_options():
    result = subprocess.run([sys.executable, "-m", "calpendo_sim", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in ("--host", "--port", "--bookings", "--seed", "--days", "--past-days",
                   "--latency", "--timezone", "--username", "--password", "--flat-keys"):
        assert option in result.stdout
