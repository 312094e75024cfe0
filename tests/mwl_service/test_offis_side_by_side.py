"""DCMTK's own OFFIS sample worklists, served by wlmscpfs and by mwl-service side by side.

The ten sample worklist files (/usr/share/doc/dcmtk/examples/wlistdb) go into the
worklist database as rows and, unchanged, into a wlmscpfs data directory; every
sample query (wlistqry*.dump) goes to both through DCMTK findscu. mwl-service must
answer the same worklist items, with every value wlmscpfs returns. None of DCMTK's
samples carries a Referenced Study Sequence or a coded procedure, so an eleventh
item is wklist4 given both (two referenced studies; both code sequences with a
Coding Scheme Version): those are compared too, item by item.

Known, deliberate differences: for an item without a code wlmscpfs copies the
query's code sequence item (empty values; ours is a zero-length sequence, never
copied from the query), it returns an empty step status where ours says SCHEDULED,
and it does not match on Referenced Study Sequence item keys (it returns every
item; ours returns the items the keys match, PS3.4 C.2.2.2.6).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import insert

from mwl_service import schema
from mwl_service.engine import make_engine
from tests.fixtures.dicom import HOST, SERVER_AET, free_port, run_findscu, wait_for_echo

pytestmark = pytest.mark.external

EXAMPLES = Path("/usr/share/doc/dcmtk/examples")
WLMSCPFS_AET = "OFFIS"

TOP = {
    "AccessionNumber": "accession_number", "PatientName": "patient_name",
    "PatientID": "patient_id", "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex", "MedicalAlerts": "medical_alerts", "Allergies": "allergies",
    "StudyInstanceUID": "study_instance_uid", "RequestingPhysician": "requesting_physician",
    "RequestedProcedureDescription": "requested_procedure_description",
    "RequestedProcedureID": "requested_procedure_id",
    "RequestedProcedurePriority": "requested_procedure_priority",
}
SPS = {
    "Modality": "modality", "RequestedContrastAgent": "requested_contrast_agent",
    "ScheduledStationAETitle": "scheduled_station_ae_title",
    "ScheduledProcedureStepStartDate": "scheduled_start_date",
    "ScheduledProcedureStepStartTime": "scheduled_start_time",
    "ScheduledPerformingPhysicianName": "performing_physician_name",
    "ScheduledProcedureStepDescription": "scheduled_procedure_step_description",
    "ScheduledProcedureStepID": "scheduled_procedure_step_id",
    "ScheduledStationName": "scheduled_station_name",
    "ScheduledProcedureStepLocation": "scheduled_procedure_step_location",
    "PreMedication": "pre_medication",
    "CommentsOnTheScheduledProcedureStep": "scheduled_procedure_step_comments",
}
# wlmscpfs leaves the status empty; the character set may differ in its terms only.
NOT_COMPARED = {"SpecificCharacterSet", "ScheduledProcedureStepStatus"}
CODES = {"RequestedProcedureCodeSequence": "requested_procedure",
         "ScheduledProtocolCodeSequence": "scheduled_protocol"}
CODE_KEYWORDS = {"CodeValue": "code_value", "CodingSchemeDesignator": "coding_scheme_designator",
                 "CodingSchemeVersion": "coding_scheme_version", "CodeMeaning": "code_meaning"}
DETACHED_STUDY = "1.2.840.10008.3.1.2.3.1"
REFERENCED = ("1.2.276.0.7230010.3.1.2.4001", "1.2.276.0.7230010.3.1.2.4002")
# What the eleventh sample adds to wklist4 (tags in order: dump2dcm keeps any order).
EXTRA_TOP = f"""(0008,1110) SQ
(fffe,e000) -
(0008,1150) UI  {DETACHED_STUDY}
(0008,1155) UI  {REFERENCED[0]}
(fffe,e00d) -
(fffe,e000) -
(0008,1150) UI  {DETACHED_STUDY}
(0008,1155) UI  {REFERENCED[1]}
(fffe,e00d) -
(fffe,e0dd) -
(0032,1064) SQ
(fffe,e000) -
(0008,0100) SH  MRBRAIN
(0008,0102) SH  99OFFIS
(0008,0103) SH  2024.1
(0008,0104) LO  MR brain
(fffe,e00d) -
(fffe,e0dd) -
"""
EXTRA_STEP = """(0040,0008) SQ
(fffe,e000) -
(0008,0100) SH  T1SE
(0008,0102) SH  99OFFIS
(0008,0103) SH  7
(0008,0104) LO  T1 spin echo
(fffe,e00d) -
(fffe,e0dd) -
"""


def with_references(dump: str) -> str:
    """A sample's dump text with EXTRA_TOP at top level and EXTRA_STEP in its step, as
    an item of its own (accession number 00011, its own Study Instance UID)."""
    own = {"(0008,0050)": "(0008,0050) SH  00011\n",
           "(0020,000d)": "(0020,000d) UI  1.2.276.0.7230010.3.2.111\n"}
    lines = [own.get(line[:11], line) for line in dump.splitlines(keepends=True)]
    step = next(i for i, line in enumerate(lines) if line.startswith("(0040,0100)"))
    inside = next(i for i, line in enumerate(lines) if line.startswith("(0040,0009)"))
    return "".join(lines[:step] + [EXTRA_TOP] + lines[step:inside] + [EXTRA_STEP]
                   + lines[inside:])


def _text(ds: Dataset, keyword: str) -> str:
    if keyword not in ds or ds[keyword].value is None:
        return ""
    value = ds[keyword].value
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def sample_row(ds: Dataset, name: str) -> dict:
    import datetime as dt

    item = ds.ScheduledProcedureStepSequence[0]
    row = {column: _text(ds, kw) for kw, column in TOP.items()}
    row.update({column: _text(item, kw) for kw, column in SPS.items()})
    for where in (ds, item):
        for keyword, prefix in CODES.items():
            for code in where.get(keyword) or []:
                row.update({f"{prefix}_{col}": _text(code, kw)
                            for kw, col in CODE_KEYWORDS.items()})
    row["referenced_studies"] = "\\".join(
        f"{ref.ReferencedSOPClassUID}\\{ref.ReferencedSOPInstanceUID}"
        for ref in ds.get("ReferencedStudySequence") or [])
    start = dt.datetime.strptime(
        row["scheduled_start_date"] + row["scheduled_start_time"][:6], "%Y%m%d%H%M%S"
    ).replace(tzinfo=dt.UTC)
    row.update(
        source="offis", booking_id=name, site_timezone="UTC", scheduled_start_utc=start,
        content_hash=hashlib.sha256(name.encode()).hexdigest(),
    )
    return row


@pytest.fixture
def offis(tmp_path, sqlite_url, mwl_server):
    dump2dcm, wlmscpfs = shutil.which("dump2dcm"), shutil.which("wlmscpfs")
    samples = sorted((EXAMPLES / "wlistdb" / "OFFIS").glob("wklist*.dump"))
    if not (dump2dcm and wlmscpfs and samples):
        # A real client is part of the test: missing DCMTK fails loudly (make test installs it).
        pytest.fail("DCMTK (dump2dcm, wlmscpfs) or its sample worklists are not installed")
    aet_dir = tmp_path / "wlistdb" / WLMSCPFS_AET
    aet_dir.mkdir(parents=True)
    (aet_dir / "lockfile").touch()
    referenced = tmp_path / "wklist4refs.dump"
    referenced.write_text(with_references((samples[0].parent / "wklist4.dump").read_text()))
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        for dump in [*samples, referenced]:
            wl = aet_dir / (dump.stem + ".wl")
            subprocess.run([dump2dcm, str(dump), str(wl)], check=True, capture_output=True)
            conn.execute(insert(schema.WorklistItem).values(**sample_row(dcmread(wl), dump.stem)))
    engine.dispose()
    queries = []
    for dump in sorted((EXAMPLES / "wlistqry").glob("wlistqry*.dump")):
        out = tmp_path / (dump.stem + ".dcm")
        subprocess.run([dump2dcm, str(dump), str(out)], check=True, capture_output=True)
        queries.append(out)

    port = free_port()
    proc = subprocess.Popen(
        [wlmscpfs, "-csk", "-dfp", str(tmp_path / "wlistdb"), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(HOST, port, WLMSCPFS_AET, proc=proc)
        # The samples are from the 1990s: offer every step, whatever its age.
        ours = mwl_server(sqlite_url, offer_past_days=None)
        yield queries, port, ours
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _holds_values(items) -> bool:
    return any(e.VR == "SQ" and _holds_values(e.value) or e.VR != "SQ" and not e.is_empty
               for item in items for e in item)


def _same_values(theirs: Dataset, ours: Dataset, where: str) -> list[str]:
    wrong = []
    for elem in theirs:
        if elem.keyword in NOT_COMPARED:
            continue
        if elem.VR == "SQ":
            # Items without any value: wlmscpfs's copy of the query's item.
            if not _holds_values(elem.value):
                continue
            mine = ours.get(elem.keyword) or []
            if len(mine) != len(elem.value):
                wrong.append(f"{where}{elem.keyword}: {len(mine)} items, not {len(elem.value)}")
                continue
            for n, (their_item, my_item) in enumerate(zip(elem.value, mine)):
                wrong += _same_values(their_item, my_item, f"{where}{elem.keyword}[{n}]>")
            continue
        value = _text(theirs, elem.keyword)
        if value and _text(ours, elem.keyword) != value:
            wrong.append(f"{where}{elem.keyword}: {_text(ours, elem.keyword)!r} != {value!r}")
        # Explicit VR on the wire: a console reads the VR we send, not the dictionary's.
        if elem.keyword in ours and ours[elem.keyword].VR != elem.VR:
            wrong.append(f"{where}{elem.keyword}: VR {ours[elem.keyword].VR} != {elem.VR}")
    return wrong


# More queries on the samples' data: a station of a multi-console room, a name
# pattern with a date range, and a Latin-1 query.
EXTRA_QUERIES = [
    ["AccessionNumber", "PatientName", "(0040,0100)[0].ScheduledStationAETitle=NN77"],
    ["AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle=AA32",
     "(0040,0100)[0].Modality"],
    ["PatientName=HAYDN*", "AccessionNumber",
     "(0040,0100)[0].ScheduledProcedureStepStartDate=19950101-19961231"],
    ["SpecificCharacterSet=ISO_IR 100", "PatientName", "MedicalAlerts", "Allergies",
     "(0040,0100)[0].RequestedContrastAgent", "(0040,0100)[0].PreMedication"],
    # The attributes of the eleventh sample: whole sequences, and named item keys.
    ["AccessionNumber", "ReferencedStudySequence", "RequestedProcedureCodeSequence",
     "(0040,0100)[0].ScheduledProtocolCodeSequence"],
    ["AccessionNumber", "ReferencedStudySequence[0].ReferencedSOPInstanceUID",
     "RequestedProcedureCodeSequence[0].CodingSchemeVersion",
     "RequestedProcedureCodeSequence[0].CodeValue",
     "(0040,0100)[0].ScheduledProtocolCodeSequence[0].CodingSchemeVersion"],
]


@pytest.mark.parametrize("keys", EXTRA_QUERIES, ids=["station", "multi-console", "name+date",
                                                     "latin-1", "references+codes",
                                                     "item-keys"])
def test_more_queries_on_the_samples(offis, keys):
    _, dcmtk_port, ours = offis
    theirs = run_findscu(HOST, dcmtk_port, WLMSCPFS_AET, keys)
    mine = run_findscu(ours.host, ours.port, SERVER_AET, keys)
    assert theirs and len(mine) == len(theirs)
    unpaired = list(mine)
    for answer in theirs:
        match = next((m for m in unpaired if not _same_values(answer, m, "")), None)
        assert match is not None, [_same_values(answer, m, "") for m in unpaired]
        unpaired.remove(match)


def test_every_sample_query_gets_the_answers_wlmscpfs_gives(offis):
    queries, dcmtk_port, ours = offis
    compared = 0
    for query in queries:
        theirs = run_findscu(HOST, dcmtk_port, WLMSCPFS_AET, [], query_file=str(query))
        mine = run_findscu(ours.host, ours.port, SERVER_AET, [], query_file=str(query))
        assert len(mine) == len(theirs), query.name
        # Each of their answers has its own among ours: every value they give, equal.
        unpaired = list(mine)
        for answer in theirs:
            match = next((m for m in unpaired if not _same_values(answer, m, "")), None)
            assert match is not None, (
                query.name, [_same_values(answer, m, "") for m in unpaired])
            unpaired.remove(match)
            compared += 1
    assert compared >= 11  # the comparison compared something


def test_the_eleventh_sample_carries_its_references_and_versions_through_findscu(offis):
    _, dcmtk_port, ours = offis
    keys = ["AccessionNumber=00011", "ReferencedStudySequence", "RequestedProcedureCodeSequence",
            "(0040,0100)[0].ScheduledProtocolCodeSequence", "TimezoneOffsetFromUTC"]
    (theirs,) = run_findscu(HOST, dcmtk_port, WLMSCPFS_AET, keys)
    (mine,) = run_findscu(ours.host, ours.port, SERVER_AET, keys)
    for answer in (theirs, mine):
        assert [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID)
                for r in answer.ReferencedStudySequence] == [(DETACHED_STUDY, u) for u in REFERENCED]
        (procedure,) = answer.RequestedProcedureCodeSequence
        assert (procedure.CodeValue, procedure.CodingSchemeVersion) == ("MRBRAIN", "2024.1")
        (protocol,) = answer.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
        assert (protocol.CodeValue, protocol.CodingSchemeVersion) == ("T1SE", "7")
    assert mine.TimezoneOffsetFromUTC == "+0000"  # the samples are stored in UTC


def test_referenced_study_item_keys_match_on_ours_only(offis):
    _, dcmtk_port, ours = offis
    keys = ["AccessionNumber",
            f"ReferencedStudySequence[0].ReferencedSOPInstanceUID={REFERENCED[1]}"]
    (hit,) = run_findscu(ours.host, ours.port, SERVER_AET, keys)
    assert hit.AccessionNumber == "00011"
    assert [r.ReferencedSOPInstanceUID for r in hit.ReferencedStudySequence] == [REFERENCED[1]]
    # wlmscpfs treats the key as a return key: every item comes back.
    assert len(run_findscu(HOST, dcmtk_port, WLMSCPFS_AET, keys)) == 11
