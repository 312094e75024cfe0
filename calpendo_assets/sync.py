"""One sync, step by step, in plain Python (no Dagster).

The Dagster assets call these steps one per asset; the benchmark and the CLI-free
tests call `run_sync`, which chains the same steps in one process.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy.engine import Engine

from calpendo_assets.calpendo_api import OPERATOR_PATH, CalpendoClient, FetchResult, HttpSettings
from calpendo_assets.config import DataSource, Window, booking_window, credentials
from calpendo_assets.reconcile import PublishResult, publish
from calpendo_assets.transform import TransformResult, bookings_to_rows, present_booking_ids

log = logging.getLogger(__name__)

# Calpendo's documented enum values for bookings that will not happen.
ENDED_STATUSES = ("CANCELLED", "DENIED")


@dataclass
class FetchedWindow:
    """What one fetch saw: the window asked for and Calpendo's answer."""

    source: str
    window: Window
    fetch: FetchResult
    fetched_at: dt.datetime


@dataclass(frozen=True)
class Credentials:
    """Calpendo HTTP Basic credentials (the password never appears in a repr)."""

    username: str
    password: str = field(repr=False)


def make_client(
    source: DataSource,
    env: Mapping[str, str] = os.environ,
    logger=None,
    creds: Credentials | None = None,
):
    """A Calpendo client for `source`; credentials given, else from the environment."""
    user, password = (creds.username, creds.password) if creds else credentials(source, env)
    settings = HttpSettings(
        timeout=source.timeout,
        retries=source.retries,
        backoff_factor=source.backoff_factor,
        max_workers=source.max_workers,
    )
    return CalpendoClient(source.base_url, user, password, settings, logger=logger)


def fetch_statuses(source: DataSource) -> tuple[str, ...]:
    """The status filter plus cancelled/denied, so those rows are discontinued with
    Calpendo's own reason instead of a generic "vanished"."""
    return tuple(dict.fromkeys([*source.status_filter, *ENDED_STATUSES]))


def fetch_raw(
    client: CalpendoClient, source: DataSource, now: dt.datetime | None = None
) -> FetchedWindow:
    """The window query: every needed field (bulk) or just the ids (per booking)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    window = booking_window(source, now)
    fetch = client.list_bookings(
        _site_local(window.start),
        _site_local(window.end),
        fetch_statuses(source),
        strategy=source.fetch_strategy,
        extra_paths=_extra_paths(source),
    )
    return FetchedWindow(source.name, window, fetch, now)


def enrich(client: CalpendoClient, source: DataSource, raw: FetchedWindow) -> FetchedWindow:
    """Per-booking detail fetches (that strategy only) plus the MRIScan operators."""
    fetch = client.complete_bookings(
        raw.fetch,
        _site_local(raw.window.start),
        _site_local(raw.window.end),
        fetch_statuses(source),
    )
    return FetchedWindow(raw.source, raw.window, fetch, raw.fetched_at)


def fetch(
    source: DataSource,
    credentials: Credentials | None = None,
    now: dt.datetime | None = None,
    logger=None,
) -> FetchedWindow:
    """The whole fetch of the window: the window query plus details and operators."""
    with make_client(source, logger=logger, creds=credentials) as client:
        return enrich(client, source, fetch_raw(client, source, now))


def fingerprint(
    source: DataSource,
    credentials: Credentials | None = None,
    now: dt.datetime | None = None,
    logger=None,
) -> str:
    """One cheap query of the window whose answer changes when any booking in it does."""
    window = booking_window(source, now or dt.datetime.now(dt.timezone.utc))
    with make_client(source, logger=logger, creds=credentials) as client:
        return client.fingerprint(
            _site_local(window.start), _site_local(window.end), fetch_statuses(source)
        )


def _site_local(instant: dt.datetime) -> dt.datetime:
    # Calpendo date literals are site wall-clock time without a zone.
    return instant.replace(tzinfo=None)


def _extra_paths(source: DataSource) -> list[str]:
    # The Operator lives on the MRIScan subtype only: it comes from its own query.
    return [p for p in source.calpendo_paths() if p.split(".")[0] != OPERATOR_PATH]


def transform(source: DataSource, details: FetchedWindow) -> TransformResult:
    return bookings_to_rows(details.fetch.bookings, source, skipped=details.fetch.skipped)


def present_ids(frame: pd.DataFrame, details: FetchedWindow) -> set[str]:
    return present_booking_ids(frame, details.fetch.skipped)


def publish_rows(
    engine: Engine,
    source: DataSource,
    frame: pd.DataFrame,
    details: FetchedWindow,
    run_id: str | None = None,
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
    with make_client(source, env) as client:
        details = enrich(client, source, fetch_raw(client, source, now))
    result = transform(source, details)
    return details, result, publish_rows(engine, source, result.frame, details)


def markdown_preview(frame: pd.DataFrame, columns: list[str], limit: int = 10) -> str:
    """A small markdown table for the Dagster UI (no patient names: IDs only)."""
    if frame.empty:
        return "_no rows_"
    view = frame[[c for c in columns if c in frame.columns]].head(limit).astype(str)
    header = "| " + " | ".join(view.columns) + " |"
    rule = "|" + "---|" * len(view.columns)
    rows = ["| " + " | ".join(v.replace("|", "/") for v in r) + " |" for r in view.values]
    more = [f"\n_{len(frame) - limit} more rows_"] if len(frame) > limit else []
    return "\n".join([header, rule, *rows, *more])
