"""Reconcile worklist rows with the database, and publish them in one transaction.

`plan_reconciliation` is pure: given the rows a source already has and the rows a
sync produced, it decides what to insert, update, cancel and restore. `publish`
re-plans inside its write transaction (so it sees what MPPS changed meanwhile),
enforces the mass-cancellation guard, and writes everything with bulk statements in
one commit: a reader sees the old worklist or the new one, never a mix.

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
import json
from collections.abc import Iterable, Mapping
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
    WorklistHistory,
    WorklistItem,
    utcnow,
)

ITEMS = WorklistItem.__table__
HISTORY = WorklistHistory.__table__

CANCEL_IN_CALPENDO = "calpendo"  # the booking says cancelled/denied
CANCEL_MISSING = "missing"  # the booking vanished from a complete fetch
_ID_CHUNK = 500  # booking ids per IN (...) query


class MassCancellationError(RuntimeError):
    """The publish would cancel too large a share of the window: nothing was written."""


# ---------------------------------------------------------------- the plan


@dataclass
class ReconciliationPlan:
    source: str
    window_start: dt.datetime
    window_end: dt.datetime
    fetch_complete: bool
    inserts: list[dict] = field(default_factory=list)  # full rows
    # {"id", "booking_id", "event" ("update"|"restore"), "values", "changes"
    #  ({column: {"old", "new"}}), "old_step_status", "new_step_status", "old_discontinued_at"}
    updates: list[dict] = field(default_factory=list)
    unchanged: int = 0
    # {"id", "booking_id", "reason", "kind" ("calpendo"|"missing"), "values", "changes",
    #  "old_step_status"}
    cancels: list[dict] = field(default_factory=list)
    restores: int = 0
    scanner_owned_kept: int = 0
    active_in_window: int = 0  # SCHEDULED sync-owned rows this sync could cancel
    skipped_kept: int = 0  # existing rows left as is: their booking is present but unpublishable
    skipped: int = 0  # frame rows with a skip_reason (never written)
    # Calpendo changes NOT applied to scanner-owned rows: {"id", "booking_id",
    # "content_hash", "changes", "step_status"}
    scanner_notes: list[dict] = field(default_factory=list)

    @property
    def vanished(self) -> int:
        """Rows to cancel because their booking is gone (not cancelled in Calpendo)."""
        return sum(1 for c in self.cancels if c["kind"] == CANCEL_MISSING)

    @property
    def vanished_fraction(self) -> float:
        if not self.vanished:
            return 0.0
        return self.vanished / max(self.active_in_window, self.vanished)

    def counts(self) -> dict[str, Any]:
        plain_updates = sum(1 for u in self.updates if u["event"] == EVENT_UPDATE)
        return {
            "inserts": len(self.inserts),
            "updates": plain_updates,
            "unchanged": self.unchanged,
            "cancels": len(self.cancels),
            "cancels_in_calpendo": sum(1 for c in self.cancels if c["kind"] == CANCEL_IN_CALPENDO),
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
) -> dict:
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
    return {
        "id": existing["id"],
        "booking_id": existing["booking_id"],
        "reason": reason,
        "kind": kind,
        "values": values,
        "changes": _changes(existing, values),
        "old_step_status": existing.get("step_status", ""),
    }


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
            plan.inserts.append(values)
            continue
        if _scanner_owned(e):
            plan.scanner_owned_kept += 1
            if row["content_hash"] != e.get("content_hash"):
                plan.scanner_notes.append(
                    {
                        "id": e["id"],
                        "booking_id": bid,
                        "content_hash": row["content_hash"],
                        "changes": _changes(e, values),
                        "step_status": e.get("step_status", ""),
                    }
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
            {
                "id": e["id"],
                "booking_id": bid,
                "event": event,
                "values": values,
                "changes": _changes(e, values),
                "old_step_status": old_status or "",
                "new_step_status": new_status,
                "old_discontinued_at": e.get("discontinued_at"),
            }
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


def plan_against_db(
    engine: Engine,
    source_name: str,
    frame,
    window,
    fetch_complete: bool,
    present_ids: Iterable[str],
) -> ReconciliationPlan:
    """The plan against the current database (read-only; `publish` re-plans)."""
    with engine.connect() as conn:
        existing = load_existing(conn, source_name, window, _frame_ids(frame))
    return plan_reconciliation(
        existing, frame, window, fetch_complete, present_ids, source=source_name
    )


@dataclass
class PublishResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    cancelled: int = 0
    restored: int = 0
    scanner_owned_kept: int = 0
    skipped: int = 0


def _plain(values: Mapping) -> dict:
    """Content columns as JSON-ready values (strings pass straight through)."""
    out = {}
    for c in HASH_COLUMNS:
        v = values.get(c)
        out[c] = v if v.__class__ is str or v is None else canonical_value(v)
    return out


def _json(details: dict) -> str:
    return json.dumps(details, ensure_ascii=False, sort_keys=True, default=canonical_value)


def _history_row(item_id, source, booking_id, event, old_status, new_status, details, now) -> dict:
    return {
        "worklist_item_id": item_id,
        "source": source,
        "booking_id": booking_id,
        "event": event,
        "old_step_status": old_status or "",
        "new_step_status": new_status or "",
        "details": _json(details),
        "changed_at": now,
    }


def _begin_write(conn: Connection) -> None:
    """Start the write transaction. SQLite: BEGIN IMMEDIATE takes the write lock up
    front, so the plan is made on data no other writer can change before commit
    (a deferred transaction would fail to upgrade if MPPS wrote meanwhile)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _apply(
    conn: Connection, plan: ReconciliationPlan, now: dt.datetime, run_id: str | None
) -> None:
    source = plan.source
    history: list[dict] = []

    if plan.inserts:
        params = []
        for values in plan.inserts:
            discontinued = values["step_status"] == DISCONTINUED
            params.append(
                {
                    **values,
                    "step_status_owner": OWNER_SYNC,
                    "discontinued_at": now if discontinued else None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        stmt = insert(ITEMS).returning(ITEMS.c.id, ITEMS.c.booking_id, sort_by_parameter_order=True)
        ids = {r.booking_id: r.id for r in conn.execute(stmt, params)}
        for values in plan.inserts:
            details = {"run_id": run_id, "values": _plain(values)}
            if values["step_status"] == DISCONTINUED:
                details["reason"] = values["discontinued_reason"]
            history.append(
                _history_row(
                    ids[values["booking_id"]],
                    source,
                    values["booking_id"],
                    EVENT_INSERT,
                    "",
                    values["step_status"],
                    details,
                    now,
                )
            )

    writes = []
    for u in plan.updates:
        if u["new_step_status"] == DISCONTINUED:
            discontinued_at = u["old_discontinued_at"] or now
        else:
            discontinued_at = None
        writes.append((u["id"], u["values"], discontinued_at))
        details = {"run_id": run_id, "changes": u["changes"]}
        if u["event"] == EVENT_RESTORE:
            details["reason"] = "booking active in Calpendo again"
        history.append(
            _history_row(
                u["id"],
                source,
                u["booking_id"],
                u["event"],
                u["old_step_status"],
                u["new_step_status"],
                details,
                now,
            )
        )
    for c in plan.cancels:
        writes.append((c["id"], c["values"], now))
        details = {
            "run_id": run_id,
            "reason": c["reason"],
            "kind": c["kind"],
            "changes": c["changes"],
        }
        history.append(
            _history_row(
                c["id"],
                source,
                c["booking_id"],
                EVENT_CANCEL,
                c["old_step_status"],
                DISCONTINUED,
                details,
                now,
            )
        )
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
        conn.execute(
            stmt, [{"w_id": n["id"], "w_hash": n["content_hash"]} for n in plan.scanner_notes]
        )
        for n in plan.scanner_notes:
            details = {
                "run_id": run_id,
                "applied": False,
                "reason": f"scanner-owned (step {n['step_status']} set by MPPS): Calpendo change not applied",
                "changes": n["changes"],
            }
            history.append(
                _history_row(
                    n["id"],
                    source,
                    n["booking_id"],
                    EVENT_UPDATE,
                    n["step_status"],
                    n["step_status"],
                    details,
                    now,
                )
            )

    if history:
        conn.execute(insert(HISTORY), history)


def publish(
    engine: Engine,
    source_name: str,
    frame,
    window,
    fetch_complete: bool,
    present_ids: Iterable[str],
    *,
    max_cancel_fraction: float | None = None,
    min_cancel_guard_rows: int = 5,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> PublishResult:
    """Re-plan inside one write transaction, check the guard, write, commit once.

    Raises `MassCancellationError` (nothing written) when the guard trips.
    """
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("`now` must be an aware datetime")
    ids = _frame_ids(frame)
    records = _records(frame)
    with engine.connect() as conn:
        try:
            _begin_write(conn)
            existing = load_existing(conn, source_name, window, ids, for_update=True)
            plan = plan_reconciliation(
                existing, records, window, fetch_complete, present_ids, source=source_name
            )
            problem = mass_cancellation_problem(plan, max_cancel_fraction, min_cancel_guard_rows)
            if problem:
                raise MassCancellationError(problem)
            if plan.writes:
                _apply(conn, plan, now, run_id)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return PublishResult(
        inserted=len(plan.inserts),
        updated=sum(1 for u in plan.updates if u["event"] == EVENT_UPDATE),
        unchanged=plan.unchanged,
        cancelled=len(plan.cancels),
        restored=plan.restores,
        scanner_owned_kept=plan.scanner_owned_kept,
        skipped=plan.skipped,
    )
