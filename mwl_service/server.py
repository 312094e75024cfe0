"""The DICOM server: Verification, Modality Worklist C-FIND and MPPS N-CREATE/N-SET.

The handlers here only wire pynetdicom to the worklist database:
* C-FIND asks :func:`mwl_service.matching.find_worklist_encoded` (a pure
  query-to-results function) and streams its answers, one pooled connection per
  query, through :mod:`mwl_service.fastpath` (already encoded answers framed as
  pynetdicom would, several per socket write; the final status is left to
  pynetdicom). With
  pynetdicom's identifier logging on (DEBUG), or when the association internals are
  not as expected, the handler yields datasets from
  :func:`~mwl_service.matching.find_worklist` the standard way instead;
* N-CREATE / N-SET call :mod:`mwl_service.mpps`.
Which connections get a slot, and for how long: :mod:`mwl_service.acceptor`.

Logging: associations (calling AE title, peer address), queries (which keys were
used, values only for non-identifying keys such as modality, station and dates, cut
to ``LOGGED_VALUE_LENGTH`` characters) and result counts go to the ``mwl_service``
loggers at INFO. Describing a query never decodes its values: what the matcher sees
is what the peer sent. Patient data is never logged at INFO; pynetdicom's identifier
dumps and per-PDU/DIMSE logging are switched off unless the ``pynetdicom`` logger is
enabled for DEBUG when :func:`build_ae` runs.
"""

from __future__ import annotations

import copy
import itertools
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)
from pynetdicom.utils import make_target
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from mwl_service import mpps, schema
from mwl_service.acceptor import MwlAssociationServer
from mwl_service.fastpath import PeerStalled, fast_responses
from mwl_service.matching import QueryError, find_worklist, find_worklist_encoded
from mwl_service.retention import DEFAULT_OFFER_PAST_DAYS
from mwl_service.transport import AcceptedConnectionHandler
from mwl_service.vr import validate_ae_title

LOG = logging.getLogger("mwl_service.server")

DEFAULT_AE_TITLE = "CALPENDO_MWL"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11112
DEFAULT_MAX_ASSOCIATIONS = 10
DEFAULT_NETWORK_TIMEOUT = 60.0
DEFAULT_ACSE_TIMEOUT = 30.0
DEFAULT_DIMSE_TIMEOUT = 30.0
# A connection must send its association request this soon (seconds): short, so
# silent connections and probes cannot hold the slots scanners need.
DEFAULT_REQUEST_TIMEOUT = 5.0
# Logged query values are cut to this many characters.
LOGGED_VALUE_LENGTH = 64
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
    # Live connections per peer address; None: half of max_associations (at least 1).
    max_connections_per_host: int | None = None
    network_timeout: float | None = DEFAULT_NETWORK_TIMEOUT
    acse_timeout: float | None = DEFAULT_ACSE_TIMEOUT
    dimse_timeout: float | None = DEFAULT_DIMSE_TIMEOUT
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
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

    @property
    def per_host_limit(self) -> int:
        if self.max_connections_per_host is not None:
            return int(self.max_connections_per_host)
        return max(1, -(-int(self.max_associations) // 2))


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


def _shown(value: Any) -> str:
    """A logged value: raw bytes shown as text, cut to LOGGED_VALUE_LENGTH."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip(" \x00")
    if len(text) > LOGGED_VALUE_LENGTH:
        return f"{text[:LOGGED_VALUE_LENGTH]}...({len(text)} characters)"
    return text


def _raw_vr(elem: Any) -> str | None:
    if elem.VR:
        return str(elem.VR)
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return None


def describe_query(identifier: Dataset) -> str:
    """Which keys a C-FIND uses, without patient values (safe for INFO logs).

    Walks the elements as received (``Dataset.elements()``): decoding a value here
    would make pydicom convert it with the default character set, and the matcher
    would then see that instead of the bytes the peer sent. Only sequences are
    parsed, as the matcher parses them too."""
    matching: list[str] = []
    returned = 0

    def visit(ds: Dataset, prefix: str) -> None:
        nonlocal returned
        for elem in ds.elements():
            keyword = keyword_for_tag(elem.tag) or str(elem.tag)
            value = elem.value
            if keyword == "SpecificCharacterSet":
                if value:
                    matching.append(f"{keyword}={_shown(value)}")
                continue
            returned += 1
            if _raw_vr(elem) == "SQ":
                for item in ds[elem.tag].value or []:
                    visit(item, f"{prefix}{keyword}>")
                continue
            if isinstance(value, bytes):
                if not value.strip(b" \x00"):
                    continue
            elif value is None or not str(value).strip(" \x00"):
                continue
            if keyword in _LOGGABLE_VALUES:
                matching.append(f"{prefix}{keyword}={_shown(value)}")
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


# ----------------------------------------------------------------- C-FIND handler


def matcher_options(event: Any, config: ServerConfig) -> dict[str, Any]:
    """The matcher's keyword options this server's settings ask for: the answer
    limit, the calling AE title as the station (``--station-from-calling-aet``) and
    how many days of past steps are offered as work (``--offer-past-days``)."""
    calling = (event.assoc.requestor.ae_title or "").strip()
    return {
        "limit": config.max_results,
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
        # A copy: printing decodes every value, which must not reach the matcher.
        LOG.debug("C-FIND identifier from %s:\n%s", peer, copy.deepcopy(identifier))

    # Answers are pre-encoded by the matcher in the negotiated transfer syntax.
    implicit_vr = UID(event.context.transfer_syntax).is_implicit_VR
    options = matcher_options(event, config)
    responses = fast_responses(
        event, enabled=config.find_fast_path, stall_timeout=config.network_timeout
    )
    assoc = event.assoc
    try:
        with engine.connect() as conn:
            if responses is None:
                # Standard path: pynetdicom encodes and sends each Pending response.
                for result in find_worklist(conn, identifier, implicit_vr=implicit_vr, **options):
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
                    conn, identifier, implicit_vr=implicit_vr, **options
                ):
                    if event.is_cancelled:
                        responses.flush()  # the answers before it, then Cancel
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
                responses.flush()  # before pynetdicom's final response
        if event.is_cancelled:
            # The cancel arrived while the last answer went out; say so.
            outcome = "cancelled"
            yield FIND_CANCEL, None
            return
    except PeerStalled as exc:
        outcome = f"connection closed: {exc}"
        LOG.warning("C-FIND from %s: %s, connection closed", peer, exc)
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


class WorklistServer(MwlAssociationServer):
    """The association server of one running mwl-service: stopping it also
    releases its database engine."""

    engine: Engine | None = None
    config: ServerConfig | None = None

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.engine is not None:
                self.engine.dispose()


def start_server(
    config: ServerConfig, *, engine: Engine | None = None, ae: AE | None = None
) -> WorklistServer:
    """Start serving in background threads; returns the running server.

    Stop it with ``server.stop()``: it ends every connection promptly, whatever the
    peers do, and releases the engine (``server.shutdown()`` only stops accepting).
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
            server_class=WorklistServer,
            request_handler=AcceptedConnectionHandler,
        )
    except Exception:
        engine.dispose()
        raise
    server.engine = engine
    server.config = config
    server.network_timeout = config.network_timeout
    server.request_timeout = config.request_timeout
    server.max_per_host = config.per_host_limit
    server.bind(evt.EVT_CONN_OPEN, lambda event: server.connection_opened(event.assoc))
    server.bind(evt.EVT_REQUESTED, lambda event: server.association_requested(event.assoc))

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
        "max %d associations, %d per host; database %s)",
        config.ae_title,
        config.host,
        server.port,
        ("on, client certificates required" if config.tls_ca else "on") if config.tls else "off",
        ", ".join(config.allowed_aets) if config.allowed_aets else "any",
        config.max_associations,
        config.per_host_limit,
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
