"""Dagster resources: Calpendo access and the worklist database handle."""

from __future__ import annotations

import threading

import dagster as dg
from sqlalchemy.engine import Engine

from calpendo_assets import sync
from calpendo_assets.config import DataSource
from mwl_service.database import get_db_url
from mwl_service.engine import make_engine

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


class WorklistDatabase(dg.ConfigurableResource):
    """The worklist DB the MWL service reads. `url` empty -> env WORKLIST_DB_URL -> ./var SQLite."""

    url: str = ""

    def get_engine(self) -> Engine:
        # One engine (and pool) per URL per process, not one per asset step.
        db_url = get_db_url(self.url or None)
        with _lock:
            if db_url not in _engines:
                _engines[db_url] = make_engine(db_url)
            return _engines[db_url]


def dispose_engines() -> None:
    """Close and forget every cached engine (tests that drop a database under it)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


class CalpendoResource(dg.ConfigurableResource):
    """Calpendo web-API access (HTTP Basic) for the sync assets and the change sensor.

    The code location sets both fields from dg.EnvVar("CALPENDO_USERNAME") /
    dg.EnvVar("CALPENDO_PASSWORD"), so the UI shows the variable names, never values.
    """

    username: str
    password: str

    def credentials(self) -> sync.Credentials:
        return sync.Credentials(self.username, self.password)

    def fetch(self, source: DataSource, logger=None) -> sync.FetchedWindow:
        """The whole window of `source`: bookings, details and operators."""
        return sync.fetch(source, self.credentials(), logger=logger)

    def fingerprint(self, source: DataSource, logger=None) -> str:
        """One cheap window query whose answer changes when any booking in it does."""
        return sync.fingerprint(source, self.credentials(), logger=logger)


def calpendo_from_env() -> CalpendoResource:
    return CalpendoResource(
        username=dg.EnvVar("CALPENDO_USERNAME"), password=dg.EnvVar("CALPENDO_PASSWORD")
    )
