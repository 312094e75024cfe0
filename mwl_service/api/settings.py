"""mwl-api's settings: the site's time zone, token lifetime, limits and CORS.

The site zone says which day is "today" and reads a time without an offset as wall
time. The caller gives it: the app never reads the data-source config (the `mwl-api`
command does, for the default of ``--timezone``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from mwl_service.api.middleware import DEFAULT_MAX_BODY
from mwl_service.sessions import (
    DEFAULT_FAILURE_WINDOW,
    DEFAULT_MAX_FAILURES,
    DEFAULT_TOKEN_TTL,
)


@dataclass(frozen=True)
class ApiSettings:
    timezone: str = "UTC"
    token_ttl: dt.timedelta = DEFAULT_TOKEN_TTL
    max_body: int = DEFAULT_MAX_BODY
    cors_origins: tuple[str, ...] = ()  # none: no CORS headers at all
    max_login_failures: int = DEFAULT_MAX_FAILURES
    login_failure_window: dt.timedelta = DEFAULT_FAILURE_WINDOW

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def today(self, now: dt.datetime | None = None) -> dt.date:
        return (now or dt.datetime.now(dt.UTC)).astimezone(self.tz).date()
