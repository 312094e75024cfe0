"""What a failed fetch raises, for every source type.

``transient`` tells the caller whether trying again later can help: the Dagster
layer retries only transient failures (an outage, 5xx, 429), never refused
credentials or an answer we cannot read. Messages name the URL (without
credentials), the HTTP status, content type, size and where the answer went
wrong; never the answer's content, which holds participant names.
"""

from __future__ import annotations


class SourceError(Exception):
    """A fetch failed. ``transient``: may succeed if retried later."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class AuthRefusedError(SourceError):
    """The server refused the credentials (HTTP 401/403), or none were set."""

    transient = False


class SourceUnavailableError(SourceError):
    """Unreachable host, timeout, HTTP 5xx or 429 (a Retry-After beyond the cap is
    not transient: see RetryAfterTooLong)."""

    transient = True


class BadAnswerError(SourceError):
    """The server answered, but not in the shape the contract promises."""

    transient = False


class NotFoundError(BadAnswerError):
    """HTTP 404 on a query: that record type does not exist on this server."""
