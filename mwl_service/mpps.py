"""Modality Performed Procedure Step (MPPS) SCP logic, per DICOM PS3.4 Annex F.7.

Plain functions over an SQLAlchemy engine and pydicom datasets; the pynetdicom
handlers in :mod:`mwl_service.handlers` only wire them to N-CREATE / N-SET. What an
instance does to its worklist rows: :mod:`mwl_service.mpps_worklist`.

* N-CREATE (F.7.2.1): the SCU names the SOP Instance UID, the Performed Procedure
  Step Status is "IN PROGRESS", and the Scheduled Step Attributes Sequence refers to
  the scheduled step (Study Instance UID / Accession Number / Scheduled Procedure
  Step ID). The matching worklist row moves to IN PROGRESS and becomes
  scanner-owned (``step_status_owner = "mpps"``). A step that matches no row is an
  unscheduled procedure: it is stored with ``worklist_item_id = NULL``, not lost.
* N-SET (F.7.2.2): only an IN PROGRESS instance may be updated; COMPLETED or
  DISCONTINUED are final and the worklist row follows.
* Instances live in ``mpps_instances`` (DICOM JSON) and survive restarts; every
  accepted change appends ``worklist_history`` rows (``mpps_create`` / ``mpps_set``).

Status codes (PS3.7 Annex C, PS3.4 F.7.2):

====== ============================================================================
0x0000 success
0x0106 invalid attribute value: N-CREATE status not "IN PROGRESS"; N-SET status
       not one of IN PROGRESS / COMPLETED / DISCONTINUED (F.7.2.1.3)
0x0110 processing failure: N-SET on a COMPLETED/DISCONTINUED instance, with Error
       Comment "Performed Procedure Step Object may no longer be updated" and
       Error ID 0xA710 (Table F.7.2-2); also unexpected storage errors
0x0111 duplicate SOP instance: N-CREATE for a UID that already exists
0x0112 no such SOP instance: N-SET for an unknown UID
0x0117 invalid SOP instance: the SOP Instance UID is not a valid UID
0x0120 missing attribute: N-CREATE without Affected SOP Instance UID (the MPPS SCU
       shall specify it, F.7.2.1.2), without Performed Procedure Step Status, or
       without Scheduled Step Attributes Sequence
0x0121 missing attribute value: those attributes present but empty
====== ============================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import RE_VALID_UID
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mwl_service import schema
from mwl_service.mpps_worklist import apply_to_worklist, instance_rows, linked_rows, stripped_text
from mwl_service.schema import MppsInstance, WorklistItem

LOG = logging.getLogger(__name__)

SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_SOP_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121

# PS3.4 Table F.7.2-2
FINAL_STATE_ERROR_COMMENT = "Performed Procedure Step Object may no longer be updated"
FINAL_STATE_ERROR_ID = 0xA710

PPS_STATUS_TAG = 0x00400252  # Performed Procedure Step Status
SSA_SEQUENCE_TAG = 0x00400270  # Scheduled Step Attributes Sequence

MPPS_STATUSES = (schema.IN_PROGRESS, schema.COMPLETED, schema.DISCONTINUED)
FINAL_STATUSES = (schema.COMPLETED, schema.DISCONTINUED)

# Attributes that identify the scheduled step; N-SET may not change them
# (PS3.4 Table F.7.2-1, "Not allowed" in N-SET). They are kept as created.
_NOT_SETTABLE = ("ScheduledStepAttributesSequence", "SOPClassUID", "SOPInstanceUID")


@dataclass
class MppsOutcome:
    """What to answer the SCU: a status plus optional comment/ID, and what happened."""

    status: int
    error_comment: str = ""
    error_id: int | None = None
    sop_instance_uid: str = ""
    mpps_status: str = ""
    worklist_item_ids: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS

    def status_dataset(self) -> Dataset:
        """The (0000,0900) Status with Error Comment / Error ID, for the response."""
        ds = Dataset()
        ds.Status = self.status
        if self.error_comment:
            # LO: 64 characters at most
            ds.ErrorComment = self.error_comment[:64]
        if self.error_id is not None:
            ds.ErrorID = self.error_id
        return ds


def _fail(status: int, comment: str, uid: str = "", error_id: int | None = None) -> MppsOutcome:
    return MppsOutcome(
        status=status, error_comment=comment, error_id=error_id, sop_instance_uid=uid
    )


def _status_value(ds: Dataset) -> tuple[bool, str]:
    """(present, value) of Performed Procedure Step Status, upper-cased and stripped."""
    if PPS_STATUS_TAG not in ds:
        return False, ""
    value = ds[PPS_STATUS_TAG].value
    if value is None:
        return True, ""
    return True, str(value).strip().upper()


def _unicode_copy(ds: Dataset) -> Dataset:
    """A copy of `ds` with every text value decoded (using the dataset's own Specific
    Character Set) and the character set declared as UTF-8, ready for DICOM JSON."""
    as_json = ds.to_json_dict()
    as_json.pop("00080005", None)
    copy = Dataset.from_json(as_json)
    copy.SpecificCharacterSet = "ISO_IR 192"
    return copy


def _from_json(text: str) -> Dataset:
    ds = Dataset.from_json(text)
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _discontinuation_reason(ds: Dataset) -> str:
    seq = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    for item in seq:
        meaning = stripped_text(item, "CodeMeaning")
        if meaning:
            return f"MPPS DISCONTINUED: {meaning}"
    return "MPPS DISCONTINUED"


@dataclass(frozen=True)
class _Request:
    """The opening every MPPS operation shares: the instance UID it names and the
    Performed Procedure Step Status it carries (``status_present``: the attribute
    is there, perhaps empty)."""

    uid: str
    status_present: bool
    status: str

    @classmethod
    def read(cls, sop_instance_uid: str | None, ds: Dataset) -> _Request:
        present, status = _status_value(ds)
        return cls(str(sop_instance_uid or "").strip(), present, status)


def _create_refusal(request: _Request, attributes: Dataset) -> MppsOutcome | None:
    """Why an N-CREATE is refused (F.7.2.1), or None."""
    uid = request.uid
    if not uid:
        return _fail(MISSING_ATTRIBUTE, "Affected SOP Instance UID required (PS3.4 F.7.2.1.2)")
    if len(uid) > 64 or not RE_VALID_UID.match(uid):
        return _fail(INVALID_SOP_INSTANCE, "SOP Instance UID is not a valid UID", uid)
    if not request.status_present:
        return _fail(MISSING_ATTRIBUTE, "Performed Procedure Step Status missing", uid)
    if not request.status:
        return _fail(MISSING_ATTRIBUTE_VALUE, "Performed Procedure Step Status empty", uid)
    if request.status != schema.IN_PROGRESS:
        return _fail(
            INVALID_ATTRIBUTE_VALUE,
            "N-CREATE requires Performed Procedure Step Status IN PROGRESS",
            uid,
        )
    if SSA_SEQUENCE_TAG not in attributes:
        return _fail(MISSING_ATTRIBUTE, "Scheduled Step Attributes Sequence missing", uid)
    if not attributes.ScheduledStepAttributesSequence:
        return _fail(MISSING_ATTRIBUTE_VALUE, "Scheduled Step Attributes Sequence empty", uid)
    return None


def _set_refusal(request: _Request) -> MppsOutcome | None:
    """Why an N-SET is refused before its instance is read (F.7.2.2), or None."""
    if not request.uid:
        return _fail(NO_SUCH_SOP_INSTANCE, "Requested SOP Instance UID missing")
    if request.status_present and request.status not in MPPS_STATUSES:
        return _fail(
            INVALID_ATTRIBUTE_VALUE,
            "Performed Procedure Step Status must be IN PROGRESS/COMPLETED/DISCONTINUED",
            request.uid,
        )
    return None


def _succeeded(request: _Request, status: str, row_ids: list[int]) -> MppsOutcome:
    return MppsOutcome(
        status=SUCCESS, sop_instance_uid=request.uid, mpps_status=status,
        worklist_item_ids=row_ids,
    )


def create_mpps(
    engine: Engine,
    sop_instance_uid: str | None,
    attributes: Dataset,
    *,
    calling_ae_title: str = "",
) -> MppsOutcome:
    """Handle an MPPS N-CREATE: validate, store the instance, move the worklist row."""
    request = _Request.read(sop_instance_uid, attributes)
    refusal = _create_refusal(request, attributes)
    if refusal is not None:
        return refusal
    uid, status = request.uid, request.status
    stored = _unicode_copy(attributes)
    stored.PerformedProcedureStepStatus = status
    stored.SOPClassUID = "1.2.840.10008.3.1.2.3.3"
    stored.SOPInstanceUID = uid
    try:
        with Session(engine) as session, session.begin():
            if session.get(MppsInstance, uid) is not None:
                return _fail(DUPLICATE_SOP_INSTANCE, "MPPS SOP Instance already exists", uid)
            rows = linked_rows(session, stored)
            session.add(_new_instance(request, stored, rows, calling_ae_title))
            details = {
                "sop_instance_uid": uid,
                "calling_ae_title": calling_ae_title,
                "mpps_status": status,
                "performed_procedure_step_id": stripped_text(stored, "PerformedProcedureStepID"),
            }
            row_ids = apply_to_worklist(
                session, schema.EVENT_MPPS_CREATE, rows, details, status, move=True
            )
    except IntegrityError:
        # A concurrent N-CREATE with the same UID won the race.
        return _fail(DUPLICATE_SOP_INSTANCE, "MPPS SOP Instance already exists", uid)
    return _succeeded(request, status, row_ids)


def _new_instance(
    request: _Request, stored: Dataset, rows: list[WorklistItem], calling_ae_title: str
) -> MppsInstance:
    first = stored.ScheduledStepAttributesSequence[0]
    now = schema.utcnow()
    return MppsInstance(
        sop_instance_uid=request.uid,
        status=request.status,
        worklist_item_id=rows[0].id if rows else None,
        calling_ae_title=calling_ae_title[:16],
        study_instance_uid=stripped_text(first, "StudyInstanceUID")[:64],
        accession_number=stripped_text(first, "AccessionNumber")[:16],
        scheduled_procedure_step_id=stripped_text(first, "ScheduledProcedureStepID")[:16],
        dataset_json=stored.to_json(),
        created_at=now,
        updated_at=now,
    )


def set_mpps(
    engine: Engine,
    sop_instance_uid: str | None,
    modifications: Dataset,
    *,
    calling_ae_title: str = "",
) -> MppsOutcome:
    """Handle an MPPS N-SET: update an IN PROGRESS instance, finish the worklist row."""
    request = _Request.read(sop_instance_uid, modifications)
    refusal = _set_refusal(request)
    if refusal is not None:
        return refusal
    uid = request.uid
    with Session(engine) as session, session.begin():
        instance = session.get(MppsInstance, uid, with_for_update=True)
        if instance is None:
            return _fail(NO_SUCH_SOP_INSTANCE, "No such MPPS SOP Instance", uid)
        if instance.status in FINAL_STATUSES:
            return _fail(
                PROCESSING_FAILURE, FINAL_STATE_ERROR_COMMENT, uid, error_id=FINAL_STATE_ERROR_ID
            )
        previous = instance.status
        status = request.status or previous
        stored = _modified(instance, modifications, status)
        rows = instance_rows(session, instance, stored)
        details = {
            "sop_instance_uid": uid,
            "calling_ae_title": calling_ae_title,
            "mpps_status": status,
            "previous_mpps_status": previous,
            "modified": sorted({e.keyword or str(e.tag) for e in modifications}),
        }
        reason = _discontinuation_reason(stored) if status == schema.DISCONTINUED else ""
        row_ids = apply_to_worklist(
            session, schema.EVENT_MPPS_SET, rows, details, status,
            move=status != previous, reason=reason, unscheduled_from=previous,
        )
    return _succeeded(request, status, row_ids)


def _modified(instance: MppsInstance, modifications: Dataset, status: str) -> Dataset:
    """The instance's attributes with an N-SET's modifications applied (those N-SET
    may not change are kept as created, and logged), now in ``status``; the
    instance row is updated to match."""
    stored = _from_json(instance.dataset_json)
    ignored = []
    for elem in _unicode_copy(modifications):
        if elem.tag == 0x00080005:
            continue
        if elem.keyword in _NOT_SETTABLE:
            ignored.append(elem.keyword)
            continue
        stored[elem.tag] = elem
    stored.PerformedProcedureStepStatus = status
    if ignored:
        LOG.warning(
            "MPPS N-SET %s: ignored attributes not settable by N-SET: %s",
            instance.sop_instance_uid, ignored,
        )
    instance.status = status
    instance.dataset_json = stored.to_json()
    instance.updated_at = schema.utcnow()
    return stored


def load_mpps(engine: Engine, sop_instance_uid: str) -> Dataset | None:
    """The stored attributes of an MPPS instance (for operators and tests)."""
    with Session(engine) as session:
        instance = session.get(MppsInstance, sop_instance_uid)
        if instance is None:
            return None
        return _from_json(instance.dataset_json)
