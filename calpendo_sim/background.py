"""A simulator's server life, shared by the Calpendo and REDCap simulators: a threaded
loopback HTTP server that can cut its open connections, serving in a background thread,
stopping, injected failures, and the console scripts' foreground run until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

T = TypeVar("T")
S = TypeVar("S", bound="BackgroundServer")


class LoopbackHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that also cuts its open keep-alive connections on stop, so a
    stopped simulator looks down at once instead of answering on a pooled connection."""

    daemon_threads = True
    request_queue_size = 128  # bursts of parallel clients must not hit the listen backlog

    def __init__(self, address: tuple[str, int], app: object,
                 handler: type[BaseHTTPRequestHandler]) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # type: ignore[override]
        # A client that hangs up mid-answer (or a connection cut by stop()) is not a
        # server fault; anything else keeps the default traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BackgroundServer:
    """Subclasses set ``host`` and ``port`` and build their server in `make_server`."""

    host: str
    port: int
    thread_name = "simulator"
    _server: LoopbackHTTPServer | None = None
    _thread: threading.Thread | None = None

    def make_server(self) -> LoopbackHTTPServer:
        raise NotImplementedError

    def start(self: S) -> S:
        """Bind and serve in a background thread; ``port=0`` picks a free port."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = self.make_server()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.01},
                                        name=f"{self.thread_name}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections and release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self: S) -> S:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://host:port``; RuntimeError while not serving."""
        if self._server is None:
            raise RuntimeError("simulator is not running; call start() first")
        return f"http://{self.host}:{self.port}"


class FailurePlan(Generic[T]):
    """Injected failures: the next ``count`` requests (None: all, until cleared) get
    ``answer`` instead of the real one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answer: T | None = None
        self._left: int | None = 0

    def set(self, answer: T | None, count: int | None) -> None:
        with self._lock:
            self._answer, self._left = answer, count

    def clear(self) -> None:
        self.set(None, 0)

    def take(self) -> T | None:
        with self._lock:
            if self._answer is None or self._left == 0:
                return None
            if self._left is not None:
                self._left -= 1
            return self._answer


def non_negative(kind: type) -> Callable[[str], object]:
    """An argparse type: ``kind`` parsed from the text, refused below zero."""
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value
    return parse


def zone_name(text: str) -> str:
    """An argparse type: an IANA time-zone name this Python knows."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}") from None
    return text


def run_in_foreground(prog: str, build: Callable[[], BackgroundServer], address: str,
                      banner: Callable[[BackgroundServer], str]) -> int:
    """A console script's life: start ``build()`` (2 for bad settings, 1 when ``address``
    cannot be bound), print its URL on stdout and ``banner`` on stderr, serve until SIGINT
    or SIGTERM, then stop. Returns the exit status."""
    try:
        server = build().start()
    except ValueError as exc:  # e.g. an empty booking or visit window
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: cannot listen on {address}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(getattr(server, "url", server.origin), flush=True)
    print(f"{prog}: {banner(server)}; Ctrl-C to stop", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print(f"{prog}: stopped", file=sys.stderr, flush=True)
    return 0
