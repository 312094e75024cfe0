"""The one writer of `worklist_history`, shared by the sync's publish and by MPPS."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from mwl_service.schema import WorklistHistory, utcnow


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
            # Values arrive JSON-ready; str() is the safety net for a stray date.
            "details": json.dumps(dict(e.details), ensure_ascii=False, sort_keys=True, default=str),
            "changed_at": changed_at,
        }
        for e in entries
    ]
    if rows:
        db.execute(insert(WorklistHistory), rows)
    return len(rows)
