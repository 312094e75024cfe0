"""The MWL server end to end: real server on 127.0.0.1, real SQLite file, DCMTK and
pynetdicom clients, the real `mwl-service` console script as a subprocess.

The matcher's exhaustive matching tests live with the matcher; here: that the server
answers real clients correctly, cancels, refuses, secures and shuts down.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from io import BytesIO
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)
from sqlalchemy import text
from sqlalchemy.orm import Session

from mwl_service import schema
from mwl_service import server as mwl_server_module
from mwl_service.server import PendingFindResponses, pending_command_set
from tests.fixtures.dicom import (
    associate,
    client_ae,
    insert_item,
    insert_items,
    item_values,
    mpps_attributes,
    mwl_query,
    pynetdicom_echo,
    pynetdicom_find,
    run_echoscu,
    run_findscu,
)

pytestmark = pytest.mark.timeout(60)


def sps(keyword: str, value: str | None = None) -> str:
    key = f"ScheduledProcedureStepSequence[0].{keyword}"
    return key if value is None else f"{key}={value}"


RETURN_KEYS = [
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    sps("ScheduledStationAETitle"),
    sps("ScheduledProcedureStepStartDate"),
    sps("ScheduledProcedureStepStartTime"),
    sps("Modality"),
    sps("ScheduledProcedureStepID"),
]


def with_keys(*matching: str) -> list[str]:
    """findscu -k list: the return keys, with the given matching keys replacing them."""
    names = {k.split("=", 1)[0] for k in matching}
    return [k for k in RETURN_KEYS if k not in names] + list(matching)


def rejection(assoc) -> tuple[int, int, int]:
    """(result, source, reason) of a rejected association request."""
    assert assoc.is_rejected, "association was not rejected"
    rsp = assoc.acceptor.primitive
    return rsp.result, rsp.result_source, rsp.diagnostic


@pytest.fixture
def rows(sqlite_url):
    """Three steps today: two on the 3T scanner, one EEG."""
    engine = schema.make_engine(sqlite_url)
    import datetime as dt
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("America/Edmonton")
    today = dt.datetime.now(tz).date()
    at = lambda h, m=0: dt.datetime.combine(today, dt.time(h, m), tzinfo=tz)
    made = {
        "jane": insert_item(engine, patient_name="Doe^Jane", start=at(9)),
        "john": insert_item(engine, patient_name="Smith^John", start=at(11, 30)),
        "eeg": insert_item(
            engine,
            patient_name="Eeg^Erin",
            start=at(10),
            scheduled_station_ae_title="EEG1",
            modality="EEG",
        ),
    }
    made["today"] = today.strftime("%Y%m%d")
    yield made
    engine.dispose()


# ----------------------------------------------------------------- C-ECHO


def test_echo_with_dcmtk_and_pynetdicom(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    proc = run_echoscu(server.host, server.port, server.ae_title)
    assert proc.returncode == 0, proc.stderr
    assert pynetdicom_echo(server.host, server.port, server.ae_title) == 0x0000


# ----------------------------------------------------------------- C-FIND


def test_findscu_worklist_query(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url)
    results = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        with_keys(
            sps("ScheduledStationAETitle", "MRI3T"),
            sps("ScheduledProcedureStepStartDate", rows["today"]),
        ),
    )
    by_id = {ds.PatientID: ds for ds in results}
    assert set(by_id) == {rows["jane"]["patient_id"], rows["john"]["patient_id"]}
    john = by_id[rows["john"]["patient_id"]]
    assert john.PatientName == "Smith^John"
    assert john.AccessionNumber == rows["john"]["accession_number"]
    assert john.StudyInstanceUID == rows["john"]["study_instance_uid"]
    step = john.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "MRI3T"
    assert step.ScheduledProcedureStepStartDate == rows["today"]
    assert step.ScheduledProcedureStepStartTime == "113000"
    assert step.Modality == "MR"
    assert step.ScheduledProcedureStepID == rows["john"]["scheduled_procedure_step_id"]

    results = run_findscu(server.host, server.port, server.ae_title, with_keys("PatientName=Smi*"))
    assert [ds.PatientID for ds in results] == [rows["john"]["patient_id"]]

    results = run_findscu(
        server.host, server.port, server.ae_title, with_keys(sps("Modality", "EEG"))
    )
    assert [ds.PatientName for ds in results] == ["Eeg^Erin"]


def test_transfer_syntaxes_explicit_preferred_implicit_accepted(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(
        ModalityWorklistInformationFind, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    )
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    try:
        assert assoc.is_established
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [ExplicitVRLittleEndian]
    finally:
        assoc.release()
        ae.shutdown()

    # DCMTK proposing Implicit VR Little Endian only
    results = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        with_keys(f"PatientID={rows['jane']['patient_id']}"),
        extra=["-xi"],
    )
    assert [(r.PatientName, r.AccessionNumber) for r in results] == [
        ("Doe^Jane", rows["jane"]["accession_number"])
    ]
    assert results[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "090000"


def test_pynetdicom_query_returns_the_requested_keys(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url)
    query = Dataset()
    query.PatientID = rows["jane"]["patient_id"]
    query.PatientName = ""
    query.AccessionNumber = ""
    item = Dataset()
    item.ScheduledProcedureStepStartTime = ""
    item.ScheduledStationAETitle = ""
    query.ScheduledProcedureStepSequence = [item]

    results, final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert final == 0x0000
    assert len(results) == 1
    (ds,) = results
    assert {e.keyword for e in ds} - {"SpecificCharacterSet"} == {
        "PatientID",
        "PatientName",
        "AccessionNumber",
        "ScheduledProcedureStepSequence",
    }
    assert {e.keyword for e in ds.ScheduledProcedureStepSequence[0]} == {
        "ScheduledProcedureStepStartTime",
        "ScheduledStationAETitle",
    }
    assert ds.PatientName == "Doe^Jane"
    assert ds.AccessionNumber == rows["jane"]["accession_number"]
    assert ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "090000"


def test_non_ascii_names_round_trip(sqlite_url, mwl_server):
    engine = schema.make_engine(sqlite_url)
    mueller = insert_item(engine, patient_name="Müller^Jürgen")
    yamada = insert_item(engine, patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう")
    engine.dispose()
    server = mwl_server(sqlite_url)

    # DCMTK: the response files carry ISO_IR 192 and decode to the same name
    (ds,) = run_findscu(
        server.host, server.port, server.ae_title, with_keys(f"PatientID={mueller['patient_id']}")
    )
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Müller^Jürgen"
    assert "Müller^Jürgen".encode() in ds["PatientName"].value.original_string

    # DCMTK, matching on the non-ASCII name itself
    results = run_findscu(
        server.host,
        server.port,
        server.ae_title,
        with_keys("SpecificCharacterSet=ISO_IR 192", "PatientName=Müller*"),
    )
    assert [r.PatientID for r in results] == [mueller["patient_id"]]

    # pynetdicom
    query = mwl_query(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 192")
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert final == 0x0000
    assert [(r.PatientID, str(r.PatientName)) for r in results] == [
        (mueller["patient_id"], "Müller^Jürgen")
    ]

    query = mwl_query(PatientID=yamada["patient_id"])
    (r,), final = pynetdicom_find(server.host, server.port, server.ae_title, query)
    assert r.PatientName.ideographic == "山田^太郎"
    assert r.PatientName.phonetic == "やまだ^たろう"


def test_c_cancel_stops_the_answers(sqlite_url, mwl_server, fast_sends):
    engine = schema.make_engine(sqlite_url)
    n = 1000
    made = insert_items(engine, n, scheduled_station_ae_title="BUSY")
    engine.dispose()
    server = mwl_server(sqlite_url)

    query = mwl_query(sps={"ScheduledStationAETitle": "BUSY"})
    with associate(server.host, server.port, server.ae_title) as assoc:
        assert assoc.is_established
        pending, final = 0, None
        for status, _identifier in assoc.send_c_find(
            query, ModalityWorklistInformationFind, msg_id=7
        ):
            if status.Status == 0xFF00:
                pending += 1
                if pending == 1:
                    assoc.send_c_cancel(7, query_model=ModalityWorklistInformationFind)
            else:
                final = status.Status
        assert final == 0xFE00  # Cancel
        # The fast path lets the DUL drain (and read the C-CANCEL) every
        # DUL_QUEUE_HIGH_WATER primitives: the cancel is seen long before the end.
        assert 1 <= pending < n // 2
        assert 1 <= fast_sends["count"] < n // 2
        # a C-CANCEL for no running query is ignored, even when the next query
        # reuses its Message ID; the association is still usable
        assoc.send_c_cancel(9, query_model=ModalityWorklistInformationFind)
        results = list(
            assoc.send_c_find(
                mwl_query(PatientID=made[0]["patient_id"]),
                ModalityWorklistInformationFind,
                msg_id=9,
            )
        )
        assert [s.Status for s, _ in results] == [0xFF00, 0x0000]
        assert results[0][1].PatientID == made[0]["patient_id"]


def test_max_results_limits_answers(sqlite_url, mwl_server, rows):
    server = mwl_server(sqlite_url, max_results=2)
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, mwl_query())
    assert final == 0x0000
    assert len(results) == 2


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_query_failures_get_failure_statuses(sqlite_url, mwl_server, rows, caplog):
    server = mwl_server(sqlite_url)
    bad = mwl_query(sps={"ScheduledProcedureStepStartDate": "tomorrow"})
    with associate(server.host, server.port, server.ae_title) as assoc:
        ((status, identifier),) = list(assoc.send_c_find(bad, ModalityWorklistInformationFind))
    assert status.Status == 0xC000
    assert "ScheduledProcedureStepStartDate" in status.ErrorComment
    assert identifier is None

    # a database failure: 0xC000, logged without patient data, server keeps serving
    engine = schema.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE worklist_items RENAME TO worklist_items_away"))
    try:
        with caplog.at_level(logging.INFO, logger="mwl_service"):
            results, final = pynetdicom_find(
                server.host, server.port, server.ae_title, mwl_query(PatientName="Doe*")
            )
        assert (results, final) == ([], 0xC000)
        assert "C-FIND from" in caplog.text and "failed: OperationalError" in caplog.text
        assert "Doe" not in caplog.text
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE worklist_items_away RENAME TO worklist_items"))
        engine.dispose()
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, mwl_query())
    assert (len(results), final) == (3, 0x0000)


def test_logs_name_keys_and_counts_but_no_patient_data(sqlite_url, mwl_server, rows, caplog):
    server = mwl_server(sqlite_url)
    query = mwl_query(
        sps={"Modality": "MR"}, PatientName="Smith^J*", PatientID=rows["john"]["patient_id"]
    )
    with caplog.at_level(logging.INFO):
        results, final = pynetdicom_find(
            server.host, server.port, server.ae_title, query, calling_aet="MRI3T"
        )
    assert (len(results), final) == (1, 0x0000)
    log = caplog.text
    assert "MRI3T@127.0.0.1:" in log  # association: calling AE title and address
    assert "PatientName" in log and "PatientID" in log and "Modality=MR" in log
    assert "1 result(s)" in log
    assert "Smith" not in log and rows["john"]["patient_id"] not in log


# ----------------------------------------------------------------- C-FIND fast path

FAST_N = 300
# A 22 KB answer: fragmented at every usual maximum PDU length (DCMTK 16384,
# pynetdicom 16382, findscu --max-pdu 4096). Too long for LO: clients warn only.
LONG_VALUE = "Protocol" * 2750
too_long_for_lo = pytest.mark.filterwarnings("ignore:The value length .* exceeds")
LONG_ROW = 7
FAST_NAMES = ["Müller^Jürgen", "Yamada^Tarou=山田^太郎=やまだ^たろう", "Doe^Jane", "O'Brien^Liam"]


@pytest.fixture
def many_rows(sqlite_url):
    """FAST_N steps on station FAST today, one minute apart; non-ASCII names; the
    row LONG_ROW (in start order) has a 22 KB requested procedure description."""
    from sqlalchemy import insert

    engine = schema.make_engine(sqlite_url)
    tz = ZoneInfo("America/Edmonton")
    first = dt.datetime.combine(dt.datetime.now(tz).date(), dt.time(7), tzinfo=tz)
    rows = []
    for i in range(FAST_N):
        extra = {"requested_procedure_description": LONG_VALUE} if i == LONG_ROW else {}
        rows.append(
            item_values(
                patient_name=FAST_NAMES[i % len(FAST_NAMES)],
                start=first + dt.timedelta(minutes=i),
                scheduled_station_ae_title="FAST",
                **extra,
            )
        )
    with engine.begin() as conn:
        conn.execute(insert(schema.WorklistItem), rows)
    engine.dispose()
    return rows


@pytest.fixture
def fast_sends(monkeypatch):
    """Counts the Pending responses sent by the fast path (servers run in-process)."""
    sent = {"count": 0}
    lock = threading.Lock()
    original = PendingFindResponses.send

    def counting_send(self, identifier):
        with lock:
            sent["count"] += 1
        return original(self, identifier)

    monkeypatch.setattr(PendingFindResponses, "send", counting_send)
    return sent


def find_on(assoc, query: Dataset, msg_id: int = 1) -> tuple[list[int], list[Dataset]]:
    """Every status of one C-FIND (pending and final) and the pending identifiers."""
    statuses, identifiers = [], []
    for status, identifier in assoc.send_c_find(
        query, ModalityWorklistInformationFind, msg_id=msg_id
    ):
        assert status is not None and "Status" in status, "no C-FIND response (timeout?)"
        statuses.append(int(status.Status))
        if status.Status == 0xFF00:
            identifiers.append(identifier)
    return statuses, identifiers


def find_with(host, port, aet, query, *, transfer_syntaxes=None, max_pdu=None):
    """C-FIND from a pynetdicom SCU proposing `transfer_syntaxes` with a maximum PDU
    length of `max_pdu`; afterwards the same association must still work (no stray
    or missing responses): a C-ECHO and a one-answer query."""
    ae = client_ae()
    if transfer_syntaxes is not None:
        ae.requested_contexts = []
        ae.add_requested_context(ModalityWorklistInformationFind, transfer_syntaxes)
        ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    assoc = ae.associate(host, port, ae_title=aet)
    try:
        assert assoc.is_established
        syntax = assoc.accepted_contexts[0].transfer_syntax[0]
        statuses, identifiers = find_on(assoc, query, msg_id=11)
        assert assoc.send_c_echo().Status == 0x0000
        one = mwl_query(PatientID=str(identifiers[0].PatientID))
        again, (first,) = find_on(assoc, one, msg_id=12)
        assert again == [0xFF00, 0x0000]
        assert first == identifiers[0]
        return syntax, statuses, identifiers
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


@too_long_for_lo
@pytest.mark.parametrize(
    ("transfer_syntaxes", "max_pdu"),
    [
        (None, None),  # Explicit VR LE negotiated, pynetdicom's default 16382
        ([ImplicitVRLittleEndian], None),
        (None, 4096),
        (None, 64),  # even the command set is fragmented
    ],
    ids=["explicit", "implicit-only", "max-pdu-4096", "max-pdu-64"],
)
def test_fast_path_answers_equal_the_standard_path(
    sqlite_url, mwl_server, many_rows, fast_sends, transfer_syntaxes, max_pdu
):
    fast = mwl_server(sqlite_url)
    standard = mwl_server(sqlite_url, find_fast_path=False)
    query = mwl_query(sps={"ScheduledStationAETitle": "FAST"})

    syntax, statuses, answers = find_with(
        fast.host,
        fast.port,
        fast.ae_title,
        query,
        transfer_syntaxes=transfer_syntaxes,
        max_pdu=max_pdu,
    )
    assert fast_sends["count"] == FAST_N + 1  # + the one-answer query
    assert syntax == (ImplicitVRLittleEndian if transfer_syntaxes else ExplicitVRLittleEndian)
    # every answer, then Success exactly once
    assert statuses == [0xFF00] * FAST_N + [0x0000]

    fast_sends["count"] = 0
    _, standard_statuses, expected = find_with(
        standard.host,
        standard.port,
        standard.ae_title,
        query,
        transfer_syntaxes=transfer_syntaxes,
        max_pdu=max_pdu,
    )
    assert fast_sends["count"] == 0
    assert standard_statuses == statuses
    # identical datasets: the raw elements compare byte for byte
    assert answers == expected
    implicit = syntax == ImplicitVRLittleEndian
    assert [encode(a, implicit, True) for a in answers] == [
        encode(e, implicit, True) for e in expected
    ]
    assert [str(a.PatientName) for a in answers[:4]] == FAST_NAMES
    assert answers[1].PatientName.ideographic == "山田^太郎"
    assert answers[0].SpecificCharacterSet == "ISO_IR 192"
    assert answers[LONG_ROW].RequestedProcedureDescription == LONG_VALUE
    assert [a.PatientID for a in answers] == [r["patient_id"] for r in many_rows]


@too_long_for_lo
@pytest.mark.parametrize(
    "extra", [[], ["-xi"], ["--max-pdu", "4096"]], ids=["explicit", "implicit-only", "max-pdu-4096"]
)
def test_fast_path_with_dcmtk_findscu(sqlite_url, mwl_server, many_rows, fast_sends, extra):
    fast = mwl_server(sqlite_url)
    standard = mwl_server(sqlite_url, find_fast_path=False)
    keys = with_keys(sps("ScheduledStationAETitle", "FAST"), "RequestedProcedureDescription")

    answers = run_findscu(fast.host, fast.port, fast.ae_title, keys, extra=extra)
    assert fast_sends["count"] == FAST_N
    expected = run_findscu(standard.host, standard.port, standard.ae_title, keys, extra=extra)
    assert fast_sends["count"] == FAST_N
    assert len(answers) == FAST_N
    assert answers == expected
    assert [a.PatientID for a in answers] == [r["patient_id"] for r in many_rows]
    assert str(answers[0].PatientName) == "Müller^Jürgen"
    assert answers[1].PatientName.ideographic == "山田^太郎"
    assert answers[LONG_ROW].RequestedProcedureDescription == LONG_VALUE


@too_long_for_lo
def test_findscu_cancel_with_the_fast_path(sqlite_url, mwl_server, many_rows, fast_sends):
    server = mwl_server(sqlite_url)
    keys = with_keys(sps("ScheduledStationAETitle", "FAST"))
    answers = run_findscu(server.host, server.port, server.ae_title, keys, extra=["--cancel", "3"])
    assert 3 <= len(answers) < FAST_N
    assert 3 <= fast_sends["count"] < FAST_N
    # the association is gone, the server still serves
    assert len(run_findscu(server.host, server.port, server.ae_title, keys)) == FAST_N


@too_long_for_lo
def test_standard_path_when_pynetdicom_logs_identifiers(
    sqlite_url, mwl_server, many_rows, fast_sends, monkeypatch
):
    """pynetdicom at DEBUG logs every response identifier: then it sends them too."""
    server = mwl_server(sqlite_url)
    monkeypatch.setattr(_config, "LOG_RESPONSE_IDENTIFIERS", True)
    results, final = pynetdicom_find(
        server.host,
        server.port,
        server.ae_title,
        mwl_query(sps={"ScheduledStationAETitle": "FAST"}),
    )
    assert (len(results), final) == (FAST_N, 0x0000)
    assert fast_sends["count"] == 0


@too_long_for_lo
def test_fast_path_respects_max_results(sqlite_url, mwl_server, many_rows, fast_sends):
    server = mwl_server(sqlite_url, max_results=10)
    results, final = pynetdicom_find(
        server.host,
        server.port,
        server.ae_title,
        mwl_query(sps={"ScheduledStationAETitle": "FAST"}),
    )
    assert (len(results), final) == (10, 0x0000)
    assert fast_sends["count"] == 10


class _CapturingDul:
    """Stands in for the DUL: records the P-DATA primitives queued for the peer."""

    def __init__(self) -> None:
        self.sent: list = []
        self.to_provider_queue: queue.Queue = queue.Queue()

    def send_pdu(self, primitive) -> None:
        self.sent.append(primitive)

    def is_alive(self) -> bool:
        return True


def _fake_assoc(max_pdu: int) -> SimpleNamespace:
    assoc = SimpleNamespace(
        is_requestor=False,
        is_established=True,
        requestor=SimpleNamespace(maximum_length=max_pdu),
        dul=_CapturingDul(),
        get_handlers=lambda event: [],
    )
    assoc.dimse = DIMSEServiceProvider(assoc)
    return assoc


@pytest.mark.parametrize("max_pdu", [0, 7, 64, 4096, 16382])
@pytest.mark.parametrize("size", [1, 236, 4090, 4091, 22000])
def test_fast_path_frames_answers_exactly_like_pynetdicom(max_pdu, size):
    """The same P-DATA primitives, PDV for PDV, as pynetdicom's own send_msg (the
    call _c_find_scp makes for each Pending response) for that peer max PDU."""
    request = C_FIND()
    request.MessageID = 0x1234
    request.AffectedSOPClassUID = ModalityWorklistInformationFind
    identifier = bytes(range(256)) * (size // 256) + bytes(size % 256)

    ours = _fake_assoc(max_pdu)
    PendingFindResponses(ours, 5, request).send(identifier)

    theirs = _fake_assoc(max_pdu)
    rsp = C_FIND()
    rsp.MessageID = request.MessageID
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = 0xFF00
    rsp.Identifier = BytesIO(identifier)
    theirs.dimse.send_msg(rsp, 5)

    def pdv_lists(dul):
        return [[tuple(pdv) for pdv in p.presentation_data_value_list] for p in dul.sent]

    assert pdv_lists(ours.dul) == pdv_lists(theirs.dul)
    assert all(len(p) == 1 for p in pdv_lists(ours.dul))  # one PDV per P-DATA
    if max_pdu:
        assert all(
            4 + 1 + len(pdv[1]) <= max_pdu  # item length, context ID, header + data
            for p in ours.dul.sent
            for pdv in p.presentation_data_value_list
        )


def test_pending_command_set():
    request = C_FIND()
    request.MessageID = 42
    request.AffectedSOPClassUID = ModalityWorklistInformationFind
    raw = pending_command_set(request)
    command = decode(BytesIO(raw), True, True)
    assert command.CommandGroupLength == len(raw) - 12  # after the group length element
    assert command.AffectedSOPClassUID == ModalityWorklistInformationFind
    assert command.CommandField == 0x8020  # C-FIND-RSP
    assert command.MessageIDBeingRespondedTo == 42
    assert command.CommandDataSetType != 0x0101  # a data set follows
    assert command.Status == 0xFF00
    assert [e.keyword for e in command] == [
        "CommandGroupLength",
        "AffectedSOPClassUID",
        "CommandField",
        "MessageIDBeingRespondedTo",
        "CommandDataSetType",
        "Status",
    ]


def test_fast_path_falls_back_when_internals_differ(sqlite_url, mwl_server, rows, monkeypatch):
    """Association internals not as expected: the standard path answers."""
    server = mwl_server(sqlite_url)

    def broken(*args, **kwargs):
        raise AttributeError("no such internals")

    monkeypatch.setattr(mwl_server_module, "PendingFindResponses", broken)
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, mwl_query())
    assert (len(results), final) == (3, 0x0000)


# ----------------------------------------------------------------- AE titles, limits


def test_allow_list_rejects_unknown_calling_ae(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url, allowed_aets=("MRI3T", "ECHOSCU"))
    with associate(server.host, server.port, server.ae_title, calling_aet="INTRUDER") as assoc:
        # rejected-permanent, service-user, calling AE title not recognised
        assert rejection(assoc) == (0x01, 0x01, 0x03)
    proc = run_echoscu(server.host, server.port, server.ae_title, calling_aet="FINDSCU")
    assert proc.returncode != 0

    assert pynetdicom_echo(server.host, server.port, server.ae_title, calling_aet="MRI3T") == 0
    proc = run_echoscu(server.host, server.port, server.ae_title, calling_aet="ECHOSCU")
    assert proc.returncode == 0, proc.stderr


def test_wrong_called_ae_title_is_rejected(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url)
    with associate(server.host, server.port, "NOT_THE_MWL") as assoc:
        # rejected-permanent, service-user, called AE title not recognised
        assert rejection(assoc) == (0x01, 0x01, 0x07)
    proc = run_echoscu(server.host, server.port, "NOT_THE_MWL")
    assert proc.returncode != 0


def test_max_associations(sqlite_url, mwl_server):
    server = mwl_server(sqlite_url, max_associations=2)
    with (
        associate(server.host, server.port, server.ae_title) as first,
        associate(server.host, server.port, server.ae_title) as second,
    ):
        assert first.is_established and second.is_established
        with associate(server.host, server.port, server.ae_title) as third:
            # rejected-transient, service-provider (presentation), local limit exceeded
            assert rejection(third) == (0x02, 0x03, 0x02)
        assert first.send_c_echo().Status == 0
    # both released: a new association is accepted again
    deadline = time.monotonic() + 5
    while pynetdicom_echo(server.host, server.port, server.ae_title) != 0:
        assert time.monotonic() < deadline, "association slots were not freed"
        time.sleep(0.1)


# ----------------------------------------------------------------- TLS


def test_tls_with_client_certificates(sqlite_url, mwl_server, rows, tls_files):
    server = mwl_server(
        sqlite_url,
        tls_cert=str(tls_files.server_cert),
        tls_key=str(tls_files.server_key),
        tls_ca=str(tls_files.ca_cert),
    )
    host, port, aet = server.host, server.port, server.ae_title
    good = (tls_files.client_context(), "localhost")

    # a silent plain TCP client must not hold up anyone's handshake
    idle = socket.create_connection((host, port))
    try:
        assert pynetdicom_echo(host, port, aet, tls_args=good) == 0x0000
        results, final = pynetdicom_find(host, port, aet, mwl_query(), tls_args=good)
        assert (len(results), final) == (3, 0x0000)
    finally:
        idle.close()

    # DCMTK over TLS with the client certificate
    tls = [
        "+tls",
        str(tls_files.client_key),
        str(tls_files.client_cert),
        "+cf",
        str(tls_files.ca_cert),
    ]
    proc = run_echoscu(host, port, aet, extra=tls)
    assert proc.returncode == 0, proc.stderr
    results = run_findscu(
        host, port, aet, with_keys(f"PatientID={rows['john']['patient_id']}"), extra=tls
    )
    assert [r.PatientName for r in results] == ["Smith^John"]

    # refused: plain DICOM, TLS without a client certificate, a certificate of another CA
    assert pynetdicom_echo(host, port, aet) is None
    assert run_echoscu(host, port, aet).returncode != 0
    no_cert = (tls_files.client_context(with_cert=False), "localhost")
    assert pynetdicom_echo(host, port, aet, tls_args=no_cert) is None
    untrusted = (tls_files.client_context(trusted=False), "localhost")
    assert pynetdicom_echo(host, port, aet, tls_args=untrusted) is None
    # and still serving
    assert pynetdicom_echo(host, port, aet, tls_args=good) == 0x0000


def test_tls_without_client_certificates(sqlite_url, mwl_server, tls_files):
    server = mwl_server(
        sqlite_url, tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key)
    )
    anonymous = (tls_files.client_context(with_cert=False), "localhost")
    assert pynetdicom_echo(server.host, server.port, server.ae_title, tls_args=anonymous) == 0
    assert pynetdicom_echo(server.host, server.port, server.ae_title) is None


# ----------------------------------------------------------------- the console script


def test_console_script_serves_and_stops_cleanly(sqlite_url, mwl_service_process):
    engine = schema.make_engine(sqlite_url)
    for name in ("Müller^Jürgen", "Doe^Jane", "Roe^Richard"):
        insert_item(engine, patient_name=name)
    row = insert_item(engine, patient_name="Poe^Edgar", scheduled_station_ae_title="OTHER")

    service = mwl_service_process(
        sqlite_url,
        "--allowed-aet",
        "PYNETDICOM,FINDSCU",
        "--allowed-aet",
        "ECHOSCU",
        "--max-results",
        "2",
        "--max-associations",
        "4",
    )
    host, port, aet = service.host, service.port, service.ae_title

    results = run_findscu(host, port, aet, with_keys(sps("ScheduledStationAETitle", "MRI3T")))
    assert len(results) == 2  # --max-results
    assert run_echoscu(host, port, aet).returncode == 0
    assert pynetdicom_echo(host, port, aet, calling_aet="STRANGER") is None
    results, final = pynetdicom_find(host, port, aet, mwl_query(PatientName="Müller*"))
    assert [str(r.PatientName) for r in results] == ["Müller^Jürgen"]
    assert final == 0x0000

    uid = generate_uid()
    attrs = mpps_attributes(
        row["study_instance_uid"], row["accession_number"], row["scheduled_procedure_step_id"]
    )
    with associate(host, port, aet) as assoc:
        status, _ = assoc.send_n_create(attrs, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0

    assert service.stop(signal.SIGTERM) == 0
    log = service.output()
    assert "Received SIGTERM" in log and "MWL service stopped" in log
    assert "rejected: calling AE title not on the allow-list" in log
    assert "Müller" not in log and "Poe" not in log  # no patient names at INFO

    # restarted on the same port: the MPPS instance is still there
    service = mwl_service_process(sqlite_url, "--allowed-aet", "PYNETDICOM", port=port)
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    with associate(host, port, aet) as assoc:
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0
    with Session(engine) as s:
        item = s.get(schema.WorklistItem, row["id"])
        assert (item.step_status, item.step_status_owner) == ("COMPLETED", "mpps")
    engine.dispose()
    assert service.stop(signal.SIGINT) == 0


def test_module_help_documents_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "mwl_service", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    for option in (
        "--db-url",
        "--ae-title",
        "--host",
        "--port",
        "--allowed-aet",
        "--max-associations",
        "--network-timeout",
        "--acse-timeout",
        "--dimse-timeout",
        "--max-results",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--log-level",
        "WORKLIST_DB_URL",
        "SIGTERM",
    ):
        assert option in proc.stdout


def test_bad_arguments_and_busy_port_fail(sqlite_url, mwl_service_process):
    proc = subprocess.run(
        [sys.executable, "-m", "mwl_service", "--ae-title", "X" * 17],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "1 to 16 characters" in proc.stderr

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        service = mwl_service_process(sqlite_url, port=busy.getsockname()[1], wait=False)
        assert service.proc.wait(timeout=30) == 1
        assert "Cannot start the MWL service" in service.output()


def test_empty_database_is_reported_with_its_absolute_path(tmp_path, mwl_service_process):
    """Started from the wrong directory, the default relative SQLite path makes a new,
    empty database: the log says so and names the absolute file."""
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'worklist.db'}"
    service = mwl_service_process(url)
    assert service.stop() == 0
    out = service.output()
    assert f"SQLite file {tmp_path / 'elsewhere' / 'worklist.db'}" in out
    assert "has no rows yet" in out


def test_unparsable_database_url_names_the_setting(tmp_path):
    env = {**os.environ, "WORKLIST_DB_URL": "not a url"}
    proc = subprocess.run(
        [sys.executable, "-m", "mwl_service", "--port", "0"],
        check=False, capture_output=True, text=True, timeout=30, env=env,
    )
    assert proc.returncode == 1
    assert "database from WORKLIST_DB_URL" in proc.stderr
