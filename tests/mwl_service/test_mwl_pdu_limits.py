"""Peers that announce more than the server takes, against the real `mwl-service`
process over raw sockets: PDUs declared longer than the maximum PDU length."""

from __future__ import annotations

import signal
import struct

import pytest

from mwl_service.server import MAXIMUM_PDU_SIZE
from tests.fixtures.dicom import (
    closed_within,
    pynetdicom_echo,
    raw_associate,
    raw_connect,
)

pytestmark = [pytest.mark.external, pytest.mark.timeout(90)]

# Timeouts far beyond what the tests wait: only the refusal may close the connection.
LONG_TIMEOUTS = ("--request-timeout", "60", "--network-timeout", "60")


@pytest.mark.parametrize(
    ("pdu_type", "associated"),
    [(0x01, False), (0x04, True)],
    ids=["associate-rq-before-association", "p-data-on-an-association"],
)
def test_a_pdu_longer_than_the_maximum_is_refused_at_once(
    sqlite_url, mwl_service_process, pdu_type, associated
):
    """A PDU header announcing 4 GiB, followed by data: the server closes the
    connection instead of reading (and holding in memory) whatever the peer sends
    until the declared length or a timeout."""
    service = mwl_service_process(sqlite_url, *LONG_TIMEOUTS)
    if associated:
        peer = raw_associate(service.host, service.port, service.ae_title)
    else:
        peer = raw_connect(service.host, service.port)
    peer.sendall(struct.pack(">BBI", pdu_type, 0, 0xFFFFFFF0))
    with pytest.raises(OSError):  # the server stops reading: our writes fail
        for _ in range(4096):
            peer.sendall(b"\0" * 65536)
    assert closed_within(peer, 10)
    assert pynetdicom_echo(service.host, service.port, service.ae_title) == 0x0000
    assert f"longer than {MAXIMUM_PDU_SIZE}" in service.output()
    assert service.stop(signal.SIGTERM, timeout=10) == 0


def test_a_pdu_of_exactly_the_maximum_length_is_read(sqlite_url, mwl_service_process):
    """The bound is the maximum itself: a P-DATA-TF of MAXIMUM_PDU_SIZE bytes
    (one PDV the server cannot use) is read whole, and the association goes on."""
    service = mwl_service_process(sqlite_url, *LONG_TIMEOUTS)
    peer = raw_associate(service.host, service.port, service.ae_title)
    pdv = struct.pack(">IBB", MAXIMUM_PDU_SIZE - 4, 1, 0x00) + b"\0" * (MAXIMUM_PDU_SIZE - 6)
    peer.sendall(struct.pack(">BBI", 0x04, 0, MAXIMUM_PDU_SIZE) + pdv)
    assert not closed_within(peer, 2)
    assert "longer than" not in service.output()
    assert service.stop(signal.SIGTERM, timeout=10) == 0


def test_a_pdu_trickled_slower_than_the_network_timeout_closes_the_association(
    sqlite_url, mwl_service_process
):
    """Every read succeeds, one byte at a time, so no single read times out; the
    network timeout bounds the whole PDU, and the association is closed."""
    service = mwl_service_process(sqlite_url, "--request-timeout", "60",
                                  "--network-timeout", "2")
    peer = raw_associate(service.host, service.port, service.ae_title)
    peer.sendall(struct.pack(">BBI", 0x04, 0, 64))
    closed = False
    for _ in range(30):  # up to 15 s: far past the 2 s bound
        try:
            peer.sendall(b"\0")
        except OSError:
            closed = True
            break
        if closed_within(peer, 0.5):
            closed = True
            break
    assert closed, "the trickling peer kept its association"
    assert pynetdicom_echo(service.host, service.port, service.ae_title) == 0x0000
    assert service.stop(signal.SIGTERM, timeout=10) == 0
