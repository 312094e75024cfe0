"""Referenced Study Sequence, Coding Scheme Version and Timezone Offset From UTC at the
matcher (real database: SQLite, and PostgreSQL with WORKLIST_TEST_PG_URL).

Referenced Study Sequence is matched as PS3.4 C.2.2.2.6 describes a sequence key: a
zero-length sequence or an empty item is universal and gives every item whole; item
keys with values match rows that have an item with all of them (List of UID
Matching), and only such items come back, holding only the requested item keys.
"""

from __future__ import annotations

import datetime as dt
import warnings
from io import BytesIO
from zoneinfo import ZoneInfo

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import decode, encode
from sqlalchemy import insert

from mwl_service.matching import (
    STATUS_IDENTIFIER_DOES_NOT_MATCH,
    QueryError,
    build_select,
    find_worklist,
    parse_query,
    row_to_bytes,
    row_to_dataset,
)
from mwl_service.schema import WorklistItem
from tests.mwl_service.test_matching import insert_rows, make_row, on_the_wire, query

STUDY = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management: what references name
OTHER_CLASS = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
PRIOR, BASELINE, SCOUT = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", \
    "1.2.826.0.1.3680043.8.498.3"
CODES = dict(
    requested_procedure_code_value="MRBRAIN", requested_procedure_coding_scheme_designator="99L",
    requested_procedure_coding_scheme_version="2024", requested_procedure_code_meaning="MR brain",
    scheduled_protocol_code_value="T1", scheduled_protocol_coding_scheme_designator="99L",
    scheduled_protocol_code_meaning="T1 protocol",  # no version
)
ROWS = [
    make_row("401", "20260115", "080000", referenced_studies=f"{STUDY}\\{PRIOR}", **CODES),
    make_row("402", "20260115", "090000",
             referenced_studies=f"{STUDY}\\{BASELINE}\\{OTHER_CLASS}\\{SCOUT}"),
    make_row("403", "20260115", "100000"),  # no reference
]
BY_ACC = {r["accession_number"]: r["booking_id"] for r in ROWS}


@pytest.fixture
def references(engine):
    return insert_rows(engine, ROWS)


def ref_query(item: dict | None = None, *, zero_length: bool = False) -> Dataset:
    ds = query({"AccessionNumber": ""}, with_sps=False)
    if zero_length:
        ds.ReferencedStudySequence = []
    else:
        wanted = Dataset()
        with warnings.catch_warnings():  # "*" and such are matching values, not UIDs
            warnings.simplefilter("ignore", UserWarning)
            for keyword, value in (item or {}).items():
                setattr(wanted, keyword, value)
        ds.ReferencedStudySequence = [wanted]
    return ds


def answers(engine, ds: Dataset) -> dict[str, list[tuple]]:
    """booking -> its answer's items as (class, instance) ("-": key not returned),
    the same through a pydicom query and one decoded off the wire in both syntaxes."""
    seen = []
    for wire in (ds, on_the_wire(ds, True), on_the_wire(ds, False)):
        got = {}
        for a in find_worklist(engine, wire):
            got[BY_ACC[str(a.AccessionNumber)]] = [
                (item.get("ReferencedSOPClassUID", "-"), item.get("ReferencedSOPInstanceUID", "-"))
                for item in a.ReferencedStudySequence
            ]
        seen.append(got)
    assert seen[0] == seen[1] == seen[2]
    return seen[0]


@pytest.mark.parametrize("shape", ["zero-length", "empty-item"])
def test_an_empty_sequence_matches_every_row_and_returns_every_item_whole(references, shape):
    ds = ref_query(zero_length=shape == "zero-length")
    assert answers(references, ds) == {
        "401": [(STUDY, PRIOR)],
        "402": [(STUDY, BASELINE), (OTHER_CLASS, SCOUT)],
        "403": [],  # no reference: a zero-length sequence
    }


# pydicom warns when it decodes a matching value that is no valid UID ("*").
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_empty_item_keys_are_returned_without_matching(references):
    assert answers(references, ref_query({"ReferencedSOPInstanceUID": ""})) == {
        "401": [("-", PRIOR)], "402": [("-", BASELINE), ("-", SCOUT)], "403": []}
    assert answers(references, ref_query({"ReferencedSOPClassUID": "*"})) == {
        "401": [(STUDY, "-")], "402": [(STUDY, "-"), (OTHER_CLASS, "-")], "403": []}


def test_item_keys_with_values_match_and_only_matching_items_come_back(references):
    by_instance = ref_query({"ReferencedSOPClassUID": "", "ReferencedSOPInstanceUID": SCOUT})
    assert answers(references, by_instance) == {"402": [(OTHER_CLASS, SCOUT)]}
    by_class = ref_query({"ReferencedSOPClassUID": STUDY, "ReferencedSOPInstanceUID": ""})
    assert answers(references, by_class) == {
        "401": [(STUDY, PRIOR)], "402": [(STUDY, BASELINE)]}
    both = ref_query({"ReferencedSOPClassUID": STUDY, "ReferencedSOPInstanceUID": BASELINE})
    assert answers(references, both) == {"402": [(STUDY, BASELINE)]}
    # One item must have both: a class of one item and an instance of another is no match.
    crossed = ref_query({"ReferencedSOPClassUID": OTHER_CLASS, "ReferencedSOPInstanceUID": BASELINE})
    assert answers(references, crossed) == {}


def test_list_of_uid_matching_in_an_item_key(references):
    either = ref_query({"ReferencedSOPInstanceUID": [PRIOR, SCOUT]})
    assert answers(references, either) == {"401": [("-", PRIOR)], "402": [("-", SCOUT)]}


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("value", ["1.2.826.0.1.3680043.8.498.*", "1.2.826.0.1.3680043.8.498.?",
                                   "not a uid", "1.2.826.0.1.3680043.8.498.9"])
def test_uids_have_no_wildcards_and_an_unknown_uid_matches_nothing(references, value):
    assert answers(references, ref_query({"ReferencedSOPInstanceUID": value})) == {}


def test_a_reference_sequence_with_two_items_is_refused(references):
    ds = ref_query({"ReferencedSOPInstanceUID": PRIOR})
    ds.ReferencedStudySequence.append(Dataset())
    with pytest.raises(QueryError) as refused:
        find_worklist(references, ds)
    assert refused.value.status == STATUS_IDENTIFIER_DOES_NOT_MATCH


def test_the_sequence_is_not_returned_unless_requested(references):
    ds = query({"AccessionNumber": "", "StudyInstanceUID": ""}, with_sps=False)
    for a in find_worklist(references, ds):
        assert "ReferencedStudySequence" not in a


# ---------------------------------------------------------------- Coding Scheme Version


def codes_query(top_item: Dataset | None, step_item: Dataset | None) -> Dataset:
    ds = query({"AccessionNumber": ROWS[0]["accession_number"]}, {})
    ds.RequestedProcedureCodeSequence = [top_item] if top_item is not None else []
    ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = (
        [step_item] if step_item is not None else [])
    return ds


def test_a_whole_code_item_carries_its_coding_scheme_version(references):
    for ds in (codes_query(None, None), codes_query(Dataset(), Dataset())):
        for wire in (ds, on_the_wire(ds, True), on_the_wire(ds, False)):
            (a,) = find_worklist(references, wire)
            (procedure,) = a.RequestedProcedureCodeSequence
            assert [e.keyword for e in procedure] == [
                "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning"]
            assert procedure.CodingSchemeVersion == "2024"
            assert procedure["CodingSchemeVersion"].VR == "SH"
            (protocol,) = a.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
            assert protocol.CodeValue == "T1"
            assert protocol.CodingSchemeVersion == ""  # the code has none: zero length


def test_the_version_is_an_item_key_like_the_others(references):
    asked = Dataset()
    asked.CodeValue, asked.CodingSchemeVersion = "", ""
    not_asked = Dataset()
    not_asked.CodeValue = ""
    (a,) = find_worklist(references, codes_query(asked, not_asked))
    (procedure,) = a.RequestedProcedureCodeSequence
    assert [e.keyword for e in procedure] == ["CodeValue", "CodingSchemeVersion"]
    assert (procedure.CodeValue, procedure.CodingSchemeVersion) == ("MRBRAIN", "2024")
    (protocol,) = a.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert [e.keyword for e in protocol] == ["CodeValue"]


# ---------------------------------------------------------------- Timezone Offset From UTC


@pytest.mark.parametrize(
    ("zone", "date", "time_", "offset"),
    [
        ("America/Edmonton", "20260115", "080000", "-0700"),  # MST
        ("America/Edmonton", "20260715", "080000", "-0600"),  # MDT
        # The night DST starts (02:00 -> 03:00): each item its own offset.
        ("America/Edmonton", "20260308", "013000", "-0700"),
        ("America/Edmonton", "20260308", "033000", "-0600"),
        # The night DST ends, 01:00-02:00 comes twice: the first is still MDT.
        ("America/Edmonton", "20261101", "003000", "-0600"),
        ("America/Edmonton", "20261101", "023000", "-0700"),
        ("UTC", "20260115", "080000", "+0000"),
        ("Asia/Kolkata", "20260115", "080000", "+0530"),
        ("America/St_Johns", "20260715", "080000", "-0230"),
        ("Australia/Adelaide", "20260115", "080000", "+1030"),
    ],
)
def test_timezone_offset_is_the_site_zones_at_the_items_start(engine, zone, date, time_, offset):
    local = dt.datetime.strptime(date + time_, "%Y%m%d%H%M%S").replace(tzinfo=ZoneInfo(zone))
    row = make_row("501", date, time_, site_timezone=zone,
                   scheduled_start_utc=local.astimezone(dt.UTC))
    with engine.begin() as conn:
        conn.execute(insert(WorklistItem).values(**row))
    ds = query({"TimezoneOffsetFromUTC": "", "AccessionNumber": ""}, {
        "ScheduledProcedureStepStartDate": "", "ScheduledProcedureStepStartTime": ""})
    for wire in (ds, on_the_wire(ds, True), on_the_wire(ds, False)):
        (a,) = find_worklist(engine, wire)
        assert a.TimezoneOffsetFromUTC == offset
        assert a["TimezoneOffsetFromUTC"].VR == "SH"
        item = a.ScheduledProcedureStepSequence[0]
        assert (item.ScheduledProcedureStepStartDate, item.ScheduledProcedureStepStartTime) == (
            date, time_)


def test_a_timezone_offset_in_the_query_is_not_matched(references):
    ds = query({"TimezoneOffsetFromUTC": "+0900", "AccessionNumber": ""}, with_sps=False)
    got = {BY_ACC[str(a.AccessionNumber)]: a.TimezoneOffsetFromUTC
           for a in find_worklist(references, ds)}
    assert got == {"401": "-0700", "402": "-0700", "403": "-0700"}


def test_offset_not_returned_unless_requested(references):
    for a in find_worklist(references, query({"AccessionNumber": ""}, with_sps=False)):
        assert "TimezoneOffsetFromUTC" not in a


# ---------------------------------------------------------------- the bytes path


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("item", [None, {"ReferencedSOPClassUID": STUDY}])
def test_bytes_path_equals_pydicom_for_the_new_attributes(references, implicit, item):
    ds = ref_query(item, zero_length=item is None)
    ds.TimezoneOffsetFromUTC = ""
    ds.RequestedProcedureCodeSequence = []
    q = parse_query(ds)
    with references.connect() as conn:
        rows = conn.execute(build_select(q)).fetchall()
    assert len(rows) == (3 if item is None else 2)
    for row in rows:
        answer = row_to_dataset(row, q, implicit_vr=implicit)
        raw = row_to_bytes(row, q, implicit_vr=implicit)
        assert raw == encode(answer, implicit, True)
        back = decode(BytesIO(raw), implicit, True)
        assert len(back.TimezoneOffsetFromUTC) == 5
