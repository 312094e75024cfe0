"""Publishing a plan: one write transaction, after the caller approved it.

`reconcile` plans once, inside the write transaction (so it sees what MPPS changed
meanwhile), lets the caller approve that plan (the blocking checks), refuses a fetch
older than the newest one already published, and writes everything with bulk
statements in one commit: a reader sees the old worklist or the new one, never a
mix. Every insert/update/cancel/restore appends to the history with the changed
fields (old/new), the reason and the run id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from calpendo_assets.reconcile.plan import (
    ReconciliationPlan,
    mass_cancellation_problem,
    plan_reconciliation,
    records,
)
from calpendo_assets.rows.model import HASH_COLUMNS, SYNC_COLUMNS, canonical_value
from mwl_service.excluded import Excluded, replace_excluded
from mwl_service.history import HistoryEntry, write_history
from mwl_service.schema import (
    DISCONTINUED,
    EVENT_CANCEL,
    EVENT_INSERT,
    EVENT_RESTORE,
    EVENT_UPDATE,
    OWNER_SYNC,
    SourceSyncState,
    WorklistItem,
    utcnow,
)

ITEMS = WorklistItem.__table__
SYNC_STATE = SourceSyncState.__table__
_ID_CHUNK = 500  # booking ids per IN (...) query
# Upsert (INSERT ... ON CONFLICT DO UPDATE) of each back end the worklist runs on.
_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class MassCancellationError(RuntimeError):
    """The publish would cancel too large a share of the window: nothing was written."""


class StaleFetchError(RuntimeError):
    """A newer fetch of this source is already published: this older one was not written."""


@dataclass
class PublishResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    cancelled: int = 0
    restored: int = 0
    scanner_owned_kept: int = 0
    skipped: int = 0

    @classmethod
    def of(cls, plan: ReconciliationPlan) -> PublishResult:
        return cls(
            inserted=len(plan.inserts),
            updated=sum(1 for u in plan.updates if u.event == EVENT_UPDATE),
            unchanged=plan.unchanged,
            cancelled=len(plan.cancels),
            restored=plan.restores,
            scanner_owned_kept=plan.scanner_owned_kept,
            skipped=plan.skipped,
        )


@dataclass
class Reconciled:
    """What `reconcile` decided: the plan, and what it wrote (None: nothing)."""

    plan: ReconciliationPlan
    published: PublishResult | None = None
    refused: str = ""  # why a publish that was asked for wrote nothing


# ---------------------------------------------------------------- reading


def _window_bounds(window) -> tuple[dt.datetime, dt.datetime]:
    start, end = window.start, window.end
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the window needs aware datetimes")
    return start, end


def load_existing(
    conn: Connection,
    source: str,
    window,
    booking_ids: Iterable[str],
    *,
    for_update: bool = False,
) -> list[dict]:
    """This source's rows in the window, plus those whose booking id is given.

    `for_update` locks them (SELECT ... FOR UPDATE) on back ends that support it.
    """
    start, end = _window_bounds(window)
    lock = for_update and conn.dialect.name != "sqlite"

    def run(stmt) -> list[dict]:
        if lock:
            stmt = stmt.with_for_update()
        return [dict(r._mapping) for r in conn.execute(stmt)]

    base = select(ITEMS).where(ITEMS.c.source == source)
    rows = run(base.where(ITEMS.c.scheduled_start_utc >= start, ITEMS.c.scheduled_start_utc < end))
    loaded = {r["booking_id"] for r in rows}
    wanted = [b for b in dict.fromkeys(str(b) for b in booking_ids) if b not in loaded]
    for i in range(0, len(wanted), _ID_CHUNK):
        rows += run(base.where(ITEMS.c.booking_id.in_(wanted[i : i + _ID_CHUNK])))
    return rows


def _frame_ids(frame) -> list[str]:
    if isinstance(frame, pd.DataFrame):
        return [] if frame.empty else [str(b) for b in frame["booking_id"]]
    return [str(r["booking_id"]) for r in frame]


# ---------------------------------------------------------------- writing


def _plain(values: Mapping) -> dict:
    """Content columns as JSON-ready values (strings pass straight through)."""
    out = {c: values.get(c) for c in HASH_COLUMNS}
    for c, v in out.items():
        if v.__class__ is not str and v is not None:
            out[c] = canonical_value(v)
    return out


def _begin_write(conn: Connection) -> None:
    """Start the write transaction. SQLite: BEGIN IMMEDIATE takes the write lock up
    front, so the plan is made on data no other writer can change before commit
    (a deferred transaction would fail to upgrade if MPPS wrote meanwhile)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _history_entries(
    plan: ReconciliationPlan, run_id: str | None, ids: Mapping[str, int]
) -> Iterator[HistoryEntry]:
    # The reasons are stored history and read by tools: they keep their first wording
    # ("Calpendo") for every source type.
    source = plan.source
    for i in plan.inserts:
        details = {"run_id": run_id, "values": _plain(i.values)}
        if i.values["step_status"] == DISCONTINUED:
            details["reason"] = i.values["discontinued_reason"]
        yield HistoryEntry(
            EVENT_INSERT, ids[i.booking_id], source, i.booking_id, "", i.values["step_status"],
            details,
        )
    for u in plan.updates:
        details = {"run_id": run_id, "changes": u.changes}
        if u.event == EVENT_RESTORE:
            details["reason"] = "booking active in Calpendo again"
        yield HistoryEntry(
            u.event, u.id, source, u.booking_id, u.old_step_status, u.new_step_status, details
        )
    for c in plan.cancels:
        details = {"run_id": run_id, "reason": c.reason, "kind": c.kind, "changes": c.changes}
        yield HistoryEntry(
            EVENT_CANCEL, c.id, source, c.booking_id, c.old_step_status, DISCONTINUED, details
        )
    for n in plan.scanner_notes:
        details = {
            "run_id": run_id,
            "applied": False,
            "reason": f"scanner-owned (step {n.step_status} set by MPPS): "
            "Calpendo change not applied",
            "changes": n.changes,
        }
        yield HistoryEntry(
            EVENT_UPDATE, n.id, source, n.booking_id, n.step_status, n.step_status, details
        )


def _insert_rows(conn: Connection, plan: ReconciliationPlan, now: dt.datetime) -> dict[str, int]:
    """The new rows; their ids by booking id (for the history)."""
    if not plan.inserts:
        return {}
    params = [
        {
            **i.values,
            "step_status_owner": OWNER_SYNC,
            "discontinued_at": now if i.values["step_status"] == DISCONTINUED else None,
            "created_at": now,
            "updated_at": now,
        }
        for i in plan.inserts
    ]
    stmt = insert(ITEMS).returning(ITEMS.c.id, ITEMS.c.booking_id)
    return {r.booking_id: r.id for r in conn.execute(stmt, params)}


def _update_rows(conn: Connection, plan: ReconciliationPlan, now: dt.datetime) -> None:
    """Updates, restores and cancellations: one bulk UPDATE of rows the sync still owns."""
    writes: list[tuple[int, dict[str, Any], dt.datetime | None]] = [
        (
            u.id,
            u.values,
            (u.old_discontinued_at or now) if u.new_step_status == DISCONTINUED else None,
        )
        for u in plan.updates
    ] + [(c.id, c.values, now) for c in plan.cancels]
    if not writes:
        return
    columns = [c for c in SYNC_COLUMNS if c not in ("source", "booking_id")]
    stmt = (
        update(ITEMS)
        .where(ITEMS.c.id == bindparam("w_id"), ITEMS.c.step_status_owner == OWNER_SYNC)
        .values(
            {c: bindparam(f"w_{c}") for c in columns}
            | {
                "discontinued_at": bindparam("w_discontinued_at"),
                "updated_at": bindparam("w_updated_at"),
            }
        )
    )
    params = [
        {
            "w_id": item_id,
            **{f"w_{c}": values[c] for c in columns},
            "w_discontinued_at": discontinued_at,
            "w_updated_at": now,
        }
        for item_id, values, discontinued_at in writes
    ]
    conn.execute(stmt, params)


def _note_scanner_changes(conn: Connection, plan: ReconciliationPlan) -> None:
    """Scanner-owned rows keep their content; only the hash moves on."""
    if not plan.scanner_notes:
        return
    stmt = (
        update(ITEMS)
        .where(ITEMS.c.id == bindparam("w_id"))
        .values(content_hash=bindparam("w_hash"))
    )
    conn.execute(stmt, [{"w_id": n.id, "w_hash": n.content_hash} for n in plan.scanner_notes])


def _apply(
    conn: Connection, plan: ReconciliationPlan, now: dt.datetime, run_id: str | None
) -> None:
    ids = _insert_rows(conn, plan, now)
    _update_rows(conn, plan, now)
    _note_scanner_changes(conn, plan)
    write_history(conn, _history_entries(plan, run_id, ids), now)


def _stale_fetch(conn: Connection, source: str, fetched_at: dt.datetime) -> str:
    """Why a publish of a fetch made at `fetched_at` must be refused ("" if it may go)."""
    stmt = select(SYNC_STATE.c.last_fetched_at).where(SYNC_STATE.c.source == source)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    newest = conn.execute(stmt).scalar_one_or_none()
    if newest is not None and newest > fetched_at:
        return (
            f"source {source!r}: a newer fetch (made {newest.isoformat()}) is already "
            f"published; this fetch (made {fetched_at.isoformat()}) was not published"
        )
    return ""


def _record_publish(
    conn: Connection, source: str, fetched_at: dt.datetime, now: dt.datetime, run_id: str | None
) -> None:
    """The source's newest published fetch, inserted or updated in one statement."""
    values = {"last_fetched_at": fetched_at, "last_published_at": now, "last_run_id": run_id or ""}
    stmt = _UPSERT[conn.dialect.name](SYNC_STATE).values(source=source, **values)
    update_ = {column: stmt.excluded[column] for column in values}
    conn.execute(stmt.on_conflict_do_update(index_elements=[SYNC_STATE.c.source], set_=update_))


# ---------------------------------------------------------------- the transaction


def _publish_approved(
    conn: Connection,
    plan: ReconciliationPlan,
    approve: Callable[[ReconciliationPlan], bool],
    fetched_at: dt.datetime,
    now: dt.datetime,
    run_id: str | None,
    excluded: Iterable[Excluded] | None,
) -> Reconciled:
    """Inside the open write transaction: approve, refuse a stale fetch, or write
    (the plan, the source's newest fetch and, unless None, its excluded bookings)."""
    if not approve(plan):
        conn.rollback()
        return Reconciled(plan, refused="a blocking check failed")
    stale = _stale_fetch(conn, plan.source, fetched_at)
    if stale:
        conn.rollback()
        return Reconciled(plan, refused=stale)
    if plan.writes:
        _apply(conn, plan, now, run_id)
    _record_publish(conn, plan.source, fetched_at, now, run_id)
    if excluded is not None:
        replace_excluded(conn, plan.source, excluded, now, run_id)
    conn.commit()
    return Reconciled(plan, PublishResult.of(plan))


def reconcile(
    engine: Engine,
    source_name: str,
    frame,
    window,
    fetch_complete: bool,
    present_ids: Iterable[str],
    *,
    approve: Callable[[ReconciliationPlan], bool] | None = None,
    fetched_at: dt.datetime | None = None,
    run_id: str | None = None,
    now: dt.datetime | None = None,
    excluded: Iterable[Excluded] | None = None,
) -> Reconciled:
    """Plan once; with `approve`, publish that plan in the same transaction.

    Without `approve` the plan is made read-only. With it, the plan is made inside
    the write transaction and handed to `approve` (the blocking checks); it is
    applied only when `approve` returns True and no fetch newer than `fetched_at`
    (default: now) was published for this source. Nothing is written otherwise,
    and an exception from `approve` rolls back too. `excluded` (the bookings the
    fetch saw but did not offer) replaces the source's stored list in the same
    transaction; None leaves it as it is.
    """
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("`now` must be an aware datetime")
    ids, rows = _frame_ids(frame), records(frame)

    def plan_on(conn: Connection, lock: bool) -> ReconciliationPlan:
        existing = load_existing(conn, source_name, window, ids, for_update=lock)
        return plan_reconciliation(
            existing, rows, window, fetch_complete, present_ids, source=source_name
        )

    with engine.connect() as conn:
        if approve is None:
            return Reconciled(plan_on(conn, lock=False))
        try:
            _begin_write(conn)
            return _publish_approved(
                conn, plan_on(conn, lock=True), approve, fetched_at or now, now, run_id,
                excluded,
            )
        except BaseException:
            conn.rollback()
            raise


def publish(
    engine: Engine,
    source_name: str,
    *rows,
    max_cancel_fraction: float | None = None,
    min_cancel_guard_rows: int = 5,
    **options,
) -> PublishResult:
    """`reconcile` with only the mass-cancellation guard as approval (scripts, benchmarks).

    `rows` and `options` (run_id, now, fetched_at, excluded) as for `reconcile`. Raises
    `MassCancellationError` when the guard trips and `StaleFetchError` when a newer
    fetch is already published; nothing is written then.
    """

    def guard(plan: ReconciliationPlan) -> bool:
        problem = mass_cancellation_problem(plan, max_cancel_fraction, min_cancel_guard_rows)
        if problem:
            raise MassCancellationError(problem)
        return True

    done = reconcile(engine, source_name, *rows, approve=guard, **options)
    if done.published is None:
        raise StaleFetchError(done.refused)
    return done.published
