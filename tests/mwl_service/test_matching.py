"""C-FIND matching for the Modality Worklist (mwl_service.matching), against a real DB.

Every test runs on a SQLite file and, when WORKLIST_TEST_PG_URL is set, on
PostgreSQL too (the `engine` fixture), so case sensitivity and wildcard escaping are
checked to behave the same on both back ends.
"""

from __future__ import annotations

import datetime as dt
import warnings
from io import BytesIO
from zoneinfo import ZoneInfo

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode
from sqlalchemy import insert, select, text

from mwl_service import schema
from mwl_service.engine import make_engine
from mwl_service.matching import (
    STATUS_IDENTIFIER_DOES_NOT_MATCH,
    STATUS_UNABLE_TO_PROCESS,
    QueryError,
    WorklistQuery,
    build_select,
    find_worklist,
    parse_query,
    row_to_bytes,
    row_to_dataset,
)
from mwl_service.schema import WorklistItem

SITE_TZ = "America/Edmonton"
SOURCE = "calpendo"


def make_row(booking_id: str, date: str, time_: str, **fields) -> dict:
    local = dt.datetime.strptime(date + time_, "%Y%m%d%H%M%S").replace(tzinfo=ZoneInfo(SITE_TZ))
    row = dict(
        source=SOURCE,
        booking_id=booking_id,
        patient_id=f"P{booking_id}",
        patient_name=f"Person^{booking_id}",
        accession_number=schema.accession_number(SOURCE, booking_id),
        study_instance_uid=schema.study_instance_uid(SOURCE, booking_id),
        scheduled_procedure_step_id=schema.step_id(SOURCE, booking_id),
        requested_procedure_id=schema.step_id(SOURCE, booking_id),
        scheduled_station_ae_title="MR3T",
        modality="MR",
        scheduled_start_utc=local.astimezone(dt.timezone.utc),
        site_timezone=SITE_TZ,
        scheduled_start_date=date,
        scheduled_start_time=time_,
        duration_minutes=60,
        step_status=schema.SCHEDULED,
        content_hash="h" + booking_id,
    )
    row.update(fields)
    return row


ROWS = [
    make_row(
        "101", "20260310", "080000",
        patient_name="Müller^Jürgen", patient_id="P101", patient_birth_date="19800115",
        patient_sex="M", referring_physician_name="Doe^Jane",
        performing_physician_name="Tech^Anna", requested_procedure_description="Brain MRI",
        scheduled_procedure_step_description="T1 T2", scheduled_station_name="PRISMA",
        scheduled_procedure_step_location="Room 1", study_description="BRISKP",
        admission_id="ADM1", other_patient_ids="OLD101",
    ),
    make_row("102", "20260310", "233000", patient_name="山田^太郎", patient_id="P102",
             patient_birth_date="19751201", patient_sex="M"),
    make_row("103", "20260310", "063000", patient_name="Smith^John", patient_id="P103",
             scheduled_station_ae_title="MR7T", step_status=schema.IN_PROGRESS,
             patient_birth_date="19900101"),
    make_row("104", "20260311", "101500", patient_name="smith^jane", patient_id="P104",
             scheduled_station_ae_title="EEG1", modality="EEG", requested_procedure_id=""),
    make_row("105", "20260311", "110000", patient_id="P_05"),
    make_row("106", "20260311", "113000", patient_id="PX05"),
    make_row("107", "20260311", "120000", patient_id="P%06"),
    make_row("108", "20260310", "120000", patient_name="Cancelled^Carl", patient_id="P108",
             step_status=schema.DISCONTINUED, discontinued_reason="cancelled in Calpendo"),
    make_row("109", "20260310", "090000", patient_name="Done^Dora", patient_id="P109",
             step_status=schema.COMPLETED),
    make_row("110", "20260312", "000500", patient_name="Early^Eve", patient_id="P110"),
    make_row("111", "20260309", "235900", patient_name="Late^Larry", patient_id="P111",
             scheduled_station_ae_title="MR7T"),
    make_row("112", "20260312", "140000", patient_id="P[1]", duration_minutes=None),
]
BY_ID = {r["booking_id"]: r for r in ROWS}
ACTIVE = [r for r in ROWS if r["step_status"] in (schema.SCHEDULED, schema.IN_PROGRESS)]


def start_order(rows) -> list[str]:
    return [r["booking_id"] for r in sorted(
        rows, key=lambda r: (r["scheduled_start_date"], r["scheduled_start_time"]))]


def insert_rows(engine, rows: list[dict]):
    with engine.begin() as conn:
        for r in rows:  # rows set different columns: one INSERT each
            conn.execute(insert(WorklistItem).values(**r))
    return engine


@pytest.fixture
def worklist(engine):
    insert_rows(engine, ROWS)
    return engine


def query(top: dict | None = None, sps: dict | None = None, *, charset=None,
          with_sps: bool = True) -> Dataset:
    """A query identifier. Matching values ("*ED", "2026.03.10", "-") are not valid
    attribute values, so pydicom's value validation is silenced while building it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _query(top, sps, charset=charset, with_sps=with_sps)


def _query(top, sps, *, charset, with_sps) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for keyword, value in (top or {}).items():
        setattr(ds, keyword, value)
    if with_sps:
        item = Dataset()
        for keyword, value in (sps or {}).items():
            setattr(item, keyword, value)
        ds.ScheduledProcedureStepSequence = [item]
    return ds


def on_the_wire(ds: Dataset, implicit: bool = True) -> Dataset:
    """What the SCP handler gets: the identifier encoded and decoded (raw elements)."""
    return decode(BytesIO(encode(ds, implicit, True)), implicit, True)


def booking_ids(engine, ds: Dataset, **kw) -> list[str]:
    """Match and map each answer back to its booking via the Patient ID / accession."""
    by_accession = {r["accession_number"]: r["booking_id"] for r in ROWS}
    if "AccessionNumber" not in ds:
        ds.AccessionNumber = ""
    return [by_accession[str(r.AccessionNumber)] for r in find_worklist(engine, ds, **kw)]


# ---------------------------------------------------------------- universal / single value


def test_universal_matching_returns_active_steps_in_start_order(worklist):
    ds = query({"PatientName": "", "PatientID": ""}, {"ScheduledStationAETitle": ""})
    got = list(find_worklist(worklist, ds, ))
    assert [str(r.PatientID) for r in got] == [
        BY_ID[b]["patient_id"] for b in start_order(ACTIVE)
    ]
    # Universal keys are still returned, with the row's values.
    first = got[0]
    assert str(first.PatientName) == "Late^Larry"
    assert first.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "MR7T"


def test_star_alone_is_universal(worklist):
    assert booking_ids(worklist, query({"PatientID": "*"}, {"Modality": "*"})) == start_order(
        ACTIVE
    )


def test_single_value_matching_top_level_and_in_sequence(worklist):
    assert booking_ids(worklist, query({"PatientID": "P103"})) == ["103"]
    assert booking_ids(worklist, query({}, {"Modality": "EEG"})) == ["104"]
    assert booking_ids(worklist, query({}, {"ScheduledStationAETitle": "MR7T"})) == [
        "111", "103",
    ]
    acc = BY_ID["102"]["accession_number"]
    assert booking_ids(worklist, query({"AccessionNumber": acc})) == ["102"]
    assert booking_ids(worklist, query({"RequestedProcedureID": "101"})) == ["101"]
    assert booking_ids(worklist, query({"ReferringPhysicianName": "Doe^Jane"})) == ["101"]
    assert booking_ids(worklist, query({"PatientSex": "M"})) == ["101", "102"]
    assert booking_ids(worklist, query({}, {"ScheduledPerformingPhysicianName": "Tech^Anna"})) == [
        "101"
    ]
    assert booking_ids(worklist, query({}, {"ScheduledProcedureStepID": "104"})) == ["104"]
    assert booking_ids(worklist, query({}, {"ScheduledStationName": "PRISMA"})) == ["101"]
    assert booking_ids(worklist, query({}, {"ScheduledProcedureStepLocation": "Room 1"})) == [
        "101"
    ]
    assert booking_ids(worklist, query({}, {"ScheduledProcedureStepDescription": "T1 T2"})) == [
        "101"
    ]
    assert booking_ids(worklist, query({"PatientID": "NOPE"})) == []


def test_keys_are_anded(worklist):
    ds = query({"PatientSex": "M"}, {"ScheduledProcedureStepStartTime": "2300-2359"})
    assert booking_ids(worklist, ds) == ["102"]


def test_case_sensitive_except_person_names(worklist):
    # LO, CS, AE: exact case (DICOM), identical on SQLite and PostgreSQL.
    assert booking_ids(worklist, query({"PatientID": "p103"})) == []
    assert booking_ids(worklist, query({}, {"Modality": "eeg"})) == []
    assert booking_ids(worklist, query({}, {"ScheduledStationAETitle": "mr7*"})) == []
    assert booking_ids(worklist, query({}, {"ScheduledStationAETitle": "MR7*"})) == ["111", "103"]
    # PN: case-insensitive for A-Z, single value and wildcard.
    assert booking_ids(worklist, query({"PatientName": "SMITH^JOHN"})) == ["103"]
    assert booking_ids(worklist, query({"PatientName": "smith*"})) == ["103", "104"]
    assert booking_ids(worklist, query({"PatientName": "MÜLLER^JÜRGEN"})) == []  # accents kept
    assert booking_ids(worklist, query({"PatientName": "müller^jürgen"})) == ["101"]


def test_pn_trailing_empty_components_are_insignificant(worklist):
    assert booking_ids(worklist, query({"PatientName": "Smith^John^^"})) == ["103"]
    assert booking_ids(worklist, query({"PatientName": "^^"})) == start_order(ACTIVE)


# ---------------------------------------------------------------- wildcards


def test_wildcards_star_and_question_mark(worklist):
    assert booking_ids(worklist, query({"PatientName": "M?ller*"})) == ["101"]
    assert booking_ids(worklist, query({"PatientName": "*^J?rgen"})) == ["101"]
    assert booking_ids(worklist, query({"PatientName": "山田*"})) == ["102"]
    assert booking_ids(worklist, query({"PatientName": "??^太郎"})) == ["102"]
    assert booking_ids(worklist, query({"PatientID": "P10?"})) == ["103", "101", "102", "104"]
    assert booking_ids(worklist, query({}, {"ScheduledStationAETitle": "*7T"})) == ["111", "103"]


def test_wildcard_escapes_sql_metacharacters(worklist):
    # A literal "_" / "%" in the stored value is not a SQL wildcard.
    assert booking_ids(worklist, query({"PatientID": "P_0*"})) == ["105"]
    assert booking_ids(worklist, query({"PatientID": "P%0*"})) == ["107"]
    assert booking_ids(worklist, query({"PatientID": "P_05"})) == ["105"]
    assert booking_ids(worklist, query({"PatientID": "P%06"})) == ["107"]
    # "[" does not open a GLOB character class.
    assert booking_ids(worklist, query({"PatientID": "P[*"})) == ["112"]
    assert booking_ids(worklist, query({"PatientID": "P[1]"})) == ["112"]


def test_no_wildcards_for_uid_date_time(worklist):
    uid = BY_ID["101"]["study_instance_uid"]
    assert booking_ids(worklist, query({"StudyInstanceUID": uid[:10] + "*"})) == []
    with pytest.raises(QueryError):
        parse_query(query({}, {"ScheduledProcedureStepStartDate": "202603*"}))


def test_repeated_queries_with_different_patterns_reuse_statements_correctly(worklist):
    # The wildcard element binds its pattern: cached statements get the new value.
    with worklist.connect() as conn:
        for pattern, expected in [("P_0*", ["105"]), ("P%0*", ["107"]), ("PX*", ["106"])] * 2:
            assert booking_ids(conn, query({"PatientID": pattern})) == expected


# ---------------------------------------------------------------- UID list


def test_uid_list_matching(worklist):
    a, b = BY_ID["101"]["study_instance_uid"], BY_ID["104"]["study_instance_uid"]
    assert booking_ids(worklist, query({"StudyInstanceUID": [a, b]})) == ["101", "104"]
    assert booking_ids(worklist, query({"StudyInstanceUID": a})) == ["101"]
    assert booking_ids(worklist, query({"StudyInstanceUID": [a, "1.2.3.4"]})) == ["101"]
    # Over the wire the list is one backslash-separated value.
    wire = on_the_wire(query({"StudyInstanceUID": f"{a}\\{b}"}))
    assert booking_ids(worklist, wire) == ["101", "104"]


def test_list_of_values_for_other_string_keys(worklist):
    assert booking_ids(worklist, query({"PatientID": ["P103", "P104"]})) == ["103", "104"]
    assert booking_ids(worklist, query({}, {"Modality": ["EEG", "CT"]})) == ["104"]
    assert booking_ids(worklist, query({"PatientName": ["smith^john", "Early*"]})) == [
        "103", "110",
    ]


# ---------------------------------------------------------------- dates and times


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20260310", ["103", "101", "102"]),
        ("2026.03.10", ["103", "101", "102"]),  # ACR-NEMA form accepted
        ("20260310-20260311", ["103", "101", "102", "104", "105", "106", "107"]),
        ("-20260310", ["111", "103", "101", "102"]),
        ("20260311-", ["104", "105", "106", "107", "110", "112"]),
        ("20260313-", []),
        ("-", [b for b in start_order(ACTIVE)]),
    ],
)
def test_date_matching(worklist, value, expected):
    assert booking_ids(worklist, query({}, {"ScheduledProcedureStepStartDate": value})) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("063000", ["103"]),
        ("0630", ["103"]),  # HHMM covers the minute
        ("06", ["103"]),  # HH covers the hour
        ("063000.000000", ["103"]),
        ("06:30:00", ["103"]),  # old ACR-NEMA form tolerated
        ("23", ["111", "102"]),
        ("2330", ["102"]),
        ("0600-0700", ["103"]),
        ("-0700", ["103", "110"]),
        ("2300-", ["111", "102"]),
        ("1100-1200", ["105", "106", "107"]),  # "1200" as upper bound includes 12:00:xx
        ("0800-0800", ["101"]),
    ],
)
def test_time_matching(worklist, value, expected):
    assert booking_ids(worklist, query({}, {"ScheduledProcedureStepStartTime": value})) == expected


@pytest.mark.parametrize(
    ("date", "time_", "expected"),
    [
        # One datetime range from 2026-03-09 23:00 to 2026-03-10 07:00 (overnight).
        ("20260309-20260310", "2300-0700", ["111", "103"]),
        # Single day, time window: only the 08:00 step (12:00 is cancelled, 09:00 done).
        ("20260310", "0800-1200", ["101"]),
        ("20260310", "-0700", ["103"]),
        ("20260310", "2300-", ["102"]),
        # From 2026-03-11 10:00 onwards.
        ("20260311-", "1000-", ["104", "105", "106", "107", "110", "112"]),
        ("20260311-", "1130-", ["106", "107", "110", "112"]),
        # Up to 2026-03-10 07:00.
        ("-20260310", "-0700", ["111", "103"]),
        # Single date and single time: that minute of that day.
        ("20260311", "1015", ["104"]),
        ("20260312", "1015", []),
    ],
)
def test_combined_date_time_range(worklist, date, time_, expected):
    ds = query(
        {}, {"ScheduledProcedureStepStartDate": date, "ScheduledProcedureStepStartTime": time_}
    )
    assert booking_ids(worklist, ds) == expected


def test_date_range_on_patient_birth_date_skips_empty_values(worklist):
    assert booking_ids(worklist, query({"PatientBirthDate": "-19791231"})) == ["102"]
    assert booking_ids(worklist, query({"PatientBirthDate": "19800101-"})) == ["103", "101"]
    assert booking_ids(worklist, query({"PatientBirthDate": "19800115"})) == ["101"]


# ---------------------------------------------------------------- step status


def test_finished_and_cancelled_steps_are_not_offered_by_default(worklist):
    got = booking_ids(worklist, query({}, {"ScheduledProcedureStepStartDate": "20260310"}))
    assert "108" not in got and "109" not in got
    got = booking_ids(worklist, query({}, {"ScheduledProcedureStepStatus": ""}))
    assert got == start_order(ACTIVE)
    got = booking_ids(worklist, query({"PatientName": "Cancelled^Carl"}))
    assert got == []
    # Without a ScheduledProcedureStepSequence in the query at all, too.
    assert booking_ids(worklist, query({"PatientID": "P108"}, with_sps=False)) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("DISCONTINUED", ["108"]),
        ("COMPLETED", ["109"]),
        ("IN PROGRESS", ["103"]),
        ("SCHEDULED", ["101", "102"]),
        ("*ED", ["101", "109", "108", "102"]),  # a wildcard that matches asks explicitly
        ("*", ["103", "101", "102"]),  # universal: the default (active steps only)
    ],
)
def test_explicit_step_status(worklist, status, expected):
    ds = query(
        {}, {"ScheduledProcedureStepStatus": status, "ScheduledProcedureStepStartDate": "20260310"}
    )
    ds.PatientID = ""
    got = list(find_worklist(worklist, ds))
    assert [str(r.PatientID)[1:] for r in got] == expected
    if status not in ("*", "*ED"):
        assert {r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus for r in got} == {
            status
        }


# ---------------------------------------------------------------- return keys


def tags_of(ds: Dataset) -> set[int]:
    return {int(t) for t in ds.keys()}


def test_returns_exactly_the_requested_keys(worklist):
    ds = query(
        {
            "PatientName": "",
            "PatientID": "P103",
            "IssuerOfPatientID": "",  # no data: zero length
            "PatientWeight": None,  # not a worklist column: zero length
            "StudyInstanceUID": "",
            "RequestedProcedureCodeSequence": [],
        },
        {"ScheduledStationAETitle": "", "ScheduledPerformingPhysicianName": "",
         "ScheduledProtocolCodeSequence": []},
    )
    ds.add_new(0x00091010, "LO", "private")  # private keys are dropped
    (answer,) = find_worklist(worklist, ds)
    assert tags_of(answer) == {
        0x00100010, 0x00100020, 0x00100021, 0x00101030, 0x0020000D, 0x00321064, 0x00400100,
    }  # ASCII row, no SpecificCharacterSet in the query: none in the answer
    row = BY_ID["103"]
    assert str(answer.PatientName) == "Smith^John"
    assert answer.PatientID == "P103"
    assert answer.IssuerOfPatientID == ""
    assert answer["PatientWeight"].is_empty
    assert answer.StudyInstanceUID == row["study_instance_uid"]
    assert len(answer.RequestedProcedureCodeSequence) == 0
    (item,) = answer.ScheduledProcedureStepSequence
    assert tags_of(item) == {0x00400001, 0x00400006, 0x00400008}
    assert item.ScheduledStationAETitle == "MR7T"
    assert str(item.ScheduledPerformingPhysicianName) == ""  # empty in the row
    assert len(item.ScheduledProtocolCodeSequence) == 0


def test_values_of_all_supported_keys(worklist):
    top = {k: "" for k in (
        "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "PatientName",
        "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs", "StudyInstanceUID",
        "AdmissionID", "RequestedProcedureDescription", "RequestedProcedureID",
    )}
    top["PatientID"] = "P101"
    sps = {k: "" for k in (
        "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime", "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription", "ScheduledStationName",
        "ScheduledProcedureStepLocation", "ScheduledProcedureStepID",
        "ScheduledProcedureStepStatus",
    )}
    (a,) = find_worklist(worklist, query(top, sps))
    r = BY_ID["101"]
    assert a.AccessionNumber == r["accession_number"]
    assert str(a.ReferringPhysicianName) == "Doe^Jane"
    assert a.StudyDescription == "BRISKP"
    assert str(a.PatientName) == "Müller^Jürgen"
    assert a.PatientBirthDate == "19800115"
    assert a.PatientSex == "M"
    assert a.OtherPatientIDs == "OLD101"
    assert a.StudyInstanceUID == r["study_instance_uid"]
    assert a.AdmissionID == "ADM1"
    assert a.RequestedProcedureDescription == "Brain MRI"
    assert a.RequestedProcedureID == "101"
    assert a.SpecificCharacterSet == "ISO_IR 192"
    i = a.ScheduledProcedureStepSequence[0]
    assert (i.Modality, i.ScheduledStationAETitle) == ("MR", "MR3T")
    assert (i.ScheduledProcedureStepStartDate, i.ScheduledProcedureStepStartTime) == (
        "20260310", "080000",
    )
    # End = start + duration, site-local.
    assert (i.ScheduledProcedureStepEndDate, i.ScheduledProcedureStepEndTime) == (
        "20260310", "090000",
    )
    assert str(i.ScheduledPerformingPhysicianName) == "Tech^Anna"
    assert i.ScheduledProcedureStepDescription == "T1 T2"
    assert (i.ScheduledStationName, i.ScheduledProcedureStepLocation) == ("PRISMA", "Room 1")
    assert i.ScheduledProcedureStepID == "101"
    assert i.ScheduledProcedureStepStatus == "SCHEDULED"
    # An end needs a duration.
    (b,) = find_worklist(worklist, query({"PatientID": "P[1]"}, {
        "ScheduledProcedureStepEndDate": "", "ScheduledProcedureStepEndTime": ""}))
    assert b.ScheduledProcedureStepSequence[0].ScheduledProcedureStepEndTime == ""


def test_type1_keys_always_have_values(worklist):
    ds = query(
        {"StudyInstanceUID": "", "AccessionNumber": "", "RequestedProcedureID": "",
         "PatientID": "P104"},
        {"ScheduledProcedureStepID": ""},
    )
    (a,) = find_worklist(worklist, ds)
    # The row has no requested procedure ID: the step ID stands in.
    assert a.RequestedProcedureID == schema.step_id(SOURCE, "104") == "104"
    assert a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "104"
    assert a.StudyInstanceUID == schema.study_instance_uid(SOURCE, "104")
    assert a.AccessionNumber == schema.accession_number(SOURCE, "104")
    assert len(a.AccessionNumber) == 16


def test_zero_length_sequence_returns_the_whole_item(worklist):
    ds = query({"PatientID": "P103"}, with_sps=False)
    ds.ScheduledProcedureStepSequence = []
    (a,) = find_worklist(worklist, ds)
    (item,) = a.ScheduledProcedureStepSequence
    assert item.ScheduledStationAETitle == "MR7T"
    assert item.ScheduledProcedureStepStatus == "IN PROGRESS"
    assert item.ScheduledProcedureStepStartTime == "063000"
    assert "ScheduledProcedureStepID" in item and "Modality" in item


def test_no_sequence_requested_no_sequence_returned(worklist):
    (a,) = find_worklist(worklist, query({"PatientID": "P103"}, with_sps=False))
    assert tags_of(a) == {0x00100020}


# ---------------------------------------------------------------- character sets


@pytest.mark.parametrize("implicit", [True, False])
def test_latin1_query_matches_utf8_stored_name(worklist, implicit):
    for name in ("Müller*", "M?ller^J?rgen", "müller^jürgen"):
        wire = on_the_wire(query({"PatientName": name}, charset="ISO_IR 100"), implicit)
        # Really Latin-1 on the wire.
        assert "ü".encode("latin-1") in encode(wire, implicit, True) or "?" in name
        (a,) = find_worklist(worklist, wire, implicit_vr=implicit)
        assert str(a.PatientName) == "Müller^Jürgen"
        # Representable in Latin-1: answered in the query's character set.
        assert a.SpecificCharacterSet == "ISO_IR 100"
        assert "Müller^Jürgen".encode("latin-1") in encode(a, implicit, True)


def test_japanese_iso2022_query_is_decoded(worklist):
    wire = on_the_wire(query({"PatientName": "山田^太郎"}, charset=["", "ISO 2022 IR 87"]))
    (a,) = find_worklist(worklist, wire)
    assert str(a.PatientName) == "山田^太郎"


def test_utf8_query_and_sequence_item_inherits_charset(worklist):
    wire = on_the_wire(
        query({"PatientName": ""}, {"ScheduledPerformingPhysicianName": "Tech*"},
              charset="ISO_IR 192")
    )
    (a,) = find_worklist(worklist, wire)
    assert str(a.PatientName) == "Müller^Jürgen"


def test_undeclared_utf8_query_is_read_as_utf8(worklist):
    ds = Dataset()
    ds[0x00100010] = RawDataElement(
        0x00100010, "PN", 8, "Müller*".encode(), 0, False, True
    )  # no SpecificCharacterSet, yet UTF-8 bytes
    ds.set_original_encoding(False, True)
    assert [str(a.PatientID) for a in find_worklist(worklist, query_plus(ds))] == ["P101"]


def query_plus(ds: Dataset) -> Dataset:
    ds.PatientID = ""
    return ds


def test_response_charset(worklist):
    # Non-ASCII answer: ISO_IR 192. ASCII answer: none unless the query carried one.
    (a,) = find_worklist(worklist, query({"PatientID": "P102", "PatientName": ""}))
    assert a.SpecificCharacterSet == "ISO_IR 192"
    (b,) = find_worklist(worklist, query({"PatientID": "P103", "PatientName": ""}))
    assert "SpecificCharacterSet" not in b
    (c,) = find_worklist(
        worklist, query({"PatientID": "P103", "PatientName": ""}, charset="ISO_IR 100")
    )
    assert c.SpecificCharacterSet == "ISO_IR 100"  # the query's own set
    # Non-ASCII only inside the sequence item counts too.
    with worklist.begin() as conn:
        conn.execute(
            WorklistItem.__table__.update()
            .where(WorklistItem.__table__.c.booking_id == "103")
            .values(performing_physician_name="Å^Björk")
        )
    (d,) = find_worklist(
        worklist, query({"PatientID": "P103"}, {"ScheduledPerformingPhysicianName": ""})
    )
    assert d.SpecificCharacterSet == "ISO_IR 192"
    assert str(d.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName) == "Å^Björk"


# ---------------------------------------------------------------- encoding of answers


def reference_answer(row: dict) -> Dataset:
    """The same answer built the ordinary pydicom way."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = row["patient_name"]
    ds.PatientID = row["patient_id"]
    ds.StudyInstanceUID = row["study_instance_uid"]
    ds.IssuerOfPatientID = ""
    item = Dataset()
    item.Modality = row["modality"]
    item.ScheduledStationAETitle = row["scheduled_station_ae_title"]
    item.ScheduledProcedureStepStartDate = row["scheduled_start_date"]
    item.ScheduledProcedureStepStartTime = row["scheduled_start_time"]
    item.ScheduledProcedureStepID = row["scheduled_procedure_step_id"]
    item.ScheduledProtocolCodeSequence = Sequence([])
    ds.ScheduledProcedureStepSequence = [item]
    return ds


@pytest.mark.parametrize("built_implicit", [False, True])
@pytest.mark.parametrize("written_implicit", [False, True])
def test_answers_encode_like_pydicom(worklist, built_implicit, written_implicit):
    ds = query(
        {"PatientName": "", "PatientID": "P101", "StudyInstanceUID": "", "IssuerOfPatientID": ""},
        {"Modality": "", "ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": "",
         "ScheduledProcedureStepStartTime": "", "ScheduledProcedureStepID": "",
         "ScheduledProtocolCodeSequence": []},
    )
    (a,) = find_worklist(worklist, ds, implicit_vr=built_implicit)
    got = encode(a, written_implicit, True)
    assert got == encode(reference_answer(BY_ID["101"]), written_implicit, True)
    back = decode(BytesIO(got), written_implicit, True)
    assert str(back.PatientName) == "Müller^Jürgen"
    assert back.StudyInstanceUID == BY_ID["101"]["study_instance_uid"]  # odd length: NUL pad
    # The bytes path (the server's fast path) writes exactly the same bytes.
    (raw,) = find_worklist(worklist, ds, implicit_vr=written_implicit, convert=row_to_bytes)
    assert raw == got


def odd_key_query() -> Dataset:
    """Every key shape: a key sorting before SpecificCharacterSet, empty and unknown
    keys, a private key (dropped), long-VR keys, sequences at both levels."""
    ds = query(
        {"PatientName": "", "PatientID": "", "AccessionNumber": "", "StudyInstanceUID": "",
         "IssuerOfPatientID": "", "PatientWeight": None, "RequestedProcedureID": "",
         "RequestedProcedureCodeSequence": [], "ReferencedStudySequence": []},
        {"ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": "",
         "ScheduledProcedureStepStartTime": "", "ScheduledProcedureStepEndDate": "",
         "ScheduledProcedureStepEndTime": "", "ScheduledPerformingPhysicianName": "",
         "ScheduledProcedureStepID": "", "ScheduledProtocolCodeSequence": [],
         "CommentsOnTheScheduledProcedureStep": ""},  # LT
    )
    ds.add_new(0x00080001, "UL", None)  # (0008,0001) sorts before (0008,0005)
    ds.add_new(0x00081030, "LO", "")
    ds.add_new(0x00321066, "UT", "")  # ReasonForVisit: 4-byte length in explicit VR
    ds.add_new(0x00091010, "LO", "private")
    return ds


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        odd_key_query,
        lambda: query({"PatientName": "", "PatientID": ""}),  # ASCII rows: no charset
        lambda: query({"PatientName": "", "PatientID": ""}, charset="ISO_IR 100"),
        lambda: query({"PatientID": ""}, with_sps=False),
        lambda: _zero_length_sps(query({"PatientName": ""}, with_sps=False)),
        lambda: query({}, {"ScheduledProcedureStepStatus": "*"}),  # every row, item only
    ],
    ids=["odd-keys", "plain", "charset-requested", "no-sequence", "zero-length-sequence",
         "item-only"],
)
def test_bytes_path_equals_what_pydicom_writes(worklist, make, implicit):
    """row_to_bytes == pydicom's encoding of row_to_dataset, for every row and both
    Little Endian syntaxes, also after the query went over the wire."""
    for ds in (make(), on_the_wire(make(), implicit)):
        q = parse_query(ds)
        with worklist.connect() as conn:
            rows = conn.execute(build_select(q)).fetchall()
        assert rows
        for row in rows:
            expected = encode(row_to_dataset(row, q, implicit_vr=implicit), implicit, True)
            assert row_to_bytes(row, q, implicit_vr=implicit) == expected
            # and built for the other syntax, pydicom still converts to the same
            other = row_to_dataset(row, q, implicit_vr=not implicit)
            assert encode(other, implicit, True) == expected
        streamed = list(find_worklist(worklist, ds, implicit_vr=implicit, convert=row_to_bytes))
        assert streamed == [
            encode(a, implicit, True) for a in find_worklist(worklist, ds, implicit_vr=implicit)
        ]


def _zero_length_sps(ds: Dataset) -> Dataset:
    ds.ScheduledProcedureStepSequence = []
    return ds


def test_bytes_path_charset_element_sorts_in_place(worklist):
    """SpecificCharacterSet goes where pydicom puts it: after a key that sorts before
    it, before the rest; present exactly when the dataset has it."""
    ds = odd_key_query()
    ds.PatientID = "P101"  # non-ASCII answer
    q = parse_query(ds)
    with worklist.connect() as conn:
        (row,) = conn.execute(build_select(q)).fetchall()
    raw = row_to_bytes(row, q, implicit_vr=False)
    assert raw.startswith(b"\x08\x00\x01\x00UL\x00\x00\x08\x00\x05\x00CS\x0a\x00ISO_IR 192")
    back = decode(BytesIO(raw), False, True)
    tags = [int(elem.tag) for elem in back]
    assert tags == sorted(tags)
    assert str(back.PatientName) == "Müller^Jürgen"


def test_empty_identifier_gives_empty_bytes(worklist):
    """A query with no keys at all: an empty answer, as pydicom would write it."""
    q = parse_query(Dataset())
    with worklist.connect() as conn:
        row = conn.execute(build_select(q)).first()
    assert row_to_bytes(row, q) == b"" == encode(row_to_dataset(row, q), False, True)


def test_answers_are_written_without_element_conversion(worklist):
    ds = query({"PatientName": "", "PatientID": "P102"}, {"Modality": ""})
    (a,) = find_worklist(worklist, ds, implicit_vr=False)
    encode(a, False, True)
    # Still the raw elements: pydicom wrote the prepared bytes as they are.
    assert isinstance(a.get_item(0x00100010), RawDataElement)
    assert isinstance(a.get_item(0x00400100), RawDataElement)
    # ... and reading a value still works.
    assert str(a.PatientName) == "山田^太郎"
    assert isinstance(a["PatientName"], DataElement)


# ---------------------------------------------------------------- limit, API shapes


def test_limit(worklist):
    assert booking_ids(worklist, query({}), limit=2) == start_order(ACTIVE)[:2]
    assert booking_ids(worklist, query({}), limit=100) == start_order(ACTIVE)
    stmt = build_select(parse_query(query({}), limit=3))
    assert stmt._limit_clause is not None
    with pytest.raises(ValueError):
        parse_query(query({}), limit=0)


def test_a_date_range_query_streams_in_index_order_without_sorting(tmp_path):
    """SQLite walks the date-and-time index in answer order: no sort of every match
    before the first answer (the broad query's first answer used to wait for it)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    q = parse_query(query({"PatientName": ""}, {"ScheduledProcedureStepStartDate":
                                                "20260301-20260331"}))
    sql = str(build_select(q).compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    engine.dispose()
    assert any("ix_worklist_date_time" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_parse_query_and_build_select_are_pure(worklist):
    q = parse_query(query({"PatientID": "P10*", "PatientName": ""}, {"Modality": "MR"}))
    assert isinstance(q, WorklistQuery)
    assert "PatientID" in q.matched_keys
    assert "ScheduledProcedureStepSequence>Modality" in q.matched_keys
    assert q.active_only
    stmt = build_select(q)
    sql = str(stmt.compile(worklist)).lower()
    assert ("order by worklist_items.scheduled_start_date, worklist_items.scheduled_start_time, "
            "worklist_items.id") in sql
    with worklist.connect() as conn:
        rows = conn.execute(stmt).fetchall()
    answers = [row_to_dataset(r, q) for r in rows]
    assert [a.PatientID for a in answers] == ["P103", "P101", "P102"]
    encoded = [row_to_bytes(r, q) for r in rows]
    assert encoded == [encode(a, False, True) for a in answers]


def test_row_to_dataset_accepts_orm_objects(worklist):
    from sqlalchemy.orm import Session

    q = parse_query(query({"PatientName": "", "RequestedProcedureID": ""}, {"Modality": ""}))
    with Session(worklist) as session:
        item = session.scalars(select(WorklistItem).where(WorklistItem.booking_id == "104")).one()
        a = row_to_dataset(item, q)
        assert row_to_bytes(item, q, implicit_vr=True) == encode(a, True, True)
    assert str(a.PatientName) == "smith^jane"
    assert a.RequestedProcedureID == "104"
    assert a.ScheduledProcedureStepSequence[0].Modality == "EEG"


def test_find_worklist_with_connection_and_early_close(worklist):
    with worklist.connect() as conn:
        it = find_worklist(conn, query({"PatientID": ""}))
        first = next(it)
        assert first.PatientID == "P111"
        it.close()  # the handler stops early (C-CANCEL): the cursor is released
        assert conn.execute(text("SELECT count(*) FROM worklist_items")).scalar() == len(ROWS)


# ---------------------------------------------------------------- malformed queries


@pytest.mark.parametrize(
    ("top", "sps", "status"),
    [
        ({}, {"ScheduledProcedureStepStartDate": "abc"}, STATUS_UNABLE_TO_PROCESS),
        ({}, {"ScheduledProcedureStepStartDate": "20261301"}, STATUS_UNABLE_TO_PROCESS),
        ({}, {"ScheduledProcedureStepStartDate": "2026-01-01-2026"}, STATUS_UNABLE_TO_PROCESS),
        ({}, {"ScheduledProcedureStepStartDate": "20260102-20260101"}, STATUS_UNABLE_TO_PROCESS),
        ({}, {"ScheduledProcedureStepStartDate": ["20260101", "20260102"]},
         STATUS_UNABLE_TO_PROCESS),
        ({}, {"ScheduledProcedureStepStartTime": "2500"}, STATUS_UNABLE_TO_PROCESS),
        ({}, {"ScheduledProcedureStepStartTime": "1200-1000"}, STATUS_UNABLE_TO_PROCESS),
        ({"PatientBirthDate": "1980"}, {}, STATUS_UNABLE_TO_PROCESS),
    ],
)
def test_malformed_values_raise_query_error(top, sps, status):
    with pytest.raises(QueryError) as exc:
        parse_query(query(top, sps))
    assert exc.value.status == status
    assert str(exc.value)


def test_reversed_combined_range_raises():
    ds = query({}, {"ScheduledProcedureStepStartDate": "20260310",
                    "ScheduledProcedureStepStartTime": "1200-1000"})
    with pytest.raises(QueryError, match="starts after"):
        parse_query(ds)


def test_sequence_with_two_items_is_refused(worklist):
    ds = query({})
    ds.ScheduledProcedureStepSequence.append(Dataset())
    with pytest.raises(QueryError) as exc:
        find_worklist(worklist, ds)  # raised at call time, before any row is read
    assert exc.value.status == STATUS_IDENTIFIER_DOES_NOT_MATCH == 0xA900
    assert "one item" in str(exc.value)


def test_wire_query_with_two_items_is_refused():
    ds = query({})
    ds.ScheduledProcedureStepSequence.append(Dataset())
    with pytest.raises(QueryError):
        parse_query(on_the_wire(ds))


# ---------------------------------------------------------------- speed


def test_queries_use_indexes_on_sqlite(sqlite_url):
    engine = make_engine(sqlite_url)
    cases = {
        "ix_worklist_patient_id": query({"PatientID": "P1"}, {
            "ScheduledProcedureStepStartDate": "20260101-20261231"}),
        # A station matches any of its AE titles: the date narrows it down.
        "ix_worklist_date_time": query({}, {
            "ScheduledStationAETitle": "MR3T", "ScheduledProcedureStepStartDate": "20260310"}),
        "ix_worklist_date_time ": query({}, {
            "ScheduledProcedureStepStartDate": "20260101-20261231",
            "ScheduledProcedureStepStartTime": "0800-1000"}),
        # The day's rows in answer order (no sort) beat the modality's rows sorted.
        "ix_worklist_date_time  ": query({}, {
            "Modality": "MR", "ScheduledProcedureStepStartDate": "20260310"}),
        "ix_worklist_modality_date": query({}, {"Modality": "CT"}),
        "ix_worklist_date_time   ": query({}, {
            "ScheduledProcedureStepStatus": "DISCONTINUED",
            "ScheduledProcedureStepStartDate": "20260310"}),
        "ix_worklist_status_date": query({}, {"ScheduledProcedureStepStatus": "DISCONTINUED"}),
    }
    with engine.connect() as conn:
        for index, ds in cases.items():
            sql = build_select(parse_query(ds)).compile(
                engine, compile_kwargs={"literal_binds": True}
            )
            plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert f"USING INDEX {index.strip()}" in plan, plan
            assert "SCAN worklist_items" not in plan
    engine.dispose()


def test_ten_thousand_answers_convert():
    rows = [make_row(str(100000 + i), "20260310", "080000",
                     patient_name="Müller^Jürgen" if i % 7 == 0 else f"Name{i}^Given")
            for i in range(10000)]
    q = parse_query(query(
        {k: "" for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                         "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
                         "RequestedProcedureDescription", "ReferringPhysicianName")},
        {k: "" for k in ("ScheduledStationAETitle", "Modality",
                         "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
                         "ScheduledPerformingPhysicianName", "ScheduledProcedureStepID",
                         "ScheduledProcedureStepDescription", "ScheduledProcedureStepStatus")},
    ))
    tuples = [tuple(r.get(c) for c in q.columns) for r in rows]
    # Speed is measured by bench/mwl_bench.py, not here.
    answers = [row_to_dataset(t, q) for t in tuples]
    assert len(answers) == 10000 and str(answers[7].PatientName) == "Müller^Jürgen"
    assert str(answers[9999].PatientName) == "Name9999^Given"
