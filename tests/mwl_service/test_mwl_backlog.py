"""The listening socket's backlog: connections that arrive while the accept loop
is busy are completed by the kernel, not dropped (in-process server, raw sockets)."""

from __future__ import annotations

import select
import socket
import time

from mwl_service.acceptor import LISTEN_BACKLOG

BURST = 40  # well over socketserver's default backlog (5), under ours


def test_a_burst_of_connections_fits_the_listen_backlog(sqlite_url, mwl_server):
    """With the accept loop held, BURST connections all complete their TCP handshake
    (socketserver's backlog of 5 left most SYNs dropped: a scanner connecting during
    a burst of silent sockets waited a second or more for the SYN retransmission)."""
    running = mwl_server(sqlite_url)
    server = running.server
    assert BURST < LISTEN_BACKLOG
    peers = []
    with server._lock:  # verify_request waits for it: the accept loop is held
        try:
            for _ in range(BURST):
                peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                peer.setblocking(False)
                peer.connect_ex((running.host, running.port))
                peers.append(peer)
            completed = _completed(peers, wait=0.8)
            assert len(completed) == BURST
        finally:
            for peer in peers:
                peer.close()


def _completed(peers: list[socket.socket], wait: float) -> list[socket.socket]:
    """The peers whose non-blocking connect succeeds within `wait` seconds: a
    handshake the kernel completes takes microseconds, a dropped SYN is retried
    only after a second."""
    finished: list[socket.socket] = []
    deadline = time.monotonic() + wait
    while len(finished) < len(peers) and (left := deadline - time.monotonic()) > 0:
        _, writable, _ = select.select([], [p for p in peers if p not in finished], [], left)
        finished += writable
    return [p for p in finished if p.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
