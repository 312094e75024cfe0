"""The DICOM server: Verification, Modality Worklist C-FIND and MPPS N-CREATE/N-SET.

The handlers here only wire pynetdicom to the worklist database:
* C-FIND asks :func:`mwl_service.matching.find_worklist_encoded` (a pure
  query-to-results function) and streams its answers, one pooled connection per
  query. Pending responses go out through :class:`PendingFindResponses`, which puts
  the already encoded answers on the association's DUL queue itself, framed exactly
  as pynetdicom's DIMSE layer would; the final status (Success, Cancel, failures)
  is left to pynetdicom. With pynetdicom's identifier logging on (DEBUG), or when
  the association internals are not as expected, the handler yields datasets from
  :func:`~mwl_service.matching.find_worklist` the standard way instead;
* N-CREATE / N-SET call :mod:`mwl_service.mpps`.

Logging: associations (calling AE title, peer address), queries (which keys were
used, values only for non-identifying keys such as modality, station and dates) and
result counts go to the ``mwl_service`` loggers at INFO. Patient data is never logged
at INFO; pynetdicom's identifier dumps and per-PDU/DIMSE logging are switched off
unless the ``pynetdicom`` logger is enabled for DEBUG when :func:`build_ae` runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from mwl_service import mpps, schema
from mwl_service.matching import QueryError, find_worklist, find_worklist_encoded
from mwl_service.retention import DEFAULT_OFFER_PAST_DAYS
from mwl_service.vr import validate_ae_title

LOG = logging.getLogger("mwl_service.server")

DEFAULT_AE_TITLE = "CALPENDO_MWL"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11112
DEFAULT_MAX_ASSOCIATIONS = 10
DEFAULT_NETWORK_TIMEOUT = 60.0
DEFAULT_ACSE_TIMEOUT = 30.0
DEFAULT_DIMSE_TIMEOUT = 30.0
# Largest P-DATA PDU we accept. Requests to a worklist SCP are small, so this only
# bounds memory per PDU; answers are sized by the peer's own maximum.
MAXIMUM_PDU_SIZE = 1024 * 1024

# How often the accept loop checks for shutdown (seconds): bounds shutdown latency.
SERVE_POLL_INTERVAL = 0.2

# Explicit VR Little Endian first: pynetdicom picks the first of *our* syntaxes that
# the requestor proposed.
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# C-FIND statuses (PS3.4 K.4.1.1.4)
FIND_PENDING = 0xFF00
FIND_CANCEL = 0xFE00
FIND_UNABLE_TO_PROCESS = 0xC000

# Query keys whose values identify no patient: safe to show at INFO.
_LOGGABLE_VALUES = frozenset(
    {
        "Modality",
        "ScheduledStationAETitle",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepStatus",
        "SpecificCharacterSet",
    }
)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the DICOM service needs to run; the CLI builds one from its options."""

    db_url: str | None = None  # None: WORKLIST_DB_URL, else the default SQLite file
    ae_title: str = DEFAULT_AE_TITLE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allowed_aets: tuple[str, ...] = ()  # empty: any calling AE title
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    network_timeout: float | None = DEFAULT_NETWORK_TIMEOUT
    acse_timeout: float | None = DEFAULT_ACSE_TIMEOUT
    dimse_timeout: float | None = DEFAULT_DIMSE_TIMEOUT
    max_results: int | None = None  # cap on C-FIND answers per query
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None  # given: clients must present a certificate it signed
    # Send C-FIND Pending responses through PendingFindResponses (False: always
    # pynetdicom's per-response path; tests compare the two).
    find_fast_path: bool = True
    # A query that leaves Scheduled Station AE Title universal gets the calling AE
    # title's steps only (for consoles that never send their own AE title).
    station_from_calling_aet: bool = False
    # Steps that started longer ago are not offered unless the query has a date.
    offer_past_days: float | None = DEFAULT_OFFER_PAST_DAYS

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def make_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """Server-side TLS context, or None without --tls-cert.

    With a CA file, client certificates are required and verified against it.
    """
    if not config.tls_cert:
        if config.tls_key or config.tls_ca:
            raise ValueError("--tls-key/--tls-ca need --tls-cert")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=config.tls_cert, keyfile=config.tls_key or None)
    if config.tls_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=config.tls_ca)
    return context


# ----------------------------------------------------------------- logging helpers


def _configure_pynetdicom_logging() -> None:
    """pynetdicom dumps identifiers (patient data) and every PDU unless told not to."""
    debug = logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    _config.LOG_REQUEST_IDENTIFIERS = debug
    _config.LOG_RESPONSE_IDENTIFIERS = debug
    # The "standard" handlers format every PDU/DIMSE message even when nobody reads
    # the log; read at association creation, so set before serving.
    _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"


def _peer(assoc: Any) -> str:
    """`#n CALLING@host:port` for log lines."""
    requestor = assoc.requestor
    number = getattr(assoc, "_mwl_number", "?")
    try:
        address = f"{requestor.address}:{requestor.port}"
    except Exception:  # noqa: BLE001 - logging must never fail a request
        address = "?"
    calling = (requestor.ae_title or "").strip() or "?"
    return f"#{number} {calling}@{address}"


def describe_query(identifier: Dataset) -> str:
    """Which keys a C-FIND uses, without patient values (safe for INFO logs)."""
    matching: list[str] = []
    returned = 0

    def visit(ds: Dataset, prefix: str) -> None:
        nonlocal returned
        for elem in ds:
            keyword = elem.keyword or str(elem.tag)
            if keyword == "SpecificCharacterSet":
                if elem.value:
                    matching.append(f"{keyword}={elem.value}")
                continue
            returned += 1
            if elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item, f"{prefix}{keyword}>")
                continue
            if elem.value in (None, "", b""):
                continue
            if keyword in _LOGGABLE_VALUES:
                matching.append(f"{prefix}{keyword}={elem.value}")
            else:
                matching.append(f"{prefix}{keyword}")

    visit(identifier, "")
    keys = ", ".join(matching) if matching else "none (universal)"
    return f"matching keys: {keys}; {returned} requested keys"


# ----------------------------------------------------------------- handlers


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def handle_echo(event: Any) -> int:
    LOG.debug("C-ECHO from %s", _peer(event.assoc))
    return 0x0000


# ----------------------------------------------------------------- C-FIND fast path

# Why: pynetdicom's per-response path (service_class._c_find_scp -> dimse.send_msg)
# cost ~610 us of CPU per Pending answer (py-spy, broad query, N=10000), of which
# only ~27 us were matching and building the answer: it encodes our already encoded
# identifier again through pydicom (~97 us), builds a C-FIND-RSP command Dataset
# (~66 us) and encodes that command set twice, once only to learn its group length
# (~256 us) and once to send it (~150 us). That made a 10000-answer query take 8.9 s
# against 1.6 s for DCMTK wlmscpfs. The command set of a Pending response is the same
# for every answer of a query, so PendingFindResponses encodes it once and sends each
# answer as the same P-DATA primitives pynetdicom would, through the same DUL queue:
# 50-80 us of server CPU per answer in all (DUL thread included), and 0.81 s against
# wlmscpfs's 1.58 s for the same query (bench/mwl_bench.py, 2-core EPYC).
#
# pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4; a missing
# piece makes handle_find fall back to the standard path): assoc.dul.send_pdu and
# assoc.dul.to_provider_queue (the FIFO the DUL thread sends from, which pynetdicom's
# own final response also goes through, so it is sent after our answers),
# assoc.dimse.maximum_pdu_size (the peer's maximum PDU length, 0 = unlimited), and
# DIMSEMessage.primitive_to_message to build the command set as pynetdicom does.

# The DUL thread only reads from the socket (where a C-CANCEL arrives) when it has
# nothing left to send, and its queue is unbounded. Answers are produced faster than
# they are sent, so after this many queued primitives the handler waits until the
# DUL has emptied its queue: a C-CANCEL is seen within ~this many answers, and memory
# stays bounded however large the result.
DUL_QUEUE_HIGH_WATER = 64
_DUL_DRAIN_POLL = 0.0002  # seconds between queue checks while waiting

_fast_path_warned = False


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
    """

    def __init__(self, assoc: Any, context_id: int, request: Any) -> None:
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

    def pdvs(self, identifier: bytes) -> list[tuple[int, bytes]]:
        """The PDVs of one answer in sending order, one P-DATA each."""
        data = _pdv_list(self._context_id, identifier, self._fragment, b"\x00", b"\x02")
        return self._command_pdvs + data

    def send(self, identifier: bytes) -> None:
        """Queue one Pending response carrying ``identifier`` (non-empty) for the peer."""
        send_pdu = self._send_pdu
        for pdv in self.pdvs(identifier):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append(pdv)  # as encode_msg does
            send_pdu(pdata)
        if self._queue.qsize() >= DUL_QUEUE_HIGH_WATER:
            self._wait_for_dul()

    def _wait_for_dul(self) -> None:
        queue, assoc, dul = self._queue, self._assoc, self._dul
        while queue.qsize() and assoc.is_established and dul.is_alive():
            time.sleep(_DUL_DRAIN_POLL)


def _fast_responses(event: Any, config: ServerConfig) -> PendingFindResponses | None:
    """A PendingFindResponses for this C-FIND, or None for pynetdicom's standard path:
    when disabled, when pynetdicom logs each response identifier (DEBUG) or someone
    listens to each DIMSE message sent, for a transfer syntax other than Explicit or
    Implicit VR Little Endian, or when the association internals are not as expected.
    """
    global _fast_path_warned
    if not config.find_fast_path or _config.LOG_RESPONSE_IDENTIFIERS:
        return None
    try:
        assoc = event.assoc
        if assoc.get_handlers(evt.EVT_DIMSE_SENT):
            return None
        context = event.context
        if context.transfer_syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            return None
        return PendingFindResponses(assoc, context.context_id, event.request)
    except Exception as exc:  # noqa: BLE001 - the standard path still answers
        if not _fast_path_warned:
            _fast_path_warned = True
            LOG.warning(
                "C-FIND fast path unavailable (%s: %s); using pynetdicom's per-response path",
                type(exc).__name__,
                exc,
            )
        return None


# ----------------------------------------------------------------- C-FIND handler


def _matcher_options(event: Any, config: ServerConfig) -> dict[str, Any]:
    calling = (event.assoc.requestor.ae_title or "").strip()
    return {
        "calling_station": calling if config.station_from_calling_aet and calling else None,
        "offer_past_days": config.offer_past_days,
    }


def handle_find(event: Any, engine: Engine, config: ServerConfig) -> Iterator[tuple[Any, Any]]:
    """EVT_C_FIND: stream the matcher's answers; honour C-CANCEL between answers."""
    peer = _peer(event.assoc)
    started = time.perf_counter()
    count = 0
    outcome = "success"
    try:
        identifier = event.identifier
        summary = describe_query(identifier)
    except Exception as exc:  # noqa: BLE001
        LOG.warning("C-FIND from %s: undecodable identifier (%s)", peer, type(exc).__name__)
        yield _status(FIND_UNABLE_TO_PROCESS, "Identifier could not be decoded"), None
        return
    LOG.info("C-FIND from %s: %s", peer, summary)
    if LOG.isEnabledFor(logging.DEBUG):
        LOG.debug("C-FIND identifier from %s:\n%s", peer, identifier)

    # Answers are pre-encoded by the matcher in the negotiated transfer syntax.
    implicit_vr = UID(event.context.transfer_syntax).is_implicit_VR
    responses = _fast_responses(event, config)
    assoc = event.assoc
    try:
        with engine.connect() as conn:
            if responses is None:
                # Standard path: pynetdicom encodes and sends each Pending response.
                for result in find_worklist(
                    conn, identifier, limit=config.max_results, implicit_vr=implicit_vr,
                    **_matcher_options(event, config),
                ):
                    if event.is_cancelled:
                        outcome = "cancelled"
                        yield FIND_CANCEL, None
                        return
                    count += 1
                    yield FIND_PENDING, result
            else:
                # Fast path: we send the Pending responses; the generator yields
                # nothing for them, so pynetdicom sends only the final status, after
                # them on the same DUL queue (Success when we simply return).
                for encoded in find_worklist_encoded(
                    conn, identifier, limit=config.max_results, implicit_vr=implicit_vr,
                    **_matcher_options(event, config),
                ):
                    if event.is_cancelled:
                        outcome = "cancelled"
                        yield FIND_CANCEL, None
                        return
                    if not assoc.is_established:
                        outcome = "association ended"
                        return
                    if not encoded:
                        # No keys requested: pynetdicom refuses an empty identifier
                        # (0xC312), as the standard path would.
                        yield FIND_PENDING, Dataset()
                        return
                    responses.send(encoded)
                    count += 1
        if event.is_cancelled:
            # The cancel arrived while the last answer went out; say so.
            outcome = "cancelled"
            yield FIND_CANCEL, None
            return
    except QueryError as exc:
        status = int(getattr(exc, "status", FIND_UNABLE_TO_PROCESS))
        outcome = f"refused 0x{status:04X}"
        LOG.warning("C-FIND from %s refused: status 0x%04X", peer, status)
        LOG.debug("C-FIND from %s refused: %s", peer, exc)
        yield _status(status, str(exc)), None
        return
    except Exception as exc:  # answer the peer, keep the server up
        outcome = "failed 0xC000"
        # Exception text may quote SQL parameters (patient values): type only at ERROR.
        LOG.error("C-FIND from %s failed: %s", peer, type(exc).__name__)
        LOG.debug("C-FIND failure details", exc_info=True)
        yield _status(FIND_UNABLE_TO_PROCESS, "Unable to process the query"), None
        return
    finally:
        LOG.info(
            "C-FIND from %s: %d result(s), %s, %.1f ms",
            peer,
            count,
            outcome,
            (time.perf_counter() - started) * 1000,
        )


def handle_n_create(event: Any, engine: Engine) -> tuple[Dataset, Dataset | None]:
    uid = event.request.AffectedSOPInstanceUID
    return _handle_mpps("N-CREATE", mpps.create_mpps, event, uid, event.attribute_list, engine)


def handle_n_set(event: Any, engine: Engine) -> tuple[Dataset, Dataset | None]:
    uid = event.request.RequestedSOPInstanceUID
    return _handle_mpps("N-SET", mpps.set_mpps, event, uid, event.modification_list, engine)


def _handle_mpps(
    op: str, apply: Any, event: Any, uid: Any, attributes: Dataset, engine: Engine
) -> tuple[Dataset, Dataset | None]:
    """Run one MPPS operation; storage errors become 0x0110, never a false success."""
    peer = _peer(event.assoc)
    try:
        outcome = apply(
            engine,
            str(uid) if uid else None,
            attributes,
            calling_ae_title=(event.assoc.requestor.ae_title or "").strip(),
        )
    except Exception as exc:
        LOG.error("MPPS %s %s from %s failed: %s", op, uid, peer, type(exc).__name__)
        LOG.debug("MPPS %s failure details", op, exc_info=True)
        verb = "store" if op == "N-CREATE" else "update"
        return _status(mpps.PROCESSING_FAILURE, f"Unable to {verb} the MPPS instance"), None
    _log_mpps(op, peer, uid, outcome)
    return outcome.status_dataset(), None


def _log_mpps(op: str, peer: str, uid: Any, outcome: mpps.MppsOutcome) -> None:
    if outcome.ok:
        rows = outcome.worklist_item_ids or "none (unscheduled)"
        LOG.info(
            "MPPS %s %s from %s: %s, worklist rows %s", op, uid, peer, outcome.mpps_status, rows
        )
    else:
        LOG.warning(
            "MPPS %s %s from %s: status 0x%04X (%s)",
            op,
            uid,
            peer,
            outcome.status,
            outcome.error_comment,
        )


def _on_conn_open(event: Any, counter: Iterator[int]) -> None:
    event.assoc._mwl_number = next(counter)


def _on_established(event: Any) -> None:
    assoc = event.assoc
    contexts = sorted({cx.abstract_syntax.name for cx in assoc.accepted_contexts})
    LOG.info("Association %s accepted (%s)", _peer(assoc), ", ".join(contexts))


def _on_rejected(event: Any, config: ServerConfig) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = (getattr(primitive, "calling_ae_title", "") or "").strip()
    called = (getattr(primitive, "called_ae_title", "") or "").strip()
    if config.allowed_aets and calling not in config.allowed_aets:
        reason = "calling AE title not on the allow-list"
    elif called != config.ae_title:
        reason = f"called AE title {called!r} is not {config.ae_title!r}"
    else:
        reason = f"more than {config.max_associations} associations"
    LOG.warning("Association %s rejected: %s", _peer(assoc), reason)


def _on_released(event: Any) -> None:
    LOG.info("Association %s released", _peer(event.assoc))


def _on_aborted(event: Any) -> None:
    LOG.info("Association %s aborted", _peer(event.assoc))


# ----------------------------------------------------------------- AE and server


def build_ae(config: ServerConfig) -> AE:
    """The configured application entity (contexts, AE checks, limits, timeouts)."""
    _configure_pynetdicom_logging()
    ae = AE(ae_title=validate_ae_title(config.ae_title))
    for abstract in (Verification, ModalityWorklistInformationFind, ModalityPerformedProcedureStep):
        ae.add_supported_context(abstract, TRANSFER_SYNTAXES)
    ae.require_called_aet = True
    ae.require_calling_aet = [
        validate_ae_title(t, "allowed calling AE title") for t in config.allowed_aets
    ]
    ae.maximum_associations = int(config.max_associations)
    ae.network_timeout = config.network_timeout
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    return ae


class MwlAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, plus: the TLS handshake runs in the connection's
    own thread with a deadline (pynetdicom's does it in the accept loop, where one
    silent client would stall every other connection), and stopping the server also
    releases the database engine."""

    engine: Engine | None = None
    config: ServerConfig | None = None
    handshake_timeout: float = DEFAULT_ACSE_TIMEOUT

    def get_request(self) -> tuple[socket.socket, Any]:
        client_socket, address = self.socket.accept()  # type: ignore[union-attr]
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(
                client_socket, server_side=True, do_handshake_on_connect=False
            )
        return client_socket, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            previous = request.gettimeout()
            try:
                request.settimeout(self.handshake_timeout)
                request.do_handshake()
                request.settimeout(previous)
            except (OSError, ValueError) as exc:
                LOG.warning(
                    "TLS handshake with %s:%s failed: %s",
                    client_address[0],
                    client_address[1],
                    getattr(exc, "reason", None) or type(exc).__name__,
                )
                with contextlib.suppress(OSError):
                    request.close()
                return
        super().finish_request(request, client_address)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.engine is not None:
                self.engine.dispose()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def start_server(
    config: ServerConfig, *, engine: Engine | None = None, ae: AE | None = None
) -> MwlAssociationServer:
    """Start serving in background threads; returns the running server.

    Stop it with ``server.shutdown()`` (or ``server.ae.shutdown()``, which also
    aborts open associations); either releases the engine.
    """
    ssl_context = make_ssl_context(config)
    ae = ae or build_ae(config)
    engine = engine or schema.make_engine(config.db_url)
    counter = itertools.count(1)
    handlers = [
        (evt.EVT_CONN_OPEN, _on_conn_open, [counter]),
        (evt.EVT_ESTABLISHED, _on_established),
        (evt.EVT_REJECTED, _on_rejected, [config]),
        (evt.EVT_RELEASED, _on_released),
        (evt.EVT_ABORTED, _on_aborted),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_FIND, handle_find, [engine, config]),
        (evt.EVT_N_CREATE, handle_n_create, [engine]),
        (evt.EVT_N_SET, handle_n_set, [engine]),
    ]
    try:
        server = ae.make_server(
            (config.host, int(config.port)),
            ae_title=config.ae_title,
            ssl_context=ssl_context,
            evt_handlers=handlers,
            server_class=MwlAssociationServer,
        )
    except Exception:
        engine.dispose()
        raise
    server.engine = engine
    server.config = config
    if config.acse_timeout:
        server.handshake_timeout = float(config.acse_timeout)

    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(lambda: server.serve_forever(poll_interval=SERVE_POLL_INTERVAL)),
        name=f"AcceptorServer@{stamp}",
        daemon=True,
    )
    thread.start()
    ae._servers.append(server)  # as AE.start_server does, so ae.shutdown() stops it

    LOG.info(
        "MWL service %s listening on %s:%d (TLS %s; calling AE titles %s; "
        "max %d associations; database %s)",
        config.ae_title,
        config.host,
        server.port,
        ("on, client certificates required" if config.tls_ca else "on") if config.tls else "off",
        ", ".join(config.allowed_aets) if config.allowed_aets else "any",
        config.max_associations,
        schema.describe_db(engine),
    )
    _warn_if_empty(engine)
    return server


def _warn_if_empty(engine: Engine) -> None:
    # A wrong working directory or URL silently creates a new, empty database:
    # say so loudly instead of serving empty worklists.
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(schema.WorklistItem))
    if rows == 0:
        LOG.warning(
            "The worklist database %s has no rows yet. If a sync has run, --db-url or "
            "WORKLIST_DB_URL does not point at the database the Dagster sync writes.",
            schema.describe_db(engine),
        )
