"""The one writer of `worklist_history`, shared by the sync's publish, MPPS and mwl-api.

Every entry says who made the change (``changed_by``): ``sync:SOURCE`` for a
publish, ``mpps:CALLING_AE`` for the scanner, ``api:USER`` for mwl-api, derived by
:func:`changed_by` when the writer does not say.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from mwl_service.schema import (
    EVENT_MPPS_CREATE,
    EVENT_MPPS_SET,
    EVENT_PURGE,
    WorklistHistory,
    utcnow,
)

MPPS_EVENTS = frozenset({EVENT_MPPS_CREATE, EVENT_MPPS_SET})
# Values arrive JSON-ready; str() is the safety net for a stray date. One encoder for
# every entry (json.dumps would make one per call).
_DETAILS_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class HistoryEntry:
    """One audit row: what happened to which worklist item, and why (`details`)."""

    event: str
    worklist_item_id: int | None
    source: str
    booking_id: str
    old_step_status: str = ""
    new_step_status: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    changed_by: str = ""  # "" = derived from the event (see changed_by)


def changed_by(event: str, source: str, details: Mapping[str, Any]) -> str:
    """Who made a change the writer did not name: the scanner (its calling AE title)
    for MPPS events, retention for a purge, else the publish of the row's source.
    Revision 0003 fills the older entries by the same rule."""
    if event in MPPS_EVENTS:
        ae = details.get("calling_ae_title", "")
        return f"mpps:{ae}" if ae else "mpps"
    if event == EVENT_PURGE:
        return "retention"
    return f"sync:{source}"


def write_history(
    db: Connection | Session, entries: Iterable[HistoryEntry], now: dt.datetime | None = None
) -> int:
    """Append `entries` in one bulk INSERT inside the caller's transaction; returns the count."""
    changed_at = now or utcnow()
    rows = [
        {
            "worklist_item_id": e.worklist_item_id,
            "source": e.source,
            "booking_id": e.booking_id,
            "event": e.event,
            "old_step_status": e.old_step_status or "",
            "new_step_status": e.new_step_status or "",
            "details": _DETAILS_JSON.encode(dict(e.details)),
            "changed_at": changed_at,
            "changed_by": (e.changed_by or changed_by(e.event, e.source, e.details))[:96],
        }
        for e in entries
    ]
    if rows:
        db.execute(insert(WorklistHistory), rows)
    return len(rows)
