"""HTTP-facing errors: each carries the status code the simulator answers with."""

from __future__ import annotations


class ApiError(Exception):
    """An error a real server would report to the client rather than crash on."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    """Malformed expression, unknown property path, literal of the wrong kind."""

    status = 400


class NotFound(ApiError):
    """Unknown biskit type, unknown id, or a URL outside the API."""

    status = 404
