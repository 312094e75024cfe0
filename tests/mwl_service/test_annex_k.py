"""The MR worklist fields and the Annex K corner cases, matcher level (real DB).

New fields at the right tag and place, code sequences (never copied from the
query), an empty SPS item, several station AE titles, the calling station,
steps too old to offer, answers in the query's character set. Runs on SQLite and,
with WORKLIST_TEST_PG_URL, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pynetdicom.dsutils import decode, encode
from sqlalchemy import insert, select

from mwl_service import schema
from mwl_service.engine import make_engine
from mwl_service.matching import build_select, find_worklist, parse_query, row_to_bytes, row_to_dataset
from mwl_service.query.attributes import SPS_ITEM
from mwl_service.schema import WorklistItem
from tests.fixtures.dicom import SERVER_AET, insert_item, run_findscu
from tests.mwl_service.test_matching import insert_rows, make_row, on_the_wire, query

MR_FIELDS = dict(
    patient_weight="72.5", patient_size="1.8", medical_alerts="Pacemaker MR conditional",
    allergies="Gadolinium", pregnancy_status=4, patient_comments="Project:BRISKP Subject:S01",
    scheduled_procedure_step_comments="Bring glasses", requesting_physician="House^Gregory",
    requested_procedure_priority="HIGH", requested_contrast_agent="Gadovist",
    pre_medication="None",
    scheduled_protocol_code_value="BRAIN01", scheduled_protocol_coding_scheme_designator="99CPD",
    scheduled_protocol_code_meaning="Brain protocol",
    requested_procedure_code_value="RP7", requested_procedure_coding_scheme_designator="99CPD",
    requested_procedure_code_meaning="MRI head",
)
ROWS = [
    make_row("201", "20260310", "080000", patient_name="Müller^Jürgen", **MR_FIELDS),
    make_row("202", "20260310", "090000", patient_name="山田^太郎",
             scheduled_station_ae_title="MRA\\MRB"),
    make_row("203", "20260310", "100000", patient_name="Plain^Paula",
             scheduled_station_ae_title="MRC"),
]
BY_ACC = {r["accession_number"]: r["booking_id"] for r in ROWS}
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def mr_worklist(engine):
    return insert_rows(engine, ROWS)


def bookings(engine, ds: Dataset, **kw) -> list[str]:
    ds.AccessionNumber = ""
    return [BY_ACC[str(a.AccessionNumber)] for a in find_worklist(engine, ds, **kw)]


def test_new_fields_are_served_at_their_tags_and_places(mr_worklist):
    ds = query(
        {"AccessionNumber": ROWS[0]["accession_number"], "PatientWeight": None,
         "PatientSize": None, "MedicalAlerts": "", "Allergies": "", "PregnancyStatus": None,
         "PatientComments": "", "RequestingPhysician": "", "RequestedProcedurePriority": "",
         "RequestedProcedureCodeSequence": []},
        {"CommentsOnTheScheduledProcedureStep": "", "ScheduledProtocolCodeSequence": [],
         "RequestedContrastAgent": "", "PreMedication": ""},
    )
    for wire in (ds, on_the_wire(ds, True), on_the_wire(ds, False)):
        (a,) = find_worklist(mr_worklist, wire)
        assert a.PatientWeight == 72.5 and a["PatientWeight"].VR == "DS"
        assert a.PatientSize == 1.8
        assert a.MedicalAlerts == "Pacemaker MR conditional"
        assert a.Allergies == "Gadolinium"
        assert a.PregnancyStatus == 4 and a["PregnancyStatus"].VR == "US"
        assert a.PatientComments == "Project:BRISKP Subject:S01"
        assert str(a.RequestingPhysician) == "House^Gregory"
        assert a.RequestedProcedurePriority == "HIGH"
        (code,) = a.RequestedProcedureCodeSequence  # top level
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "RP7", "99CPD", "MRI head")
        (item,) = a.ScheduledProcedureStepSequence
        assert item.CommentsOnTheScheduledProcedureStep == "Bring glasses"
        assert item.RequestedContrastAgent == "Gadovist" and item.PreMedication == "None"
        (protocol,) = item.ScheduledProtocolCodeSequence  # inside the step
        assert (protocol.CodeValue, protocol.CodeMeaning) == ("BRAIN01", "Brain protocol")
        assert "ScheduledProtocolCodeSequence" not in a
        assert "CommentsOnTheScheduledProcedureStep" not in a


def test_no_data_gives_empty_values_and_codes_are_never_copied(mr_worklist):
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X1", "DCM", "From query"
    ds = query(
        {"PatientID": ROWS[2]["patient_id"], "PatientWeight": None, "PregnancyStatus": None,
         "RequestedProcedureCodeSequence": [code]},
        {"ScheduledProtocolCodeSequence": [code]},
    )
    (a,) = find_worklist(mr_worklist, ds)
    assert a.PatientWeight is None and a.PregnancyStatus is None
    assert len(a.RequestedProcedureCodeSequence) == 0
    assert len(a.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence) == 0


def test_code_item_returns_only_the_requested_code_keys(mr_worklist):
    wanted = Dataset()
    wanted.CodeValue = ""
    ds = query({"PatientID": ROWS[0]["patient_id"], "RequestedProcedureCodeSequence": [wanted]})
    (a,) = find_worklist(mr_worklist, ds)
    (code,) = a.RequestedProcedureCodeSequence
    assert code.CodeValue == "RP7" and "CodeMeaning" not in code


def test_return_only_keys_are_not_matched(mr_worklist):
    # Weight and allergies are return keys only (Table K.6-1): a value is ignored.
    ds = query({"PatientWeight": "99", "Allergies": "Peanuts"})
    assert bookings(mr_worklist, ds) == ["201", "202", "203"]


@pytest.mark.parametrize("shape", ["empty-item", "zero-length"])
def test_empty_sps_item_returns_the_whole_step(mr_worklist, shape):
    ds = query({"PatientID": ROWS[0]["patient_id"]})  # one empty item (wlistqry1.dump)
    if shape == "zero-length":
        ds.ScheduledProcedureStepSequence = []
    for wire in (ds, on_the_wire(ds)):
        (a,) = find_worklist(mr_worklist, wire)
        (item,) = a.ScheduledProcedureStepSequence
        assert {int(e.tag) for e in item} == set(SPS_ITEM)
        assert item.Modality == "MR"
        assert item.ScheduledStationAETitle == "MR3T"
        assert item.ScheduledProcedureStepStartDate == "20260310"
        assert item.ScheduledProcedureStepStartTime == "080000"
        assert item.ScheduledProcedureStepID == "201"
        assert item.ScheduledProcedureStepStatus == "SCHEDULED"
        assert item.ScheduledProtocolCodeSequence[0].CodeValue == "BRAIN01"
        assert item.CommentsOnTheScheduledProcedureStep == "Bring glasses"


def test_a_station_with_several_ae_titles_matches_any_of_them(mr_worklist):
    assert bookings(mr_worklist, query({}, {"ScheduledStationAETitle": "MRB"})) == ["202"]
    assert bookings(mr_worklist, query({}, {"ScheduledStationAETitle": "MRA"})) == ["202"]
    assert bookings(mr_worklist, query({}, {"ScheduledStationAETitle": "MR"})) == []
    assert bookings(mr_worklist, query({}, {"ScheduledStationAETitle": "MRB*"})) == ["202"]
    assert bookings(mr_worklist, query({}, {"ScheduledStationAETitle": "MR?"})) == [
        "202", "203"]
    assert bookings(mr_worklist, query({}, {"ScheduledStationAETitle": ["MRC", "MRB"]})) == [
        "202", "203"]
    (a,) = find_worklist(mr_worklist, query({}, {"ScheduledStationAETitle": "MRB"}))
    assert a.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == ["MRA", "MRB"]


def test_calling_station_restricts_a_query_without_station(mr_worklist):
    ds = query({}, {"ScheduledStationAETitle": ""})
    assert bookings(mr_worklist, ds, calling_station="MRB") == ["202"]
    assert bookings(mr_worklist, ds, calling_station="MR3T") == ["201"]
    assert bookings(mr_worklist, ds, calling_station="NOBODY") == []
    assert bookings(mr_worklist, query({}, {"Modality": "MR"}), calling_station="MRC") == ["203"]
    # A query that names a station is answered as asked.
    named = query({}, {"ScheduledStationAETitle": "MRC"})
    assert bookings(mr_worklist, named, calling_station="MRB") == ["203"]
    assert bookings(mr_worklist, ds) == ["201", "202", "203"]


def test_steps_too_old_are_offered_only_to_a_date_query(mr_worklist):
    later = NOW + dt.timedelta(days=8)
    undated = query({}, {"Modality": ""})
    assert bookings(mr_worklist, undated, offer_past_days=7, now=later) == []
    assert bookings(mr_worklist, undated, offer_past_days=7, now=NOW) == ["201", "202", "203"]
    assert bookings(mr_worklist, undated, offer_past_days=None, now=later) == [
        "201", "202", "203"]
    dated = query({}, {"ScheduledProcedureStepStartDate": "20260301-20260331"})
    assert bookings(mr_worklist, dated, offer_past_days=7, now=later) == ["201", "202", "203"]
    # The steps start 14:00, 15:00, 16:00 UTC (08:00-10:00 MDT); 8 days before
    # 03-18 14:30 UTC lies between the first and the second.
    edge = dt.datetime(2026, 3, 18, 14, 30, tzinfo=dt.UTC)
    assert bookings(mr_worklist, undated, offer_past_days=8, now=edge) == ["202", "203"]
    with pytest.raises(ValueError):
        parse_query(undated, offer_past_days=-1)


@pytest.mark.parametrize("implicit", [False, True])
def test_latin1_query_gets_latin1_answer_unless_a_value_does_not_fit(mr_worklist, implicit):
    latin1 = on_the_wire(query({"PatientName": "M*"}, charset="ISO_IR 100"), implicit)
    (a,) = find_worklist(mr_worklist, latin1, implicit_vr=implicit)
    assert a.SpecificCharacterSet == "ISO_IR 100"
    raw = encode(a, implicit, True)
    assert "Müller^Jürgen".encode("latin-1") in raw
    assert "Müller".encode("utf-8") not in raw
    back = decode(BytesIO(raw), implicit, True)
    assert str(back.PatientName) == "Müller^Jürgen"

    # 山田 has no Latin-1 form: that answer comes in UTF-8, the others stay Latin-1.
    everyone = on_the_wire(query({"PatientName": ""}, charset="ISO_IR 100"), implicit)
    answers = {str(a.PatientName): a for a in find_worklist(mr_worklist, everyone)}
    assert answers["山田^太郎"].SpecificCharacterSet == "ISO_IR 192"
    assert answers["Plain^Paula"].SpecificCharacterSet == "ISO_IR 100"
    assert "山田^太郎".encode() in encode(answers["山田^太郎"], implicit, True)


def test_other_single_byte_set_and_sets_we_do_not_answer_in(mr_worklist):
    # ISO_IR 101 (Latin-2) holds ü too; ISO 2022 sets are answered in UTF-8.
    (a,) = find_worklist(mr_worklist, query({"PatientName": "M*"}, charset="ISO_IR 101"))
    assert a.SpecificCharacterSet == "ISO_IR 101"
    assert "Müller".encode("iso8859_2") in encode(a, False, True)
    (b,) = find_worklist(mr_worklist, query({"PatientName": "M*"}, charset=["", "ISO 2022 IR 87"]))
    assert b.SpecificCharacterSet == "ISO_IR 192"


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100"])
def test_bytes_path_equals_pydicom_for_the_new_fields(mr_worklist, implicit, charset):
    ds = query(
        {"PatientName": "", "PatientWeight": None, "PregnancyStatus": None,
         "RequestedProcedureCodeSequence": [], "PatientComments": ""},
        {}, charset=charset,
    )
    q = parse_query(ds)
    with mr_worklist.connect() as conn:
        rows = conn.execute(build_select(q)).fetchall()
    assert len(rows) == 3
    for row in rows:
        answer = row_to_dataset(row, q, implicit_vr=implicit)
        assert row_to_bytes(row, q, implicit_vr=implicit) == encode(answer, implicit, True)
        # Built the ordinary pydicom way from the decoded answer: the same bytes.
        rebuilt = Dataset()
        for elem in decode(BytesIO(encode(answer, implicit, True)), implicit, True):
            rebuilt.add(DataElement(elem.tag, elem.VR, elem.value))
        assert encode(rebuilt, implicit, True) == encode(answer, implicit, True)


def test_pregnancy_status_and_weight_in_the_row_checks():
    from mwl_service.vr import field_problem, row_problems

    assert field_problem("pregnancy_status", 4) is None
    assert "not one of" in field_problem("pregnancy_status", 5)
    assert "decimal" in field_problem("patient_weight", "heavy")
    assert field_problem("scheduled_station_ae_title", "MRA\\MRB") is None
    assert "max 16" in field_problem("scheduled_station_ae_title", "MRA\\" + "X" * 17)
    assert "empty value" in field_problem("scheduled_station_ae_title", "MRA\\")
    assert dict(row_problems({"patient_size": "1,8", "modality": "MR"})) .keys() == {
        "patient_size"}
    assert schema.MAPPABLE_FIELDS[-11:] == (
        "patient_weight", "patient_size", "medical_alerts", "allergies", "pregnancy_status",
        "patient_comments", "scheduled_procedure_step_comments", "requesting_physician",
        "requested_procedure_priority", "requested_contrast_agent", "pre_medication")


# ---------------------------------------------------------------- over DICOM (DCMTK findscu)

DCMTK_QUERIES = Path("/usr/share/doc/dcmtk/examples/wlistqry")


def _dump2dcm(dump: Path, out: Path) -> Path:
    exe = shutil.which("dump2dcm")
    if exe is None or not dump.exists():
        pytest.fail("DCMTK dump2dcm or its sample queries are not installed (make test installs it)")
    subprocess.run([exe, str(dump), str(out)], check=True, capture_output=True, timeout=30)
    return out


@pytest.mark.external
def test_dcmtk_empty_item_query_gets_the_whole_step(sqlite_url, mwl_server, tmp_path):
    engine = make_engine(sqlite_url)
    row = insert_item(engine, patient_name="Vivaldi^Antonio", scheduled_station_ae_title="AA32\\AA33",
                      medical_alerts="METASTASIS", allergies="TANTAL", requesting_physician="SMITH",
                      requested_procedure_priority="LOW", requested_contrast_agent="BARIUMSULFAT")
    engine.dispose()
    server = mwl_server(sqlite_url)
    query_file = _dump2dcm(DCMTK_QUERIES / "wlistqry1.dump", tmp_path / "wlistqry1.dcm")
    (a,) = run_findscu(server.host, server.port, SERVER_AET, [], query_file=str(query_file))
    assert a.AccessionNumber == row["accession_number"]
    assert (a.MedicalAlerts, a.Allergies, str(a.RequestingPhysician)) == (
        "METASTASIS", "TANTAL", "SMITH")
    assert a.RequestedProcedurePriority == "LOW"
    (item,) = a.ScheduledProcedureStepSequence
    assert item.Modality == "MR"
    assert item.ScheduledStationAETitle == ["AA32", "AA33"]
    assert item.ScheduledProcedureStepStartDate == row["scheduled_start_date"]
    assert item.ScheduledProcedureStepID == row["scheduled_procedure_step_id"]
    assert item.RequestedContrastAgent == "BARIUMSULFAT"


@pytest.mark.external
def test_dcmtk_latin1_query_gets_a_latin1_answer(sqlite_url, mwl_server):
    engine = make_engine(sqlite_url)
    insert_item(engine, patient_name="Müller^Jürgen")
    insert_item(engine, patient_name="Doe^Jane")
    engine.dispose()
    server = mwl_server(sqlite_url)
    # findscu sends argv bytes as they are: Latin-1 bytes, labelled ISO_IR 100.
    latin1_key = "PatientName=" + "Mü*".encode("latin-1").decode("utf-8", "surrogateescape")
    (a,) = run_findscu(
        server.host, server.port, SERVER_AET,
        ["SpecificCharacterSet=ISO_IR 100", latin1_key, "(0040,0100)[0].Modality"],
    )
    assert a.SpecificCharacterSet == "ISO_IR 100"
    assert str(a.PatientName) == "Müller^Jürgen"
    assert a["PatientName"].VR == "PN"
    buffer = BytesIO()
    a.save_as(buffer)
    assert "Müller^Jürgen".encode("latin-1") in buffer.getvalue()


@pytest.mark.external
def test_station_from_calling_aet_answers_only_the_callers_steps(sqlite_url, mwl_server):
    engine = make_engine(sqlite_url)
    mine = insert_item(engine, scheduled_station_ae_title="CONSOLE_A\\CONSOLE_B")
    insert_item(engine, scheduled_station_ae_title="OTHER")
    engine.dispose()
    server = mwl_server(sqlite_url, station_from_calling_aet=True)
    keys = ["AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle"]
    for caller in ("CONSOLE_A", "CONSOLE_B"):
        (a,) = run_findscu(server.host, server.port, SERVER_AET, keys, calling_aet=caller)
        assert a.AccessionNumber == mine["accession_number"]
    assert run_findscu(server.host, server.port, SERVER_AET, keys, calling_aet="NOBODY") == []
    # Naming a station overrides the calling AE title.
    named = ["AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle=OTHER"]
    (b,) = run_findscu(server.host, server.port, SERVER_AET, named, calling_aet="CONSOLE_A")
    assert b.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "OTHER"


def test_unknown_pregnancy_status_is_null_in_the_database(engine):
    with engine.begin() as conn:
        conn.execute(insert(WorklistItem).values(**make_row("301", "20260310", "080000",
                                                            pregnancy_status="")))
        conn.execute(insert(WorklistItem).values(**make_row("302", "20260310", "090000",
                                                            pregnancy_status="2")))
        stored = conn.exec_driver_sql(
            "SELECT booking_id, pregnancy_status FROM worklist_items ORDER BY booking_id").all()
        read = conn.execute(select(WorklistItem.pregnancy_status)
                            .order_by(WorklistItem.booking_id)).scalars().all()
    assert [tuple(r) for r in stored] == [("301", None), ("302", 2)]
    assert read == ["", 2]  # "" = unknown, as for the text fields
