"""The HTTP side: a threaded loopback server answering the Calpendo web-API contract.

Request handling is split in two: ``CalpendoSimulator.respond`` turns a GET's path and
Authorization header into a ``Response`` and knows nothing about sockets; ``_Handler``
only moves bytes.
Each connection gets its own daemon thread, so the injected latency delays requests
without serialising them, as a real server's worker pool would.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from . import admin
from .background import BackgroundServer, FailurePlan, LoopbackHTTPServer
from .catalogue import Directory, default_type
from .errors import ApiError, NotFound
from .query import compile_predicate, parse_expression, parse_paths, split_segments
from .render import DEFAULT_PATHS, Selection, detail, query_body
from .response import HTML_TYPE, TEXT_TYPE, Response, write_response
from .schema import TypeRegistry
from .seed import generate_records
from .booking import Booking
from .store import BookingStore

LOG = logging.getLogger("calpendo_sim")
DEFAULT_OPERATOR = "Tech, Anna"
_TYPE_DEFAULT = object()  # add_booking's operator: "whatever this type gets by default"


class _Server(LoopbackHTTPServer):
    app: "CalpendoSimulator"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools are exercised
    server_version = "CalpendoSimulator/1.0"
    timeout = 60  # idle keep-alive connections release their thread eventually
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every keep-alive request and distort the benchmarks.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path.startswith("/admin/"):
            return self._admin("GET")
        self._send(self.server.app.respond(self.path, self.headers.get("Authorization")))

    def do_POST(self) -> None:  # noqa: N802
        if self.path.startswith("/admin/"):
            return self._admin("POST")
        self._send(Response.text(405, "the Calpendo API is read-only here"))

    def _admin(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._send(self.server.app.respond_admin(
            method, self.path, body, self.client_address[0], self.headers.get("Authorization")))

    def _send(self, response: Response) -> None:
        write_response(self, response)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.app.log_requests:
            super().log_message(format, *args)


class CalpendoSimulator(BackgroundServer):
    """A Calpendo web API on loopback, seeded with bookings and changeable while it runs.

    ``bookings``/``seed``/``today``/``days``/``past_days`` drive the generated seed data
    (see ``seed.generate_records``); ``today`` defaults to the current date in ``timezone``.
    ``latency`` (seconds) delays every request and ``flat_keys`` switches answers to flat
    dotted keys; both may be changed while serving. ``log_requests`` writes an access log
    line per request to stderr (the CLI's default).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, bookings: int = 60,
                 seed: int = 42, username: str = "calpendo", password: str = "calpendo",
                 latency: float = 0.0, timezone: str = "America/Edmonton",
                 today: dt.date | None = None, days: int = 7, past_days: int = 1,
                 flat_keys: bool = False, log_requests: bool = False) -> None:
        self.host, self.port = host, port
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        self.today = today or dt.datetime.now(self.zone).date()
        self.latency = latency
        self.flat_keys = flat_keys
        self.log_requests = log_requests
        self._credentials = f"{username}:{password}".encode("utf-8")
        self.registry = TypeRegistry()
        self.store = BookingStore(self.registry, Directory(), self.zone)
        self.store.load(generate_records(bookings, seed, self.today, days, past_days,
                                         self.store.directory))
        self._failures: FailurePlan[Response] = FailurePlan()
        self._count_lock = threading.Lock()
        self._request_count = 0

    # ----------------------------------------------------------------- lifecycle

    thread_name = "calpendo-sim"

    def make_server(self) -> _Server:
        return _Server((self.host, self.port), self, _Handler)

    @property
    def url(self) -> str:
        """The base URL clients are configured with; the API lives under ``/webdav``."""
        return self.origin

    # ----------------------------------------------------------------- instrumentation

    @property
    def request_count(self) -> int:
        with self._count_lock:
            return self._request_count

    def reset_counts(self) -> None:
        with self._count_lock:
            self._request_count = 0

    def fail_requests(self, status: int = 500, count: int | None = 1, body: str | bytes | None = None,
                      content_type: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``count`` requests (None: all until clear_failures) with ``status``.

        ``body`` may be an HTML error page or broken JSON; the content type defaults to HTML
        for bodies starting with '<' and plain text otherwise. ``headers`` are sent as well
        (e.g. ``{"Retry-After": "3600"}``).
        """
        if body is None:
            body = f"Simulated failure (HTTP {status})\n"
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if content_type is None:
            content_type = HTML_TYPE if raw.lstrip().startswith(b"<") else TEXT_TYPE
        self._failures.set(Response(status, raw, content_type, dict(headers or {})), count)

    def clear_failures(self) -> None:
        self._failures.clear()

    # ----------------------------------------------------------------- data store

    def add_booking(self, title: str = "", resource: str = "3T MRI",
                    start: dt.datetime | None = None, minutes: int = 60,
                    status: str = "APPROVED", biskit_type: str | None = None,
                    project: str | None = "BRISKP", operator: Any = _TYPE_DEFAULT,
                    **extra_props: Any) -> int:
        """Create a booking and return its id.

        ``start`` is site-local wall time (naive; an aware datetime is converted) and
        defaults to 09:00 today. ``biskit_type`` defaults to the resource's type (3T MRI ->
        MRIScan, EEG Lab -> EEGBooking, others Calpendo.Booking). ``operator`` defaults to
        "Tech, Anna" on types that have an Operator; giving one for other types is an error.
        """
        start = start or dt.datetime.combine(self.today, dt.time(9))
        changes: dict[str, Any] = {"title": title, "status": status, "project": project,
                                   **extra_props}
        if operator is not _TYPE_DEFAULT:
            changes["operator"] = operator
        elif self._has_operator(biskit_type or default_type(resource)):
            changes["operator"] = DEFAULT_OPERATOR
        return self.store.add(resource=resource, start=start, minutes=minutes,
                              biskit_type=biskit_type, **changes)

    def _has_operator(self, type_name: str) -> bool:
        try:
            return "Operator" in self.registry.fields(type_name)
        except NotFound:  # a new subtype, registered by the store on first use
            return False

    def update_booking(self, booking_id: int, **props: Any) -> None:
        """Change properties: title, status, project, operator, resource, booker, owner,
        cancelled, cancellationReason, start, minutes or extra properties."""
        self.store.update(booking_id, **props)

    def move_booking(self, booking_id: int, start: dt.datetime, minutes: int | None = None) -> None:
        """Reschedule; the duration is kept unless ``minutes`` is given."""
        self.store.update(booking_id, start=start, **({} if minutes is None else {"minutes": minutes}))

    def cancel_booking(self, booking_id: int, reason: str = "participant ill") -> None:
        self.store.update(booking_id, status="CANCELLED", cancelled=True, cancellationReason=reason)

    def delete_booking(self, booking_id: int) -> None:
        self.store.delete(booking_id)

    def get_booking(self, booking_id: int) -> dict:
        """The booking as its own type serves it: ``{"id", "biskitType", "properties"}``."""
        return self._full(self.store.get(booking_id))

    def bookings(self) -> list[dict]:
        """Every booking, by id, in the get_booking shape."""
        return [self._full(booking) for booking in self.store.snapshot()]

    def _full(self, booking: Booking) -> dict:
        return booking.as_biskit(self.registry.fields(booking.biskit_type))

    # ----------------------------------------------------------------- HTTP

    def respond(self, raw_path: str, authorization: str | None) -> Response:
        """Answer one GET: count, delay, injected failure, auth, then the API itself."""
        with self._count_lock:
            self._request_count += 1
        if self.latency > 0:
            time.sleep(self.latency)
        injected = self._failures.take()
        if injected is not None:
            return injected
        if not self._authorised(authorization):
            return Response.authentication_required()
        try:
            return self._route(raw_path)
        except ApiError as exc:
            return Response.text(exc.status, exc.message)
        except Exception:  # a bug here must look like a server error, not hang the client
            LOG.exception("simulator failed on %s", raw_path)
            return Response.text(500, "Internal server error")

    def respond_admin(self, method: str, path: str, body: bytes, client: str,
                      authorization: str | None) -> Response:
        """Answer one /admin/ request (see calpendo_sim.admin): loopback and auth only."""
        return admin.respond(self, method, path, body, client, self._authorised(authorization))

    def _authorised(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            supplied = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(supplied, self._credentials)

    def _route(self, raw_path: str) -> Response:
        parts = urlsplit(raw_path)
        head, _, tail = parts.path.partition("/webdav/")
        api, _, rest = tail.partition("/")
        if head or api not in ("q", "b") or not rest:
            raise NotFound(f"no such resource: {parts.path}")
        segments = split_segments(rest)
        if api == "q":
            return self._query(segments[0], segments[1:], parts.query)
        return self._detail(segments)

    def _query(self, type_name: str, expression: list[str], query_string: str) -> Response:
        """``webdav/q/TYPE/EXPR[?paths=...]``: filter the store, return the selected paths."""
        self.registry.fields(type_name)  # 404 for an unknown type before looking at EXPR
        resolve = lambda path: self.registry.resolve(type_name, path)  # noqa: E731
        predicate = compile_predicate(parse_expression(expression), resolve)
        raw_paths = parse_qs(query_string, keep_blank_values=True).get("paths")
        # Like a servlet's getParameter, the first paths= counts.
        paths = DEFAULT_PATHS if raw_paths is None else parse_paths(raw_paths[0])
        for path in paths:
            resolve(path)
        includes = self.registry.includes
        matches = [booking for booking in self.store.snapshot()
                   if includes(type_name, booking.biskit_type) and predicate(booking.props) is True]
        return Response.json(query_body(matches, Selection(paths, self.flat_keys)))

    def _detail(self, segments: list[str]) -> Response:
        """``webdav/b/TYPE/ID``: one whole biskit, with the properties TYPE defines."""
        if len(segments) != 2:
            raise NotFound("expected webdav/b/TYPE/ID")
        type_name, raw_id = segments
        fields = self.registry.fields(type_name)
        try:
            # ASCII digits only: int() would also accept "١٢" or " 12".
            booking = self.store.get(int(raw_id)) if raw_id.isascii() and raw_id.isdigit() else None
        except KeyError:
            booking = None
        if booking is None or not self.registry.includes(type_name, booking.biskit_type):
            raise NotFound(f"no {type_name} with id {raw_id!r}")
        return Response.json(detail(booking, list(fields), self.registry.leaf_paths(type_name),
                                    self.flat_keys))

