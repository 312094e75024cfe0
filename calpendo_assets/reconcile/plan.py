"""What publishing a sync's rows would change: the reconciliation plan (pure).

`plan_reconciliation`, given the rows a source already has and the rows a sync
produced, decides what to insert, update, cancel and restore, as typed entries.
`calpendo_assets.reconcile.publish` makes the plan inside the write transaction
and applies it.

Rules (docs/architecture.md, "Data rules"):

- One row per (source, booking_id): a re-sync updates, never adds a second row.
- Same content hash -> no write at all (not even ``updated_at``).
- A booking cancelled (or denied) at the source -> DISCONTINUED with its reason.
- A SCHEDULED row of this source inside the window whose booking is absent from a
  *complete* fetch -> DISCONTINUED, reason `VANISHED_REASON`. An incomplete fetch
  cancels nothing. Rows outside the window or of another source are never touched.
- Scanner-owned rows (MPPS set IN PROGRESS/COMPLETED/DISCONTINUED) are left alone
  entirely, demographics included: the scanner may already have used them. A
  source change to such a booking is recorded once in the history (and the stored
  hash moves on so the same change is not recorded again every run).
- A row the sync discontinued whose booking is back and active -> SCHEDULED again
  (a restore).
- A booking that is present but unpublishable (``skip_reason``) keeps its existing
  row as is (unless the source cancelled it: the cancellation is still applied).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

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
    EVENT_RESTORE,
    EVENT_UPDATE,
    IN_PROGRESS,
    OWNER_MPPS,
    SCHEDULED,
)

CANCEL_IN_CALPENDO = "calpendo"  # the booking says cancelled/denied (stored in history)
CANCEL_MISSING = "missing"  # the booking vanished from a complete fetch


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
    """A source change NOT applied because the scanner owns the row (history only)."""

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
        """Rows to cancel because their booking is gone (not cancelled at the source)."""
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


def scanner_owned(row: Mapping) -> bool:
    return row.get("step_status_owner") == OWNER_MPPS or row.get("step_status") in (
        IN_PROGRESS,
        COMPLETED,
    )


def _active(row: Mapping) -> bool:
    """A SCHEDULED row the sync still owns: one this sync could cancel."""
    return not scanner_owned(row) and row.get("step_status") == SCHEDULED


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


def records(frame: pd.DataFrame | Iterable[Mapping]) -> list[dict]:
    """Rows as plain dicts, from a frame or any iterable of mappings."""
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


def _plan_unpublishable(plan: ReconciliationPlan, row: Mapping, existing: Mapping | None) -> None:
    """A booking that is present but cannot be published keeps its row, unless the
    source cancelled it."""
    plan.skipped += 1
    if existing is None:
        return
    if row.get("step_status") == DISCONTINUED and _active(existing):
        reason = row.get("discontinued_reason") or "cancelled in Calpendo"
        plan.cancels.append(_cancel_entry(existing, reason, CANCEL_IN_CALPENDO))
    elif scanner_owned(existing):
        plan.scanner_owned_kept += 1
    else:
        plan.skipped_kept += 1


def _plan_scanner_owned(
    plan: ReconciliationPlan, row: Mapping, existing: Mapping, values: dict
) -> None:
    """The scanner's row stays; a change of its booking goes to the history once."""
    plan.scanner_owned_kept += 1
    if row["content_hash"] != existing.get("content_hash"):
        plan.scanner_notes.append(
            ScannerNote(
                id=existing["id"],
                booking_id=str(row["booking_id"]),
                content_hash=row["content_hash"],
                changes=_changes(existing, values),
                step_status=existing.get("step_status", ""),
            )
        )


def _plan_change(plan: ReconciliationPlan, existing: Mapping, values: dict) -> None:
    """A sync-owned row whose booking changed: cancel, restore or update it."""
    old_status, new_status = existing.get("step_status"), values["step_status"]
    if new_status == DISCONTINUED and old_status != DISCONTINUED:
        reason = values["discontinued_reason"]
        plan.cancels.append(_cancel_entry(existing, reason, CANCEL_IN_CALPENDO, new_row=values))
        return
    event = EVENT_UPDATE
    if old_status == DISCONTINUED and new_status == SCHEDULED:
        event = EVENT_RESTORE
        plan.restores += 1
    plan.updates.append(
        Update(
            id=existing["id"],
            booking_id=existing["booking_id"],
            event=event,
            values=values,
            changes=_changes(existing, values),
            old_step_status=old_status or "",
            new_step_status=new_status,
            old_discontinued_at=existing.get("discontinued_at"),
        )
    )


def _plan_row(plan: ReconciliationPlan, row: Mapping, existing: Mapping | None) -> None:
    """What one of the sync's rows changes."""
    if existing is not None and _active(existing):
        plan.active_in_window += 1
    if row.get("skip_reason"):
        _plan_unpublishable(plan, row, existing)
        return
    values = {c: row.get(c) for c in SYNC_COLUMNS}
    if existing is None:
        plan.inserts.append(Insert(str(row["booking_id"]), values))
    elif scanner_owned(existing):
        _plan_scanner_owned(plan, row, existing, values)
    elif row["content_hash"] == existing.get("content_hash"):
        plan.unchanged += 1
    else:
        _plan_change(plan, existing, values)


def _plan_absent(plan: ReconciliationPlan, existing: Mapping, present: set[str]) -> None:
    """An existing row in the window whose booking produced no row: cancelled when a
    complete fetch did not see it at all."""
    if scanner_owned(existing):
        plan.scanner_owned_kept += 1
        return
    if existing.get("step_status") != SCHEDULED:
        return  # already discontinued
    plan.active_in_window += 1
    if existing["booking_id"] in present:
        plan.skipped_kept += 1
    elif plan.fetch_complete:
        plan.cancels.append(_cancel_entry(existing, VANISHED_REASON, CANCEL_MISSING))


def _by_booking(existing: list[dict]) -> dict[str, dict]:
    by_booking: dict[str, dict] = {}
    for e in existing:
        if e["booking_id"] in by_booking:
            raise ValueError(f"two existing rows for booking {e['booking_id']!r}")
        by_booking[e["booking_id"]] = e
    return by_booking


def _source_name(rows: list[dict], existing: list[dict], source: str | None) -> str:
    names = {r["source"] for r in rows} | {e["source"] for e in existing}
    if source is None:
        source = next(iter(names)) if len(names) == 1 else ""
    if names - {source}:
        raise ValueError(
            f"rows of other sources passed for source {source!r}: {sorted(names - {source})}"
        )
    return source


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
    rows = records(frame)
    source = _source_name(rows, existing, source)
    plan = ReconciliationPlan(source, window.start, window.end, bool(fetch_complete))
    by_booking = _by_booking(existing)
    in_frame: set[str] = set()
    for row in rows:
        bid = str(row["booking_id"])
        if bid in in_frame:
            raise ValueError(f"booking {bid!r} appears twice in the rows")
        in_frame.add(bid)
        _plan_row(plan, row, by_booking.get(bid))
    present = {str(p) for p in present_ids}
    for bid, e in by_booking.items():
        # Handled above, or outside the window: never touched.
        if bid not in in_frame and _in_window(e, window.start, window.end):
            _plan_absent(plan, e, present)
    return plan


def mass_cancellation_problem(
    plan: ReconciliationPlan, max_fraction: float | None, min_rows: int
) -> str | None:
    """Why publishing `plan` would be a suspicious mass cancellation, or None.

    Trips when at least `min_rows` rows would be cancelled because their bookings
    vanished, and they are more than `max_fraction` of the rows this sync could
    cancel. Only vanished bookings count: that is what an outage, a wrong filter or
    a broken query looks like. A booking cancelled at the source is an explicit fact
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
        f"worklist rows ({plan.vanished_fraction:.0%}) whose bookings vanished from the source, "
        f"above the limit of {max_fraction:.0%} (guard applies from {min_rows} rows). "
        "Nothing was published. If this is real, raise config.max_cancel_fraction or "
        "config.min_cancel_guard_rows for this source."
    )
