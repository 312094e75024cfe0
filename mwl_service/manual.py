"""Manual worklist items (walk-ins, phantom QA scans): create, change, discontinue.

They are ordinary worklist rows of the source ``manual``: identifiers derived as for
synced rows (`mwl_service.identifiers`), served by C-FIND, moved by MPPS, purged by
retention. A sync reconciles only its own source's rows, so it never touches them;
here, in turn, only manual items are changed: a row of a sync source is refused with
`ItemConflict` naming that source. Nothing is deleted: discontinuing keeps the row
and its history. Every change appends history as ``api:USER``; each write is one
transaction whose UPDATE re-checks the status it read, so a concurrent MPPS wins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from mwl_service.history import HistoryEntry, write_history
from mwl_service.manual_fields import reason_problem
from mwl_service.schema import (
    COMPLETED,
    DISCONTINUED,
    EVENT_CANCEL,
    EVENT_INSERT,
    EVENT_UPDATE,
    IN_PROGRESS,
    MANUAL_SOURCE,
    OWNER_API,
    OWNER_MPPS,
    SCHEDULED,
    WorklistItem,
    accession_number,
    step_id,
    study_instance_uid,
    utcnow,
)

ITEMS = WorklistItem.__table__
DEFAULT_MODALITY = "OT"  # "other", when neither the item nor its station says


class ItemNotFound(LookupError):
    """No worklist item has that accession number."""


class InvalidValue(ValueError):
    """A value the item cannot hold: `field` and what is wrong with it (never the value)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


class ItemConflict(RuntimeError):
    """The item may not be changed here; `source` names its owner when a sync owns it."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source


def content_hash(values: Mapping[str, Any]) -> str:
    """The row's content digest (only a sync compares hashes, of its own rows)."""
    text = json.dumps({k: values[k] for k in sorted(values)}, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def get_item(conn: Connection, accession: str) -> dict | None:
    row = conn.execute(select(ITEMS).where(ITEMS.c.accession_number == accession)).first()
    return None if row is None else dict(row._mapping)


def station_modality(conn: Connection, station: str) -> str:
    """The modality the station's newest row has (a walk-in on MRI3T is MR)."""
    stmt = (
        select(ITEMS.c.modality)
        .where(ITEMS.c.scheduled_station_ae_title == station, ITEMS.c.modality != "")
        .order_by(ITEMS.c.updated_at.desc())
        .limit(1)
    )
    return conn.scalar(stmt) or DEFAULT_MODALITY


def _new_row(values: Mapping[str, Any], booking_id: str, now: dt.datetime) -> dict:
    own_step = step_id(MANUAL_SOURCE, booking_id)
    row = {
        **values,
        "source": MANUAL_SOURCE,
        "booking_id": booking_id,
        "accession_number": accession_number(MANUAL_SOURCE, booking_id),
        "study_instance_uid": study_instance_uid(MANUAL_SOURCE, booking_id),
        "scheduled_procedure_step_id": own_step,
        "requested_procedure_id": values.get("requested_procedure_id") or own_step,
        "step_status": SCHEDULED,
        "step_status_owner": OWNER_API,
    }
    row["content_hash"] = content_hash(row)
    return row | {"created_at": now, "updated_at": now}


def _plain(values: Mapping[str, Any]) -> dict:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in values.items()}


def create_item(engine: Engine, values: Mapping[str, Any], user: str) -> dict:
    """Insert a SCHEDULED manual item from checked column values; returns its row.

    A station without a modality takes the station's usual one (else OT)."""
    now = utcnow()
    for _attempt in range(5):  # a random booking id colliding is rare; try another
        booking_id = "W" + secrets.token_hex(5).upper()
        try:
            with engine.begin() as conn:
                values = dict(values)
                if not values.get("modality"):
                    values["modality"] = station_modality(
                        conn, values.get("scheduled_station_ae_title", "")
                    )
                row = _new_row(values, booking_id, now)
                item_id = conn.execute(insert(ITEMS).values(row)).inserted_primary_key[0]
                entry = HistoryEntry(
                    EVENT_INSERT, item_id, MANUAL_SOURCE, booking_id, "", SCHEDULED,
                    {"values": _plain(values)}, changed_by=f"api:{user}",
                )
                write_history(conn, [entry], now)
                created = get_item(conn, row["accession_number"])
        except IntegrityError:
            continue
        assert created is not None
        return created
    raise RuntimeError("could not find a free booking id for a manual item")


def _changeable(item: dict | None, accession: str) -> dict:
    """The item, if it is a manual item the scanner has not taken; else raise."""
    if item is None:
        raise ItemNotFound(f"no worklist item with accession number {accession}")
    if item["source"] != MANUAL_SOURCE:
        raise ItemConflict(
            f"this item belongs to data source {item['source']!r}: change it there "
            "(the next sync would undo a change made here)",
            item["source"],
        )
    if item["step_status_owner"] == OWNER_MPPS or item["step_status"] in (IN_PROGRESS, COMPLETED):
        raise ItemConflict(
            f"the scanner has this item (step {item['step_status']}, set by MPPS): "
            "it is no longer changed here"
        )
    return item


def _write(
    conn: Connection, item: dict, values: dict, event: str, user: str, details: dict
) -> dict:
    """UPDATE the row only if its status is still what was read (MPPS may have
    moved it meanwhile), with its history entry; returns the new row."""
    now = utcnow()
    done = conn.execute(
        update(ITEMS)
        .where(ITEMS.c.id == item["id"], ITEMS.c.step_status == item["step_status"],
               ITEMS.c.step_status_owner == item["step_status_owner"])
        .values(**values, updated_at=now)
    )
    if not done.rowcount:
        raise ItemConflict("the item changed meanwhile (the scanner?); read it and try again")
    new = get_item(conn, item["accession_number"])
    assert new is not None
    entry = HistoryEntry(
        event, item["id"], MANUAL_SOURCE, item["booking_id"], item["step_status"],
        new["step_status"], details, changed_by=f"api:{user}",
    )
    write_history(conn, [entry], now)
    return new


def update_item(engine: Engine, accession: str, values: Mapping[str, Any], user: str) -> dict:
    """Change a SCHEDULED manual item's fields (checked column values)."""
    with engine.begin() as conn:
        item = _changeable(get_item(conn, accession), accession)
        if item["step_status"] == DISCONTINUED:
            raise ItemConflict("the item is discontinued; add a new one instead")
        changes = {
            k: {"old": _plain({k: item[k]})[k], "new": _plain({k: v})[k]}
            for k, v in values.items() if item.get(k) != v
        }
        if not changes:
            return item
        merged = {k: item[k] for k in item if k not in ("id", "content_hash")} | dict(values)
        new_values = dict(values, content_hash=content_hash(merged))
        return _write(conn, item, new_values, EVENT_UPDATE, user, {"changes": changes})


def discontinue_item(engine: Engine, accession: str, reason: str, user: str) -> dict:
    """DISCONTINUED with `reason`; the row and its history stay. Idempotent.
    InvalidValue for a reason that is no valid LT text."""
    if problem := reason_problem(reason):
        raise InvalidValue("reason", problem)
    with engine.begin() as conn:
        item = _changeable(get_item(conn, accession), accession)
        if item["step_status"] == DISCONTINUED:
            return item
        reason = (reason or f"cancelled over the API by {user}")[:255]
        values = {"step_status": DISCONTINUED, "discontinued_at": utcnow(),
                  "discontinued_reason": reason}
        return _write(conn, item, values, EVENT_CANCEL, user, {"reason": reason})
