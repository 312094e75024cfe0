"""The accepting side of mwl-service: which TCP connections get an association
slot, and for how long.

pynetdicom's threaded server accepts every connection and leaves the accepted socket
without a timeout, so a peer that sends half a PDU, a silent TCP connection, an HTTP
probe or a client that stops reading can hold a slot (and, through pynetdicom's
non-daemon DUL thread, the process) for ever. :class:`MwlAssociationServer` adds:

* every accepted socket (TLS or not) gets the network timeout, so no single read or
  write waits longer than that, and TCP_NODELAY, so the last small PDU of an
  answer is not held back by Nagle's algorithm waiting for the peer's delayed ACK;
* a connection must finish its TLS handshake (in its own thread, not the accept
  loop) and send its A-ASSOCIATE-RQ within ``request_timeout`` of connecting, else
  it is closed;
* at most ``max_per_host`` live connections per peer address; more are closed at
  once (associations and connections still waiting for their request alike);
* ``max_associations`` counts associations, i.e. connections whose A-ASSOCIATE-RQ
  has arrived; more are rejected "local limit exceeded". Connections still waiting
  for their request have their own, larger budget (``PENDING_PER_ASSOCIATION`` per
  association; more are closed at once), so silent sockets cannot keep a real client
  waiting for the request timeout (pynetdicom's own limit counts every connection);
* :meth:`MwlAssociationServer.stop` ends every connection promptly, however its peer
  behaves: A-ABORT to each association, then the sockets of those that do not end
  within a grace period are shut down.

pynetdicom internals relied on (pynetdicom>=3,<4, checked against 3.0.4), besides the
``socketserver`` hooks ``ThreadedAssociationServer`` keeps: ``assoc.dul.socket.socket``
(the accepted socket an association runs on), ``assoc.dul.to_user_queue`` (where the
acceptor waits for the A-ASSOCIATE-RQ; ``None`` there means none came),
``assoc.dul.state_machine.current_state`` and ``assoc.dul.event_queue`` (a DUL still
in Sta1 with nothing to do has seen no request), and ``assoc.acse.send_reject`` with
``assoc.kill`` (the rejection over the limit, as pynetdicom sends its own). When one
of the first four is missing the connection
is not tracked or not woken early (:func:`_socket_of`, :meth:`Connection.peer_gone`,
:meth:`Connection.close`); the socket timeouts and pynetdicom's own ACSE timeout
still end it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

LOG = logging.getLogger("mwl_service.acceptor")

# A refused connection is logged at most this often per peer address (seconds):
# a host opening thousands of connections must not flood the log.
REFUSAL_LOG_INTERVAL = 60.0
# Time the associations get to end on their own after A-ABORT at shutdown.
STOP_GRACE = 1.0
# A connection younger than this is never taken for closed by its peer: pynetdicom's
# DUL starts in state Sta1 and leaves it with its first event.
_SETTLE = 0.5
# Connections that have not sent their association request yet, per association slot:
# a thread each, for at most the request timeout.
PENDING_PER_ASSOCIATION = 4
# Connections the kernel completes while the accept loop has not taken them yet.
LISTEN_BACKLOG = 128
# A-ASSOCIATE-RJ: rejected transient, by the presentation service provider, local
# limit exceeded (what pynetdicom sends for its own limit).
_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


def _socket_of(assoc: Any) -> socket.socket | None:
    """The accepted socket ``assoc`` runs on (pynetdicom's ``dul.socket.socket``)."""
    return getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)


@dataclass
class Connection:
    """One accepted TCP connection, from accept until its association ends."""

    sock: socket.socket
    host: str
    opened: float = field(default_factory=time.monotonic)
    assoc: Any = None  # the pynetdicom Association, once created
    requested: bool = False  # its A-ASSOCIATE-RQ has arrived

    def is_over(self) -> bool:
        if self.sock.fileno() == -1:
            return True
        assoc = self.assoc
        # An Association not started yet (ident None) is about to run: still live.
        return assoc is not None and assoc.ident is not None and not assoc.is_alive()

    def peer_gone(self, now: float) -> bool:
        """The peer closed the connection before its association request: pynetdicom
        would still wait for the request until its ACSE timeout."""
        dul = getattr(self.assoc, "dul", None)
        if dul is None or dul.ident is None or now - self.opened < _SETTLE:
            return False
        if not dul.is_alive():
            return True
        state = getattr(getattr(dul, "state_machine", None), "current_state", None)
        events = getattr(dul, "event_queue", None)
        return state == "Sta1" and events is not None and events.empty()

    def close(self) -> None:
        """Shut the socket down (wakes any thread blocked reading or writing it) and
        wake the association waiting for its request, if any."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self.assoc is not None and not self.requested:
            # pynetdicom's acceptor takes None from this queue as "no request came".
            with contextlib.suppress(AttributeError):
                self.assoc.dul.to_user_queue.put(None)


class MwlAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with the limits above.

    ``network_timeout``, ``request_timeout`` (seconds, None: no limit),
    ``max_per_host`` and ``max_associations`` (None: no cap) are set by
    :meth:`set_limits` before it serves; the handlers of EVT_CONN_OPEN and
    EVT_REQUESTED report to :meth:`connection_opened` and :meth:`association_requested`.
    """

    network_timeout: float | None = None
    request_timeout: float | None = None
    max_per_host: int | None = None
    max_associations: int | None = None
    # The listen backlog (socketserver's default is 5): a burst of connections, most
    # of them closed again at once, must not fill it, or the kernel drops a
    # scanner's SYN and the scanner retries only a second or more later.
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: dict[socket.socket, Connection] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._refused: dict[str, tuple[float, int]] = {}  # host -> (last logged, since)
        super().__init__(*args, **kwargs)

    def set_limits(self, ae: Any, network_timeout: float | None,
                   request_timeout: float | None, max_per_host: int | None,
                   max_associations: int | None) -> None:
        """Set the limits above. The AE's own association limit counts connections
        still waiting for their request too: it is raised so that it only backs up
        this server's two (associations, waiting connections)."""
        self.network_timeout, self.request_timeout = network_timeout, request_timeout
        self.max_per_host, self.max_associations = max_per_host, max_associations
        if max_associations is not None:
            ae.maximum_associations = self.max_connections

    @property
    def max_pending(self) -> int | None:
        """Connections that may wait for their association request at once."""
        if self.max_associations is None:
            return None
        return PENDING_PER_ASSOCIATION * self.max_associations

    @property
    def max_connections(self) -> int | None:
        """Associations and waiting connections together: the limit to give
        pynetdicom's AE, which counts both (so that this server's limits apply)."""
        if self.max_associations is None:
            return None
        return self.max_associations + (self.max_pending or 0)

    # --------------------------------------------------------------- accepting

    def get_request(self) -> tuple[socket.socket, Any]:
        client_socket, address = self.socket.accept()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            client_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # accept() returns a socket without timeout whatever the listening socket has.
        client_socket.settimeout(self.network_timeout)
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(
                client_socket, server_side=True, do_handshake_on_connect=False
            )
        return client_socket, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Register the connection, or refuse it (the server then closes it) when the
        server is stopping or its peer address has ``max_per_host`` live ones."""
        host = str(client_address[0])
        with self._lock:
            if self._stopping:
                return False
            self._forget_ended()
            live = sum(1 for c in self._connections.values() if c.host == host)
            if self.max_per_host is not None and live >= self.max_per_host:
                self._log_refusal(host, live)
                return False
            pending = sum(1 for c in self._connections.values() if not c.requested)
            if self.max_pending is not None and pending >= self.max_pending:
                self._log_refusal("", pending)
                return False
            self._connections[request] = Connection(request, host)
        return True

    def _log_refusal(self, host: str, live: int) -> None:
        """Warn at most once a minute per peer address ("": the waiting budget)."""
        now = time.monotonic()
        for quiet in [h for h, (t, n) in self._refused.items() if not n and now - t > 600]:
            del self._refused[quiet]  # bounded however many hosts were ever refused
        last, count = self._refused.get(host, (-REFUSAL_LOG_INTERVAL, 0))
        count += 1
        if now - last >= REFUSAL_LOG_INTERVAL:
            if host:
                LOG.warning(
                    "Connection from %s refused: %d connections open, the per-host limit "
                    "(%d refused since the last such warning)", host, live, count)
            else:
                LOG.warning(
                    "Connection refused: %d connections are waiting for their association "
                    "request, the limit (%d refused since the last such warning)", live, count)
            self._refused[host] = (now, 0)
        else:
            self._refused[host] = (last, count)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread (pynetdicom's
        # runs in the accept loop, where one silent client would stall every other
        # connection); the request deadline covers it.
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.request_timeout or self.network_timeout)
                request.do_handshake()
                request.settimeout(self.network_timeout)
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

    # --------------------------------------------------------------- association events

    def connection_opened(self, assoc: Any) -> None:
        """EVT_CONN_OPEN: the association of a registered connection is about to run.
        Until its request arrives, it waits at most the request timeout for it."""
        conn = self._connections.get(_socket_of(assoc))
        if conn is not None:
            conn.assoc = assoc
        if self.request_timeout is not None:
            assoc._mwl_acse_timeout = assoc.acse_timeout
            assoc.acse_timeout = self.request_timeout  # also pynetdicom's ARTIM timer

    def association_requested(self, assoc: Any) -> None:
        """EVT_REQUESTED: the A-ASSOCIATE-RQ is in, the connection takes an association
        slot (rejected "local limit exceeded" when none is left, before negotiation);
        the ACSE timeout applies again."""
        with self._lock:
            self._forget_ended()
            conn = self._connections.get(_socket_of(assoc))
            if conn is not None:
                conn.requested = True
            associations = sum(1 for c in self._connections.values() if c.requested)
        if hasattr(assoc, "_mwl_acse_timeout"):
            assoc.acse_timeout = assoc._mwl_acse_timeout
        if self.max_associations is not None and associations > self.max_associations:
            # As pynetdicom rejects for its own limit (it then skips negotiation).
            assoc.acse.send_reject(*_LOCAL_LIMIT_EXCEEDED)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()

    # --------------------------------------------------------------- deadlines

    def service_actions(self) -> None:
        """Called by the accept loop every poll interval: close each connection that
        has not sent its association request within the request timeout (a read
        blocked in the middle of a PDU is woken by the shutdown), and release those
        whose peer has already gone.

        Not pynetdicom's own, which forces a full garbage collection every 60 turns of
        the loop (every 3 s here): it holds the interpreter for milliseconds while an
        association may be waiting for an answer, and Python's collector frees ended
        associations by itself."""
        limit = self.request_timeout
        now = time.monotonic()
        with self._lock:
            self._forget_ended()
            waiting = [c for c in self._connections.values() if not c.requested]
            late = [c for c in waiting if limit is not None and now - c.opened > limit]
            gone = [c for c in waiting if c not in late and c.peer_gone(now)]
            for conn in late + gone:
                del self._connections[conn.sock]
        for conn in late:
            LOG.warning(
                "Connection from %s closed: no association request within %g s",
                conn.host,
                limit,
            )
        for conn in late + gone:
            conn.close()

    def _forget_ended(self) -> None:
        for sock in [s for s, c in self._connections.items() if c.is_over()]:
            del self._connections[sock]

    # --------------------------------------------------------------- stopping

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting, abort every association, and shut down the sockets of
        those that have not ended after ``grace`` seconds (a peer that stopped
        reading never takes its A-ABORT). Returns when all have ended."""
        with self._lock:
            self._stopping = True
            connections = list(self._connections.values())
        aborts = []
        for conn in connections:
            assoc = conn.assoc
            if assoc is not None and assoc.is_established:
                thread = threading.Thread(target=assoc.abort, daemon=True)
                thread.start()
                aborts.append(thread)
            else:
                conn.close()
        deadline = time.monotonic() + grace
        for thread in aborts:
            thread.join(max(0.0, deadline - time.monotonic()))
        for conn in connections:
            conn.close()
        for conn in connections:
            if conn.assoc is not None and conn.assoc.ident is not None:
                conn.assoc.join(grace)
        self.shutdown()

    @property
    def port(self) -> int:
        return int(self.server_address[1])
