"""The waiting reactors on the real in-process server: an idle association does
not poll, and every step of a conversation wakes the thread that must act, with
the safety-net wait made an hour long so a missed wake-up would hang the test."""

from __future__ import annotations

import struct
import threading
import time

import pytest
from pynetdicom import _config
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from mwl_service import reactors
from mwl_service.reactors import WaitingAssociation, WaitingDUL
from tests.fixtures.dicom import (
    associate,
    closed_within,
    insert_item,
    mpps_attributes,
    mwl_query,
    pynetdicom_echo,
    pynetdicom_find,
    raw_associate,
    read_pdu,
)

pytestmark = pytest.mark.timeout(60)

A_RELEASE_RQ = struct.pack(">BBII", 5, 0, 4, 0)


class LoopCounts:
    """How often the acceptor side's reactors went round their loops: the DUL
    looks for a primitive to send once per loop, the association thread for a
    DIMSE message once per loop (pynetdicom's polling loops and ours alike)."""

    def __init__(self) -> None:
        self.dul = 0
        self.assoc = 0
        self.lock = threading.Lock()


@pytest.fixture
def loop_counts(monkeypatch) -> LoopCounts:
    counts = LoopCounts()
    real_process = DULServiceProvider._process_recv_primitive
    real_get_msg = DIMSEServiceProvider.get_msg

    def process(self):
        if self.assoc.is_acceptor:
            with counts.lock:
                counts.dul += 1
        return real_process(self)

    def get_msg(self, block=False):
        if self.assoc.is_acceptor:
            with counts.lock:
                counts.assoc += 1
        return real_get_msg(self, block)

    monkeypatch.setattr(DULServiceProvider, "_process_recv_primitive", process)
    monkeypatch.setattr(DIMSEServiceProvider, "get_msg", get_msg)
    return counts


@pytest.fixture
def no_safety_net(monkeypatch):
    """A missed wake-up now waits an hour instead of MAX_WAIT."""
    monkeypatch.setattr(reactors, "MAX_WAIT", 3600.0)


def wait_until(predicate, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_idle_associations_do_not_poll(sqlite_url, mwl_server, loop_counts):
    server = mwl_server(sqlite_url, max_associations=8, max_connections_per_host=8)
    peers = [raw_associate(server.host, server.port, server.ae_title) for _ in range(4)]
    assocs = server.server.active_associations
    assert len(assocs) == 4
    assert all(type(a) is WaitingAssociation and type(a.dul) is WaitingDUL for a in assocs)
    time.sleep(0.2)  # the associations have settled into waiting
    before = (loop_counts.dul, loop_counts.assoc)
    time.sleep(0.5)
    loops = (loop_counts.dul - before[0], loop_counts.assoc - before[1])
    # pynetdicom's reactors poll every millisecond: hundreds of loops each.
    assert loops[0] <= 4 * 3 and loops[1] <= 4 * 3, loops
    for peer in peers:
        peer.close()


def test_every_step_wakes_the_thread_that_acts(db_url, engine, mwl_server, no_safety_net):
    row = insert_item(engine)
    server = mwl_server(db_url)
    host, port, aet = server.host, server.port, server.ae_title
    assert pynetdicom_echo(host, port, aet) == 0x0000
    assert pynetdicom_find(host, port, aet, mwl_query())[1] == 0x0000
    attrs = mpps_attributes(
        row["study_instance_uid"], row["accession_number"], row["scheduled_procedure_step_id"]
    )
    with associate(host, port, aet, calling_aet="MRI3T") as assoc:
        status, _ = assoc.send_n_create(attrs, ModalityPerformedProcedureStep, "1.2.3.4.5")
        assert status.Status == 0x0000
    with associate(host, port, aet) as assoc:
        assoc.abort()  # the peer aborts
    assert wait_until(lambda: not server.server.active_associations)


def test_a_peer_that_drops_the_connection_ends_its_association(
    sqlite_url, mwl_server, no_safety_net
):
    server = mwl_server(sqlite_url)
    peer = raw_associate(server.host, server.port, server.ae_title)
    assert len(server.server.active_associations) == 1
    peer.close()
    assert wait_until(lambda: not server.server.active_associations)


def test_a_peer_that_never_closes_after_release_is_closed_by_the_artim_timer(
    sqlite_url, mwl_server, no_safety_net
):
    server = mwl_server(sqlite_url, acse_timeout=1)
    peer = raw_associate(server.host, server.port, server.ae_title)
    peer.sendall(A_RELEASE_RQ)
    assert read_pdu(peer)[0] == 0x06  # A-RELEASE-RP; then the peer keeps the connection
    assert closed_within(peer, 10)


def test_an_idle_association_ends_at_the_network_timeout(sqlite_url, mwl_server, no_safety_net):
    server = mwl_server(sqlite_url, network_timeout=1)
    peer = raw_associate(server.host, server.port, server.ae_title)
    assert closed_within(peer, 10)
    assert wait_until(lambda: not server.server.active_associations)


def test_stop_ends_idle_associations(sqlite_url, mwl_server, no_safety_net):
    server = mwl_server(sqlite_url, max_connections_per_host=4)
    peers = [raw_associate(server.host, server.port, server.ae_title) for _ in range(2)]
    server.stop()
    assert all(closed_within(peer, 10) for peer in peers)
    assert not server.server.active_associations


def test_unexpected_internals_leave_pynetdicoms_reactors(
    sqlite_url, mwl_server, monkeypatch, caplog
):
    monkeypatch.setattr(_config, "PASS_CONTEXTVARS", True)
    monkeypatch.setattr(reactors, "_warned", False)
    server = mwl_server(sqlite_url)
    peer = raw_associate(server.host, server.port, server.ae_title)
    (assoc,) = server.server.active_associations
    assert type(assoc) is not WaitingAssociation and type(assoc.dul) is DULServiceProvider
    assert "Waiting reactors unavailable (PASS_CONTEXTVARS is set)" in caplog.text
    peer.close()
    assert pynetdicom_echo(server.host, server.port, server.ae_title) == 0x0000


def test_without_a_wake_up_socket_the_dul_polls(sqlite_url, mwl_server, monkeypatch):
    """No descriptor left for the wake-up socket: the association is served all the
    same, by pynetdicom's polling loop."""

    def no_descriptors():
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(reactors, "Waker", no_descriptors)
    server = mwl_server(sqlite_url)
    assert pynetdicom_echo(server.host, server.port, server.ae_title) == 0x0000
    assert wait_until(lambda: not server.server.active_associations)


def test_the_accept_loop_forces_no_garbage_collection(sqlite_url, mwl_server, monkeypatch):
    """pynetdicom's accept loop runs a full collection every 60 turns (every 3 s at
    our poll interval), holding the interpreter while associations wait; ours does
    not, and Python's collector still frees ended associations."""
    server = mwl_server(sqlite_url).server
    collections = []
    monkeypatch.setattr("gc.collect", lambda *args: collections.append(args) or 0)
    for _ in range(121):
        server.service_actions()
    assert collections == []
