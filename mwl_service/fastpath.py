"""The C-FIND fast path: Pending responses sent from already encoded answers.

pynetdicom's per-response path re-encodes every answer through pydicom and builds
and encodes a C-FIND-RSP command set for each, and its DUL thread sends every PDU
through its state machine; :class:`PendingFindResponses` encodes the (identical)
command set once per query and sends each answer framed exactly as pynetdicom's
DIMSE layer would, several answers per socket write, before pynetdicom's own final
response. Why and how much it
saves: the benchmark notes in ``bench/README.md``.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4; a missing
piece makes :func:`fast_responses` return None, and the handler uses the standard
path): ``assoc.dul.send_pdu`` and ``assoc.dul.to_provider_queue`` (the FIFO the DUL
thread sends from, and only sends from: while it is empty the DUL thread only
reads), ``assoc.dul.socket.socket`` (the connection),
``assoc.dimse.maximum_pdu_size`` (the peer's maximum PDU length, 0 = unlimited), and
``DIMSEMessage.primitive_to_message`` to build the command set as pynetdicom does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import struct
import time
from io import BytesIO
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config, evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

LOG = logging.getLogger("mwl_service.fastpath")

FIND_PENDING = 0xFF00

# The DUL thread's queue is unbounded and answers are produced faster than they are
# sent: at DUL_QUEUE_HIGH_WATER queued primitives the handler waits until the DUL
# has sent all but DUL_QUEUE_LOW_WATER, so memory stays bounded however large the
# result, and the DUL never runs dry (it sleeps 1 ms whenever it finds nothing to
# do). The DUL only reads from the socket (where a C-CANCEL arrives) when it has
# nothing left to send: when the peer has sent something, the handler lets it empty
# the queue, so a C-CANCEL is seen within ~DUL_QUEUE_HIGH_WATER answers.
DUL_QUEUE_HIGH_WATER = 64
DUL_QUEUE_LOW_WATER = 16
# Direct sending writes the answers once this many bytes are buffered: few system
# calls, and a C-CANCEL still stops the answers within one write.
WRITE_SIZE = 16 * 1024
PEER_READ_WAIT = 0.05  # seconds
_DUL_DRAIN_POLL = 0.0002  # seconds between queue checks while waiting

_warned = False
_SENT_EVENTS = (evt.EVT_DIMSE_SENT, evt.EVT_PDU_SENT, evt.EVT_DATA_SENT)


class PeerStalled(Exception):
    """The peer took none of the queued answers within the stall timeout; the
    connection has been closed."""


def _pdv_list(
    context_id: int, data: bytes, fragment: int, more: bytes, last: bytes
) -> list[tuple[int, bytes]]:
    """``data`` as PDVs of at most ``fragment`` bytes (0: one PDV), each prefixed with
    its message control header: ``more`` on all but the last fragment, ``last`` on
    the last (PS3.8 E.2). As DIMSEMessage.encode_msg/_generate_pdv_fragments do."""
    if not fragment or len(data) <= fragment:
        return [(context_id, last + data)]
    size = len(data)
    return [
        (
            context_id,
            (last if offset + fragment >= size else more) + data[offset : offset + fragment],
        )
        for offset in range(0, size, fragment)
    ]


def pending_command_set(request: Any) -> bytes:
    """The C-FIND-RSP command set (Implicit VR Little Endian, PS3.7 6.3.1) of a
    Pending (0xFF00) response to ``request`` with an identifier following, built by
    pynetdicom's own message class exactly as _c_find_scp/send_msg build it:
    CommandGroupLength, AffectedSOPClassUID, CommandField 0x8020,
    MessageIDBeingRespondedTo, CommandDataSetType 0x0001 (anything but 0x0101 means
    a data set follows; pynetdicom writes 0x0001), Status 0xFF00."""
    return _pending_command_set(int(request.MessageID), str(request.AffectedSOPClassUID))


@functools.lru_cache(maxsize=256)
def _pending_command_set(message_id: int, sop_class_uid: str) -> bytes:
    # Building it through pydicom cost more than the rest of a narrow query's
    # handler; clients number their messages alike (DCMTK's first is always 1).
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class_uid
    rsp.Status = FIND_PENDING
    rsp.Identifier = BytesIO(b"\x00")  # stands for the answers: sets CommandDataSetType
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    return bytes(encode(message.command_set, True, True))


class PendingFindResponses:
    """Sends C-FIND Pending responses whose identifier is already encoded in the
    presentation context's transfer syntax.

    Each answer is framed exactly as pynetdicom's ``DIMSEMessage.encode_msg`` frames
    it: the command set in one PDV per P-DATA (control header 0x01, last fragment
    0x03), then the identifier likewise (0x00, last 0x02), every PDV item (6 header
    bytes + data) at most the peer's maximum PDU length. One PDV per P-DATA as
    pynetdicom does, so never several answers in one P-DATA: a prototype that
    packed answers together made DCMTK findscu 3.6.7 crash and pynetdicom's SCU
    drop answers.

    On a plain TCP connection the encoded P-DATA-TF PDUs are written to the socket
    from the handler's thread, several answers per write (:meth:`flush` before the
    handler returns, so pynetdicom's final response follows them); the DUL thread
    meanwhile only reads, and sees a C-CANCEL at once. On TLS (an SSL socket must
    not be written and read from two threads) they go through the DUL's queue as
    P-DATA primitives.

    ``stall_timeout`` (seconds, None: no limit) bounds how long the peer may take
    none of our answers: a peer that stops reading loses its connection
    (:class:`PeerStalled`), as the same peer would through the socket timeout on
    pynetdicom's own path.
    """

    def __init__(
        self, assoc: Any, context_id: int, request: Any, *, stall_timeout: float | None = None
    ) -> None:
        max_pdu = assoc.dimse.maximum_pdu_size
        if not isinstance(max_pdu, int) or 0 < max_pdu < 7:
            raise ValueError(f"peer maximum PDU length {max_pdu!r} cannot be mirrored")
        self._assoc = assoc
        self._dul = assoc.dul
        self._queue = assoc.dul.to_provider_queue
        self._context_id = int(context_id)
        self._fragment = max_pdu - 6 if max_pdu else 0  # a PDV item has 6 header bytes
        self._command_pdvs = _pdv_list(
            self._context_id, pending_command_set(request), self._fragment, b"\x01", b"\x03"
        )
        self._command_bytes = b"".join(_pdu_bytes(pdv) for pdv in self._command_pdvs)
        self._stall_timeout = stall_timeout
        sock = getattr(assoc.dul.socket, "socket", None)
        self._sock = sock if isinstance(sock, socket.socket) and not _is_tls(sock) else None
        self._buffer: list[bytes] = []
        self._buffered = 0

    @property
    def direct(self) -> bool:
        """True when answers are written to the socket, not queued for the DUL."""
        return self._sock is not None

    def pdvs(self, identifier: bytes) -> list[tuple[int, bytes]]:
        """The PDVs of one answer in sending order, one P-DATA each."""
        data = _pdv_list(self._context_id, identifier, self._fragment, b"\x00", b"\x02")
        return self._command_pdvs + data

    def send(self, identifier: bytes) -> None:
        """Send (or buffer) one Pending response carrying ``identifier`` (non-empty).

        Raises :class:`PeerStalled` when the peer has stopped taking answers."""
        if self._sock is not None:
            data = _pdv_list(self._context_id, identifier, self._fragment, b"\x00", b"\x02")
            self._buffer.append(self._command_bytes)
            self._buffer.extend(_pdu_bytes(pdv) for pdv in data)
            self._buffered += len(self._command_bytes) + len(identifier)
            if self._buffered >= WRITE_SIZE:
                self.flush()
            return
        for pdv in self.pdvs(identifier):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append(pdv)  # as encode_msg does
            self._dul.send_pdu(pdata)
        if self._queue.qsize() >= DUL_QUEUE_HIGH_WATER:
            self._wait_for_dul()

    def flush(self) -> None:
        """Write what is buffered (direct sending); a no-op otherwise."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        try:
            self._sock.sendall(data)  # type: ignore[union-attr]
        except TimeoutError:
            self._abandon()
            raise PeerStalled(f"peer took no answer for {self._stall_timeout:g} s") from None
        except OSError as exc:  # the peer aborted, or the DUL closed the connection
            self._abandon()
            raise PeerStalled(f"connection lost ({type(exc).__name__})") from None
        self._let_dul_read()

    def _let_dul_read(self) -> None:
        """When the peer has sent something (a C-CANCEL, an A-ABORT), give the DUL
        thread up to PEER_READ_WAIT to read and dispatch it before the next answer."""
        dul = self._dul
        deadline = time.monotonic() + PEER_READ_WAIT
        while (dul.socket.ready or not dul.event_queue.empty()) and dul.is_alive():
            if time.monotonic() > deadline:
                return
            time.sleep(_DUL_DRAIN_POLL)

    def _wait_for_dul(self) -> None:
        queue, assoc, dul = self._queue, self._assoc, self._dul
        limit = self._stall_timeout
        low = 0 if dul.socket.ready else DUL_QUEUE_LOW_WATER
        left = queue.qsize()
        progress = time.monotonic()
        while left > low and assoc.is_established and dul.is_alive():
            time.sleep(_DUL_DRAIN_POLL)
            now_left = queue.qsize()
            if now_left < left:
                left, progress = now_left, time.monotonic()
            elif limit is not None and time.monotonic() - progress > limit:
                self._abandon()
                raise PeerStalled(f"peer took no answer for {limit:g} s")

    def _abandon(self) -> None:
        """Drop the queued answers and close the connection, as pynetdicom's DUL does
        when its transport fails: the DUL sees the connection closed (Evt17) and the
        association ends without a final response."""
        with self._queue.mutex:
            self._queue.queue.clear()  # only our P-DATA: the handler thread queued them
        with contextlib.suppress(OSError, AttributeError):
            self._dul.socket.socket.shutdown(socket.SHUT_RDWR)
        self._assoc.is_established = False  # pynetdicom then sends no final response


def _is_tls(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket)


def _pdu_bytes(pdv: tuple[int, bytes]) -> bytes:
    """One P-DATA-TF PDU carrying one PDV item (PS3.8 9.3.5), byte for byte what
    pynetdicom's ``P_DATA_TF(primitive).encode()`` gives for that PDV."""
    context_id, value = pdv
    return struct.pack(">BBIIB", 0x04, 0, 5 + len(value), 1 + len(value), context_id) + value


def fast_responses(
    event: Any, *, enabled: bool = True, stall_timeout: float | None = None
) -> PendingFindResponses | None:
    """A PendingFindResponses for this C-FIND event, or None for pynetdicom's standard
    path: when disabled, when pynetdicom logs each response identifier (DEBUG) or
    someone listens to each DIMSE message, PDU or byte sent, for a transfer syntax
    other than Explicit or Implicit VR Little Endian, or when the association
    internals are not as expected (logged once)."""
    global _warned
    if not enabled or _config.LOG_RESPONSE_IDENTIFIERS:
        return None
    try:
        assoc = event.assoc
        # Someone watching what is sent would miss the answers we write ourselves.
        if any(assoc.get_handlers(e) for e in _SENT_EVENTS):
            return None
        context = event.context
        if context.transfer_syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            return None
        return PendingFindResponses(
            assoc, context.context_id, event.request, stall_timeout=stall_timeout
        )
    except Exception as exc:  # noqa: BLE001 - the standard path still answers
        if not _warned:
            _warned = True
            LOG.warning(
                "C-FIND fast path unavailable (%s: %s); using pynetdicom's per-response path",
                type(exc).__name__,
                exc,
            )
        return None
