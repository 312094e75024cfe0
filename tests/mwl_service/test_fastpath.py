"""The C-FIND fast path (mwl_service.fastpath): answers equal pynetdicom's own path
byte for byte with pynetdicom and DCMTK clients, framing per peer maximum PDU,
cancel, limits, the fallback, and the stall deadline against the real process."""

from __future__ import annotations

import datetime as dt
import queue
import socket
import threading
from io import BytesIO
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from mwl_service import fastpath, schema
from mwl_service.engine import make_engine
from mwl_service.fastpath import PendingFindResponses, pending_command_set
from tests.fixtures.dicom import (
    client_ae,
    insert_items,
    item_values,
    mwl_query,
    pynetdicom_find,
    run_findscu,
    sps,
    with_keys,
)

pytestmark = pytest.mark.timeout(60)

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

    engine = make_engine(sqlite_url)
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

    def find(server):
        return find_with(
            server.host,
            server.port,
            server.ae_title,
            query,
            transfer_syntaxes=transfer_syntaxes,
            max_pdu=max_pdu,
        )

    syntax, statuses, answers = find(fast)
    assert fast_sends["count"] == FAST_N + 1  # + the one-answer query
    assert syntax == (ImplicitVRLittleEndian if transfer_syntaxes else ExplicitVRLittleEndian)
    # every answer, then Success exactly once
    assert statuses == [0xFF00] * FAST_N + [0x0000]

    fast_sends["count"] = 0
    _, standard_statuses, expected = find(standard)
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


@pytest.mark.external
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


@pytest.mark.external
def test_findscu_cancel_with_the_fast_path(sqlite_url, mwl_server, fast_sends):
    """findscu --cancel 3 on a 20000-answer query: the answers stop early (a
    smaller result is all written before findscu's C-CANCEL can arrive)."""
    n = 20_000
    engine = make_engine(sqlite_url)
    insert_items(engine, n, scheduled_station_ae_title="FAST")
    engine.dispose()
    server = mwl_server(sqlite_url)
    keys = with_keys(sps("ScheduledStationAETitle", "FAST"))
    answers = run_findscu(server.host, server.port, server.ae_title, keys, extra=["--cancel", "3"])
    assert 3 <= len(answers) < n // 2
    assert 3 <= fast_sends["count"] < n // 2
    # the association is gone, the server still serves
    one = with_keys(sps("ScheduledStationAETitle", "FAST"), f"PatientID={answers[0].PatientID}")
    assert len(run_findscu(server.host, server.port, server.ae_title, one)) == 1


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
    """Stands in for the DUL: records the P-DATA primitives queued for the peer;
    its connection is `sock` (None: none that answers can be written to)."""

    def __init__(self, sock=None) -> None:
        self.sent: list = []
        self.to_provider_queue: queue.Queue = queue.Queue()
        self.socket = SimpleNamespace(socket=sock, ready=False)
        self.event_queue: queue.Queue = queue.Queue()

    def send_pdu(self, primitive) -> None:
        self.sent.append(primitive)

    def is_alive(self) -> bool:
        return True


def _fake_assoc(max_pdu: int, sock=None) -> SimpleNamespace:
    assoc = SimpleNamespace(
        is_requestor=False,
        is_established=True,
        requestor=SimpleNamespace(maximum_length=max_pdu),
        dul=_CapturingDul(sock),
        get_handlers=lambda event: [],
    )
    assoc.dimse = DIMSEServiceProvider(assoc)
    return assoc


def _pynetdicom_pending(request, identifier: bytes, max_pdu: int) -> list:
    """The P-DATA primitives pynetdicom's own send_msg queues for one Pending
    response (the call _c_find_scp makes)."""
    theirs = _fake_assoc(max_pdu)
    rsp = C_FIND()
    rsp.MessageID = request.MessageID
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = 0xFF00
    rsp.Identifier = BytesIO(identifier)
    theirs.dimse.send_msg(rsp, 5)
    return theirs.dul.sent


def _find_request() -> C_FIND:
    request = C_FIND()
    request.MessageID = 0x1234
    request.AffectedSOPClassUID = ModalityWorklistInformationFind
    return request


@pytest.mark.parametrize("max_pdu", [0, 7, 64, 4096, 16382])
@pytest.mark.parametrize("size", [1, 236, 4090, 4091, 22000])
def test_fast_path_frames_answers_exactly_like_pynetdicom(max_pdu, size):
    """Queued (TLS): the same P-DATA primitives, PDV for PDV, as pynetdicom's own
    send_msg for that peer max PDU."""
    request = _find_request()
    identifier = bytes(range(256)) * (size // 256) + bytes(size % 256)

    ours = _fake_assoc(max_pdu)
    responses = PendingFindResponses(ours, 5, request)
    assert not responses.direct
    responses.send(identifier)

    def pdv_lists(sent):
        return [[tuple(pdv) for pdv in p.presentation_data_value_list] for p in sent]

    assert pdv_lists(ours.dul.sent) == pdv_lists(_pynetdicom_pending(request, identifier, max_pdu))
    assert all(len(p) == 1 for p in pdv_lists(ours.dul.sent))  # one PDV per P-DATA
    if max_pdu:
        assert all(
            4 + 1 + len(pdv[1]) <= max_pdu  # item length, context ID, header + data
            for p in ours.dul.sent
            for pdv in p.presentation_data_value_list
        )


@pytest.mark.parametrize("max_pdu", [0, 64, 16382])
@pytest.mark.parametrize("sizes", [[1], [236, 4091], [22000, 1, 300] * 20])
def test_direct_writes_are_the_pdus_pynetdicom_would_send(max_pdu, sizes):
    """Plain TCP: the bytes written are exactly the P-DATA-TF PDUs pynetdicom's DUL
    would encode from its own primitives, answer after answer, nothing queued."""
    request = _find_request()
    identifiers = [bytes([n % 251]) * n for n in sizes]
    writer, reader = socket.socketpair()
    received: list[bytes] = []

    def read_all() -> None:
        while chunk := reader.recv(1 << 16):
            received.append(chunk)

    with writer, reader:
        thread = threading.Thread(target=read_all)
        thread.start()
        ours = _fake_assoc(max_pdu, writer)
        responses = PendingFindResponses(ours, 5, request)
        assert responses.direct
        expected = b""
        for identifier in identifiers:
            responses.send(identifier)
            for primitive in _pynetdicom_pending(request, identifier, max_pdu):
                expected += P_DATA_TF(primitive).encode()
        responses.flush()
        writer.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert ours.dul.sent == []
    assert b"".join(received) == expected


def test_direct_writes_to_a_peer_that_stopped_reading_give_up():
    """A write that makes no progress for the stall timeout ends the connection."""
    writer, reader = socket.socketpair()
    with writer, reader:
        writer.settimeout(0.5)
        ours = _fake_assoc(16382, writer)
        responses = PendingFindResponses(ours, 5, _find_request(), stall_timeout=0.5)
        with pytest.raises(fastpath.PeerStalled, match="took no answer"):
            for _ in range(10_000):
                responses.send(b"x" * 1000)
        assert not ours.is_established  # pynetdicom then sends no final response


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


@too_long_for_lo
def test_fast_path_falls_back_when_internals_differ(
    sqlite_url, mwl_server, many_rows, monkeypatch
):
    """Association internals not as expected: the standard path answers."""
    server = mwl_server(sqlite_url)

    def broken(*args, **kwargs):
        raise AttributeError("no such internals")

    monkeypatch.setattr(fastpath, "PendingFindResponses", broken)
    results, final = pynetdicom_find(server.host, server.port, server.ae_title, mwl_query())
    assert (len(results), final) == (FAST_N, 0x0000)


