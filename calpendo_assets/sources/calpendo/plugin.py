"""The ``calpendo`` source type: a window of Calpendo bookings over the web API."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from calpendo_assets.core.credentials import Credentials, env_credentials
from calpendo_assets.core.errors import AuthRefusedError, ConfigError
from calpendo_assets.core.source import DataSource
from calpendo_assets.core.window import Window, site_local
from calpendo_assets.sources.base import FetchResult, SourcePlugin
from calpendo_assets.sources.calpendo.fetch import FetchPlan, WindowFetch
from calpendo_assets.sources.calpendo.http import CalpendoHttp
from calpendo_assets.sources.calpendo.query import WindowQuery, unique_folded
from calpendo_assets.sources.calpendo.settings import CalpendoSettings

# Calpendo's documented enum values for bookings that will not happen: fetched too, so
# those rows are discontinued with Calpendo's own reason instead of a generic "vanished".
ENDED_STATUSES = ("CANCELLED", "DENIED")


def fetch_statuses(settings: CalpendoSettings) -> tuple[str, ...]:
    """The statuses a query asks for, as the config spells them (see status_case)."""
    return unique_folded([*settings.status_filter, *ENDED_STATUSES])


def fetch_plan(settings: CalpendoSettings, record_paths: tuple[str, ...]) -> FetchPlan:
    """What a fetch asks for beyond the window: the mapped paths, the operator and the
    subtypes' own properties, each from the query that can answer it."""
    wanted = settings.subtype_properties
    found = {
        t: [p for p in record_paths if p.split(".")[0] in props] for t, props in wanted.items()
    }
    subtypes = {t: tuple(ps) for t, ps in found.items() if ps}
    operator = None
    if settings.operator_type is not None:
        operator = (settings.operator_type, settings.operator_property)
    # The operator and subtype properties exist on their subtypes only: asking the base
    # type for them is an error, so they come from their own queries.
    prop = operator[1] if operator else None
    own = {p for ps in subtypes.values() for p in ps}
    extra = tuple(p for p in record_paths if p.split(".")[0] != prop and p not in own)
    return FetchPlan(settings.fetch_strategy, extra, operator, subtypes)


def window_query(settings: CalpendoSettings, start: Any, end: Any) -> WindowQuery:
    return WindowQuery(start, end, fetch_statuses(settings), settings.status_case)


def connect(
    source: DataSource,
    settings: CalpendoSettings,
    credentials: Credentials | None = None,
    retries: int | None = None,
) -> CalpendoHttp:
    """A session with the source's server; without `credentials`, from
    CALPENDO_USERNAME/PASSWORD. `retries` overrides config.retries (a probe asks once)."""
    if credentials is None:
        try:
            credentials = env_credentials(source, os.environ)
        except ConfigError as exc:
            raise AuthRefusedError(str(exc)) from None
    return CalpendoHttp(
        settings.base_url, credentials.username, credentials.password, settings.http(retries)
    )


class CalpendoPlugin(SourcePlugin[CalpendoSettings]):
    type = "calpendo"
    config_model = CalpendoSettings
    needs_credentials = True
    label = "Calpendo"

    def _window_fetch(
        self, source: DataSource, window: Window, http: CalpendoHttp, logger: Any
    ) -> WindowFetch:
        start, end = site_local(window.start), site_local(window.end)
        query = window_query(self.settings(source), start, end)
        return WindowFetch(http, query, logger)

    def fetch_entries(self, source, window, credentials=None, logger=None) -> FetchResult:
        settings = self.settings(source)
        plan = fetch_plan(settings, source.mapping.record_paths)
        with connect(source, settings, credentials) as http:
            return self._window_fetch(source, window, http, logger).run(plan)

    def fingerprint(self, source, window, credentials=None, logger=None) -> str:
        with connect(source, self.settings(source), credentials) as http:
            return self._window_fetch(source, window, http, logger).fingerprint()

    def probe(self, source, credentials=None) -> str:
        # Today's bookings, ids only: authenticated, and small on any server.
        settings = self.settings(source)
        today = dt.datetime.now(source.tz).date()
        query = window_query(settings, today, today + dt.timedelta(days=1))
        with connect(source, settings, credentials, retries=0) as http:
            found = WindowFetch(http, query).bookings(("id",))
            return f"{http.api_root}: credentials accepted, {len(found)} bookings today"
