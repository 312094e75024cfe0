"""Dagster resources: how a sync reaches its sources, and the worklist database handle."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import dagster as dg
from sqlalchemy.engine import Engine

from calpendo_assets import sync
from calpendo_assets.core.credentials import PASSWORD_ENV, USERNAME_ENV, Credentials
from calpendo_assets.core.source import DataSource
from calpendo_assets.sources.registry import plugin_for
from mwl_service.database import get_db_url
from mwl_service.engine import make_engine

# The resource key of `SourceAccess`. It keeps its first name, which deployments'
# run configs and tests use, although it serves every source type.
SOURCE_ACCESS_KEY = "calpendo"

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


class SourceAccess(dg.ConfigurableResource):
    """How the sync assets and the change sensor reach a data source, of any type.

    ``username``/``password`` are the HTTP Basic credentials of the types that use
    them (Calpendo); the code location sets them from dg.EnvVar("CALPENDO_USERNAME") /
    dg.EnvVar("CALPENDO_PASSWORD"), so the UI shows the variable names, never values.
    ``tokens`` are the API tokens of the types that have their own (REDCap), by the
    name of the environment variable holding each (``config.token_env``), set from
    dg.EnvVar(name) the same way. All empty: no credentials (a site with only ``file``
    sources sets nothing).
    """

    username: str = ""
    password: str = ""
    tokens: dict[str, str] = {}

    def credentials(self) -> Credentials | None:
        if not (self.username or self.password or self.tokens):
            return None
        return Credentials(self.username, self.password, dict(self.tokens))

    def fetch(self, source: DataSource, logger=None) -> sync.FetchedWindow:
        """The whole window of `source`: bookings and every field the mapping reads."""
        return sync.fetch(source, self.credentials(), logger=logger)

    def fingerprint(self, source: DataSource, logger=None) -> str:
        """One cheap window query whose answer changes when any booking in it does."""
        return sync.fingerprint(source, self.credentials(), logger=logger)


def source_access(sources: Iterable[DataSource]) -> SourceAccess:
    """Credentials from the environment (read at run time) only where a source needs them."""
    sources = list(sources)
    names = {name: None for s in sources for name in plugin_for(s.type).secret_env(s)}
    access: dict = {"tokens": {name: dg.EnvVar(name) for name in names}}
    if any(plugin_for(source.type).needs_credentials for source in sources):
        access |= {"username": dg.EnvVar(USERNAME_ENV), "password": dg.EnvVar(PASSWORD_ENV)}
    return SourceAccess(**access)
