"""One sync, step by step, in plain Python (no Dagster): the seam the Dagster layer calls.

`fetch` reads a source's window through its plugin, `transform` maps the records to
worklist rows, `publish_rows` reconciles and writes them in one transaction. The
sensor calls `fingerprint`. The benchmark and scripts call `run_sync`, which chains
the same steps in one process.

Every step takes a ``logger``: Dagster's run log inside a run (it names the step
already), else `source_log`, whose lines start ``[calpendo:NAME]``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from calpendo_assets.core.credentials import Credentials, env_credentials
from calpendo_assets.core.source import DataSource
from calpendo_assets.core.window import Window, booking_window
from calpendo_assets.reconcile.publish import PublishResult, publish
from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.rows.model import TransformResult, present_booking_ids
from calpendo_assets.sources.base import FetchResult
from calpendo_assets.sources.registry import plugin_for
from mwl_service.excluded import Excluded

log = logging.getLogger(__name__)


class SourceLog(logging.LoggerAdapter):
    """A logger whose every line names the data source: ``[calpendo:NAME] ...``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[calpendo:{self.extra['source']}] {msg}", kwargs


def source_log(source: DataSource, logger: Any = None) -> Any:
    """`logger` when given (Dagster's run log), else this module's logger naming `source`."""
    return logger if logger is not None else SourceLog(log, {"source": source.name})


@dataclass
class FetchedWindow:
    """What one fetch saw: the window asked for and the source's answer."""

    source: str
    window: Window
    fetch: FetchResult
    fetched_at: dt.datetime


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.timezone.utc)


def fetch(
    source: DataSource, credentials: Credentials | None = None, now: dt.datetime | None = None,
    logger: Any = None,
) -> FetchedWindow:
    """The whole fetch of the source's window (for Calpendo including the per-booking
    detail and operator queries). Raises `core.errors.SourceError` (see ``transient``).

    ``credentials=None``: a plugin that needs them reads CALPENDO_USERNAME/PASSWORD.
    """
    now = _now(now)
    window = booking_window(source, now)
    plugin = plugin_for(source.type)
    result = plugin.fetch_entries(source, window, credentials, source_log(source, logger))
    return FetchedWindow(source.name, window, result, now)


def fingerprint(
    source: DataSource, credentials: Credentials | None = None, now: dt.datetime | None = None,
    logger: Any = None,
) -> str:
    """A cheap digest of the window (one small query) that changes when bookings change."""
    window = booking_window(source, _now(now))
    plugin = plugin_for(source.type)
    return plugin.fingerprint(source, window, credentials, source_log(source, logger))


def transform(source: DataSource, details: FetchedWindow, logger: Any = None) -> TransformResult:
    """The fetched records as worklist rows. A booking that spans days is logged here,
    once per sync, for the administrator (its id and times, never its title)."""
    result = bookings_to_rows(
        details.fetch.bookings, source, skipped=details.fetch.skipped, window=details.window
    )
    out = source_log(source, logger)
    for note in result.multi_day.values():
        out.warning(note)
    return result


def present_ids(frame: pd.DataFrame, details: FetchedWindow) -> set[str]:
    return present_booking_ids(frame, details.fetch.skipped)


def publish_rows(
    engine: Engine,
    source: DataSource,
    frame: pd.DataFrame,
    details: FetchedWindow,
    run_id: str | None = None,
    excluded: list[Excluded] | None = None,
) -> PublishResult:
    return publish(
        engine,
        source.name,
        frame,
        details.window,
        details.fetch.complete,
        present_ids(frame, details),
        max_cancel_fraction=source.settings.max_cancel_fraction,
        min_cancel_guard_rows=source.settings.min_cancel_guard_rows,
        run_id=run_id,
        # The fetch's own time: a later publish of an older fetch is refused.
        fetched_at=details.fetched_at,
        excluded=excluded,
    )


def run_sync(
    source: DataSource,
    engine: Engine,
    env: Mapping[str, str] = os.environ,
    now: dt.datetime | None = None,
    logger: Any = None,
) -> tuple[FetchedWindow, TransformResult, PublishResult]:
    """Fetch, transform and publish one source without Dagster (benchmarks, scripts).

    Skips the asset checks' reporting but not the publish-time mass-cancel guard.
    """
    creds = env_credentials(source, env) if plugin_for(source.type).needs_credentials else None
    details = fetch(source, creds, now, logger)
    result = transform(source, details, logger)
    published = publish_rows(engine, source, result.frame, details, excluded=result.left_out)
    return details, result, published
