"""The DICOM server's wiring: the application entity, its handlers, start and stop.

Verification, Modality Worklist C-FIND and MPPS N-CREATE/N-SET are answered by the
handlers of :mod:`mwl_service.handlers`; this module binds them to pynetdicom's
events and starts serving, as pynetdicom's ``apps/qrscp`` binds its ``handlers.py``.
Which connections get a slot, and for how long: :mod:`mwl_service.acceptor`.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4):
``AE._servers``, the list of running servers ``AE.shutdown()`` stops, which
``AE.start_server`` appends to. The server is started as ``AE.start_server``
starts it (``AE.make_server`` with our server class, then ``serve_forever`` in a
thread) so that it can be configured before it serves; when ``_servers`` is not a
list :func:`start_server` says so once and ``ae.shutdown()`` leaves the server to
``server.stop()``, which stops it in any case.
"""

from __future__ import annotations

import itertools
import logging
import threading
from datetime import datetime
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)
from pynetdicom.utils import make_target
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from mwl_service import handlers
from mwl_service.acceptor import MwlAssociationServer
from mwl_service.database import describe_db
from mwl_service.engine import make_engine
from mwl_service.logs import quiet_pynetdicom
from mwl_service.schema import WorklistItem
from mwl_service.settings import ServerConfig
from mwl_service.tls import make_ssl_context
from mwl_service.transport import AcceptedConnectionHandler
from mwl_service.vr import validate_ae_title

LOG = logging.getLogger("mwl_service.server")

# Largest P-DATA PDU we accept. Requests to a worklist SCP are small, so this only
# bounds memory per PDU; answers are sized by the peer's own maximum.
MAXIMUM_PDU_SIZE = 1024 * 1024

# How often the accept loop checks for shutdown and deadlines (seconds): bounds the
# latency of a stop; 20 idle wake-ups a second cost nothing measurable.
SERVE_POLL_INTERVAL = 0.05

# Explicit VR Little Endian first: pynetdicom picks the first of *our* syntaxes that
# the requestor proposed.
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def build_ae(config: ServerConfig) -> AE:
    """The configured application entity (contexts, AE checks, limits, timeouts)."""
    quiet_pynetdicom()
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


def event_handlers(engine: Engine, config: ServerConfig) -> list[tuple[Any, ...]]:
    """Which handler answers which pynetdicom event, with its extra arguments."""
    return [
        (evt.EVT_CONN_OPEN, handlers.on_conn_open, [itertools.count(1)]),
        (evt.EVT_ESTABLISHED, handlers.on_established),
        (evt.EVT_REJECTED, handlers.on_rejected, [config]),
        (evt.EVT_RELEASED, handlers.on_released),
        (evt.EVT_ABORTED, handlers.on_aborted),
        (evt.EVT_C_ECHO, handlers.handle_echo),
        (evt.EVT_C_FIND, handlers.handle_find, [engine, config]),
        (evt.EVT_N_CREATE, handlers.handle_n_create, [engine]),
        (evt.EVT_N_SET, handlers.handle_n_set, [engine]),
    ]


def start_server(
    config: ServerConfig, *, engine: Engine | None = None, ae: AE | None = None
) -> WorklistServer:
    """Start serving in background threads; returns the running server.

    Stop it with ``server.stop()``: it ends every connection promptly, whatever the
    peers do, and releases the engine (``server.shutdown()`` only stops accepting).
    """
    ssl_context = make_ssl_context(config)
    ae = ae or build_ae(config)
    engine = engine or make_engine(config.db_url)
    try:
        server = ae.make_server(
            (config.host, int(config.port)),
            ae_title=config.ae_title,
            ssl_context=ssl_context,
            evt_handlers=event_handlers(engine, config),
            server_class=WorklistServer,
            request_handler=AcceptedConnectionHandler,
        )
    except Exception:
        engine.dispose()
        raise
    _configure(ae, server, engine, config)
    _serve_in_background(ae, server)
    _log_listening(server, engine, config)
    _warn_if_empty(engine)
    return server


def _configure(ae: AE, server: WorklistServer, engine: Engine, config: ServerConfig) -> None:
    """The acceptor's limits, and the events that tell it about its connections."""
    server.engine = engine
    server.config = config
    server.set_limits(ae, config.network_timeout, config.request_timeout,
                      config.per_host_limit, config.max_associations)
    server.bind(evt.EVT_CONN_OPEN, lambda event: server.connection_opened(event.assoc))
    server.bind(evt.EVT_REQUESTED, lambda event: server.association_requested(event.assoc))


def _serve_in_background(ae: AE, server: WorklistServer) -> None:
    """As ``AE.start_server(..., block=False)`` does: serve in a daemon thread, and
    register the server so that ``ae.shutdown()`` stops it."""
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(lambda: server.serve_forever(poll_interval=SERVE_POLL_INTERVAL)),
        name=f"AcceptorServer@{stamp}",
        daemon=True,
    )
    thread.start()
    servers = getattr(ae, "_servers", None)
    if isinstance(servers, list):
        servers.append(server)
    else:
        LOG.warning("pynetdicom's AE has no server list: ae.shutdown() will not stop it")


def _log_listening(server: WorklistServer, engine: Engine, config: ServerConfig) -> None:
    if config.tls:
        tls = "on, client certificates required" if config.tls_ca else "on"
    else:
        tls = "off"
    LOG.info(
        "MWL service %s listening on %s:%d (TLS %s; calling AE titles %s; "
        "max %d associations, %d per host; database %s)",
        config.ae_title,
        config.host,
        server.port,
        tls,
        ", ".join(config.allowed_aets) if config.allowed_aets else "any",
        config.max_associations,
        config.per_host_limit,
        describe_db(engine),
    )


def _warn_if_empty(engine: Engine) -> None:
    # A wrong working directory or URL silently creates a new, empty database:
    # say so loudly instead of serving empty worklists.
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(WorklistItem))
    if rows == 0:
        LOG.warning(
            "The worklist database %s has no rows yet. If a sync has run, --db-url or "
            "WORKLIST_DB_URL does not point at the database the Dagster sync writes.",
            describe_db(engine),
        )
