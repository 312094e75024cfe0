"""Worklist items as JSON: the schema's columns by name, and the DICOM JSON model.

An item carries the worklist columns by their schema names; the start is one
``scheduled_start`` in ISO 8601 with the site's offset (instead of the UTC instant
and the DA/TM wall clock kept for C-FIND); internal columns (row id, content hash,
who owns the step status) stay out. `dicom_json` gives what a C-FIND asking for every
return key would answer, as PS3.18 F.2's DICOM JSON model (pydicom's to_json_dict).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from mwl_service.encode import row_to_dataset
from mwl_service.query import ACTIVE_STATUSES, parse_query
from mwl_service.query.sql import station_condition
from mwl_service.schema import STEP_STATUSES, WorklistItem

ITEMS = WorklistItem.__table__
INTERNAL = frozenset({"id", "content_hash", "step_status_owner", "scheduled_start_utc",
                      "scheduled_start_date", "scheduled_start_time"})
NUMBERS = frozenset({"patient_weight", "patient_size"})
DICOM_JSON = "application/dicom+json"


def iso(value: dt.datetime | None, zone: str = "UTC") -> str | None:
    if value is None:
        return None
    try:
        tz = ZoneInfo(zone or "UTC")
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    return value.astimezone(tz).isoformat()


def item_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One item: every column but the internal ones, times with the site's offset."""
    zone = row.get("site_timezone") or "UTC"
    out: dict[str, Any] = {}
    for column in ITEMS.columns:
        name = column.name
        if name in INTERNAL:
            continue
        value = row.get(name)
        if isinstance(value, dt.datetime):
            value = iso(value, zone)
        elif name in NUMBERS:
            value = float(value) if value not in (None, "") else None
        elif name == "pregnancy_status":
            value = value if value not in (None, "") else None
        out[name] = value
    out["scheduled_start"] = iso(row.get("scheduled_start_utc"), zone)
    return out


def _everything() -> Dataset:
    """An MWL identifier asking for every return key: universal top-level keys and a
    zero-length step sequence (the whole step, PS3.4 C.2.2.2.6)."""
    ds = Dataset()
    for keyword in ("AccessionNumber", "ReferringPhysicianName", "StudyDescription",
                    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "OtherPatientIDs", "PatientSize", "PatientWeight",
                    "MedicalAlerts", "Allergies", "PregnancyStatus", "PatientComments",
                    "StudyInstanceUID", "RequestingPhysician", "AdmissionID",
                    "RequestedProcedureDescription", "RequestedProcedureID",
                    "RequestedProcedurePriority", "TimezoneOffsetFromUTC"):
        setattr(ds, keyword, None)
    ds.ReferencedStudySequence = []
    ds.RequestedProcedureCodeSequence = []
    ds.ScheduledProcedureStepSequence = []
    return ds


_QUERY = parse_query(_everything())


def dicom_json(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The DICOM JSON model of each row: the C-FIND answer to every return key."""
    out = []
    for row in rows:
        values = tuple(row[c] for c in _QUERY.columns)
        out.append(row_to_dataset(values, _QUERY).to_json_dict())
    return out


def worklist_select(
    date: str, station: str | None, status: str | None, source: str | None,
    patient_id: str | None,
) -> Select:
    """Items of one site-local day (``YYYYMMDD``), filtered, ordered by start."""
    conditions = [ITEMS.c.scheduled_start_date == date]
    if station:
        conditions.append(station_condition(station))
    if status:
        conditions.append(ITEMS.c.step_status == status)
    else:
        conditions.append(ITEMS.c.step_status.in_(ACTIVE_STATUSES))  # as C-FIND offers
    if source:
        conditions.append(ITEMS.c.source == source)
    if patient_id:
        conditions.append(ITEMS.c.patient_id == patient_id)
    return select(ITEMS).where(*conditions)


def page_of(conn: Connection, stmt: Select, limit: int, offset: int) -> tuple[list[dict], int]:
    total = conn.scalar(select(func.count()).select_from(stmt.subquery()))
    ordered = stmt.order_by(ITEMS.c.scheduled_start_utc, ITEMS.c.id).limit(limit).offset(offset)
    return [dict(r._mapping) for r in conn.execute(ordered)], int(total or 0)


def check_status(status: str | None) -> str | None:
    if status is None or status == "":
        return None
    wanted = status.strip().upper()
    return wanted if wanted in STEP_STATUSES else ""
