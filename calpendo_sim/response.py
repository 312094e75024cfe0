"""What the simulator answers an HTTP request with, whichever part of it answers."""

from __future__ import annotations

from dataclasses import dataclass, field

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
