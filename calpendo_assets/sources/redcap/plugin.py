"""The ``redcap`` source type: a window of scan visits from one REDCap project.

One ``content=record`` export per sync (`request.visit_request`: the fields the mapping
reads plus the visit's own, ``filterLogic`` on the visit date), merged into visits
(`visits.merge_visits`) and turned into records (`records.window_records`). The fetch
is complete, so a visit moved out of the window, re-dated to nothing or deleted is
cancelled like a Calpendo booking. The sensor hashes the same export; ``probe`` asks
``content=version`` and ``content=project``. The token comes from the environment
variable ``config.token_env`` names (through the Dagster resource, or read here).
"""

from __future__ import annotations

import os
from typing import Any

from calpendo_assets.core.credentials import Credentials
from calpendo_assets.core.errors import AuthRefusedError
from calpendo_assets.core.source import DataSource
from calpendo_assets.core.window import Window, site_local
from calpendo_assets.sources.base import FetchResult, SourcePlugin
from calpendo_assets.sources.redcap.records import window_records
from calpendo_assets.sources.redcap.request import RecordRequest, visit_request
from calpendo_assets.sources.redcap.settings import RedcapSettings
from calpendo_assets.sources.redcap.transport import RedcapClient
from calpendo_assets.sources.redcap.visits import merge_visits


def token_of(source: DataSource, settings: RedcapSettings,
             credentials: Credentials | None) -> str:
    """The project's token: the resource's (read at run time), else the environment."""
    name = settings.token_env
    token = (credentials.tokens.get(name) if credentials else None) or os.environ.get(name)
    if not token or not token.strip():
        raise AuthRefusedError(f"data source {source.name!r}: environment variable {name} "
                               "(config.token_env) is not set: it holds the REDCap API token")
    return token.strip()


def fetched_fields(source: DataSource, settings: RedcapSettings) -> list[str]:
    """The REDCap fields a sync asks for: the ones the mapping reads (but the record
    keys the plugin fills itself), then those that place the visit."""
    own = settings.own_paths() | set(source.mapping.variables)
    mapped = [path for path in source.mapping.record_paths if path not in own]
    placing = (settings.time_field, settings.duration_field, settings.resource_field,
               settings.status_field)
    return [*mapped, *(name for name in placing if name)]


def window_request(source: DataSource, settings: RedcapSettings, window: Window) -> RecordRequest:
    return visit_request(settings.record_id_field, fetched_fields(source, settings),
                         settings.date_field, site_local(window.start), site_local(window.end),
                         settings.events)


def connect(source: DataSource, settings: RedcapSettings, credentials: Credentials | None,
            logger: Any = None) -> RedcapClient:
    return RedcapClient(settings.url, token_of(source, settings, credentials), logger=logger)


class RedcapPlugin(SourcePlugin[RedcapSettings]):
    type = "redcap"
    config_model = RedcapSettings
    needs_credentials = False
    label = "REDCap"

    def secret_env(self, source: DataSource) -> tuple[str, ...]:
        return (self.settings(source).token_env,)

    def fetch_entries(self, source, window, credentials=None, logger=None) -> FetchResult:
        settings = self.settings(source)
        request = window_request(source, settings, window)
        with connect(source, settings, credentials, logger) as redcap:
            rows = redcap.export_records(request)
        merged = merge_visits(rows, settings.record_id_field, settings.repeat_instrument,
                              settings.date_field)
        found = window_records(merged.visits, settings, window, source.name)
        skipped = {**merged.skipped, **found.skipped}
        # Rows set aside by the merge (no record id, a repeated visit) may hide visits.
        return FetchResult(found.records, skipped, complete=not merged.skipped, requests=1,
                           strategy="redcap")

    def fingerprint(self, source, window, credentials=None, logger=None) -> str:
        settings = self.settings(source)
        with connect(source, settings, credentials, logger) as redcap:
            return redcap.fingerprint(window_request(source, settings, window))

    def probe(self, source, credentials=None) -> str:
        settings = self.settings(source)
        with connect(source, settings, credentials) as redcap:
            return redcap.probe()
