"""Hostile and broken peers against the real `mwl-service` process: partial PDUs,
silent connections, probes, a client that stops reading, one host opening many
connections, and SIGTERM with all of them connected. Raw sockets on loopback."""

from __future__ import annotations

import signal
import socket
import ssl
import time

import pytest

from mwl_service import schema
from mwl_service.engine import make_engine
from tests.fixtures.dicom import (
    PARTIAL_ASSOCIATE_RQ,
    PARTIAL_PDU,
    associate,
    associate_rq_bytes,
    c_find_rq_bytes,
    client_ae,
    closed_within,
    insert_items,
    mwl_query,
    raw_associate,
    raw_connect,
    read_pdu,
)

pytestmark = [pytest.mark.external, pytest.mark.timeout(90)]


def echo_from(service, source: str = "127.0.0.1") -> int | None:
    """C-ECHO status from a pynetdicom SCU bound to `source`, None if refused."""
    ae = client_ae()
    try:
        assoc = ae.associate(
            service.host, service.port, ae_title=service.ae_title, bind_address=(source, 0)
        )
        if not assoc.is_established:
            return None
        status = assoc.send_c_echo()
        assoc.release()
        return int(status.Status) if "Status" in status else None
    finally:
        ae.shutdown()


def echo_ok_within(service, seconds: float, source: str = "127.0.0.1") -> bool:
    """C-ECHO succeeds within `seconds` (a freed slot's thread ends a moment later)."""
    deadline = time.monotonic() + seconds
    while echo_from(service, source) != 0x0000:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_partial_pdus_lose_their_slots(sqlite_url, mwl_service_process):
    """The probe's reproduction: two peers send the header of an A-ASSOCIATE-RQ and
    nothing more, against --max-associations 2. Both connections are closed after
    the request timeout and scanners get in again (they were held for ever)."""
    service = mwl_service_process(
        sqlite_url,
        "--max-associations", "2",
        "--max-connections-per-host", "2",
        "--acse-timeout", "3",
        "--network-timeout", "4",
        "--request-timeout", "1",
    )  # fmt: skip
    peers = [raw_connect(service.host, service.port) for _ in range(2)]
    for peer in peers:
        peer.sendall(PARTIAL_ASSOCIATE_RQ)
    assert all(closed_within(peer, 6) for peer in peers)
    assert echo_ok_within(service, 3)
    assert "no association request within 1 s" in service.output()
    assert service.stop(signal.SIGTERM, timeout=10) == 0


def test_a_partial_pdu_on_an_association_ends_it_after_the_network_timeout(
    sqlite_url, mwl_service_process
):
    """Associated, then half a P-DATA: the read waits at most --network-timeout."""
    service = mwl_service_process(
        sqlite_url, "--max-associations", "1", "--network-timeout", "2"
    )
    peer = raw_associate(service.host, service.port, service.ae_title)
    peer.sendall(PARTIAL_PDU)
    assert echo_from(service) is None  # the one slot is held ...
    assert closed_within(peer, 8)  # ... until the network timeout
    assert echo_ok_within(service, 3)
    assert service.stop() == 0


def test_tls_sockets_get_the_same_deadlines(sqlite_url, mwl_service_process, tls_files):
    """Over TLS: a client that completes the handshake and then sends half a PDU
    is closed by the request timeout; one that associates and then sends half a
    P-DATA by the network timeout (the TLS socket had no timeout after the handshake)."""
    service = mwl_service_process(
        sqlite_url,
        "--tls-cert", str(tls_files.server_cert),
        "--tls-key", str(tls_files.server_key),
        "--max-connections-per-host", "4",
        "--request-timeout", "1",
        "--network-timeout", "2",
        wait=False,
    )  # fmt: skip
    context = tls_files.client_context(with_cert=False)
    deadline = time.monotonic() + 20
    while True:
        try:
            probe = socket.create_connection((service.host, service.port), timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "mwl-service did not start"
            time.sleep(0.1)
    probe.close()

    def tls_peer() -> ssl.SSLSocket:
        sock = raw_connect(service.host, service.port)
        return context.wrap_socket(sock, server_hostname="localhost")

    silent = tls_peer()
    silent.sendall(PARTIAL_ASSOCIATE_RQ)
    associated = tls_peer()
    associated.sendall(associate_rq_bytes(service.ae_title))
    assert read_pdu(associated)[0] == 0x02
    associated.sendall(PARTIAL_PDU)
    started = time.monotonic()
    assert closed_within(silent, 5)
    assert closed_within(associated, 8)
    assert time.monotonic() - started < 8
    assert service.stop() == 0


def test_silent_connections_and_probes_are_closed_quickly(sqlite_url, mwl_service_process):
    """A silent TCP connection, an HTTP probe and random bytes from three hosts:
    none keeps a slot beyond the request timeout (they did until --acse-timeout)."""
    service = mwl_service_process(
        sqlite_url, "--max-associations", "3", "--request-timeout", "1"
    )
    silent = raw_connect(service.host, service.port, source="127.0.0.2")
    http = raw_connect(service.host, service.port, source="127.0.0.3")
    http.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    noise = raw_connect(service.host, service.port, source="127.0.0.4")
    noise.sendall(b"\x01\x00\x7f\xff\xff\xff" + bytes(range(256)))
    started = time.monotonic()
    assert all(closed_within(peer, 5) for peer in (silent, http, noise))
    assert time.monotonic() - started < 5  # the ACSE timeout here is 30 s
    assert echo_ok_within(service, 3)
    assert service.stop() == 0


def test_silent_connections_take_no_association_slot(sqlite_url, mwl_service_process):
    """The probe's reproduction: with the per-host cap lifted, four connections that send
    nothing held both of --max-associations 2, and every real client was rejected for the
    whole --request-timeout. Now a client is served while they wait, and they are still
    closed by the request timeout."""
    service = mwl_service_process(
        sqlite_url,
        "--max-associations", "2",
        "--max-connections-per-host", "100",
        "--request-timeout", "4",
    )  # fmt: skip
    silent = [raw_connect(service.host, service.port) for _ in range(4)]
    time.sleep(0.5)  # all accepted and waiting for their request
    assert echo_from(service) == 0x0000
    assert echo_from(service) == 0x0000
    assert not any(closed_within(peer, 0.1) for peer in silent)  # still waiting ...
    assert all(closed_within(peer, 8) for peer in silent)  # ... until the request timeout
    assert service.stop() == 0


def test_waiting_connections_have_their_own_budget(sqlite_url, mwl_service_process):
    """Four waiting connections per association slot; more are closed at once, and the
    log says why."""
    service = mwl_service_process(
        sqlite_url,
        "--max-associations", "1",
        "--max-connections-per-host", "100",
        "--request-timeout", "30",
    )  # fmt: skip
    waiting = [raw_connect(service.host, service.port) for _ in range(4)]
    time.sleep(0.5)
    assert closed_within(raw_connect(service.host, service.port), 2)
    assert not any(closed_within(peer, 0.1) for peer in waiting)
    assert "4 connections are waiting for their association request" in service.output()
    assert service.stop() == 0


def test_one_host_cannot_take_every_slot(sqlite_url, mwl_service_process):
    """Per-host cap: the third connection from 127.0.0.5 is closed at once, while
    another host still associates; when one closes, the host gets in again."""
    service = mwl_service_process(
        sqlite_url,
        "--max-associations", "4",
        "--max-connections-per-host", "2",
        "--request-timeout", "30",
    )  # fmt: skip
    held = [raw_connect(service.host, service.port, source="127.0.0.5") for _ in range(2)]
    time.sleep(0.5)  # both registered by the accept loop
    third = raw_connect(service.host, service.port, source="127.0.0.5")
    assert closed_within(third, 2)
    assert echo_from(service, "127.0.0.5") is None
    assert echo_ok_within(service, 3, "127.0.0.6")
    held.pop().close()
    assert echo_ok_within(service, 5, "127.0.0.5"), "the host did not get its slot back"
    assert "Connection from 127.0.0.5 refused: 2 connections open" in service.output()
    assert service.stop() == 0


def test_default_per_host_cap_is_half_the_associations(sqlite_url, mwl_service_process):
    service = mwl_service_process(sqlite_url, "--max-associations", "4")
    held = [raw_connect(service.host, service.port, source="127.0.0.7") for _ in range(2)]
    time.sleep(0.5)
    assert closed_within(raw_connect(service.host, service.port, source="127.0.0.7"), 2)
    assert not closed_within(held[0], 0.5)
    assert "max 4 associations, 2 per host" in service.output()
    assert service.stop() == 0


@pytest.mark.parametrize("path", ["fast", "standard"])
def test_a_client_that_stops_reading_loses_its_association(
    sqlite_url, mwl_service_process, mwl_server, path
):
    """The probe's reproduction: SO_RCVBUF 2048, a query for 16000 rows, never read.
    The slot is free again within the network timeout (it was held for minutes)."""
    engine = make_engine(sqlite_url)
    insert_items(engine, 16000, scheduled_station_ae_title="BULK")
    engine.dispose()
    options = ("--max-associations", "1", "--network-timeout", "2", "--dimse-timeout", "2")
    if path == "fast":
        service = mwl_service_process(sqlite_url, *options)
    else:
        service = mwl_server(
            sqlite_url,
            max_associations=1,
            network_timeout=2,
            dimse_timeout=2,
            find_fast_path=False,
        )
    peer = raw_associate(service.host, service.port, service.ae_title, rcvbuf=2048)
    peer.sendall(c_find_rq_bytes(mwl_query(sps={"ScheduledStationAETitle": "BULK"})))
    time.sleep(1)
    assert echo_from(service) is None  # the one slot is busy
    assert echo_ok_within(service, 12), "the stalled client kept its slot"
    peer.close()
    if path == "fast":
        assert "peer took no answer for 2 s" in service.output()
        assert service.stop() == 0


def test_sigterm_stops_promptly_with_stuck_peers(sqlite_url, mwl_service_process):
    """SIGTERM with a partial request, a partial PDU on an association, a client
    that stopped reading and an idle association, all with long timeouts: the
    process exits 0 within a few seconds (it hung until SIGKILL)."""
    engine = make_engine(sqlite_url)
    insert_items(engine, 16000, scheduled_station_ae_title="BULK")
    engine.dispose()
    service = mwl_service_process(
        sqlite_url,
        "--max-connections-per-host", "10",
        "--request-timeout", "120",
        "--network-timeout", "120",
        "--acse-timeout", "120",
    )  # fmt: skip
    half_request = raw_connect(service.host, service.port)
    half_request.sendall(PARTIAL_ASSOCIATE_RQ)
    half_pdu = raw_associate(service.host, service.port, service.ae_title)
    half_pdu.sendall(PARTIAL_PDU)
    stalled = raw_associate(service.host, service.port, service.ae_title, rcvbuf=2048)
    stalled.sendall(c_find_rq_bytes(mwl_query(sps={"ScheduledStationAETitle": "BULK"})))
    with associate(service.host, service.port, service.ae_title) as idle:
        assert idle.is_established
        time.sleep(1)
        started = time.monotonic()
        assert service.stop(signal.SIGTERM, timeout=15) == 0
        assert time.monotonic() - started < 6
    assert "MWL service stopped" in service.output()
