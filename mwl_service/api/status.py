"""``/api/v1/health``, ``/api/v1/mpps`` and ``/api/v1/excluded``: is the worklist
alive and fresh, what the scanners reported, and why a booking is not on it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mwl_service import excluded
from mwl_service.api.auth import Reader, engine_of, settings_of
from mwl_service.api.errors import invalid_fields
from mwl_service.api.items import iso
from mwl_service.api.worklist import parse_day
from mwl_service.migrate import schema_state
from mwl_service.schema import MppsInstance, SourceSyncState, WorklistItem, utcnow

router = APIRouter(prefix="/api/v1", tags=["status"])
SYNC_STATE = SourceSyncState.__table__
MPPS = MppsInstance.__table__
ITEMS = WorklistItem.__table__


def _sources(conn, now: dt.datetime, zone: str) -> list[dict]:
    rows = conn.execute(select(SYNC_STATE).order_by(SYNC_STATE.c.source))
    return [
        {"name": r.source, "last_published_at": iso(r.last_published_at, zone),
         "age_seconds": round((now - r.last_published_at).total_seconds(), 1)}
        for r in rows
    ]


def _check_sqlite_file(engine: Engine) -> None:
    """A SQLite file removed or moved away is gone, even while pooled connections
    still read the old one."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            raise OperationalError("health check", {}, FileNotFoundError("database file gone"))


@router.get("/health", summary="Database, schema and each source's last publish (no token)")
def health(request: Request) -> JSONResponse:
    engine, zone = engine_of(request), settings_of(request).timezone
    answer = {"status": "ok", "database": "ok", "schema": "current", "sources": []}
    try:
        _check_sqlite_file(engine)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        state = schema_state(engine)
        if not state.up_to_date:
            answer.update(status="degraded", schema="out of date", reason=(
                f"the worklist schema is at revision {state.current or 'none'}; this release "
                f"needs {state.head}: run calpendo-mwl db upgrade"))
            return JSONResponse(answer, status_code=503)
        with engine.connect() as conn:
            answer["sources"] = _sources(conn, utcnow(), zone)
    except SQLAlchemyError as exc:
        # The kind only: a driver's message may quote the URL.
        answer.update(status="degraded", database="unreachable", schema="unknown",
                      reason=f"the worklist database is unreachable ({type(exc).__name__})")
        return JSONResponse(answer, status_code=503)
    return JSONResponse(answer)


def _day_bounds(day: dt.date, request: Request) -> tuple[dt.datetime, dt.datetime]:
    tz = settings_of(request).tz
    start = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
    try:
        return start.astimezone(dt.UTC), (start + dt.timedelta(days=1)).astimezone(dt.UTC)
    except OverflowError:  # the first or last day of the calendar, in UTC
        raise invalid_fields({"date": "is out of range"}) from None


def _performed(dataset_json: str) -> dict:
    """The performed step's times and ids from the stored MPPS attributes (no names)."""
    try:
        data = json.loads(dataset_json or "{}")
    except ValueError:
        return {}
    keys = {"00400244": "start_date", "00400245": "start_time", "00400250": "end_date",
            "00400251": "end_time", "00400253": "performed_procedure_step_id",
            "00400241": "performed_station_ae_title"}
    out = {}
    for tag, name in keys.items():
        values = (data.get(tag) or {}).get("Value") or [""]
        out[name] = str(values[0])
    return out


@router.get("/mpps", summary="MPPS instances received on a day")
def list_mpps(
    request: Request, _user: Reader,
    date: Annotated[str | None, Query(description="YYYY-MM-DD; default today (site)")] = None,
) -> dict:
    start, end = _day_bounds(parse_day(date, request), request)
    zone = settings_of(request).timezone
    stmt = (
        select(MPPS, ITEMS.c.accession_number.label("item_accession"), ITEMS.c.source,
               ITEMS.c.booking_id, ITEMS.c.step_status)
        .outerjoin(ITEMS, ITEMS.c.id == MPPS.c.worklist_item_id)
        .where(MPPS.c.created_at >= start, MPPS.c.created_at < end)
        .order_by(MPPS.c.created_at)
    )
    with engine_of(request).connect() as conn:
        rows = conn.execute(stmt).all()
    items = [{
        "sop_instance_uid": r.sop_instance_uid, "status": r.status,
        "calling_ae_title": r.calling_ae_title, "created_at": iso(r.created_at, zone),
        "updated_at": iso(r.updated_at, zone), "accession_number": r.accession_number,
        "study_instance_uid": r.study_instance_uid, "performed": _performed(r.dataset_json),
        "item": None if r.item_accession is None else {
            "accession_number": r.item_accession, "source": r.source,
            "booking_id": r.booking_id, "step_status": r.step_status},
    } for r in rows]
    return {"items": items, "total": len(items)}


def excluded_json(row: dict) -> dict:
    return {
        "source": row["source"], "booking_id": row["booking_id"],
        "start": iso(row["scheduled_start_utc"], row["site_timezone"]),
        "resource": row["resource_name"], "kind": row["kind"], "reason": row["reason"],
        "recorded_at": iso(row["recorded_at"], row["site_timezone"]),
    }


@router.get("/excluded", summary="Bookings the latest sync fetched but left off, and why")
def list_excluded(
    request: Request, _user: Reader,
    date: Annotated[str | None, Query(description="YYYY-MM-DD; default today (site)")] = None,
    source: Annotated[str | None, Query(description="data source name")] = None,
) -> dict:
    day = parse_day(date, request).strftime("%Y%m%d")
    with engine_of(request).connect() as conn:
        rows = excluded.list_excluded(conn, day, source)
    return {"items": [excluded_json(r) for r in rows], "total": len(rows)}
