"""Bookings a sync fetched but did not put on the worklist, and why: the one writer
and reader of `excluded_bookings`.

The mapping step names each such booking with a `kind` (a stable code) and a
`reason` (a short text for people); the publish replaces its source's list in its
own transaction, so the list always belongs to the worklist a scanner sees. Only ids,
times, resource names and reasons are kept: never a title, name or patient ID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection

from mwl_service.schema import ExcludedBooking as ExcludedRow
from mwl_service.schema import utcnow

# Kinds, each with its text (`reason` may add a detail after a colon).
NO_BOOKING_ID = "no_booking_id"
NO_PATIENT_ID = "no_patient_id"
PATTERN_NOT_MATCHED = "pattern_not_matched"
INVALID_DICOM_VALUE = "invalid_dicom_value"
RESOURCE_NOT_IN_SCOPE = "resource_not_in_scope"
STATUS_NOT_IN_SCOPE = "status_not_in_scope"
NO_START = "no_start"
OUTSIDE_WINDOW = "outside_window"
DUPLICATE = "duplicate"
NOT_FETCHED = "details_not_fetched"
CANCELLED = "cancelled"

REASONS = {
    NO_BOOKING_ID: "no booking id",
    NO_PATIENT_ID: "no patient ID or name",
    PATTERN_NOT_MATCHED: "regex did not match: the patient ID pattern found nothing in the booking",
    INVALID_DICOM_VALUE: "invalid DICOM value",
    RESOURCE_NOT_IN_SCOPE: "scoped out by resource: the resource is not configured for this source",
    STATUS_NOT_IN_SCOPE: "scoped out by status: the booking status is not in the status filter",
    NO_START: "no start time",
    OUTSIDE_WINDOW: "start outside the window the sync fetched",
    DUPLICATE: "duplicate: the source returned this booking more than once; the first copy is used",
    NOT_FETCHED: "details not fetched",
    CANCELLED: "cancelled or denied in the source",
}


@dataclass(frozen=True)
class Excluded:
    """One booking left off the worklist. `start` is aware (None: unknown)."""

    booking_id: str
    kind: str
    detail: str = ""  # appended to the kind's text; never participant data
    start: dt.datetime | None = None
    resource: str = ""

    @property
    def reason(self) -> str:
        text = REASONS[self.kind]
        return f"{text}: {self.detail}" if self.detail else text


def _row(source: str, entry: Excluded, now: dt.datetime, run_id: str) -> dict:
    start = entry.start
    zone = getattr(start.tzinfo, "key", "") if start is not None else ""
    return {
        "source": source,
        "booking_id": str(entry.booking_id)[:64],
        "scheduled_start_utc": start,
        "site_timezone": zone,
        "scheduled_start_date": start.strftime("%Y%m%d") if start is not None else "",
        "resource_name": entry.resource[:128],
        "kind": entry.kind,
        "reason": entry.reason[:255],
        "run_id": run_id[:64],
        "recorded_at": now,
    }


def replace_excluded(
    conn: Connection,
    source: str,
    entries: Iterable[Excluded],
    now: dt.datetime | None = None,
    run_id: str | None = None,
) -> int:
    """Replace `source`'s list with `entries`, inside the caller's transaction."""
    table = ExcludedRow.__table__
    now = now or utcnow()
    conn.execute(delete(table).where(table.c.source == source))
    rows = [_row(source, e, now, run_id or "") for e in entries]
    if rows:
        conn.execute(insert(table), rows)
    return len(rows)


def list_excluded(
    conn: Connection, date: str | None = None, source: str | None = None
) -> list[dict]:
    """The stored entries, ordered by start: of one site-local day (``YYYYMMDD``;
    entries without a start are on every day's list) and/or one source."""
    table = ExcludedRow.__table__
    stmt = select(table)
    if date:
        stmt = stmt.where(
            or_(table.c.scheduled_start_date == date, table.c.scheduled_start_date == "")
        )
    if source:
        stmt = stmt.where(table.c.source == source)
    stmt = stmt.order_by(
        table.c.scheduled_start_utc.asc().nulls_last(), table.c.source, table.c.booking_id
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]
