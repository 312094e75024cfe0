"""Dagster resources: the worklist database handle."""

from __future__ import annotations

import threading

import dagster as dg
from sqlalchemy.engine import Engine

from mwl_service.schema import get_db_url, make_engine

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
