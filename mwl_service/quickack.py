"""Quick ACK: every read of an accepted connection acknowledges at once.

DCMTK 3.6.7's findscu and echoscu (Debian's build) leave Nagle's algorithm on and
write each P-DATA-TF PDU in two ``write()`` calls (the 12 bytes of PDU and PDV
headers, then the rest). The second write waits for the server's ACK of the first,
and Linux delays that ACK by up to 40 ms when the server has nothing to send yet:
every request of such a client paid the stall. TCP_QUICKACK makes the kernel
acknowledge at once, but Linux leaves quick-ACK mode again by itself (as soon as
the connection looks interactive), so the option is set again before every read.
On a platform without TCP_QUICKACK this is a no-op.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4; when one
does not hold, :func:`adopt_socket` leaves pynetdicom's socket as it is, logged
once): ``assoc.dul.socket`` is a :class:`pynetdicom.transport.AssociationSocket`
whose ``recv(n)`` is the only reader of the connection (the DUL's
``_read_pdu_data`` reads each PDU through it) and returns a bytearray of ``n``
bytes, or fewer when the peer closed; its ``socket`` is the accepted
``socket.socket`` (an ``ssl.SSLSocket`` with TLS).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from pynetdicom.transport import AssociationSocket

LOG = logging.getLogger("mwl_service.quickack")

# pynetdicom reads at most this much per recv() call; so do we.
RECV_SIZE = 4096
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_warned = False


def quick_ack(sock: Any) -> None:
    """Set TCP_QUICKACK on ``sock`` (a no-op without the option, or once the socket
    is closed: the read that follows reports that)."""
    if _QUICKACK is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except (OSError, ValueError):
        pass


class QuickAckSocket(AssociationSocket):
    """pynetdicom's association socket, with TCP_QUICKACK set before every read,
    refusing reads longer than ``max_read``."""

    # Longest read (bytes; None: any). pynetdicom's DUL reads a PDU's whole declared
    # length (up to 4 GiB) into memory before it looks at it, so one peer, before
    # association even, could make the server hold gigabytes; a longer read raises
    # OSError, which the DUL takes for a lost connection (and closes it).
    max_read: int | None = None

    def recv(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` from the connection, fewer if the peer closed first; as
        ``AssociationSocket.recv`` reads them (blocking, RECV_SIZE at most per
        call), each read preceded by the option.

        The socket's timeout (the network timeout) bounds the whole read, not each
        chunk: a peer trickling a byte a second would otherwise hold its association
        for ever. TimeoutError when it runs out, which the DUL takes for a lost
        connection."""
        if self.max_read is not None and nr_bytes > self.max_read:
            raise OSError(f"PDU of {nr_bytes} bytes refused: longer than {self.max_read}")
        sock = self.socket
        timeout = sock.gettimeout()  # type: ignore[union-attr]
        deadline = None if timeout is None else time.monotonic() + timeout
        data = bytearray()
        while len(data) < nr_bytes:
            quick_ack(sock)
            chunk = sock.recv(min(RECV_SIZE, nr_bytes - len(data)))  # type: ignore[union-attr]
            if not chunk:
                break
            data += chunk
            if deadline is not None and len(data) < nr_bytes and time.monotonic() > deadline:
                raise TimeoutError(f"{len(data)} of {nr_bytes} bytes within {timeout} s")
        return data


def adopt_socket(assoc: Any, max_read: int | None = None) -> bool:
    """Give an accepted association, before it starts, the quick-ACK socket, which
    reads at most ``max_read`` bytes at once (None: any).

    The AssociationSocket keeps its state (it is the same object, of a subclass
    that only reads differently). Returns False, and leaves pynetdicom's socket,
    when the internals named in the module's docstring are not as expected."""
    global _warned
    sock = getattr(getattr(assoc, "dul", None), "socket", None)
    if type(sock) is not AssociationSocket or not isinstance(sock.socket, socket.socket):
        if not _warned:
            _warned = True
            LOG.warning(
                "Quick ACK unavailable (the association's socket is %s); reads "
                "acknowledge as the kernel decides",
                type(sock).__name__,
            )
        return False
    quick_ack(sock.socket)
    sock.__class__ = QuickAckSocket
    sock.max_read = max_read
    return True
