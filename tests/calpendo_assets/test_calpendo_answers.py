"""Odd answers from a Calpendo server (the real simulator): errors name where, never what;
an answer lacking the fields a sync asked for cancels nothing."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from calpendo_assets import sync
from calpendo_assets.config import parse_config
from calpendo_assets.sources.calpendo.query import window_expression
from calpendo_assets.core.errors import BadAnswerError
from mwl_service.schema import SCHEDULED, WorklistItem
from mwl_service.engine import make_engine
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER

JSON_TYPE = "application/json;charset=UTF-8"
PARTICIPANT = "FP6500 - Fault^Person0"
ENV = {"CALPENDO_USERNAME": SIM_USER, "CALPENDO_PASSWORD": SIM_PASSWORD}


def source_for(sim, field_mapping=None, **config):
    raw = {"name": "mri", "type": "calpendo", "field_mapping": field_mapping,
           "config": {"base_url": sim.url, "resources": ["3T MRI"], "retries": 0, **config}}
    return parse_config({"data_sources": [raw]}, env={})[0]


@pytest.fixture
def sim(calpendo_sim_factory):
    return calpendo_sim_factory(bookings=0)


@pytest.mark.parametrize(
    "body, problem",
    [
        (
            '{"biskits": [{"id": 6500, "properties": {"title": "%s", "status": "APPR' % PARTICIPANT,
            "malformed JSON (Unterminated string starting at: line 1 column 87, byte 86)",
        ),
        (
            json.dumps({"biskits": {"id": 6500, "properties": {"title": PARTICIPANT}}}),
            "'biskits' is an object, not a list",
        ),
        (
            json.dumps({"biskits": [{"id": 1}, PARTICIPANT]}),
            "biskits[1] is a string, not an object (2 biskits)",
        ),
        # Ids are quoted in warnings and metadata, so an id must look like one.
        (
            json.dumps({"biskits": [{"id": {"name": PARTICIPANT}, "properties": {}}]}),
            "biskits[0].id is an object, not a number (1 biskits)",
        ),
        (
            json.dumps({"biskits": [{"id": 1}, {"id": PARTICIPANT, "properties": {}}]}),
            "biskits[1].id is text that is not a booking id (2 biskits)",
        ),
    ],
)
def test_bad_answers_name_url_status_type_size_and_position_never_content(
    sim, caplog, body, problem
):
    source = source_for(sim)
    sim.fail_requests(status=200, body=body, content_type=JSON_TYPE, count=None)
    with caplog.at_level(logging.DEBUG), pytest.raises(BadAnswerError) as info:
        sync.fetch(source, sync.Credentials(SIM_USER, SIM_PASSWORD))
    message = str(info.value)
    assert problem in message
    assert f"{sim.url}/webdav/q/Calpendo.Booking/AND/dateRange.start/GE/" in message
    if "malformed" in problem:
        assert f"HTTP 200, {JSON_TYPE}, {len(body.encode())} bytes" in message
    for secret in ("FP6500", "Fault", "Person0", SIM_PASSWORD):
        assert secret not in message and secret not in caplog.text
    assert info.value.transient is False  # retrying a malformed answer does not help


def rows(engine) -> dict[str, WorklistItem]:
    with Session(engine) as s:
        return {r.booking_id: r for r in s.scalars(select(WorklistItem))}


@pytest.mark.parametrize(
    "biskit",
    [
        lambda i: {"id": i, "biskitType": "MRIScan", "properties": None},
        lambda i: {"id": i, "biskitType": "MRIScan", "properties": {"title": "SUB1"}},
        lambda i: {"id": i, "biskitType": "MRIScan"},
    ],
    ids=["properties-null", "paths-missing", "no-properties"],
)
def test_answer_without_the_fields_cancels_nothing_however_small_the_window(
    sim, tmp_path, biskit
):
    today = sim.today
    ids = [sim.add_booking(f"SUB00{n} - Jane Doe", start=dt.datetime.combine(today, dt.time(9 + n)))
           for n in range(3)]
    source = source_for(sim)
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    now = dt.datetime.combine(today, dt.time(8)).replace(tzinfo=source.tz)
    assert sync.run_sync(source, engine, env=ENV, now=now)[2].inserted == 3

    body = json.dumps({"biskits": [biskit(i) for i in ids]})
    sim.fail_requests(status=200, body=body, content_type=JSON_TYPE, count=None)
    fetched, _, published = sync.run_sync(source, engine, env=ENV, now=now)
    sim.clear_failures()
    assert fetched.fetch.complete is False
    assert set(fetched.fetch.skipped) == {str(i) for i in ids}
    assert published.cancelled == 0
    assert {r.step_status for r in rows(engine).values()} == {SCHEDULED}
    engine.dispose()



@pytest.mark.parametrize(
    "case, sent", [("upper", "APPROVED"), ("lower", "approved"), ("as_given", "Approved")]
)
def test_status_values_are_sent_in_the_configured_case(case, sent):
    expression = window_expression(dt.date(2026, 3, 1), dt.date(2026, 3, 2), ["Approved"], case)
    assert expression.endswith(f"status/EQ/{sent}/CLOSE")


def test_the_case_matters_to_a_server_that_compares_exactly(sim):
    creds = sync.Credentials(SIM_USER, SIM_PASSWORD)
    assert sync.fetch(source_for(sim, status_filter="Approved"), creds).fetch.complete
    with pytest.raises(BadAnswerError, match="HTTP 400"):
        sync.fetch(source_for(sim, status_filter="Approved", status_case="as_given"), creds)


def test_operator_comes_from_the_configured_subtype_or_not_at_all(sim):
    sim.add_booking("SUB0301 - Jane Doe", start=dt.datetime.combine(sim.today, dt.time(10)),
                    operator="Nguyen, Minh")
    now = dt.datetime.combine(sim.today, dt.time(8)).replace(tzinfo=source_for(sim).tz)
    creds = sync.Credentials(SIM_USER, SIM_PASSWORD)
    (booking,) = sync.fetch(source_for(sim), creds, now=now).fetch.bookings
    assert booking["Operator"] == "Nguyen, Minh"

    sim.reset_counts()
    # Without an operator subtype, a mapped operator path is read from the booking itself.
    plain = {"title": "patient_id"}
    (booking,) = sync.fetch(source_for(sim, plain, operator_type=None), creds, now=now).fetch.bookings
    assert "Operator" not in booking and sim.request_count == 1  # the window query only

    sim.reset_counts()  # a subtype this server lacks: a warning, no operator, the rest synced
    fetched = sync.fetch(source_for(sim, operator_type="NoSuchScan"), creds, now=now).fetch
    assert "Operator" not in fetched.bookings[0] and fetched.complete
    assert sim.request_count == 2


def test_sync_fingerprint_is_one_query_and_follows_changes(sim):
    booking = sim.add_booking("SUB0401", start=dt.datetime.combine(sim.today, dt.time(11)))
    source, creds = source_for(sim), sync.Credentials(SIM_USER, SIM_PASSWORD)
    sim.reset_counts()
    first = sync.fingerprint(source, creds)
    assert sim.request_count == 1 and sync.fingerprint(source, creds) == first
    sim.move_booking(booking, dt.datetime.combine(sim.today, dt.time(12)))
    assert sync.fingerprint(source, creds) != first


def test_credentials_never_show_the_password():
    creds = sync.Credentials(SIM_USER, SIM_PASSWORD)
    assert SIM_PASSWORD not in repr(creds) and SIM_USER in repr(creds)


def test_plugins_validate_their_own_config():
    from calpendo_assets.sources.registry import plugin_for

    settings = plugin_for("calpendo").validate_config(
        {"base_url": "http://127.0.0.1:1/", "status_filter": "approved"}
    )
    assert (settings.base_url, settings.status_filter) == ("http://127.0.0.1:1", ("approved",))
    with pytest.raises(Exception, match="path"):
        plugin_for("file").validate_config({})
