"""What the page shows for one day: items per station with their MPPS progress, and
the bookings left off the worklist (read-only queries, no HTML here)."""

from __future__ import annotations

import datetime as dt
from itertools import groupby

from fastapi import Request
from sqlalchemy import or_, select

from mwl_service import excluded
from mwl_service.api.auth import engine_of, settings_of
from mwl_service.api.status import excluded_json
from mwl_service.schema import (
    DISCONTINUED,
    MANUAL_SOURCE,
    SCHEDULED,
    MppsInstance,
    WorklistItem,
)
from mwl_service.users import User

ITEMS = WorklistItem.__table__
MPPS = MppsInstance.__table__


def display_name(pn: str) -> str:
    """``Doe^Jane`` as "Doe, Jane" for people (the stored value stays DICOM PN)."""
    parts = [p for p in pn.split("=")[0].split("^") if p]
    return f"{parts[0]}, {' '.join(parts[1:])}" if len(parts) > 1 else (parts[0] if parts else "")


def _search(stmt, q: str):
    if not q:
        return stmt
    like = f"%{q.replace('^', ' ')}%"
    return stmt.where(or_(
        ITEMS.c.patient_id.ilike(f"%{q}%"), ITEMS.c.accession_number == q,
        ITEMS.c.patient_name.ilike(like.replace(" ", "%")),
    ))


def _mpps_progress(conn, ids: list[int]) -> dict[int, str]:
    """Per item: its newest MPPS as "IN PROGRESS on MRI3T" (nothing when none)."""
    if not ids:
        return {}
    stmt = (select(MPPS.c.worklist_item_id, MPPS.c.status, MPPS.c.calling_ae_title)
            .where(MPPS.c.worklist_item_id.in_(ids)).order_by(MPPS.c.updated_at))
    return {r.worklist_item_id: f"MPPS {r.status} from {r.calling_ae_title or 'a scanner'}"
            for r in conn.execute(stmt)}


def _row(r, tz, progress: dict[int, str], user: User) -> dict:
    start = r.scheduled_start_utc.astimezone(tz)
    return {
        "accession_number": r.accession_number, "time": start.strftime("%H:%M"),
        "patient_id": r.patient_id, "name": display_name(r.patient_name),
        "study": r.study_description or r.requested_procedure_description,
        "status": r.step_status, "mpps": progress.get(r.id, ""), "source": r.source,
        "station": r.scheduled_station_ae_title or f"({r.modality})",
        "reason": r.discontinued_reason if r.step_status == DISCONTINUED else "",
        "cancellable": user.may("write") and r.source == MANUAL_SOURCE
        and r.step_status == SCHEDULED,
    }


def page_context(request: Request, user: User, day: dt.date, q: str) -> dict:
    settings = settings_of(request)
    date = day.strftime("%Y%m%d")
    stmt = _search(select(ITEMS).where(ITEMS.c.scheduled_start_date == date), q)
    stmt = stmt.order_by(ITEMS.c.scheduled_station_ae_title, ITEMS.c.scheduled_start_utc,
                         ITEMS.c.id)
    with engine_of(request).connect() as conn:
        rows = conn.execute(stmt).all()
        progress = _mpps_progress(conn, [r.id for r in rows])
        left_out = [excluded_json(e) for e in excluded.list_excluded(conn, date)]
        known = conn.execute(select(ITEMS.c.scheduled_station_ae_title).distinct()
                             .where(ITEMS.c.scheduled_station_ae_title != "")).scalars().all()
    items = [_row(r, settings.tz, progress, user) for r in rows]
    now = dt.datetime.now(settings.tz)
    return {
        "user": user, "day": day.isoformat(), "q": q, "timezone": settings.timezone,
        "stations": [(k, list(g)) for k, g in groupby(items, key=lambda i: i["station"])],
        "count": len(items), "excluded": left_out, "known_stations": sorted(known),
        "default_start": f"{day.isoformat()}T{now:%H:%M}",
        "can_write": user.may("write"),
    }
