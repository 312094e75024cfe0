"""Quick ACK on every accepted connection: each read of the server's side of an
association (plain TCP and TLS; C-ECHO, C-FIND and MPPS) is preceded by
TCP_QUICKACK, and the kernel is in quick-ACK mode when the read starts. Observed on
the in-process server's real sockets, through pynetdicom's own receive path."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from mwl_service import quickack
from mwl_service.quickack import QuickAckSocket, adopt_socket
from tests.fixtures.dicom import (
    associate,
    insert_item,
    mpps_attributes,
    mwl_query,
    pynetdicom_echo,
    pynetdicom_find,
)

pytestmark = pytest.mark.timeout(60)

QUICKACK = getattr(socket, "TCP_QUICKACK", None)
needs_quickack = pytest.mark.skipif(QUICKACK is None, reason="no TCP_QUICKACK on this platform")


class ServerSocketCalls:
    """What happens on the sockets whose local port is one of ``ports``: for each
    socket object, in order, ("quickack",) for every TCP_QUICKACK=1 set and
    ("recv", kernel quick-ACK state) for every read."""

    def __init__(self) -> None:
        self.ports: set[int] = set()
        self.calls: dict[object, list[tuple]] = {}
        self._lock = threading.Lock()

    def log(self, sock: socket.socket, call: tuple) -> None:
        try:
            port = socket.socket.getsockname(sock)[1]
        except OSError:
            return
        if port in self.ports:
            with self._lock:
                self.calls.setdefault(sock, []).append(call)

    def with_reads(self) -> dict[object, list[tuple]]:
        return {s: c for s, c in self.calls.items() if any(x[0] == "recv" for x in c)}


@pytest.fixture
def server_socket_calls(monkeypatch) -> ServerSocketCalls:
    calls = ServerSocketCalls()
    real_recv, real_tls_recv = socket.socket.recv, ssl.SSLSocket.recv
    real_setsockopt = socket.socket.setsockopt

    def state(sock) -> int:
        return socket.socket.getsockopt(sock, socket.IPPROTO_TCP, QUICKACK)

    def recv(self, *args, **kwargs):
        calls.log(self, ("recv", state(self)))
        return real_recv(self, *args, **kwargs)

    def tls_recv(self, *args, **kwargs):
        calls.log(self, ("recv", state(self)))
        return real_tls_recv(self, *args, **kwargs)

    def setsockopt(self, level, option, *value):
        if (level, option, value) == (socket.IPPROTO_TCP, QUICKACK, (1,)):
            calls.log(self, ("quickack",))
        return real_setsockopt(self, level, option, *value)

    monkeypatch.setattr(socket.socket, "recv", recv)
    monkeypatch.setattr(ssl.SSLSocket, "recv", tls_recv)
    monkeypatch.setattr(socket.socket, "setsockopt", setsockopt)
    return calls


def run_every_service(server, engine, tls_args=None) -> None:
    """One association each: C-ECHO, C-FIND, MPPS N-CREATE, MPPS N-SET."""
    row = insert_item(engine)
    host, port, aet = server.host, server.port, server.ae_title
    assert pynetdicom_echo(host, port, aet, tls_args=tls_args) == 0x0000
    results, final = pynetdicom_find(host, port, aet, mwl_query(), tls_args=tls_args)
    assert (len(results), final) == (1, 0x0000)
    uid = generate_uid()
    attrs = mpps_attributes(
        row["study_instance_uid"], row["accession_number"], row["scheduled_procedure_step_id"]
    )
    with associate(host, port, aet, calling_aet="MRI3T", tls_args=tls_args) as assoc:
        status, _ = assoc.send_n_create(attrs, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
    changes = Dataset()
    changes.PerformedProcedureStepStatus = "DISCONTINUED"
    with associate(host, port, aet, calling_aet="MRI3T", tls_args=tls_args) as assoc:
        status, _ = assoc.send_n_set(changes, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000


def assert_every_read_quick_acked(calls: ServerSocketCalls, associations: int) -> None:
    sockets = calls.with_reads()
    assert len(sockets) == associations
    for events in sockets.values():
        reads = [i for i, event in enumerate(events) if event[0] == "recv"]
        # A-ASSOCIATE-RQ, the request's P-DATA-TF PDUs, A-RELEASE-RQ: 2 reads each.
        assert len(reads) >= 6
        assert all(i > 0 and events[i - 1] == ("quickack",) for i in reads), events
        assert all(events[i][1] == 1 for i in reads), events  # the kernel's state


@needs_quickack
def test_every_read_of_a_plain_association_is_quick_acked(
    db_url, engine, mwl_server, server_socket_calls
):
    server = mwl_server(db_url)
    server_socket_calls.ports.add(server.port)
    run_every_service(server, engine)
    assert_every_read_quick_acked(server_socket_calls, 4)


@needs_quickack
@pytest.mark.external  # openssl makes the certificates
def test_every_read_of_a_tls_association_is_quick_acked(
    db_url, engine, mwl_server, server_socket_calls, tls_files
):
    server = mwl_server(
        db_url, tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key)
    )
    server_socket_calls.ports.add(server.port)
    tls_args = (tls_files.client_context(with_cert=False), "localhost")
    run_every_service(server, engine, tls_args)
    assert_every_read_quick_acked(server_socket_calls, 4)


def test_quick_ack_is_a_no_op_without_the_option(monkeypatch):
    monkeypatch.setattr(quickack, "_QUICKACK", None)
    options = []

    class Recording:
        def setsockopt(self, *args):
            options.append(args)

    quickack.quick_ack(Recording())
    assert options == []


def test_an_unexpected_socket_is_left_alone():
    class Dul:
        socket = object()

    class Assoc:
        dul = Dul()

    assoc = Assoc()
    assert adopt_socket(assoc) is False
    assert type(assoc.dul.socket) is object and not isinstance(assoc.dul.socket, QuickAckSocket)
