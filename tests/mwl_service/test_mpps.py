"""MPPS N-CREATE / N-SET against the real server and database (pynetdicom as the SCU).

Runs on SQLite, and on PostgreSQL too when WORKLIST_TEST_PG_URL is set (db_url).
"""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy import select
from sqlalchemy.orm import Session

from mwl_service import mpps
from mwl_service.schema import MppsInstance, WorklistHistory, WorklistItem
from tests.fixtures.dicom import associate, insert_item, mpps_attributes

pytestmark = pytest.mark.timeout(60)


def _row(engine, row_id: int) -> WorklistItem:
    with Session(engine) as s:
        return s.get(WorklistItem, row_id)


def _instance(engine, uid: str) -> MppsInstance | None:
    with Session(engine) as s:
        return s.get(MppsInstance, uid)


def _history(engine) -> list[WorklistHistory]:
    with Session(engine) as s:
        return list(s.scalars(select(WorklistHistory).order_by(WorklistHistory.id)))


def _create(server, attrs: Dataset, uid: str | None):
    with associate(server.host, server.port, server.ae_title, calling_aet="MRI3T") as assoc:
        assert assoc.is_established
        return assoc.send_n_create(attrs, ModalityPerformedProcedureStep, uid)


def _set(server, mods: Dataset, uid: str):
    with associate(server.host, server.port, server.ae_title, calling_aet="MRI3T") as assoc:
        assert assoc.is_established
        return assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)


def _attrs_for(row: dict, **kw) -> Dataset:
    return mpps_attributes(
        row["study_instance_uid"],
        row["accession_number"],
        row["scheduled_procedure_step_id"],
        patient_id=row["patient_id"],
        **kw,
    )


def _completion(status: str = "COMPLETED") -> Dataset:
    mods = Dataset()
    mods.SpecificCharacterSet = "ISO_IR 192"
    mods.PerformedProcedureStepStatus = status
    mods.PerformedProcedureStepEndDate = "20260102"
    mods.PerformedProcedureStepEndTime = "103000"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    series.ProtocolName = "t1_mprage"
    series.ReferencedImageSequence = []
    mods.PerformedSeriesSequence = [series]
    return mods


def test_create_then_complete_moves_the_worklist_row(db_url, engine, mwl_server):
    row = insert_item(engine, patient_name="Müller^Jürgen")
    server = mwl_server(db_url)
    uid = generate_uid()

    status, _ = _create(server, _attrs_for(row, patient_name="Müller^Jürgen"), uid)
    assert status.Status == 0x0000

    item = _row(engine, row["id"])
    assert (item.step_status, item.step_status_owner) == ("IN PROGRESS", "mpps")
    inst = _instance(engine, uid)
    assert inst.status == "IN PROGRESS"
    assert inst.worklist_item_id == row["id"]
    assert inst.calling_ae_title == "MRI3T"
    assert inst.study_instance_uid == row["study_instance_uid"]
    assert inst.accession_number == row["accession_number"]
    assert inst.scheduled_procedure_step_id == row["scheduled_procedure_step_id"]
    stored = Dataset.from_json(inst.dataset_json)
    assert stored.PatientName == "Müller^Jürgen"
    assert stored.PerformedProcedureStepID == "PPS1"

    status, _ = _set(server, _completion(), uid)
    assert status.Status == 0x0000
    item = _row(engine, row["id"])
    assert (item.step_status, item.step_status_owner) == ("COMPLETED", "mpps")
    stored = mpps.load_mpps(engine, uid)
    assert stored.PerformedProcedureStepStatus == "COMPLETED"
    assert stored.PerformedProcedureStepEndTime == "103000"
    assert stored.PerformedSeriesSequence[0].ProtocolName == "t1_mprage"
    assert stored.PatientName == "Müller^Jürgen"  # kept from N-CREATE

    events = [
        (h.event, h.old_step_status, h.new_step_status, h.worklist_item_id)
        for h in _history(engine)
    ]
    assert events == [
        ("mpps_create", "SCHEDULED", "IN PROGRESS", row["id"]),
        ("mpps_set", "IN PROGRESS", "COMPLETED", row["id"]),
    ]
    for h in _history(engine):
        details = json.loads(h.details)
        assert details["sop_instance_uid"] == uid
        assert details["calling_ae_title"] == "MRI3T"
        assert (h.source, h.booking_id) == (row["source"], row["booking_id"])


def test_intermediate_set_then_discontinue(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    uid = generate_uid()
    assert _create(server, _attrs_for(row), uid)[0].Status == 0

    progress = Dataset()
    progress.PerformedProcedureStepDescription = "brain, contrast"
    assert _set(server, progress, uid)[0].Status == 0  # no status change
    assert _row(engine, row["id"]).step_status == "IN PROGRESS"
    assert mpps.load_mpps(engine, uid).PerformedProcedureStepDescription == "brain, contrast"

    stop = _completion("DISCONTINUED")
    reason = Dataset()
    reason.CodeValue = "110514"
    reason.CodingSchemeDesignator = "DCM"
    reason.CodeMeaning = "Incorrect worklist entry selected"
    stop.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason]
    assert _set(server, stop, uid)[0].Status == 0

    item = _row(engine, row["id"])
    assert (item.step_status, item.step_status_owner) == ("DISCONTINUED", "mpps")
    assert item.discontinued_at is not None
    assert item.discontinued_reason == "MPPS DISCONTINUED: Incorrect worklist entry selected"
    assert [(h.event, h.new_step_status) for h in _history(engine)] == [
        ("mpps_create", "IN PROGRESS"),
        ("mpps_set", "IN PROGRESS"),
        ("mpps_set", "DISCONTINUED"),
    ]


def test_instance_survives_a_server_restart(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    uid = generate_uid()
    assert _create(server, _attrs_for(row), uid)[0].Status == 0

    server = server.restart()  # new AE, new engine, same database and port
    try:
        status, _ = _set(server, _completion(), uid)
        assert status.Status == 0x0000
        assert _row(engine, row["id"]).step_status == "COMPLETED"
        # and it is final after the restart too
        status, _ = _set(server, _completion(), uid)
        assert status.Status == 0x0110
    finally:
        server.stop()


def test_unscheduled_procedure_is_recorded(db_url, engine, mwl_server):
    scheduled = insert_item(engine)
    server = mwl_server(db_url)
    uid = generate_uid()
    study = generate_uid()  # generated by the modality: no worklist entry (F.7.2.1.2 note 3)
    attrs = mpps_attributes(study, "", "", patient_name="Walk^In", patient_id="X1")

    assert _create(server, attrs, uid)[0].Status == 0
    inst = _instance(engine, uid)
    assert inst.worklist_item_id is None
    assert inst.study_instance_uid == study
    assert mpps.load_mpps(engine, uid).PatientName == "Walk^In"
    assert _row(engine, scheduled["id"]).step_status == "SCHEDULED"  # untouched

    assert _set(server, _completion(), uid)[0].Status == 0
    assert _instance(engine, uid).status == "COMPLETED"
    history = _history(engine)
    assert [(h.event, h.worklist_item_id, h.new_step_status) for h in history] == [
        ("mpps_create", None, "IN PROGRESS"),
        ("mpps_set", None, "COMPLETED"),
    ]
    assert all(json.loads(h.details)["unscheduled"] is True for h in history)
    assert all(json.loads(h.details)["sop_instance_uid"] == uid for h in history)


def test_matches_by_accession_number_when_study_uid_is_foreign(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    attrs = mpps_attributes(
        generate_uid(), row["accession_number"], row["scheduled_procedure_step_id"]
    )
    assert _create(server, attrs, generate_uid())[0].Status == 0
    assert _row(engine, row["id"]).step_status == "IN PROGRESS"


@pytest.mark.parametrize(
    ("mutate", "status", "comment"),
    [
        (
            lambda ds: setattr(ds, "PerformedProcedureStepStatus", "COMPLETED"),
            0x0106,
            "IN PROGRESS",
        ),
        (lambda ds: setattr(ds, "PerformedProcedureStepStatus", "STARTED"), 0x0106, "IN PROGRESS"),
        (lambda ds: delattr(ds, "PerformedProcedureStepStatus"), 0x0120, "Status missing"),
        (lambda ds: setattr(ds, "PerformedProcedureStepStatus", ""), 0x0121, "Status empty"),
        (lambda ds: delattr(ds, "ScheduledStepAttributesSequence"), 0x0120, "Sequence missing"),
        (lambda ds: setattr(ds, "ScheduledStepAttributesSequence", []), 0x0121, "Sequence empty"),
    ],
    ids=["completed", "unknown-status", "no-status", "empty-status", "no-ssa", "empty-ssa"],
)
def test_create_refuses_bad_attributes(db_url, engine, mwl_server, mutate, status, comment):
    row = insert_item(engine)
    server = mwl_server(db_url)
    attrs = _attrs_for(row)
    mutate(attrs)
    uid = generate_uid()
    rsp, _ = _create(server, attrs, uid)
    assert rsp.Status == status
    assert comment in rsp.ErrorComment
    assert _instance(engine, uid) is None
    assert _row(engine, row["id"]).step_status == "SCHEDULED"
    assert _history(engine) == []


def test_create_without_sop_instance_uid_is_refused(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    rsp, _ = _create(server, _attrs_for(row), None)
    # PS3.4 F.7.2.1.2: the MPPS SCU shall specify the SOP Instance UID
    assert rsp.Status == 0x0120
    assert "Affected SOP Instance UID" in rsp.ErrorComment
    assert _row(engine, row["id"]).step_status == "SCHEDULED"
    with Session(engine) as s:
        assert s.scalars(select(MppsInstance)).all() == []


def test_duplicate_create_is_refused(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    uid = generate_uid()
    assert _create(server, _attrs_for(row), uid)[0].Status == 0
    rsp, _ = _create(server, _attrs_for(row, patient_name="Other^Name"), uid)
    assert rsp.Status == 0x0111
    assert mpps.load_mpps(engine, uid).PatientName == "Doe^Jane"  # first one kept
    assert len(_history(engine)) == 1


def test_set_errors(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    uid = generate_uid()

    rsp, _ = _set(server, _completion(), generate_uid())
    assert rsp.Status == 0x0112  # no such SOP instance

    assert _create(server, _attrs_for(row), uid)[0].Status == 0
    bad = Dataset()
    bad.PerformedProcedureStepStatus = "DONE"
    rsp, _ = _set(server, bad, uid)
    assert rsp.Status == 0x0106
    assert _instance(engine, uid).status == "IN PROGRESS"
    assert _row(engine, row["id"]).step_status == "IN PROGRESS"

    assert _set(server, _completion(), uid)[0].Status == 0
    rsp, _ = _set(server, _completion("DISCONTINUED"), uid)
    # PS3.4 F.7.2.2.3 / Table F.7.2-2
    assert rsp.Status == 0x0110
    assert rsp.ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assert rsp.ErrorID == 0xA710
    assert _instance(engine, uid).status == "COMPLETED"
    assert _row(engine, row["id"]).step_status == "COMPLETED"
    assert [h.event for h in _history(engine)] == ["mpps_create", "mpps_set"]


def test_latin1_create_is_stored_as_unicode(db_url, engine, mwl_server):
    row = insert_item(engine)
    server = mwl_server(db_url)
    uid = generate_uid()
    attrs = _attrs_for(row, patient_name="Müller^Jürgen")
    attrs.SpecificCharacterSet = "ISO_IR 100"  # encoded as Latin-1 on the wire
    assert _create(server, attrs, uid)[0].Status == 0
    stored = mpps.load_mpps(engine, uid)
    assert stored.PatientName == "Müller^Jürgen"
    assert stored.SpecificCharacterSet == "ISO_IR 192"


def test_invalid_sop_instance_uid_is_refused(engine):
    row = insert_item(engine)
    outcome = mpps.create_mpps(engine, "1.2.abc", _attrs_for(row))
    assert outcome.status == mpps.INVALID_SOP_INSTANCE == 0x0117
    outcome = mpps.create_mpps(engine, "1." + "2" * 70, _attrs_for(row))
    assert outcome.status == 0x0117
    assert _row(engine, row["id"]).step_status == "SCHEDULED"
