"""What an MPPS instance does to the worklist: the rows it refers to, their move to
its status (scanner-owned from then on) and the history of each change.

The DIMSE side (validating N-CREATE / N-SET, storing the instance, the statuses
answered) is :mod:`mwl_service.mpps`.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from mwl_service import schema
from mwl_service.history import HistoryEntry, write_history
from mwl_service.schema import MppsInstance, WorklistItem


def stripped_text(ds: Dataset, keyword: str) -> str:
    """The attribute's value as stripped text; "" when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def _row_for_item(session: Session, item: Dataset) -> WorklistItem | None:
    """The worklist row one Scheduled Step Attributes item refers to, if any.

    Study Instance UID and Accession Number are unique per row (one step per
    booking), so either identifies it; a Scheduled Procedure Step ID alone is used
    only when it names exactly one row.
    """
    study_uid = stripped_text(item, "StudyInstanceUID")
    accession = stripped_text(item, "AccessionNumber")
    step = stripped_text(item, "ScheduledProcedureStepID")
    if study_uid:
        row = session.scalars(
            select(WorklistItem).where(WorklistItem.study_instance_uid == study_uid)
        ).first()
        if row is not None:
            return row
    if accession:
        row = session.scalars(
            select(WorklistItem).where(WorklistItem.accession_number == accession)
        ).first()
        if row is not None and (not step or row.scheduled_procedure_step_id == step):
            return row
    if step and not study_uid and not accession:
        rows = session.scalars(
            select(WorklistItem).where(WorklistItem.scheduled_procedure_step_id == step).limit(2)
        ).all()
        if len(rows) == 1:
            return rows[0]
    return None


def linked_rows(session: Session, ds: Dataset) -> list[WorklistItem]:
    """Worklist rows referenced by the instance's Scheduled Step Attributes Sequence."""
    rows: list[WorklistItem] = []
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        row = _row_for_item(session, item)
        if row is not None and all(r.id != row.id for r in rows):
            rows.append(row)
    return rows


def _history(
    session: Session,
    event: str,
    row: WorklistItem | None,
    old: str,
    new: str,
    details: dict,
) -> None:
    entry = HistoryEntry(
        event=event,
        worklist_item_id=row.id if row is not None else None,
        source=row.source if row is not None else "",
        booking_id=row.booking_id if row is not None else "",
        old_step_status=old,
        new_step_status=new,
        details=details,
    )
    write_history(session, [entry])


def _move_row(row: WorklistItem, status: str, reason: str = "") -> str:
    """Put a worklist row into `status`, scanner-owned; returns the old status."""
    old = row.step_status
    now = schema.utcnow()
    row.step_status = status
    row.step_status_owner = schema.OWNER_MPPS
    row.updated_at = now
    if status == schema.DISCONTINUED:
        row.discontinued_at = now
        row.discontinued_reason = (reason or "MPPS DISCONTINUED")[:255]
    return old


def apply_to_worklist(
    session: Session,
    event: str,
    rows: list[WorklistItem],
    details: dict,
    status: str,
    *,
    move: bool,
    reason: str = "",
    unscheduled_from: str = "",
) -> list[int]:
    """Move the instance's worklist rows to ``status`` (when ``move``) and append the
    history of each, or of the unscheduled procedure when it has none; the row ids."""
    if not rows:
        _history(session, event, None, unscheduled_from, status,
                 {**details, "unscheduled": True})
    for row in rows:
        old = _move_row(row, status, reason) if move else row.step_status
        _history(session, event, row, old, row.step_status, details)
    return [row.id for row in rows]


def instance_rows(
    session: Session, instance: MppsInstance, stored: Dataset
) -> list[WorklistItem]:
    """The worklist rows an instance refers to: those of its Scheduled Step
    Attributes, and first the row it was linked to when created."""
    rows = linked_rows(session, stored)
    if instance.worklist_item_id is not None and all(
        r.id != instance.worklist_item_id for r in rows
    ):
        linked = session.get(WorklistItem, instance.worklist_item_id)
        if linked is not None:
            rows.insert(0, linked)
    return rows
