"""``/api/v1/worklist``: read the worklist (JSON or DICOM JSON) and an item's history."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from mwl_service.api.auth import Reader, engine_of, settings_of
from mwl_service.api.errors import invalid_fields
from mwl_service.api.items import (
    DICOM_JSON,
    check_status,
    dicom_json,
    item_json,
    iso,
    page_of,
    worklist_select,
)
from mwl_service.manual import ItemNotFound, get_item
from mwl_service.schema import WorklistHistory

router = APIRouter(prefix="/api/v1", tags=["worklist"])
HISTORY = WorklistHistory.__table__
MAX_LIMIT = 10000
MAX_OFFSET = 2**31 - 1  # within every database's LIMIT/OFFSET integer


def parse_day(text: str | None, request: Request, field: str = "date") -> dt.date:
    """YYYY-MM-DD (or YYYYMMDD); today in the site's zone when absent."""
    if not text:
        return settings_of(request).today()
    for form in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text.strip(), form).date()
        except ValueError:
            continue
    raise invalid_fields({field: "must be a date YYYY-MM-DD"})


def wants_dicom(request: Request) -> bool:
    return DICOM_JSON in request.headers.get("accept", "")


def _dicom_answer(body: list | dict, total: int | None = None) -> JSONResponse:
    headers = {"X-Total-Count": str(total)} if total is not None else None
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


@router.get("/worklist", summary="Worklist items of a day, ordered by start")
def list_worklist(
    request: Request,
    _user: Reader,
    date: Annotated[str | None, Query(description="YYYY-MM-DD; default today (site)")] = None,
    station: Annotated[str | None, Query(description="Scheduled Station AE Title")] = None,
    status: Annotated[str | None, Query(
        description="step status; default SCHEDULED and IN PROGRESS, as C-FIND offers")] = None,
    source: Annotated[str | None, Query(description="data source name, or manual")] = None,
    patient_id: Annotated[str | None, Query(description="exact Patient ID")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    day = parse_day(date, request)
    wanted = check_status(status)
    if wanted == "":
        raise invalid_fields(
            {"status": "must be SCHEDULED, IN PROGRESS, COMPLETED or DISCONTINUED"}
        )
    stmt = worklist_select(day.strftime("%Y%m%d"), station, wanted, source, patient_id)
    with engine_of(request).connect() as conn:
        rows, total = page_of(conn, stmt, limit, offset)
    if wants_dicom(request):
        return _dicom_answer(dicom_json(rows), total)
    return {"items": [item_json(r) for r in rows], "total": total}


def _item(request: Request, accession: str) -> dict:
    with engine_of(request).connect() as conn:
        row = get_item(conn, accession)
    if row is None:
        raise ItemNotFound(f"no worklist item with accession number {accession}")
    return row


@router.get("/worklist/{accession_number}", summary="One worklist item")
def get_worklist_item(accession_number: str, request: Request, _user: Reader):
    row = _item(request, accession_number)
    if wants_dicom(request):
        return _dicom_answer(dicom_json([row])[0])
    return item_json(row)


def _entry(row, zone: str) -> dict:
    try:
        details = json.loads(row.details or "{}")
    except ValueError:
        details = {}
    reason = details.get("reason", "") if isinstance(details, dict) else ""
    return {
        "event": row.event,
        "changed_at": iso(row.changed_at, zone),
        "changed_by": row.changed_by,
        "old_step_status": row.old_step_status,
        "new_step_status": row.new_step_status,
        "reason": reason,
        "changed_fields": sorted((details.get("changes") or {}) if isinstance(details, dict)
                                 else ()),
    }


@router.get("/worklist/{accession_number}/history", summary="An item's audit trail")
def item_history(accession_number: str, request: Request, _user: Reader) -> dict:
    row = _item(request, accession_number)
    stmt = select(HISTORY).where(HISTORY.c.worklist_item_id == row["id"]).order_by(HISTORY.c.id)
    with engine_of(request).connect() as conn:
        entries = [_entry(r, row["site_timezone"]) for r in conn.execute(stmt)]
    return {"accession_number": accession_number, "items": entries, "total": len(entries)}
