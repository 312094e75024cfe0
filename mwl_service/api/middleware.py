"""ASGI middleware of mwl-api: a cap on request bodies, and an access log that names
the route, never the query string or a path value.

uvicorn's own access log prints the request line, query string included (patient IDs
in ``?patient_id=``, a name in a search), so it is switched off and `AccessLog`
writes one line per request instead: method, the route's template (for example
``/api/v1/worklist/{accession_number}``), status, duration and client address. It
also answers any unhandled exception with a JSON 500 and logs the exception's type
and stack frames, not its message (which may quote a value).
"""

from __future__ import annotations

import json
import logging
import time
import traceback

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOG = logging.getLogger("mwl_service.api.access")
ERROR_LOG = logging.getLogger("mwl_service.api.error")
DEFAULT_MAX_BODY = 64 * 1024


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised while a body streams in: an HTTPException, so FastAPI's body parsing
    passes it on as the 413 it is (any other error there becomes a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """413 for a request body over `max_body` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than {self.max_body} bytes"
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _send_json(send, 413, too_large)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, too_large)


def _route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    if path is not None:
        return scope.get("root_path", "") + path
    if scope.get("root_path"):  # inside a mount (the static files): not the file name
        return scope["root_path"] + "/..."
    return "(no route)"  # the raw path could be anything a client typed


def _log_exception(exc: BaseException, where: str) -> None:
    frames = "".join(traceback.format_tb(exc.__traceback__))
    ERROR_LOG.error("unhandled %s in %s (message withheld)\n%s", type(exc).__name__, where, frames)


def silence_uvicorn_access_log() -> None:
    """Drop uvicorn's own access lines however uvicorn was started (they carry the
    query string); `AccessLog` writes the safe ones."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _DropAll) for f in logger.filters):
        logger.addFilter(_DropAll())


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


class AccessLog:
    """One log line per request without query strings; a JSON 500 for a crash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:  # noqa: BLE001 - the client gets JSON, the log no values
            _log_exception(exc, f"{scope['method']} {_route_template(scope)}")
            if not status:
                status = 500
                await _send_json(send, 500, "internal error")
        finally:
            client = (scope.get("client") or ("-", 0))[0]
            ACCESS_LOG.info(
                '%s "%s %s" %d %.1f ms', client, scope["method"], _route_template(scope),
                status, (time.perf_counter() - began) * 1000,
            )
