"""What the simulator answers an HTTP request with, whichever part of it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Protocol

REALM = "Calpendo"
JSON_TYPE = "application/json;charset=UTF-8"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = TEXT_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, message: str, **headers: str) -> Response:
        return cls(status, (message + "\n").encode("utf-8"), TEXT_TYPE, headers)

    @classmethod
    def json(cls, body: bytes, status: int = 200) -> Response:
        return cls(status, body, JSON_TYPE)

    @classmethod
    def authentication_required(cls) -> Response:
        """401 with the Basic challenge of the Calpendo realm."""
        return cls.text(401, "Authentication required",
                        **{"WWW-Authenticate": f'Basic realm="{REALM}"'})


class Answer(Protocol):
    """What either simulator answers with (this module's Response, REDCap's own)."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


def write_response(handler: BaseHTTPRequestHandler, response: Answer,
                   close: bool = False) -> None:
    """Send ``response`` on ``handler``'s connection; ``close`` ends the connection after it."""
    handler.send_response(response.status)
    handler.send_header("Content-Type", response.content_type)
    handler.send_header("Content-Length", str(len(response.body)))
    if close:
        handler.send_header("Connection", "close")
    for name, value in response.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(response.body)
