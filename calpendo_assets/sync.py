"""One sync, step by step, in plain Python (no Dagster): the seam the Dagster layer calls.

`fetch` reads a source's window through its plugin, `transform` maps the records to
worklist rows, `publish_rows` reconciles and writes them in one transaction. The
sensor calls `fingerprint`. The benchmark and scripts call `run_sync`, which chains
the same steps in one process.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
from sqlalchemy.engine import Engine

from calpendo_assets.config import DataSource, Window, booking_window, env_credentials
from calpendo_assets.reconcile import PublishResult, publish
from calpendo_assets.rows.mapping import bookings_to_rows
from calpendo_assets.rows.model import TransformResult, present_booking_ids
from calpendo_assets.sources.base import Credentials, FetchResult
from mwl_service.excluded import Excluded

log = logging.getLogger(__name__)

__all__ = [
    "Credentials",
    "FetchedWindow",
    "fetch",
    "fingerprint",
    "transform",
    "present_ids",
    "publish_rows",
    "run_sync",
]


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
    logger=None,
) -> FetchedWindow:
    """The whole fetch of the source's window (for Calpendo including the per-booking
    detail and operator queries). Raises `sources.errors.SourceError` (see ``transient``).

    ``credentials=None``: a plugin that needs them reads CALPENDO_USERNAME/PASSWORD.
    """
    now = _now(now)
    window = booking_window(source, now)
    result = source.plugin.fetch_entries(source, window, credentials, logger or log)
    return FetchedWindow(source.name, window, result, now)


def fingerprint(
    source: DataSource, credentials: Credentials | None = None, now: dt.datetime | None = None,
    logger=None,
) -> str:
    """A cheap digest of the window (one small query) that changes when bookings change."""
    window = booking_window(source, _now(now))
    return source.plugin.fingerprint(source, window, credentials, logger or log)


def transform(source: DataSource, details: FetchedWindow) -> TransformResult:
    return bookings_to_rows(
        details.fetch.bookings, source, skipped=details.fetch.skipped, window=details.window
    )


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
        max_cancel_fraction=source.max_cancel_fraction,
        min_cancel_guard_rows=source.min_cancel_guard_rows,
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
) -> tuple[FetchedWindow, TransformResult, PublishResult]:
    """Fetch, transform and publish one source without Dagster (benchmarks, scripts).

    Skips the asset checks' reporting but not the publish-time mass-cancel guard.
    """
    creds = env_credentials(source, env) if source.plugin.needs_credentials else None
    details = fetch(source, creds, now)
    result = transform(source, details)
    published = publish_rows(engine, source, result.frame, details, excluded=result.left_out)
    return details, result, published
