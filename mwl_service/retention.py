"""Retention: which old steps are still offered as work, and purging rows past it.

Two ages, both measured from a step's scheduled start:

* ``DEFAULT_OFFER_PAST_DAYS``: a step that started longer ago is not offered to a
  query without a Scheduled Procedure Step Start Date (a session nobody scanned, with
  no MPPS to close it, would otherwise stay on the console's list for ever). A query
  that names a date range still finds it. The matcher's ``offer_past_days``.
* ``DEFAULT_PURGE_DAYS``: :func:`purge` deletes rows older than that, with their MPPS
  instances. Their history stays: each purged row leaves one ``purge`` event holding
  its identifiers and last status, and its earlier events are kept (unlinked from
  the deleted row), so the audit trail outlives the worklist.

The defaults suit a research centre: sessions are scanned the day they are booked,
or rebooked; a year of worklist answers what a site asks about its scans.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from mwl_service.schema import (
    EVENT_PURGE,
    MppsInstance,
    WorklistHistory,
    WorklistItem,
    utcnow,
)

DEFAULT_OFFER_PAST_DAYS = 7.0
DEFAULT_PURGE_DAYS = 365

# Rows deleted per statement: bounded parameter lists on every back end.
_BATCH = 500


@dataclass(frozen=True)
class PurgeResult:
    """What :func:`purge` did: counts only (no participant data), for logs and metadata."""

    cutoff: dt.datetime  # rows scheduled to start before this instant were purged
    worklist_items: int
    mpps_instances: int
    history_kept: int  # earlier history events of the purged rows, kept unlinked
    purge_events: int  # one "purge" history event per purged row


def purge(engine: Engine, older_than: dt.timedelta, now: dt.datetime | None = None) -> PurgeResult:
    """Delete worklist rows scheduled to start more than ``older_than`` before ``now``
    (default: the current time), with their MPPS instances, in one transaction.

    History is kept: the rows' events stay (``worklist_item_id`` set to NULL; source
    and booking id still name them) and each purged row gets a ``purge`` event with
    its accession number, Study Instance UID, step status and scheduled start.
    """
    if older_than < dt.timedelta(0):
        raise ValueError("older_than must not be negative")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    cutoff = now - older_than
    items = WorklistItem.__table__
    history = WorklistHistory.__table__
    instances = MppsInstance.__table__
    totals = {"items": 0, "mpps": 0, "history": 0}
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                items.c.id, items.c.source, items.c.booking_id, items.c.accession_number,
                items.c.study_instance_uid, items.c.step_status, items.c.scheduled_start_utc,
            ).where(items.c.scheduled_start_utc < cutoff).order_by(items.c.id)
        ).all()
        for start in range(0, len(rows), _BATCH):
            batch = rows[start:start + _BATCH]
            ids = [r.id for r in batch]
            mpps_by_item: dict[int, list[str]] = {}
            for item_id, uid in conn.execute(
                select(instances.c.worklist_item_id, instances.c.sop_instance_uid)
                .where(instances.c.worklist_item_id.in_(ids))
            ):
                mpps_by_item.setdefault(item_id, []).append(uid)
            totals["history"] += conn.execute(
                update(history).where(history.c.worklist_item_id.in_(ids))
                .values(worklist_item_id=None)
            ).rowcount
            totals["mpps"] += conn.execute(
                delete(instances).where(instances.c.worklist_item_id.in_(ids))
            ).rowcount
            conn.execute(history.insert(), [_purge_event(r, mpps_by_item.get(r.id, []), now)
                                            for r in batch])
            totals["items"] += conn.execute(delete(items).where(items.c.id.in_(ids))).rowcount
    return PurgeResult(
        cutoff=cutoff,
        worklist_items=totals["items"],
        mpps_instances=totals["mpps"],
        history_kept=totals["history"],
        purge_events=len(rows),
    )


def _purge_event(row, mpps_uids: list[str], now: dt.datetime) -> dict:
    details = {
        "reason": "retention",
        "accession_number": row.accession_number,
        "study_instance_uid": row.study_instance_uid,
        "scheduled_start_utc": row.scheduled_start_utc.isoformat(),
        "mpps_instances": sorted(mpps_uids),
    }
    return {
        "worklist_item_id": None,
        "source": row.source,
        "booking_id": row.booking_id,
        "event": EVENT_PURGE,
        "changed_by": "retention",
        "old_step_status": row.step_status,
        "new_step_status": "",
        "details": json.dumps(details, sort_keys=True),
        "changed_at": now,
    }
