"""What goes wrong, for every layer: a bad config, and a fetch that failed.

``transient`` on a `SourceError` tells the caller whether trying again later can
help: the Dagster layer retries only transient failures (an outage, 5xx, 429),
never refused credentials or an answer we cannot read. Messages name the file,
key, URL (without credentials), HTTP status, content type, size and where an
answer went wrong; never record content, which holds participant names.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the file, source and key path."""


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
