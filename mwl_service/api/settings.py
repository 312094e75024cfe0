"""mwl-api's settings: the site's time zone, token lifetime, limits and CORS.

The site zone says which day is "today" and reads a time without an offset as wall
time; by default it is the ``timezone`` of the first enabled data source of the
config named by ``$CALPENDO_MWL_CONFIG`` (the zone the sync writes rows in).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from calpendo_assets.config import ConfigError, config_path, enabled_sources, load_config
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


def config_timezone(env: Mapping[str, str] = os.environ) -> str:
    """The zone of the first enabled data source of the config file; ConfigError
    (naming the file) when there is none."""
    path = config_path(None, env)
    sources = enabled_sources(load_config(str(path), env))
    if not sources:
        raise ConfigError(f"{path}: no enabled data source to take the site time zone from")
    return sources[0].timezone


def default_settings() -> ApiSettings:
    """Settings for `create_app` without any: the config's zone, else UTC."""
    try:
        return ApiSettings(timezone=config_timezone())
    except (ConfigError, OSError):
        return ApiSettings()
