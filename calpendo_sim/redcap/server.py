"""The HTTP side: a threaded loopback server in front of `RedcapApi`, and the simulator
object tests hold (lifecycle, request log, injected failures, latency, data edits).

Every answer closes its connection, so a stopped simulator refuses the next request at
once (no pooled keep-alive connection outlives it).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from zoneinfo import ZoneInfo

from calpendo_sim.background import BackgroundServer, FailurePlan, LoopbackHTTPServer
from calpendo_sim.response import write_response

from .api import RedcapApi, Response, form_params
from .export import Params
from .project import Project
from .seed import generate_rows
from .store import RecordStore
from .visits import VisitEditing

LOG = logging.getLogger("calpendo_sim.redcap")
DEMO_TOKEN = "0123456789ABCDEF0123456789ABCDEF"  # 32 hex digits, as REDCap issues them


@dataclass(frozen=True)
class ApiRequest:
    """One request as the server saw it, without its token."""

    method: str
    params: Params
    status: int

    @property
    def content(self) -> str:
        return self.params.get("content")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RedcapSimulator/1.0"
    timeout = 60
    server: "_HttpServer"

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        write_response(self, self.server.app.handle(method, self.path, body,
                                                    self.headers.get("Content-Type")),
                       close=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.app.log_requests:
            super().log_message(format, *args)


class _HttpServer(LoopbackHTTPServer):
    app: "RedcapSimulator"


class RedcapSimulator(BackgroundServer, VisitEditing):
    """A REDCap API (one project, one token) on loopback, seeded and changeable.

    ``records`` participants and ``visits`` scan visits are generated from ``seed`` around
    ``today`` (default: today in ``timezone``), most in ``[today - past_days, today +
    days)``. ``longitudinal`` adds events (``baseline_arm_1``, ``t1_arm_1`` ..);
    ``repeating=False`` makes each record (or record-event) one visit. ``latency``
    (seconds) delays every answer; it may change while serving.
    """

    thread_name = "redcap-sim"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = DEMO_TOKEN,
                 records: int = 40, visits: int = 60, seed: int = 42,
                 today: dt.date | None = None, days: int = 7, past_days: int = 1,
                 longitudinal: bool = False, repeating: bool = True, latency: float = 0.0,
                 timezone: str = "America/Edmonton", log_requests: bool = False) -> None:
        if not (token.isascii() and token.isalnum()):
            raise ValueError("a REDCap token is letters and digits only")
        self.host, self.port = host, port
        self.zone = ZoneInfo(timezone)
        self.today = today or dt.datetime.now(self.zone).date()
        self.latency, self.log_requests = latency, log_requests
        self.project = Project(longitudinal=longitudinal, repeating=repeating)
        self.store = RecordStore(self.project.record_id_field, self.project.event_names,
                                 lambda: dt.datetime.now(self.zone).replace(tzinfo=None))
        for key, values in generate_rows(self.project, records, visits, seed, self.today,
                                         days, past_days):
            self.store.put(key, values)
        self.api = RedcapApi(self.project, self.store, token)
        self._failures: FailurePlan[Response] = FailurePlan()
        self._log_lock = threading.Lock()
        self._log: list[ApiRequest] = []

    # ----------------------------------------------------------------- lifecycle

    def make_server(self) -> _HttpServer:
        return _HttpServer((self.host, self.port), self, _Handler)

    @property
    def url(self) -> str:
        """The API endpoint clients are configured with (it ends in ``/api/``)."""
        return f"{self.origin}/api/"

    # ----------------------------------------------------------------- instrumentation

    @property
    def requests(self) -> list[ApiRequest]:
        """Every request since start (or ``reset_counts``), oldest first."""
        with self._log_lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        with self._log_lock:
            return len(self._log)

    def record_requests(self) -> list[ApiRequest]:
        """The ``content=record`` requests: what "one record request per sync" counts."""
        return [request for request in self.requests if request.content == "record"]

    def reset_counts(self) -> None:
        with self._log_lock:
            self._log.clear()

    def fail_requests(self, status: int = 500, count: int | None = 1, body: str = "",
                      content_type: str = "text/html; charset=utf-8") -> None:
        """Answer the next ``count`` requests (None: all, until ``clear_failures``) with
        ``status`` and ``body`` (e.g. a proxy's HTML page or REDCap's ``{"error":..}``)."""
        text = body or f"<html><body>Simulated failure (HTTP {status})</body></html>"
        self._failures.set(Response(status, text.encode("utf-8"), content_type), count)

    def clear_failures(self) -> None:
        self._failures.clear()

    # ----------------------------------------------------------------- HTTP

    def handle(self, method: str, path: str, body: bytes, content_type: str | None) -> Response:
        """Answer one request: delay, injected failure, then the API; log it."""
        params = form_params(body, content_type) if method == "POST" else Params(())
        if self.latency > 0:
            time.sleep(self.latency)
        try:
            response = self._failures.take() or self.api.answer(method, path, params)
        except Exception:  # a simulator bug must look like a server error, not a hang
            LOG.exception("redcap simulator failed on a %s request", params.get("content"))
            response = Response(500, b"Internal server error\n", "text/plain; charset=utf-8")
        kept = Params(tuple(pair for pair in params.pairs if pair[0] != "token"))
        with self._log_lock:
            self._log.append(ApiRequest(method, kept, response.status))
        return response
