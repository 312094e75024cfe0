"""Which bookings of a fetch are not offered as work, and why (pure).

The mapping step names every booking it leaves off the worklist as an
`mwl_service.excluded.Excluded` (kind, reason, booking id, start, resource), which
the publish stores for mwl-api's "not on the worklist" list. Rows that cannot be
published keep their skip reasons here too. No title, name or patient ID is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

from calpendo_assets.core.records import get_path
from calpendo_assets.core.source import FieldExtraction
from calpendo_assets.core.window import Window
from calpendo_assets.rows.names import as_text, clean
from calpendo_assets.rows.times import booking_start
from mwl_service import excluded as why
from mwl_service.schema import DISCONTINUED
from mwl_service.vr import vr_problem

SKIP_NO_START = "no start time"
SKIP_NO_PATIENT_ID = "no patient ID"
SKIP_BAD_PATIENT_ID = "patient ID not valid for DICOM"

Extractions = Sequence[tuple[str, Sequence[FieldExtraction]]]


def pattern_missed(booking: Mapping, extractions: Extractions) -> bool:
    """Whether a patient_id extraction pattern found nothing in a booking value that
    has text (an empty value has no patient ID to find: that is no pattern's fault)."""
    for path, items in extractions:
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


def outside(window: Window | None, start: dt.datetime | None) -> bool:
    """Whether a booking starts outside the fetched window (None: no window to hold it
    to). A source that ignored the window query sends such bookings."""
    return start is not None and window is not None and not window.contains(start)


def skip_reasons(
    row: Mapping, start: dt.datetime | None, booking: Mapping, extractions: Extractions
) -> list[tuple[str, str]]:
    """Why `row` cannot be published, as (text, kind) pairs; [] when it can."""
    skip: list[tuple[str, str]] = []
    if start is None:
        skip.append((SKIP_NO_START, why.NO_START))
    if not row["patient_id"]:
        missed = pattern_missed(booking, extractions)
        skip.append((SKIP_NO_PATIENT_ID, why.PATTERN_NOT_MATCHED if missed else why.NO_PATIENT_ID))
    elif vr_problem("LO", row["patient_id"]):
        skip.append((SKIP_BAD_PATIENT_ID, why.INVALID_DICOM_VALUE))
    return skip


def not_offered(
    row: Mapping,
    start: dt.datetime | None,
    booking: Mapping,
    skip: list[tuple[str, str]],
    tz: ZoneInfo,
) -> why.Excluded | None:
    """The entry of a row in the frame that is not offered as work: cancelled, or not
    publishable (`skip`, from `skip_reasons`); None when it is offered."""
    booking_id = row["booking_id"]
    if row["step_status"] == DISCONTINUED:
        status = row["booking_status"] or "CANCELLED"
        return left_out_entry(booking_id, why.CANCELLED, booking, tz, status, start)
    if not skip:
        return None
    # The patient's reason first: a technologist looks for the participant.
    text, kind = skip[-1]
    details = ["patient_id"] if kind == why.INVALID_DICOM_VALUE else []
    details += [f"also {other}" for other, _ in skip if other != text]
    return left_out_entry(booking_id, kind, booking, tz, "; ".join(details), start)
