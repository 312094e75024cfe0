"""Which bookings of a fetch are not offered as work, and why (pure).

The mapping step names every booking it leaves off the worklist as an
`mwl_service.excluded.Excluded` (kind, reason, booking id, start, resource), which
the publish stores for mwl-api's "not on the worklist" list. Rows that cannot be
published keep their skip reasons here too. No title, name or patient ID is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from calpendo_assets.config import DataSource
from calpendo_assets.rows.names import as_text, clean
from calpendo_assets.rows.times import booking_start
from calpendo_assets.sources.base import get_path
from mwl_service import excluded as why
from mwl_service.schema import DISCONTINUED
from mwl_service.vr import vr_problem

SKIP_NO_START = "no start time"
SKIP_NO_PATIENT_ID = "no patient ID"
SKIP_BAD_PATIENT_ID = "patient ID not valid for DICOM"


def pattern_missed(booking: Mapping, source: DataSource) -> bool:
    """Whether a patient_id extraction pattern found nothing in a booking value that
    has text (an empty value has no patient ID to find: that is no pattern's fault)."""
    for path, items in source.extractions:
        for ex in items:
            text = as_text(get_path(booking, path))
            if ex.field == "patient_id" and text.strip():
                m = ex.pattern.search(text)
                if m is None or not (m.group(ex.group) or "").strip():
                    return True
    return False


def left_out_entry(
    booking_id: str,
    kind: str,
    booking: Mapping,
    tz: ZoneInfo,
    detail: str = "",
    start: dt.datetime | None = None,
) -> why.Excluded:
    """The record of a booking left off the worklist (ids, time, resource: no names)."""
    start = start or booking_start(booking, tz, [])
    resource = clean(as_text(get_path(booking, "resource.name")))
    local = start.astimezone(tz) if start is not None else None
    return why.Excluded(booking_id, kind, detail, local, resource)


def skip_reasons(
    row: Mapping,
    start: dt.datetime | None,
    booking: Mapping,
    source: DataSource,
    left_out: list[why.Excluded],
) -> list[str]:
    """Why `row` cannot be published ([] when it can); appends the booking's entry to
    `left_out` when it is not offered: cancelled, or not publishable."""
    skip: list[tuple[str, str]] = []
    if start is None:
        skip.append((SKIP_NO_START, why.NO_START))
    if not row["patient_id"]:
        kind = why.PATTERN_NOT_MATCHED if pattern_missed(booking, source) else why.NO_PATIENT_ID
        skip.append((SKIP_NO_PATIENT_ID, kind))
    elif vr_problem("LO", row["patient_id"]):
        skip.append((SKIP_BAD_PATIENT_ID, why.INVALID_DICOM_VALUE))
    booking_id, tz = row["booking_id"], source.tz
    if row["step_status"] == DISCONTINUED:
        status = row["booking_status"] or "CANCELLED"
        left_out.append(left_out_entry(booking_id, why.CANCELLED, booking, tz, status, start))
    elif skip:
        # The patient's reason first: a technologist looks for the participant.
        text, kind = skip[-1]
        details = ["patient_id"] if kind == why.INVALID_DICOM_VALUE else []
        details += [f"also {other}" for other, _ in skip if other != text]
        left_out.append(left_out_entry(booking_id, kind, booking, tz, "; ".join(details), start))
    return [text for text, _ in skip]
