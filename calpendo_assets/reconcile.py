"""Reconcile worklist rows with the database, and publish them in one transaction.

`plan_reconciliation` is pure: given the rows a source already has and the rows a
sync produced, it decides what to insert, update, cancel and restore. `reconcile`
plans once, inside the write transaction (so it sees what MPPS changed meanwhile),
lets the caller approve that plan (the blocking checks), refuses a fetch older than
the newest one already published, and writes everything with bulk statements in one
commit: a reader sees the old worklist or the new one, never a mix.

Rules (docs/architecture.md, "Data rules"):

- One row per (source, booking_id): a re-sync updates, never adds a second row.
- Same content hash -> no write at all (not even ``updated_at``).
- A booking cancelled (or denied) in Calpendo -> DISCONTINUED with its reason.
- A SCHEDULED row of this source inside the window whose booking is absent from a
  *complete* fetch -> DISCONTINUED, reason `VANISHED_REASON`. An incomplete fetch
  cancels nothing. Rows outside the window or of another source are never touched.
- Scanner-owned rows (MPPS set IN PROGRESS/COMPLETED/DISCONTINUED) are left alone
  entirely, demographics included: the scanner may already have used them. A
  Calpendo change to such a booking is recorded once in the history (and the stored
  hash moves on so the same change is not recorded again every run).
- A row the sync discontinued whose booking is back and active -> SCHEDULED again
  (a restore).
- A booking that is present but unpublishable (``skip_reason``) keeps its existing
  row as is (unless Calpendo cancelled it: the cancellation is still applied).
- Every insert/update/cancel/restore appends to the history with the changed fields
  (old/new), the reason and the run id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from calpendo_assets.rows.model import (
    HASH_COLUMNS,
    SYNC_COLUMNS,
    VANISHED_REASON,
    canonical_value,
    content_hash,
    frame_records,
)
from mwl_service.excluded import Excluded, replace_excluded
from mwl_service.history import HistoryEntry, write_history
from mwl_service.schema import (
    COMPLETED,
    DISCONTINUED,
    EVENT_CANCEL,
    EVENT_INSERT,
    EVENT_RESTORE,
    EVENT_UPDATE,
    IN_PROGRESS,
    OWNER_MPPS,
    OWNER_SYNC,
    SCHEDULED,
    SourceSyncState,
    WorklistItem,
    utcnow,
)

ITEMS = WorklistItem.__table__
SYNC_STATE = SourceSyncState.__table__

CANCEL_IN_CALPENDO = "calpendo"  # the booking says cancelled/denied
CANCEL_MISSING = "missing"  # the booking vanished from a complete fetch
_ID_CHUNK = 500  # booking ids per IN (...) query


class MassCancellationError(RuntimeError):
    """The publish would cancel too large a share of the window: nothing was written."""


class StaleFetchError(RuntimeError):
    """A newer fetch of this source is already published: this older one was not written."""


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Insert:
    """A booking seen for the first time: its full row."""

    booking_id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Update:
    """An existing row whose booking changed (`event` update, or restore when it is back)."""

    id: int
    booking_id: str
    event: str
    values: dict[str, Any]
    changes: dict[str, dict[str, Any]]  # column -> {"old", "new"}
    old_step_status: str
    new_step_status: str
    old_discontinued_at: dt.datetime | None


@dataclass(frozen=True)
class Cancel:
    """An existing row to discontinue; `kind` CANCEL_IN_CALPENDO or CANCEL_MISSING."""

    id: int
    booking_id: str
    reason: str
    kind: str
    values: dict[str, Any]
    changes: dict[str, dict[str, Any]]
    old_step_status: str


@dataclass(frozen=True)
class ScannerNote:
    """A Calpendo change NOT applied because the scanner owns the row (history only)."""

    id: int
    booking_id: str
    content_hash: str
    changes: dict[str, dict[str, Any]]
    step_status: str


@dataclass
class ReconciliationPlan:
    source: str
    window_start: dt.datetime
    window_end: dt.datetime
    fetch_complete: bool
    inserts: list[Insert] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    unchanged: int = 0
    cancels: list[Cancel] = field(default_factory=list)
    restores: int = 0
    scanner_owned_kept: int = 0
    active_in_window: int = 0  # SCHEDULED sync-owned rows this sync could cancel
    skipped_kept: int = 0  # existing rows left as is: their booking is present but unpublishable
    skipped: int = 0  # frame rows with a skip_reason (never written)
    scanner_notes: list[ScannerNote] = field(default_factory=list)

    @property
    def vanished(self) -> int:
        """Rows to cancel because their booking is gone (not cancelled in Calpendo)."""
        return sum(1 for c in self.cancels if c.kind == CANCEL_MISSING)

    @property
    def vanished_fraction(self) -> float:
        if not self.vanished:
            return 0.0
        return self.vanished / max(self.active_in_window, self.vanished)

    def counts(self) -> dict[str, Any]:
        plain_updates = sum(1 for u in self.updates if u.event == EVENT_UPDATE)
        return {
            "inserts": len(self.inserts),
            "updates": plain_updates,
            "unchanged": self.unchanged,
            "cancels": len(self.cancels),
            "cancels_in_calpendo": sum(1 for c in self.cancels if c.kind == CANCEL_IN_CALPENDO),
            "cancels_missing": self.vanished,
            "restores": self.restores,
            "scanner_owned_kept": self.scanner_owned_kept,
            "skipped": self.skipped,
            "skipped_kept": self.skipped_kept,
            "active_in_window": self.active_in_window,
            "fetch_complete": self.fetch_complete,
        }

    @property
    def writes(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.cancels) + len(self.scanner_notes)


def _scanner_owned(row: Mapping) -> bool:
    return row.get("step_status_owner") == OWNER_MPPS or row.get("step_status") in (
        IN_PROGRESS,
        COMPLETED,
    )


def _in_window(row: Mapping, start: dt.datetime, end: dt.datetime) -> bool:
    instant = row.get("scheduled_start_utc")
    return instant is not None and start <= instant < end


def _changes(old: Mapping, new: Mapping) -> dict[str, dict[str, Any]]:
    out = {}
    for column in HASH_COLUMNS:
        before, after = canonical_value(old.get(column)), canonical_value(new.get(column))
        if before != after:
            out[column] = {"old": before, "new": after}
    return out


def _records(frame: pd.DataFrame | Iterable[Mapping]) -> list[dict]:
    if isinstance(frame, pd.DataFrame):
        return frame_records(frame)
    return [dict(r) for r in frame]


def _cancel_entry(
    existing: Mapping, reason: str, kind: str, new_row: Mapping | None = None
) -> Cancel:
    """Cancel `existing`: with the booking's new content when given, else its own."""
    base = dict(new_row) if new_row is not None else {c: existing.get(c) for c in SYNC_COLUMNS}
    values = {c: base.get(c) for c in SYNC_COLUMNS}
    values["step_status"] = DISCONTINUED
    values["discontinued_reason"] = reason
    values["content_hash"] = (
        new_row["content_hash"]
        if new_row is not None and not new_row.get("skip_reason")
        else content_hash(values)
    )
    return Cancel(
        id=existing["id"],
        booking_id=existing["booking_id"],
        reason=reason,
        kind=kind,
        values=values,
        changes=_changes(existing, values),
        old_step_status=existing.get("step_status", ""),
    )


def plan_reconciliation(
    existing: list[dict],
    frame: pd.DataFrame | Iterable[Mapping],
    window,
    fetch_complete: bool,
    present_ids: Iterable[str],
    *,
    source: str | None = None,
) -> ReconciliationPlan:
    """What publishing `frame` would change (pure).

    `existing`: this source's rows (in the window, or whose booking is in the frame)
    as dicts of WorklistItem columns. `window`: anything with aware ``start``/``end``.
    `present_ids`: every booking id the fetch saw in scope, including unpublishable
    and unreadable ones: those are never cancelled as missing.
    """
    rows = _records(frame)
    names = {r["source"] for r in rows} | {e["source"] for e in existing}
    if source is None:
        source = next(iter(names)) if len(names) == 1 else ""
    if names - {source}:
        raise ValueError(
            f"rows of other sources passed for source {source!r}: {sorted(names - {source})}"
        )
    start, end = window.start, window.end
    plan = ReconciliationPlan(source, start, end, bool(fetch_complete))
    present = {str(p) for p in present_ids}
    by_booking: dict[str, dict] = {}
    for e in existing:
        if e["booking_id"] in by_booking:
            raise ValueError(f"two existing rows for booking {e['booking_id']!r}")
        by_booking[e["booking_id"]] = e
    in_frame: set[str] = set()

    for row in rows:
        bid = str(row["booking_id"])
        if bid in in_frame:
            raise ValueError(f"booking {bid!r} appears twice in the rows")
        in_frame.add(bid)
        e = by_booking.get(bid)
        if e is not None and not _scanner_owned(e) and e.get("step_status") == SCHEDULED:
            plan.active_in_window += 1

        if row.get("skip_reason"):
            plan.skipped += 1
            if e is None:
                continue
            if (
                row.get("step_status") == DISCONTINUED
                and not _scanner_owned(e)
                and e.get("step_status") == SCHEDULED
            ):
                plan.cancels.append(
                    _cancel_entry(
                        e,
                        row.get("discontinued_reason") or "cancelled in Calpendo",
                        CANCEL_IN_CALPENDO,
                    )
                )
            elif _scanner_owned(e):
                plan.scanner_owned_kept += 1
            else:
                plan.skipped_kept += 1
            continue

        values = {c: row.get(c) for c in SYNC_COLUMNS}
        if e is None:
            plan.inserts.append(Insert(bid, values))
            continue
        if _scanner_owned(e):
            plan.scanner_owned_kept += 1
            if row["content_hash"] != e.get("content_hash"):
                plan.scanner_notes.append(
                    ScannerNote(
                        id=e["id"],
                        booking_id=bid,
                        content_hash=row["content_hash"],
                        changes=_changes(e, values),
                        step_status=e.get("step_status", ""),
                    )
                )
            continue
        if row["content_hash"] == e.get("content_hash"):
            plan.unchanged += 1
            continue
        old_status, new_status = e.get("step_status"), values["step_status"]
        if new_status == DISCONTINUED and old_status != DISCONTINUED:
            plan.cancels.append(
                _cancel_entry(e, values["discontinued_reason"], CANCEL_IN_CALPENDO, new_row=values)
            )
            continue
        event = EVENT_UPDATE
        if old_status == DISCONTINUED and new_status == SCHEDULED:
            event = EVENT_RESTORE
            plan.restores += 1
        plan.updates.append(
            Update(
                id=e["id"],
                booking_id=bid,
                event=event,
                values=values,
                changes=_changes(e, values),
                old_step_status=old_status or "",
                new_step_status=new_status,
                old_discontinued_at=e.get("discontinued_at"),
            )
        )

    for bid, e in by_booking.items():
        if bid in in_frame or not _in_window(e, start, end):
            continue  # handled above, or outside the window: never touched
        if _scanner_owned(e):
            plan.scanner_owned_kept += 1
            continue
        if e.get("step_status") != SCHEDULED:
            continue  # already discontinued
        plan.active_in_window += 1
        if bid in present:
            plan.skipped_kept += 1
            continue
        if not plan.fetch_complete:
            continue
        plan.cancels.append(_cancel_entry(e, VANISHED_REASON, CANCEL_MISSING))
    return plan


def mass_cancellation_problem(
    plan: ReconciliationPlan, max_fraction: float | None, min_rows: int
) -> str | None:
    """Why publishing `plan` would be a suspicious mass cancellation, or None.

    Trips when at least `min_rows` rows would be cancelled because their bookings
    vanished, and they are more than `max_fraction` of the rows this sync could
    cancel. Only vanished bookings count: that is what an outage, a wrong filter or
    a broken query looks like. A booking cancelled in Calpendo is an explicit fact
    and never blocks a publish.
    """
    if max_fraction is None:
        return None
    n = plan.vanished
    if n == 0 or n < min_rows or plan.vanished_fraction <= max_fraction:
        return None
    active = max(plan.active_in_window, n)
    return (
        f"mass-cancellation guard: source {plan.source!r} would cancel {n} of {active} active "
        f"worklist rows ({plan.vanished_fraction:.0%}) whose bookings vanished from Calpendo, "
        f"above the limit of {max_fraction:.0%} (guard applies from {min_rows} rows). "
        "Nothing was published. If this is real, raise config.max_cancel_fraction or "
        "config.min_cancel_guard_rows for this source."
    )


# ---------------------------------------------------------------- database


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


def _plain(values: Mapping) -> dict:
    """Content columns as JSON-ready values (strings pass straight through)."""
    out = {}
    for c in HASH_COLUMNS:
        v = values.get(c)
        out[c] = v if v.__class__ is str or v is None else canonical_value(v)
    return out


def _begin_write(conn: Connection) -> None:
    """Start the write transaction. SQLite: BEGIN IMMEDIATE takes the write lock up
    front, so the plan is made on data no other writer can change before commit
    (a deferred transaction would fail to upgrade if MPPS wrote meanwhile)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _history_entries(plan: ReconciliationPlan, run_id: str | None, ids: Mapping[str, int]):
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
            "reason": f"scanner-owned (step {n.step_status} set by MPPS): Calpendo change not applied",
            "changes": n.changes,
        }
        yield HistoryEntry(
            EVENT_UPDATE, n.id, source, n.booking_id, n.step_status, n.step_status, details
        )


def _apply(
    conn: Connection, plan: ReconciliationPlan, now: dt.datetime, run_id: str | None
) -> None:
    ids: dict[str, int] = {}
    if plan.inserts:
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
        stmt = insert(ITEMS).returning(ITEMS.c.id, ITEMS.c.booking_id, sort_by_parameter_order=True)
        ids = {r.booking_id: r.id for r in conn.execute(stmt, params)}

    writes = [
        (
            u.id,
            u.values,
            (u.old_discontinued_at or now) if u.new_step_status == DISCONTINUED else None,
        )
        for u in plan.updates
    ] + [(c.id, c.values, now) for c in plan.cancels]
    if writes:
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

    if plan.scanner_notes:
        stmt = (
            update(ITEMS)
            .where(ITEMS.c.id == bindparam("w_id"))
            .values(content_hash=bindparam("w_hash"))
        )
        conn.execute(stmt, [{"w_id": n.id, "w_hash": n.content_hash} for n in plan.scanner_notes])

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
    values = {"last_fetched_at": fetched_at, "last_published_at": now, "last_run_id": run_id or ""}
    done = conn.execute(update(SYNC_STATE).where(SYNC_STATE.c.source == source).values(values))
    if not done.rowcount:
        conn.execute(insert(SYNC_STATE).values(source=source, **values))


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
    fetched_at = fetched_at or now
    ids = _frame_ids(frame)
    records = _records(frame)

    def plan_on(conn: Connection, lock: bool) -> ReconciliationPlan:
        existing = load_existing(conn, source_name, window, ids, for_update=lock)
        return plan_reconciliation(
            existing, records, window, fetch_complete, present_ids, source=source_name
        )

    with engine.connect() as conn:
        if approve is None:
            return Reconciled(plan_on(conn, lock=False))
        try:
            _begin_write(conn)
            plan = plan_on(conn, lock=True)
            if not approve(plan):
                conn.rollback()
                return Reconciled(plan, refused="a blocking check failed")
            stale = _stale_fetch(conn, source_name, fetched_at)
            if stale:
                conn.rollback()
                return Reconciled(plan, refused=stale)
            if plan.writes:
                _apply(conn, plan, now, run_id)
            _record_publish(conn, source_name, fetched_at, now, run_id)
            if excluded is not None:
                replace_excluded(conn, source_name, excluded, now, run_id)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return Reconciled(plan, PublishResult.of(plan))


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
