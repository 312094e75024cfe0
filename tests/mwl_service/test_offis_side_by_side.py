"""DCMTK's own OFFIS sample worklists, served by wlmscpfs and by mwl-service side by side.

The ten sample worklist files (/usr/share/doc/dcmtk/examples/wlistdb) go into the
worklist database as rows and, unchanged, into a wlmscpfs data directory; every
sample query (wlistqry*.dump) goes to both through DCMTK findscu. mwl-service must
answer the same worklist items, with every value wlmscpfs returns. Known, deliberate
differences: wlmscpfs copies code sequences from the query (ours come from the row,
empty without a code) and returns an empty step status where ours says SCHEDULED.
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
# wlmscpfs copies these from the query / leaves them empty: not compared.
NOT_COMPARED = {"SpecificCharacterSet", "RequestedProcedureCodeSequence",
                "ScheduledProtocolCodeSequence", "ScheduledProcedureStepStatus"}


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
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        for dump in samples:
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


def _same_values(theirs: Dataset, ours: Dataset, where: str) -> list[str]:
    wrong = []
    for elem in theirs:
        if elem.keyword in NOT_COMPARED:
            continue
        if elem.VR == "SQ":
            if not elem.value:
                continue
            mine = ours.get(elem.keyword)
            if not mine:
                wrong.append(f"{where}{elem.keyword}: missing")
                continue
            wrong += _same_values(elem.value[0], mine[0], f"{where}{elem.keyword}>")
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
]


@pytest.mark.parametrize("keys", EXTRA_QUERIES, ids=["station", "multi-console", "name+date",
                                                     "latin-1"])
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
    assert compared >= 10  # the comparison compared something
