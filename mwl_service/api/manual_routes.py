"""``POST/PATCH/DELETE /api/v1/worklist``: manual items (role ``write``).

The body is a JSON object of worklist fields by their schema names (see
`mwl_service.manual_fields`); every bad field is named in one 422 and nothing is
written. Items of a sync source answer 409 naming the source.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, create_model

from mwl_service import manual
from mwl_service.api.auth import Writer, engine_of, settings_of
from mwl_service.api.errors import invalid_fields
from mwl_service.api.items import item_json
from mwl_service.manual_fields import (
    FIELDS,
    check_fields,
    check_new_item,
    station_or_modality,
)

router = APIRouter(prefix="/api/v1", tags=["manual items"])

_DOC = {
    "patient_id": "Patient ID (LO, required)",
    "patient_name": 'DICOM PN "Family^Given" or "Family, Given" (required)',
    "scheduled_start": "ISO 8601; without an offset it is site-local wall time (required)",
    "scheduled_station_ae_title": "AE title, or a list of them (this or modality required)",
    "modality": "e.g. MR (this or scheduled_station_ae_title required)",
    "duration_minutes": "whole minutes",
}
# For the OpenAPI page only: the body is checked by check_fields, every field at once.
ManualItemIn = create_model(
    "ManualItemIn",
    __config__=ConfigDict(extra="forbid"),
    **{f: (Any, None) for f in FIELDS},
)
for _name, _text in _DOC.items():
    ManualItemIn.model_fields[_name].description = _text
ManualItemIn.model_rebuild(force=True)
_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ManualItemIn.model_json_schema(),
    "example": {"patient_id": "WALKIN01", "patient_name": "Doe, Jane",
                "scheduled_start": "2026-03-10T14:30", "scheduled_station_ae_title": "MRI3T",
                "study_description": "Phantom QA"},
}}}}
JsonObject = Annotated[dict[str, Any], Body()]


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = ""


@router.post("/worklist", status_code=201, openapi_extra=_BODY,
             summary="Add a manual item (walk-in, QA scan)")
def add_item(body: JsonObject, request: Request, user: Writer) -> JSONResponse:
    values, problems = check_new_item(body, settings_of(request).tz)
    if problems:
        raise invalid_fields(problems)
    values.setdefault("site_timezone", settings_of(request).timezone)
    row = manual.create_item(engine_of(request), values, user.username)
    location = f"/api/v1/worklist/{row['accession_number']}"
    return JSONResponse(item_json(row), status_code=201, headers={"Location": location})


@router.patch("/worklist/{accession_number}", openapi_extra=_BODY,
              summary="Change a manual item")
def change_item(accession_number: str, body: JsonObject, request: Request, user: Writer) -> dict:
    values, problems = check_fields(body, settings_of(request).tz, partial=True)
    if problems:
        raise invalid_fields(problems)
    engine = engine_of(request)
    with engine.connect() as conn:
        current = manual.get_item(conn, accession_number)
    if current is not None and current["source"] == manual.MANUAL_SOURCE:
        missing = station_or_modality({**current, **values})
        if missing:
            raise invalid_fields(missing)
    return item_json(manual.update_item(engine, accession_number, values, user.username))


@router.delete("/worklist/{accession_number}",
               summary="Discontinue a manual item (the row and its history stay)")
def cancel_item(
    accession_number: str,
    request: Request,
    user: Writer,
    reason: Annotated[str | None, Query(max_length=200, description="why")] = None,
    body: Annotated[Reason | None, Body()] = None,
) -> dict:
    why = (body.reason if body is not None and body.reason else reason) or ""
    row = manual.discontinue_item(engine_of(request), accession_number, why, user.username)
    return item_json(row)
