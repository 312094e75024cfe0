"""The C-FIND fast path: Pending responses sent from already encoded answers.

pynetdicom's per-response path re-encodes every answer through pydicom and builds
and encodes a C-FIND-RSP command set for each; :class:`PendingFindResponses` encodes
the (identical) command set once per query and queues each answer as exactly the
P-DATA primitives pynetdicom's DIMSE layer would, on the same DUL queue, so
pynetdicom's own final response still goes out after them. Why and how much it
saves: the benchmark notes in ``bench/README.md``.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4; a missing
piece makes :func:`fast_responses` return None, and the handler uses the standard
path): ``assoc.dul.send_pdu`` and ``assoc.dul.to_provider_queue`` (the FIFO the DUL
thread sends from), ``assoc.dul.socket.socket`` (the connection),
``assoc.dimse.maximum_pdu_size`` (the peer's maximum PDU length, 0 = unlimited), and
``DIMSEMessage.primitive_to_message`` to build the command set as pynetdicom does.
"""

from __future__ import annotations

import contextlib
import logging
import socket
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

# The DUL thread only reads from the socket (where a C-CANCEL arrives) when it has
# nothing left to send, and its queue is unbounded. Answers are produced faster than
# they are sent, so after this many queued primitives the handler waits until the
# DUL has emptied its queue: a C-CANCEL is seen within ~this many answers, and memory
# stays bounded however large the result.
DUL_QUEUE_HIGH_WATER = 64
_DUL_DRAIN_POLL = 0.0002  # seconds between queue checks while waiting

_warned = False


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
    rsp = C_FIND()
    rsp.MessageID = request.MessageID
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = FIND_PENDING
    rsp.Identifier = BytesIO(b"\x00")  # stands for the answers: sets CommandDataSetType
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    return bytes(encode(message.command_set, True, True))


class PendingFindResponses:
    """Sends C-FIND Pending responses whose identifier is already encoded in the
    presentation context's transfer syntax.

    Each answer becomes exactly the P-DATA primitives pynetdicom's
    ``DIMSEMessage.encode_msg`` yields for it: the command set in one PDV per P-DATA
    (control header 0x01, last fragment 0x03), then the identifier likewise (0x00,
    last 0x02), every PDV item (6 header bytes + data) at most the peer's maximum
    PDU length. One PDV per P-DATA as pynetdicom does, so never several answers in
    one P-DATA: a prototype that packed answers together made DCMTK findscu 3.6.7
    crash and pynetdicom's SCU drop answers.

    ``stall_timeout`` (seconds, None: no limit) bounds how long the peer may take
    none of the queued answers: a peer that stops reading loses its connection
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
        self._send_pdu = assoc.dul.send_pdu
        self._queue = assoc.dul.to_provider_queue
        self._context_id = int(context_id)
        self._fragment = max_pdu - 6 if max_pdu else 0  # a PDV item has 6 header bytes
        self._command_pdvs = _pdv_list(
            self._context_id, pending_command_set(request), self._fragment, b"\x01", b"\x03"
        )
        self._stall_timeout = stall_timeout

    def pdvs(self, identifier: bytes) -> list[tuple[int, bytes]]:
        """The PDVs of one answer in sending order, one P-DATA each."""
        data = _pdv_list(self._context_id, identifier, self._fragment, b"\x00", b"\x02")
        return self._command_pdvs + data

    def send(self, identifier: bytes) -> None:
        """Queue one Pending response carrying ``identifier`` (non-empty) for the peer.

        Raises :class:`PeerStalled` when the peer has stopped taking answers."""
        send_pdu = self._send_pdu
        for pdv in self.pdvs(identifier):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append(pdv)  # as encode_msg does
            send_pdu(pdata)
        if self._queue.qsize() >= DUL_QUEUE_HIGH_WATER:
            self._wait_for_dul()

    def _wait_for_dul(self) -> None:
        queue, assoc, dul = self._queue, self._assoc, self._dul
        limit = self._stall_timeout
        left = queue.qsize()
        progress = time.monotonic()
        while left and assoc.is_established and dul.is_alive():
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


def fast_responses(
    event: Any, *, enabled: bool = True, stall_timeout: float | None = None
) -> PendingFindResponses | None:
    """A PendingFindResponses for this C-FIND event, or None for pynetdicom's standard
    path: when disabled, when pynetdicom logs each response identifier (DEBUG) or
    someone listens to each DIMSE message sent, for a transfer syntax other than
    Explicit or Implicit VR Little Endian, or when the association internals are not
    as expected (logged once)."""
    global _warned
    if not enabled or _config.LOG_RESPONSE_IDENTIFIERS:
        return None
    try:
        assoc = event.assoc
        if assoc.get_handlers(evt.EVT_DIMSE_SENT):
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
