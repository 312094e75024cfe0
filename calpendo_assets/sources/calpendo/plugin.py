"""The ``calpendo`` source type: a window of Calpendo bookings over the web API."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from calpendo_assets.config import ConfigError, DataSource, Window, env_credentials
from calpendo_assets.sources.base import Credentials, FetchResult, SourcePlugin, site_local
from calpendo_assets.sources.calpendo.client import CalpendoClient, HttpSettings
from calpendo_assets.sources.calpendo.query import unique_folded
from calpendo_assets.sources.calpendo.settings import CalpendoSettings
from calpendo_assets.sources.errors import AuthRefusedError

# Calpendo's documented enum values for bookings that will not happen: fetched too, so
# those rows are discontinued with Calpendo's own reason instead of a generic "vanished".
ENDED_STATUSES = ("CANCELLED", "DENIED")


def fetch_statuses(source: DataSource) -> tuple[str, ...]:
    """The statuses a query asks for, as the config spells them (see status_case)."""
    wanted = [*_settings(source).status_filter, *ENDED_STATUSES]
    return unique_folded(wanted)


def _settings(source: DataSource) -> CalpendoSettings:
    assert isinstance(source.settings, CalpendoSettings), source.type
    return source.settings


def make_client(
    source: DataSource,
    credentials: Credentials | None = None,
    logger: Any = None,
    retries: int | None = None,
) -> CalpendoClient:
    """A client for `source`; without `credentials`, from CALPENDO_USERNAME/PASSWORD.
    `retries` overrides config.retries (a probe asks once)."""
    if credentials is None:
        try:
            credentials = env_credentials(source, os.environ)
        except ConfigError as exc:
            raise AuthRefusedError(str(exc)) from None
    cfg = _settings(source)
    http = HttpSettings(
        timeout=cfg.timeout,
        retries=cfg.retries if retries is None else retries,
        backoff_factor=cfg.backoff_factor,
        max_workers=cfg.max_workers,
        max_retry_after=cfg.max_retry_after,
    )
    return CalpendoClient(cfg.base_url, credentials.username, credentials.password, http, logger)


def operator(source: DataSource) -> tuple[str, str] | None:
    cfg = _settings(source)
    return None if cfg.operator_type is None else (cfg.operator_type, cfg.operator_property)


def subtype_paths(source: DataSource) -> dict[str, list[str]]:
    """Subtype -> the mapped paths that exist on it only (``config.subtype_properties``)."""
    wanted = _settings(source).subtype_properties
    paths = source.record_paths()
    found = {t: [p for p in paths if p.split(".")[0] in props] for t, props in wanted.items()}
    return {t: ps for t, ps in found.items() if ps}


def extra_paths(source: DataSource) -> list[str]:
    # The operator and subtype properties exist on their subtypes only: asking the base
    # type for them is an error, so they come from their own queries.
    prop = _settings(source).operator_property if operator(source) else None
    own = {p for ps in subtype_paths(source).values() for p in ps}
    return [p for p in source.record_paths() if p.split(".")[0] != prop and p not in own]


def list_window(client: CalpendoClient, source: DataSource, window: Window) -> FetchResult:
    """Step 1: the window query (every needed field, or just the ids)."""
    cfg = _settings(source)
    return client.list_bookings(
        site_local(window.start),
        site_local(window.end),
        fetch_statuses(source),
        strategy=cfg.fetch_strategy,
        extra_paths=extra_paths(source),
        status_case=cfg.status_case,
    )


def complete_window(
    client: CalpendoClient, source: DataSource, window: Window, listing: FetchResult
) -> FetchResult:
    """Step 2: per-booking details (that strategy only) plus the operators."""
    return client.complete_bookings(
        listing,
        site_local(window.start),
        site_local(window.end),
        fetch_statuses(source),
        operator=operator(source),
        status_case=_settings(source).status_case,
        subtypes=subtype_paths(source),
    )


class CalpendoPlugin(SourcePlugin):
    type = "calpendo"
    config_model = CalpendoSettings
    needs_credentials = True

    def fetch_entries(self, source, window, credentials=None, logger=None) -> FetchResult:
        with make_client(source, credentials, logger) as client:
            return complete_window(client, source, window, list_window(client, source, window))

    def fingerprint(self, source, window, credentials=None, logger=None) -> str:
        with make_client(source, credentials, logger) as client:
            return client.fingerprint(
                site_local(window.start),
                site_local(window.end),
                fetch_statuses(source),
                status_case=_settings(source).status_case,
            )

    def probe(self, source, credentials=None) -> str:
        # Today's bookings, ids only: authenticated, and small on any server.
        today = dt.datetime.now(source.tz).date()
        with make_client(source, credentials, retries=0) as client:
            found = client.list_window(
                today, today + dt.timedelta(days=1), fetch_statuses(source), paths=("id",),
                status_case=_settings(source).status_case,
            )
            return f"{client.api_root}: credentials accepted, {len(found)} bookings today"
