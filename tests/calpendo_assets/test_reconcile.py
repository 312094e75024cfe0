"""Reconciliation (pure plan) and the one-transaction publish against a real database."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, select, update

from calpendo_assets.config import parse_config
from calpendo_assets.core.window import Window, booking_window
from calpendo_assets.reconcile.plan import (
    CANCEL_IN_CALPENDO,
    CANCEL_MISSING,
    Cancel,
    ReconciliationPlan,
    mass_cancellation_problem,
    plan_reconciliation,
)
from calpendo_assets.reconcile.publish import (
    MassCancellationError,
    PublishResult,
    StaleFetchError,
    load_existing,
    publish,
    reconcile,
)
from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.rows.model import VANISHED_REASON, frame_records
from mwl_service.engine import make_engine
from mwl_service.schema import (
    COMPLETED,
    DISCONTINUED,
    IN_PROGRESS,
    OWNER_MPPS,
    OWNER_SYNC,
    SCHEDULED,
    SourceSyncState,
    WorklistHistory,
    WorklistItem,
)

EDMONTON = ZoneInfo("America/Edmonton")
UTC = dt.UTC
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=EDMONTON)  # window: 2026-03-09 .. 2026-03-18
T1 = dt.datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
T2 = dt.datetime(2026, 3, 10, 21, 0, tzinfo=UTC)

ITEMS = WorklistItem.__table__
HISTORY = WorklistHistory.__table__


def make_source(name="mri3t", **config):
    cfg = {"base_url": "http://127.0.0.1:8089", "resources": ["3T MRI"], **config}
    raw = {"name": name, "type": "calpendo", "config": cfg}
    return parse_config({"data_sources": [raw]}, env={})[0]


SOURCE = make_source()
WINDOW = booking_window(SOURCE, NOW)


def booking(bid, day=10, hour=10, minute=0, **overrides) -> dict:
    b = {
        "id": bid,
        "biskitType": "MRIScan",
        "title": f"SUB{bid:04d} - Jane Doe",
        "status": "APPROVED",
        "dateRange": {"start": f"2026-03-{day:02d} {hour:02d}:{minute:02d}:00.0"},
        "resource": {"name": "3T MRI"},
        "project": {"name": "BRISKP"},
        "durationInMinutes": 60,
        "Operator": "Tech, Anna",
        "cancelled": False,
        "cancellationReason": None,
    }
    b.update(overrides)
    return b


def sync(engine, bookings, *, complete=True, source=SOURCE, window=WINDOW, run_id="run-1", **kw):
    result = bookings_to_rows(bookings, source)
    return publish(
        engine,
        source.name,
        result.frame,
        window,
        complete,
        result.present_ids,
        max_cancel_fraction=kw.pop("max_cancel_fraction", source.settings.max_cancel_fraction),
        min_cancel_guard_rows=kw.pop("min_cancel_guard_rows", source.settings.min_cancel_guard_rows),
        run_id=run_id,
        **kw,
    )


def rows(engine, source=SOURCE.name) -> dict[str, dict]:
    with engine.connect() as conn:
        result = conn.execute(select(ITEMS).where(ITEMS.c.source == source))
        return {r.booking_id: dict(r._mapping) for r in result}


def history(engine) -> list[dict]:
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(select(HISTORY).order_by(HISTORY.c.id))]
    for h in out:
        h["details"] = json.loads(h["details"])
    return out


def history_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(HISTORY)).scalar_one()


def set_mpps(engine, booking_id, status, source=SOURCE.name):
    with engine.begin() as conn:
        conn.execute(
            update(ITEMS)
            .where(ITEMS.c.source == source, ITEMS.c.booking_id == str(booking_id))
            .values(step_status=status, step_status_owner=OWNER_MPPS)
        )


def snapshot(engine) -> list[tuple]:
    with engine.connect() as conn:
        items = [tuple(r) for r in conn.execute(select(ITEMS).order_by(ITEMS.c.id))]
        hist = [tuple(r) for r in conn.execute(select(HISTORY).order_by(HISTORY.c.id))]
    return items + hist


# ---------------------------------------------------------------- DB: the life of a booking


def test_insert_writes_rows_and_history(engine):
    result = sync(engine, [booking(1), booking(2, hour=11), booking(3, day=12)])
    assert result == PublishResult(inserted=3)
    got = rows(engine)
    assert set(got) == {"1", "2", "3"}
    r1 = got["1"]
    assert r1["patient_id"] == "SUB0001"
    assert r1["patient_name"] == "Doe^Jane"
    assert r1["scheduled_start_utc"] == dt.datetime(
        2026, 3, 10, 16, 0, tzinfo=UTC
    )  # MDT since 03-08
    assert (r1["scheduled_start_date"], r1["scheduled_start_time"]) == ("20260310", "100000")
    assert r1["step_status"] == SCHEDULED and r1["step_status_owner"] == OWNER_SYNC
    assert r1["discontinued_at"] is None
    assert r1["created_at"] == r1["updated_at"]
    hist = history(engine)
    assert [(h["event"], h["booking_id"], h["new_step_status"]) for h in hist] == [
        ("insert", "1", SCHEDULED),
        ("insert", "2", SCHEDULED),
        ("insert", "3", SCHEDULED),
    ]
    assert hist[0]["worklist_item_id"] == r1["id"]
    assert hist[0]["details"]["run_id"] == "run-1"
    assert hist[0]["details"]["values"]["patient_id"] == "SUB0001"


def test_resync_of_unchanged_bookings_writes_nothing(engine):
    bookings = [booking(1), booking(2, hour=11)]
    sync(engine, bookings)
    before_rows, before_hist = rows(engine), history_count(engine)
    before = snapshot(engine)
    result = sync(
        engine, bookings, run_id="run-2", now=dt.datetime.now(UTC) + dt.timedelta(hours=1)
    )
    assert result == PublishResult(unchanged=2)
    assert history_count(engine) == before_hist
    assert rows(engine) == before_rows  # updated_at included
    assert snapshot(engine) == before


def test_time_moved_updates_the_same_row(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    old = rows(engine)
    later = dt.datetime.now(UTC) + dt.timedelta(minutes=5)
    result = sync(
        engine, [booking(1, hour=11, minute=30), booking(2, hour=11)], run_id="run-2", now=later
    )
    assert result == PublishResult(updated=1, unchanged=1)
    new = rows(engine)
    assert new["1"]["id"] == old["1"]["id"]  # one row per booking
    assert new["1"]["accession_number"] == old["1"]["accession_number"]
    assert new["1"]["study_instance_uid"] == old["1"]["study_instance_uid"]
    assert new["1"]["scheduled_start_time"] == "113000"
    assert new["1"]["scheduled_start_utc"] == dt.datetime(2026, 3, 10, 17, 30, tzinfo=UTC)
    assert new["1"]["updated_at"] == later
    assert new["1"]["created_at"] == old["1"]["created_at"]
    assert new["2"] == old["2"]
    last = history(engine)[-1]
    assert last["event"] == "update" and last["booking_id"] == "1"
    assert last["details"]["run_id"] == "run-2"
    changes = last["details"]["changes"]
    assert changes["scheduled_start_time"] == {"old": "100000", "new": "113000"}
    assert set(changes) == {"scheduled_start_utc", "scheduled_start_time"}


def test_title_changed_updates_patient(engine):
    sync(engine, [booking(1)])
    result = sync(engine, [booking(1, title="SUB0100 - John Smith")])
    assert result.updated == 1
    r = rows(engine)["1"]
    assert (r["patient_id"], r["patient_name"]) == ("SUB0100", "Smith^John")
    changes = history(engine)[-1]["details"]["changes"]
    assert changes["patient_id"] == {"old": "SUB0001", "new": "SUB0100"}
    assert changes["patient_name"] == {"old": "Doe^Jane", "new": "Smith^John"}
    assert len(rows(engine)) == 1


def test_cancellation_in_calpendo_is_recorded_with_its_reason(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    result = sync(
        engine,
        [booking(1, status="CANCELLED", cancellationReason="participant ill"), booking(2, hour=11)],
        run_id="run-2",
    )
    assert result == PublishResult(cancelled=1, unchanged=1)
    r = rows(engine)["1"]
    assert r["step_status"] == DISCONTINUED
    assert r["discontinued_reason"] == "cancelled in Calpendo: participant ill"
    assert r["discontinued_at"] is not None
    assert r["booking_status"] == "CANCELLED"
    last = history(engine)[-1]
    assert (last["event"], last["old_step_status"], last["new_step_status"]) == (
        "cancel",
        SCHEDULED,
        DISCONTINUED,
    )
    assert last["details"]["reason"] == "cancelled in Calpendo: participant ill"
    assert last["details"]["kind"] == CANCEL_IN_CALPENDO
    # the same cancelled booking again: nothing more is written
    count = history_count(engine)
    again = sync(
        engine,
        [booking(1, status="CANCELLED", cancellationReason="participant ill"), booking(2, hour=11)],
    )
    assert again == PublishResult(unchanged=2)
    assert history_count(engine) == count


def test_booking_that_vanished_from_a_complete_fetch_is_discontinued(engine):
    sync(engine, [booking(1), booking(2, hour=11), booking(3, hour=12)])
    result = sync(engine, [booking(2, hour=11), booking(3, hour=12)])
    assert result == PublishResult(cancelled=1, unchanged=2)
    r = rows(engine)["1"]
    assert r["step_status"] == DISCONTINUED
    assert r["discontinued_reason"] == VANISHED_REASON
    assert r["discontinued_at"] is not None
    assert r["patient_id"] == "SUB0001"  # nothing deleted
    last = history(engine)[-1]
    assert last["event"] == "cancel" and last["details"]["kind"] == CANCEL_MISSING
    # a second run does not cancel it again
    assert sync(engine, [booking(2, hour=11), booking(3, hour=12)]) == PublishResult(unchanged=2)


def test_incomplete_fetch_cancels_nothing(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    result = sync(engine, [booking(2, hour=11, title="SUB0200")], complete=False)
    assert result == PublishResult(updated=1)  # what was seen is still applied
    got = rows(engine)
    assert got["1"]["step_status"] == SCHEDULED
    assert got["2"]["patient_id"] == "SUB0200"
    # and an empty incomplete fetch changes nothing at all
    before = snapshot(engine)
    assert sync(engine, [], complete=False) == PublishResult()
    assert snapshot(engine) == before


def test_rows_outside_the_window_or_of_another_source_are_untouched(engine):
    other = make_source("eeg")
    sync(engine, [booking(1), booking(2, hour=11)], source=other)
    # this source: one booking in the window, one far in the past (outside it)
    early_window = Window(
        dt.datetime(2026, 2, 1, tzinfo=EDMONTON),
        dt.datetime(2026, 2, 10, tzinfo=EDMONTON),
        "America/Edmonton",
    )
    sync(engine, [booking(5, day=3, title="SUB0005")], window=early_window)
    sync(engine, [booking(1)])
    before_other, before_old = rows(engine, "eeg"), rows(engine)["5"]
    # a complete, empty fetch for this source's current window
    result = sync(engine, [], min_cancel_guard_rows=100)
    assert result == PublishResult(cancelled=1)
    assert rows(engine)["1"]["step_status"] == DISCONTINUED
    assert rows(engine)["5"] == before_old  # outside the window
    assert rows(engine, "eeg") == before_other  # another source, same booking ids


@pytest.mark.parametrize("mpps_status", [IN_PROGRESS, COMPLETED, DISCONTINUED])
def test_scanner_owned_status_is_kept(engine, mpps_status):
    sync(engine, [booking(1), booking(2, hour=11)])
    set_mpps(engine, 1, mpps_status)
    before = rows(engine)["1"]
    # cancelled in Calpendo and retitled while the scanner owns the step
    result = sync(
        engine,
        [booking(1, status="CANCELLED", title="SUB0999 - Other Person"), booking(2, hour=11)],
    )
    assert result == PublishResult(unchanged=1, scanner_owned_kept=1)
    after = rows(engine)["1"]
    for column in ("step_status", "step_status_owner", "patient_id", "patient_name", "updated_at"):
        assert after[column] == before[column]
    note = history(engine)[-1]
    assert note["event"] == "update" and note["details"]["applied"] is False
    assert note["details"]["changes"]["patient_id"] == {"old": "SUB0001", "new": "SUB0999"}
    assert (note["old_step_status"], note["new_step_status"]) == (mpps_status, mpps_status)
    # the same Calpendo state again: not noted twice
    count = history_count(engine)
    sync(
        engine,
        [booking(1, status="CANCELLED", title="SUB0999 - Other Person"), booking(2, hour=11)],
    )
    assert history_count(engine) == count
    # and vanishing from Calpendo does not override the scanner either
    result = sync(engine, [booking(2, hour=11)])
    assert result == PublishResult(unchanged=1, scanner_owned_kept=1)
    assert rows(engine)["1"]["step_status"] == mpps_status


def test_restore_when_a_discontinued_booking_is_back(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    sync(engine, [booking(2, hour=11)])
    assert rows(engine)["1"]["step_status"] == DISCONTINUED
    result = sync(engine, [booking(1), booking(2, hour=11)], run_id="run-3")
    assert result == PublishResult(restored=1, unchanged=1)
    r = rows(engine)["1"]
    assert r["step_status"] == SCHEDULED
    assert r["discontinued_at"] is None and r["discontinued_reason"] == ""
    last = history(engine)[-1]
    assert (last["event"], last["old_step_status"], last["new_step_status"]) == (
        "restore",
        DISCONTINUED,
        SCHEDULED,
    )
    assert last["details"]["run_id"] == "run-3"
    # restored after a Calpendo cancellation that was undone, too
    sync(engine, [booking(1, status="CANCELLED"), booking(2, hour=11)])
    assert sync(engine, [booking(1), booking(2, hour=11)]).restored == 1


def test_unpublishable_booking_keeps_its_row(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    before = rows(engine)["1"]
    result = sync(engine, [booking(1, title="TBD"), booking(2, hour=11)])
    assert result == PublishResult(unchanged=1, skipped=1)
    assert rows(engine)["1"] == before  # neither cancelled nor blanked
    # but a Calpendo cancellation of it still applies
    result = sync(
        engine,
        [
            booking(1, title="TBD", status="CANCELLED", cancellationReason="ill"),
            booking(2, hour=11),
        ],
    )
    assert result == PublishResult(cancelled=1, unchanged=1, skipped=1)
    r = rows(engine)["1"]
    assert (
        r["step_status"] == DISCONTINUED
        and r["discontinued_reason"] == "cancelled in Calpendo: ill"
    )
    assert r["patient_id"] == "SUB0001"


def test_cancelled_booking_never_seen_before_is_recorded(engine):
    result = sync(engine, [booking(1, status="CANCELLED", cancellationReason="scanner fault")])
    assert result == PublishResult(inserted=1)
    r = rows(engine)["1"]
    assert r["step_status"] == DISCONTINUED and r["discontinued_at"] is not None
    assert history(engine)[-1]["details"]["reason"] == "cancelled in Calpendo: scanner fault"


def test_mass_cancellation_guard_blocks_publish_and_leaves_db_untouched(engine):
    sync(engine, [booking(i, hour=8 + i) for i in range(1, 11)])
    before = snapshot(engine)
    with pytest.raises(MassCancellationError) as info:
        # 8 of 10 vanish (and a new booking arrives): the whole publish is refused
        sync(engine, [booking(1, hour=9), booking(2, hour=10), booking(50, day=11)])
    message = str(info.value)
    assert "would cancel 8 of 10" in message and "Nothing was published" in message
    assert snapshot(engine) == before
    # below the minimum row count the guard does not trip
    assert sync(engine, [booking(i, hour=8 + i) for i in range(1, 8)]).cancelled == 3


def test_guard_ignores_explicit_calpendo_cancellations(engine):
    """A day cancelled in Calpendo is a fact, not an outage: it publishes."""
    sync(engine, [booking(i, hour=8 + i) for i in range(1, 7)])
    cancelled = [booking(i, hour=8 + i, status="CANCELLED") for i in range(1, 7)]
    assert sync(engine, cancelled).cancelled == 6
    assert {r["step_status"] for r in rows(engine).values()} == {DISCONTINUED}


def test_guard_counts_only_the_vanished_share(engine):
    sync(engine, [booking(i, hour=8 + i) for i in range(1, 11)])
    # 3 cancelled in Calpendo + 6 vanished of 10: only the 6 count, and 6/10 > 50%.
    remaining = [booking(i, hour=8 + i, status="CANCELLED") for i in (1, 2, 3)] + [booking(4, hour=12)]
    with pytest.raises(MassCancellationError, match="would cancel 6 of 10"):
        sync(engine, remaining)


def test_publish_replans_inside_its_transaction(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    result = bookings_to_rows([booking(2, hour=11)], SOURCE)
    plan = reconcile(engine, SOURCE.name, result.frame, WINDOW, True, result.present_ids).plan
    assert [c.booking_id for c in plan.cancels] == ["1"]
    set_mpps(engine, 1, IN_PROGRESS)  # the scanner starts between plan and publish
    published = publish(engine, SOURCE.name, result.frame, WINDOW, True, result.present_ids)
    assert published == PublishResult(unchanged=1, scanner_owned_kept=1)
    assert rows(engine)["1"]["step_status"] == IN_PROGRESS


def test_an_older_fetch_never_overwrites_a_newer_publish(engine):
    t_old, t_new = NOW - dt.timedelta(minutes=2), NOW - dt.timedelta(minutes=1)
    sync(engine, [booking(1, hour=11)], fetched_at=t_new, run_id="run-new")
    before = snapshot(engine)
    # A fetch made before the published one (a slow run finishing late) is refused.
    with pytest.raises(StaleFetchError, match="newer fetch"):
        sync(engine, [booking(1, hour=9)], fetched_at=t_old, run_id="run-old")
    assert snapshot(engine) == before
    assert rows(engine)["1"]["scheduled_start_time"] == "110000"
    with engine.connect() as conn:
        state = conn.execute(select(SourceSyncState.__table__)).one()
    assert (state.source, state.last_fetched_at, state.last_run_id) == (
        SOURCE.name, t_new, "run-new",
    )
    # The same or a newer fetch publishes; another source is not affected.
    assert sync(engine, [booking(1, hour=12)], fetched_at=t_new).updated == 1
    assert sync(engine, [booking(1, hour=13)], fetched_at=NOW, run_id="run-newest").updated == 1
    with engine.connect() as conn:
        (state,) = conn.execute(select(SourceSyncState.__table__)).all()  # updated in place
    assert (state.last_fetched_at, state.last_run_id) == (NOW, "run-newest")
    other = make_source("eeg")
    assert sync(engine, [booking(7)], source=other, fetched_at=t_old).inserted == 1


def test_reconcile_plans_once_and_publishes_only_what_was_approved(engine):
    sync(engine, [booking(1)])
    before = snapshot(engine)
    result = bookings_to_rows([booking(1, hour=13), booking(2)], SOURCE)
    seen = []

    def refuse(plan):
        seen.append(plan)
        return False

    done = reconcile(engine, SOURCE.name, result.frame, WINDOW, True, result.present_ids,
                     approve=refuse)
    assert done.published is None and done.refused == "a blocking check failed"
    assert seen == [done.plan] and done.plan.counts()["inserts"] == 1
    assert snapshot(engine) == before
    done = reconcile(engine, SOURCE.name, result.frame, WINDOW, True, result.present_ids,
                     approve=lambda plan: True, run_id="run-2")
    assert done.published == PublishResult(inserted=1, updated=1)
    assert rows(engine)["1"]["scheduled_start_time"] == "130000"


def test_reconcile_without_approval_is_read_only(engine):
    sync(engine, [booking(1)])
    before = snapshot(engine)
    result = bookings_to_rows([booking(2)], SOURCE)
    plan = reconcile(engine, SOURCE.name, result.frame, WINDOW, True, result.present_ids).plan
    assert plan.counts()["inserts"] == 1 and plan.counts()["cancels_missing"] == 1
    assert snapshot(engine) == before


def test_load_existing_selects_window_and_frame_bookings(engine):
    sync(
        engine,
        [booking(1), booking(2, day=25)],
        window=Window(WINDOW.start, WINDOW.end + dt.timedelta(days=30), "x"),
    )
    with engine.connect() as conn:
        in_window = load_existing(conn, SOURCE.name, WINDOW, [])
        with_ids = load_existing(conn, SOURCE.name, WINDOW, ["2", "99"], for_update=True)
        other = load_existing(conn, "eeg", WINDOW, ["1", "2"])
    assert [r["booking_id"] for r in in_window] == ["1"]
    assert sorted(r["booking_id"] for r in with_ids) == ["1", "2"]
    assert other == []


def test_readers_see_the_old_worklist_or_the_new_one(db_url):
    """A second connection reading while publish is mid-transaction sees the old state."""
    writer = make_engine(db_url)
    reader = make_engine(db_url)
    try:
        sync(writer, [booking(1), booking(2, hour=11)])

        def read() -> dict[str, tuple]:
            with reader.connect() as conn:
                result = conn.execute(
                    select(ITEMS.c.booking_id, ITEMS.c.step_status, ITEMS.c.patient_id)
                )
                return {r.booking_id: (r.step_status, r.patient_id) for r in result}

        old = read()
        seen_during: list[dict] = []

        def spy(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("INSERT INTO WORKLIST_HISTORY"):
                # every worklist row change of this publish has been executed, not committed
                seen_during.append(read())

        event.listen(writer, "after_cursor_execute", spy)
        result = sync(writer, [booking(2, hour=11, title="SUB0222"), booking(3, hour=12)])
        event.remove(writer, "after_cursor_execute", spy)
        assert result == PublishResult(inserted=1, updated=1, cancelled=1)
        assert seen_during == [old]
        assert read() == {
            "1": (DISCONTINUED, "SUB0001"),
            "2": (SCHEDULED, "SUB0222"),
            "3": (SCHEDULED, "SUB0003"),
        }
    finally:
        writer.dispose()
        reader.dispose()


def test_publish_is_one_transaction(engine):
    sync(engine, [booking(1), booking(2, hour=11)])
    commits: list[str] = []
    event.listen(engine, "commit", lambda conn: commits.append("commit"))
    sync(engine, [booking(2, hour=11, title="SUB0222"), booking(3, hour=12)])
    assert commits == ["commit"]


def test_concurrent_mpps_write_waits_for_the_publish(sqlite_url):
    """SQLite: publish holds the write lock from its first read (BEGIN IMMEDIATE), so an MPPS
    update issued meanwhile waits instead of being lost or failing the publish."""
    engine = make_engine(sqlite_url)
    other = make_engine(sqlite_url)
    try:
        sync(engine, [booking(1), booking(2, hour=11)])
        done = threading.Event()

        def mpps_write(conn, *args):
            if not done.is_set():
                done.set()
                t = threading.Thread(target=set_mpps, args=(other, 2, IN_PROGRESS))
                t.start()
                threads.append(t)
                time.sleep(0.2)  # the MPPS writer is now blocked on the lock

        threads: list[threading.Thread] = []
        event.listen(engine, "after_cursor_execute", mpps_write)
        result = sync(engine, [booking(1, title="SUB0111"), booking(2, hour=11, title="SUB0222")])
        event.remove(engine, "after_cursor_execute", mpps_write)
        for t in threads:
            t.join(10)
        assert result.updated == 2
        r2 = rows(engine)["2"]
        assert (r2["step_status"], r2["patient_id"]) == (IN_PROGRESS, "SUB0222")
    finally:
        engine.dispose()
        other.dispose()


def test_one_thousand_new_rows_publish_in_bulk(sqlite_url, tmp_path):
    bookings = [booking(i, day=9 + i % 9, hour=6 + i % 14, minute=i % 60) for i in range(1, 1001)]
    result = bookings_to_rows(bookings, SOURCE)
    # Speed is measured by bench/sync_bench.py, not here.
    engine = make_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    published = publish(engine, SOURCE.name, result.frame, WINDOW, True, result.present_ids)
    assert published.inserted == 1000
    assert history_count(engine) == 1000
    assert len(rows(engine)) == 1000
    engine.dispose()


# ---------------------------------------------------------------- pure planning


def existing_row(bid, start=T1, status=SCHEDULED, owner=OWNER_SYNC, source="mri3t", **kw) -> dict:
    row = {
        "id": int(bid),
        "source": source,
        "booking_id": str(bid),
        "scheduled_start_utc": start,
        "step_status": status,
        "step_status_owner": owner,
        "content_hash": f"hash-{bid}",
        "discontinued_at": None,
        "discontinued_reason": "",
    }
    row.update(kw)
    return row


def frame_for(*bookings):
    result = bookings_to_rows(list(bookings), SOURCE)
    return result.frame, result.present_ids


def test_plan_pure_counts():
    frame, present = frame_for(booking(1), booking(2), booking(3, title="TBD"))
    rec = {r["booking_id"]: r for r in frame_records(frame)}
    existing = [
        existing_row(1, content_hash=rec["1"]["content_hash"]),  # unchanged
        existing_row(2),  # changed
        existing_row(3),  # present but unpublishable: kept
        existing_row(4),  # vanished: cancelled
        existing_row(5, owner=OWNER_MPPS, status=IN_PROGRESS),  # scanner-owned: kept
        existing_row(6, status=DISCONTINUED),  # already discontinued
        existing_row(7, start=T1 + dt.timedelta(days=30)),  # outside the window
    ]
    plan = plan_reconciliation(existing, frame, WINDOW, True, present)
    assert isinstance(plan, ReconciliationPlan)
    assert plan.source == "mri3t"
    assert plan.counts() == {
        "inserts": 0,
        "updates": 1,
        "unchanged": 1,
        "cancels": 1,
        "cancels_in_calpendo": 0,
        "cancels_missing": 1,
        "restores": 0,
        "scanner_owned_kept": 1,
        "skipped": 1,
        "skipped_kept": 1,
        "active_in_window": 4,
        "fetch_complete": True,
    }
    assert plan.cancels[0].booking_id == "4" and plan.cancels[0].reason == VANISHED_REASON
    assert plan.vanished == 1 and plan.vanished_fraction == 0.25
    assert plan.updates[0].id == 2


def test_plan_incomplete_fetch_cancels_nothing():
    frame, present = frame_for(booking(1))
    plan = plan_reconciliation([existing_row(4), existing_row(5)], frame, WINDOW, False, present)
    assert plan.cancels == [] and len(plan.inserts) == 1


def test_plan_present_but_unreadable_is_not_cancelled():
    frame, present = frame_for(booking(1))
    plan = plan_reconciliation([existing_row(4)], frame, WINDOW, True, present | {"4"})
    assert plan.cancels == [] and plan.skipped_kept == 1


def test_plan_rejects_rows_of_another_source():
    frame, present = frame_for(booking(1))
    with pytest.raises(ValueError, match="other sources"):
        plan_reconciliation(
            [existing_row(1, source="eeg")], frame, WINDOW, True, present, source="mri3t"
        )


@pytest.mark.parametrize(
    "cancels, active, max_fraction, min_rows, trips",
    [
        (3, 10, 0.5, 5, False),  # below min rows
        (5, 10, 0.5, 5, False),  # exactly at the limit
        (6, 10, 0.5, 5, True),
        (6, 10, None, 5, False),  # guard disabled
        (1, 1, 0.5, 0, True),
        (0, 0, 0.0, 0, False),
    ],
)
def test_mass_cancellation_problem(cancels, active, max_fraction, min_rows, trips):
    plan = ReconciliationPlan("mri3t", WINDOW.start, WINDOW.end, True)
    plan.cancels = [
        Cancel(i, str(i), "x", CANCEL_MISSING, values={}, changes={}, old_step_status=SCHEDULED)
        for i in range(cancels)
    ]
    plan.active_in_window = active
    problem = mass_cancellation_problem(plan, max_fraction, min_rows)
    assert (problem is not None) is trips
    if trips:
        assert f"would cancel {cancels} of {active}" in problem


def test_plan_pickles_for_dagster_io():
    import pickle

    frame, present = frame_for(booking(1))
    plan = plan_reconciliation([existing_row(4)], frame, WINDOW, True, present)
    assert pickle.loads(pickle.dumps(plan)).counts() == plan.counts()


def test_publish_rows_records_the_fetch_time_so_an_older_fetch_is_refused(
    calpendo_sim_env, tmp_path, engine
):
    from calpendo_assets import sync
    from calpendo_assets.config import load_config
    from tests.fixtures.sim import shipped_config_for

    path, names = shipped_config_for(calpendo_sim_env.url, tmp_path)
    source = next(s for s in load_config(str(path)) if s.name == names[0])
    older = sync.fetch(source)
    newer = sync.fetch(source)
    assert newer.fetched_at > older.fetched_at
    sync.publish_rows(engine, source, sync.transform(source, newer).frame, newer)
    with pytest.raises(StaleFetchError, match="newer fetch"):
        sync.publish_rows(engine, source, sync.transform(source, older).frame, older)


def test_database_errors_quote_no_row_values(engine):
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from mwl_service.schema import WorklistItem
    from tests.mwl_service.test_matching import make_row

    row = make_row("dup", "20260310", "080000", patient_name="Secret^Person")
    with engine.begin() as conn:
        conn.execute(insert(WorklistItem), row)
    with pytest.raises(IntegrityError) as info, engine.begin() as conn:
        conn.execute(insert(WorklistItem), row)
    assert "Secret" not in str(info.value)
