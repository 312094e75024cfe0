"""The Dagster assets end to end: real simulator on loopback, real worklist DB.

Each test materialises the source's sync (five assets, four blocking checks, or a
selection of them) with `dg.materialize`, then reads the published table back with
SQLAlchemy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import dagster as dg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from calpendo_assets import sync
from calpendo_assets.defs.assets import build_source_assets
from calpendo_assets.config import load_config
from calpendo_assets.defs.resources import SourceAccess, WorklistDatabase
from mwl_service.schema import (
    DISCONTINUED,
    IN_PROGRESS,
    OWNER_MPPS,
    SCHEDULED,
    WorklistHistory,
    WorklistItem,
)
from tests.fixtures.dagster_instance import shared_instance
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER

TZ = "America/Edmonton"


@pytest.fixture
def make_source(calpendo_sim, tmp_path, monkeypatch):
    """Data sources for the running simulator, loaded through the real config loader."""
    monkeypatch.setenv("CALPENDO_USERNAME", SIM_USER)
    monkeypatch.setenv("CALPENDO_PASSWORD", SIM_PASSWORD)

    def make(field_mapping=None):
        cfg = source_config(calpendo_sim.url)
        if field_mapping is not None:
            cfg["data_sources"][0]["field_mapping"] = field_mapping
        path = tmp_path / "calpendo.json"
        path.write_text(json.dumps(cfg))
        return load_config(str(path))[0]

    return make


@pytest.fixture
def source(make_source):
    return make_source()


def source_config(url: str) -> dict:
    return {
        "data_sources": [
            {
                "name": "mri",
                "type": "calpendo",
                "enabled": True,
                "sync_interval": 300,
                "operation_interval": {"start_time": [0, 0], "end_time": [0, 0]},
                "config": {
                    "base_url": url,
                    "resources": ["3T", "EEG", "Mock"],
                    "status_filter": ["approved"],
                    "timezone": TZ,
                    "past_days": 1,
                    "future_days": 7,
                    "retries": 0,
                    "resource_modality_mapping": {"3T MRI": "MR", "EEG": "EEG", "Mock": "OT"},
                    "resource_ae_title_mapping": {"3T": "MRI3T", "EEG": "EEGLAB"},
                },
            }
        ]
    }


def resources(db_url, password=SIM_PASSWORD) -> dict:
    return {
        "worklist_db": WorklistDatabase(url=db_url),
        "calpendo": SourceAccess(username=SIM_USER, password=password),
    }


def materialize(source, db_url, selection=None, retry_policy=None, password=SIM_PASSWORD):
    return dg.materialize(
        [build_source_assets(source, retry_policy=retry_policy)],
        resources=resources(db_url, password),
        selection=selection,
        instance=shared_instance(),
        raise_on_error=False,
    )


def materialized(result, name) -> list:
    key = dg.AssetKey(["mri", name])
    return [e for e in result.get_asset_materialization_events() if e.asset_key == key]


def rows(engine, **filters) -> dict[str, WorklistItem]:
    with Session(engine) as s:
        q = select(WorklistItem).filter_by(**filters)
        return {r.booking_id: r for r in s.scalars(q)}


def history_count(engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(WorklistHistory))


def today_local() -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(TZ)).date()


def add(sim, title="SUB0900 - Jane Doe", hour=10, minute=0, day_offset=0, **kw) -> str:
    start = dt.datetime.combine(today_local() + dt.timedelta(days=day_offset), dt.time(hour, minute))
    kw.setdefault("resource", "3T MRI")
    kw.setdefault("biskit_type", "MRIScan")
    return str(sim.add_booking(title=title, start=start, minutes=45, status="APPROVED", **kw))


def checks_passed(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_first_sync_publishes_approved_bookings(calpendo_sim, source, engine, db_url):
    bid = add(calpendo_sim, "SUB0900 - Müller^Jürgen", hour=9, minute=30, operator="Tech, Anna")
    result = materialize(source, db_url)
    assert result.success
    assert checks_passed(result) == {
        "required_fields_present": True,
        "dicom_values_valid": True,
        "identifiers_unique": True,
        "mass_cancellation_guard": True,
    }
    published = rows(engine)
    row = published[bid]
    assert row.patient_id == "SUB0900"
    assert row.patient_name == "Müller^Jürgen"
    assert row.scheduled_start_date == today_local().strftime("%Y%m%d")
    assert row.scheduled_start_time == "093000"
    assert row.site_timezone == TZ
    assert row.scheduled_station_ae_title == "MRI3T"
    assert row.modality == "MR"
    assert row.performing_physician_name  # operator from the MRIScan subtype query
    assert row.step_status == SCHEDULED
    # Work offered is APPROVED bookings only; cancelled/denied ones are on record,
    # discontinued, with Calpendo's status.
    status = {str(b["id"]): b["properties"]["status"] for b in calpendo_sim.bookings()}
    scheduled = {b for b, r in published.items() if r.step_status == SCHEDULED}
    assert len(scheduled) >= 5
    assert all(status[b] == "APPROVED" for b in scheduled)
    for b in published.keys() - scheduled:
        assert published[b].step_status == DISCONTINUED
        assert published[b].booking_status == status[b] in ("CANCELLED", "DENIED")
    # The UTC instant and the local wall clock agree.
    local = row.scheduled_start_utc.astimezone(__import__("zoneinfo").ZoneInfo(TZ))
    assert local.strftime("%Y%m%d%H%M%S") == row.scheduled_start_date + row.scheduled_start_time


def test_resync_unchanged_writes_nothing(calpendo_sim, source, engine, db_url):
    assert materialize(source, db_url).success
    before_hist = history_count(engine)
    before = {b: r.updated_at for b, r in rows(engine).items()}
    result = materialize(source, db_url)
    assert result.success
    assert history_count(engine) == before_hist
    assert {b: r.updated_at for b, r in rows(engine).items()} == before
    meta = materialized(result, "worklist")[0].materialization.metadata
    assert meta["inserted"].value == 0 and meta["updated"].value == 0


def test_moved_and_retitled_booking_updates_the_same_row(calpendo_sim, source, engine, db_url):
    bid = add(calpendo_sim, "SUB0901 - Jane Doe", hour=11)
    assert materialize(source, db_url).success
    first = rows(engine)[bid]
    calpendo_sim.move_booking(
        int(bid), dt.datetime.combine(today_local() + dt.timedelta(days=1), dt.time(14, 15))
    )
    calpendo_sim.update_booking(int(bid), title="SUB0902 - Jane Roe")
    assert materialize(source, db_url).success
    second = rows(engine)[bid]
    assert second.id == first.id
    assert second.accession_number == first.accession_number
    assert second.study_instance_uid == first.study_instance_uid
    assert second.scheduled_start_time == "141500"
    assert second.patient_id == "SUB0902"
    assert second.patient_name == "Roe^Jane"
    assert rows(engine, booking_id=bid).keys() == {bid}


def test_cancelled_and_deleted_bookings_are_discontinued(calpendo_sim, source, engine, db_url):
    cancelled = add(calpendo_sim, "SUB0903", hour=12)
    deleted = add(calpendo_sim, "SUB0904", hour=13)
    assert materialize(source, db_url).success
    calpendo_sim.cancel_booking(int(cancelled), reason="participant ill")
    calpendo_sim.delete_booking(int(deleted))
    assert materialize(source, db_url).success
    published = rows(engine)
    assert published[cancelled].step_status == DISCONTINUED
    assert published[cancelled].discontinued_at is not None
    assert "participant ill" in published[cancelled].discontinued_reason
    assert published[cancelled].booking_status == "CANCELLED"
    assert published[deleted].step_status == DISCONTINUED
    assert published[deleted].discontinued_reason
    # Nothing is ever deleted.
    assert {cancelled, deleted} <= published.keys()


def test_failed_fetch_cancels_nothing(calpendo_sim, source, engine, db_url):
    assert materialize(source, db_url).success
    before = {b: (r.step_status, r.updated_at) for b, r in rows(engine).items()}
    calpendo_sim.fail_requests(status=503, count=None)
    try:
        result = materialize(source, db_url)
    finally:
        calpendo_sim.clear_failures()
    assert not result.success
    assert {b: (r.step_status, r.updated_at) for b, r in rows(engine).items()} == before


def test_failing_check_publishes_nothing(calpendo_sim, source, engine, db_url, monkeypatch):
    assert materialize(source, db_url).success
    before = {b: (r.updated_at, r.patient_id) for b, r in rows(engine).items()}
    before_hist = history_count(engine)
    add(calpendo_sim, "SUB0905 - New Person", hour=15)
    # The transform cleans values, so the checks are a safety net against its bugs:
    # simulate one by corrupting a row after the real transform ran.
    real_transform = sync.transform

    def buggy_transform(src, details, logger=None):
        result = real_transform(src, details, logger)
        result.frame.loc[result.frame.index[0], "scheduled_station_ae_title"] = "AE_TITLE_TOO_LONG_X"
        return result

    monkeypatch.setattr(sync, "transform", buggy_transform)
    result = materialize(source, db_url)
    assert not result.success
    assert checks_passed(result)["dicom_values_valid"] is False
    assert materialized(result, "worklist") == []
    assert history_count(engine) == before_hist
    assert {b: (r.updated_at, r.patient_id) for b, r in rows(engine).items()} == before
    assert "SUB0905" not in {r.patient_id for r in rows(engine).values()}


def test_mass_cancellation_guard_blocks_publish(calpendo_sim, source, engine, db_url):
    assert materialize(source, db_url).success
    published = rows(engine)
    scheduled = [b for b, r in published.items() if r.step_status == SCHEDULED]
    assert len(scheduled) >= source.settings.min_cancel_guard_rows
    for bid in scheduled:
        calpendo_sim.delete_booking(int(bid))
    before_hist = history_count(engine)
    result = materialize(source, db_url)
    assert checks_passed(result)["mass_cancellation_guard"] is False
    # The blocking check stopped the publish: the step fails, saying so.
    assert not result.success
    assert materialized(result, "worklist") == []
    assert {e.asset_key.path[1] for e in result.get_asset_materialization_events()} == {
        "raw_bookings", "booking_details", "worklist_rows", "cancellation_reconciliation",
    }
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = str(failure.event_specific_data.error)
    assert "mri/cancellation_reconciliation:mass_cancellation_guard" in message
    assert "Nothing was published" in message
    assert history_count(engine) == before_hist
    assert all(r.step_status == SCHEDULED for b, r in rows(engine).items() if b in scheduled)


def test_scanner_owned_status_survives_sync(calpendo_sim, source, engine, db_url):
    bid = add(calpendo_sim, "SUB0906", hour=16)
    assert materialize(source, db_url).success
    with engine.begin() as conn:
        conn.execute(
            update(WorklistItem)
            .where(WorklistItem.booking_id == bid)
            .values(step_status=IN_PROGRESS, step_status_owner=OWNER_MPPS)
        )
    calpendo_sim.cancel_booking(int(bid), reason="double booked")
    assert materialize(source, db_url).success
    assert rows(engine)[bid].step_status == IN_PROGRESS


def test_refused_credentials_fail_at_once_without_step_retries(source, db_url):
    # The default retry policy: a refusal is not retried.
    result = materialize(
        source, db_url, retry_policy=dg.RetryPolicy(max_retries=2), password="wrong-password"
    )
    assert not result.success
    events = result.all_events
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    failure = next(e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "mri__sync"
    message = str(failure.event_specific_data.error)
    assert "refused the credentials" in message
    assert "wrong-password" not in message


def test_retry_after_beyond_the_cap_fails_the_run_without_step_retries(calpendo_sim, source, db_url):
    # The probe's 429 with Retry-After: 3600. Step retries 15 s and 45 s later would
    # ignore the server's own wait and hold the source's pool for a minute.
    calpendo_sim.fail_requests(429, count=None, headers={"Retry-After": "3600"})
    result = materialize(source, db_url, retry_policy=dg.RetryPolicy(max_retries=2))
    assert not result.success
    events = result.all_events
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    failure = next(e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = str(failure.event_specific_data.error)
    assert "Retry-After 3600 s, more than config.max_retry_after (30 s)" in message
    assert "Nothing was published" in message
    assert calpendo_sim.request_count == 1


def test_a_database_of_the_first_release_fails_the_run_at_once(calpendo_sim, source, db_url):
    # Waiting cannot upgrade a schema: no step retries, and the message names the command.
    from tests.mwl_service.test_migrate import build_release_1

    build_release_1(db_url)
    calpendo_sim.reset_counts()
    result = materialize(source, db_url, retry_policy=dg.RetryPolicy(max_retries=2))
    assert not result.success
    events = result.all_events
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    failure = next(e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "calpendo-mwl db upgrade --db-url" in str(failure.event_specific_data.error)
    assert calpendo_sim.request_count == 0  # refused before asking Calpendo


ALL = ["raw_bookings", "booking_details", "worklist_rows", "cancellation_reconciliation", "worklist"]
CHECKS = {
    "required_fields_present": "worklist_rows",
    "dicom_values_valid": "worklist_rows",
    "identifiers_unique": "worklist_rows",
    "mass_cancellation_guard": "cancellation_reconciliation",
}


def names(result) -> set[str]:
    return {e.asset_key.path[1] for e in result.get_asset_materialization_events()}


@pytest.mark.parametrize("name", ALL)
def test_each_asset_alone_reports_only_itself(calpendo_sim, source, engine, db_url, name):
    bid = add(calpendo_sim, "SUB0910 - Ann Alone", hour=8)
    result = materialize(source, db_url, selection=[dg.AssetKey(["mri", name])])
    assert result.success
    assert names(result) == {name}
    # Only `worklist` publishes, from a fresh fetch: the others leave the table alone.
    assert (bid in rows(engine)) is (name == "worklist")


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_each_check_alone_runs_without_publishing(calpendo_sim, source, engine, db_url, check):
    key = dg.AssetCheckKey(dg.AssetKey(["mri", CHECKS[check]]), check)
    result = dg.materialize(
        [build_source_assets(source, retry_policy=None)],
        resources=resources(db_url),
        selection=dg.AssetSelection.checks(key),
        instance=shared_instance(),
        raise_on_error=False,
    )
    assert result.success
    assert checks_passed(result) == {check: True}
    assert names(result) == set() and rows(engine) == {}


def test_worklist_alone_after_a_failed_guard_publishes_nothing(calpendo_sim, source, engine, db_url):
    assert materialize(source, db_url).success
    scheduled = [b for b, r in rows(engine).items() if r.step_status == SCHEDULED]
    for bid in scheduled:
        calpendo_sim.delete_booking(int(bid))
    assert checks_passed(materialize(source, db_url))["mass_cancellation_guard"] is False
    before_hist = history_count(engine)
    # The UI's "Materialize" on mri/worklist alone: the guard is evaluated again in
    # the step (not selected, not reported) and still refuses.
    result = materialize(source, db_url, selection=[dg.AssetKey(["mri", "worklist"])])
    assert not result.success
    assert names(result) == set()
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "mass_cancellation_guard" in str(failure.event_specific_data.error)
    assert history_count(engine) == before_hist
    assert all(rows(engine)[b].step_status == SCHEDULED for b in scheduled)


def test_an_older_fetch_is_not_published_over_a_newer_one(calpendo_sim, source, engine, db_url, monkeypatch):
    bid = add(calpendo_sim, "SUB0911 - Old Fetch", hour=9)
    real_fetch = sync.fetch
    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    assert materialize(source, db_url).success
    calpendo_sim.move_booking(int(bid), dt.datetime.combine(today_local(), dt.time(17, 0)))
    # A run whose fetch predates the last published one (a slow run finishing late).
    monkeypatch.setattr(sync, "fetch", lambda *a, **kw: dataclasses.replace(
        real_fetch(*a, **kw), fetched_at=stale))
    result = materialize(source, db_url)
    assert result.success and "worklist" not in names(result)
    assert rows(engine)[bid].scheduled_start_time == "090000"


class FlakyFetch:
    def __init__(self, exc, real):
        self.exc, self.real, self.calls = exc, real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise self.exc
        return self.real(*args, **kwargs)


class TransientError(RuntimeError):
    transient = True


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (TransientError("Calpendo answered 503"), True),
        (__import__("requests").ConnectionError("connection refused"), True),
        (ValueError("bad answer"), False),
    ],
)
def test_only_transient_fetch_errors_are_retried(source, db_url, monkeypatch, exc, retried):
    flaky = FlakyFetch(exc, sync.fetch)
    monkeypatch.setattr(sync, "fetch", flaky)
    result = materialize(source, db_url, retry_policy=dg.RetryPolicy(max_retries=1))
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert (len(retries), result.success, flaky.calls) == ((1, True, 2) if retried else (0, False, 1))


def test_an_unexpected_error_fails_at_once_and_quotes_no_record_content(
    source, db_url, monkeypatch
):
    # E.g. a bug in the mapping, or a database error whose text quotes row values.
    def broken(*args, **kwargs):
        raise KeyError("SUB0001 - Doe^Jane")

    monkeypatch.setattr(sync, "transform", broken)
    result = materialize(source, db_url, retry_policy=dg.RetryPolicy(max_retries=2))
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert (len(retries), result.success) == (0, False)
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.event_specific_data.error
    text = error.to_string()
    assert "the sync of 'mri' failed: KeyError. Nothing was published." in text
    assert "Doe" not in text and "SUB0001" not in text


def test_run_log_counts_data_warnings_not_bookings(make_source, db_url):
    # A resource name mapped to modality gives one warning for the whole sync, about no
    # particular booking: the run log must not call it "1 booking(s) with data warnings".
    source = make_source({"title": {"_extract": {"patient_id": {"pattern": "^(SUB[0-9]+)"}}},
                          "resource.name": "modality"})
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([build_source_assets(source, retry_policy=None)],
                            resources=resources(db_url), instance=instance)
    count = materialized(result, "worklist_rows")[0].materialization.metadata["warnings"].value
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING and "warning_list" in e.user_message]
    assert count >= 1
    assert warnings == [f"{count} data warning(s); see the 'warning_list' metadata of "
                        "mri/worklist_rows"]


def test_with_operator_counts_the_operators_the_worklist_names(make_source, engine, db_url):
    # Whichever record path carries the operator (config.operator_property, a file
    # column), the count is of rows naming one, as Performing Physician's Name.
    def with_operator(source):
        result = materialize(source, db_url, selection=[dg.AssetKey(["mri", "booking_details"])])
        return materialized(result, "booking_details")[0].materialization.metadata["with_operator"].value

    source = make_source()
    assert materialize(source, db_url).success
    named = [r for r in rows(engine).values() if r.performing_physician_name]
    assert with_operator(source) == len(named) > 0
    unmapped = make_source({"title": {"_extract": {"patient_id": {"pattern": "^(SUB[0-9]+)"}}}})
    assert with_operator(unmapped) == 0
