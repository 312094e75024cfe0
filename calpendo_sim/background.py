"""A simulator's server life: serve in a background thread, stop, inject failures, or
run in the foreground until SIGINT/SIGTERM (the console scripts). Written for the REDCap
simulator; the Calpendo one can take it over, its lifecycle is the same."""

from __future__ import annotations

import signal
import socketserver
import sys
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundServer:
    """Subclasses set ``host`` and ``port`` and build their server in `make_server`."""

    host: str
    port: int
    thread_name = "simulator"
    _server: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None

    def make_server(self) -> socketserver.BaseServer:
        raise NotImplementedError

    def start(self):
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
        """Stop serving and release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
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

    def take(self) -> T | None:
        with self._lock:
            if self._answer is None or self._left == 0:
                return None
            if self._left is not None:
                self._left -= 1
            return self._answer


def serve_in_foreground(server: BackgroundServer, prog: str, banner: str) -> int:
    """Print ``server``'s URL on stdout and ``banner`` on stderr, serve until SIGINT or
    SIGTERM, then stop. The exit status of a console script."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(getattr(server, "url", server.origin), flush=True)
    print(f"{prog}: {banner}; Ctrl-C to stop", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print(f"{prog}: stopped", file=sys.stderr, flush=True)
    return 0
