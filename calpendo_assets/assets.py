"""Per data source assets: raw_bookings -> booking_details -> worklist_rows ->
cancellation_reconciliation -> worklist. Thin wrappers over calpendo_assets.sync.

No `from __future__ import annotations` here: Dagster inspects the real
annotation objects of context parameters."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd

from calpendo_assets import sync
from calpendo_assets.sources.errors import AuthRefusedError as CalpendoAuthError
from calpendo_assets.config import ConfigError, DataSource
from calpendo_assets.reconcile import ReconciliationPlan, plan_against_db
from calpendo_assets.resources import WorklistDatabase

# HTTP steps retry on top of urllib3's per-request retries: a Calpendo restart
# takes longer than a few seconds of backoff.
HTTP_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)

# The asset names of every data source, upstream first.
ASSET_NAMES = (
    "raw_bookings",
    "booking_details",
    "worklist_rows",
    "cancellation_reconciliation",
    "worklist",
)

PREVIEW_COLUMNS = [
    "booking_id",
    "patient_id",
    "scheduled_start_date",
    "scheduled_start_time",
    "scheduled_station_ae_title",
    "modality",
    "step_status",
    "skip_reason",
]


def asset_key(source: DataSource, name: str) -> dg.AssetKey:
    return dg.AssetKey([source.name, name])


@contextmanager
def _calpendo(source: DataSource, context) -> Iterator:
    """A Calpendo client; refused or missing credentials fail the step at once.

    Retrying those only delays the error: the step retry policy is for outages.
    """
    try:
        with sync.make_client(source, logger=context.log) as client:
            yield client
    except (CalpendoAuthError, ConfigError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def _window_metadata(fetched: sync.FetchedWindow) -> dict:
    return {
        "window_start": fetched.window.start.isoformat(),
        "window_end": fetched.window.end.isoformat(),
        "timezone": fetched.window.timezone,
        "strategy": fetched.fetch.strategy,
        "http_requests": fetched.fetch.requests,
        "fetch_complete": fetched.fetch.complete,
    }


def build_source_assets(
    source: DataSource, retry_policy: dg.RetryPolicy | None = HTTP_RETRY_POLICY
) -> list[dg.AssetsDefinition]:
    """The five assets of one data source, keys prefixed with its name."""
    prefix = [source.name]
    common = {"key_prefix": prefix, "group_name": source.name}

    def ins(*names: str) -> dict[str, dg.AssetIn]:
        return {n: dg.AssetIn(key=asset_key(source, n)) for n in names}

    @dg.asset(name="raw_bookings", retry_policy=retry_policy, **common)
    def raw_bookings(context: dg.AssetExecutionContext) -> dg.Output[sync.FetchedWindow]:
        """Bookings in the sync window, one query (bulk) or their ids (per booking)."""
        with _calpendo(source, context) as client:
            fetched = sync.fetch_raw(client, source)
        meta = {"bookings_fetched": len(fetched.fetch.bookings), **_window_metadata(fetched)}
        return dg.Output(fetched, metadata=meta)

    @dg.asset(name="booking_details", ins=ins("raw_bookings"), retry_policy=retry_policy, **common)
    def booking_details(
        context: dg.AssetExecutionContext, raw_bookings: sync.FetchedWindow
    ) -> dg.Output[sync.FetchedWindow]:
        """Bookings with every field, plus the operator from the MRIScan subtype."""
        with _calpendo(source, context) as client:
            details = sync.enrich(client, source, raw_bookings)
        with_operator = sum(1 for b in details.fetch.bookings if b.get("Operator"))
        meta = {
            "bookings": len(details.fetch.bookings),
            "skipped": len(details.fetch.skipped),
            "skipped_reasons": dg.MetadataValue.json(details.fetch.skipped),
            "with_operator": with_operator,
            **_window_metadata(details),
        }
        return dg.Output(details, metadata=meta)

    @dg.asset(name="worklist_rows", ins=ins("booking_details"), **common)
    def worklist_rows(
        context: dg.AssetExecutionContext, booking_details: sync.FetchedWindow
    ) -> dg.Output[pd.DataFrame]:
        """Bookings mapped to worklist rows: extraction, time zones, status, modality."""
        result = sync.transform(source, booking_details)
        for warning in result.warnings:
            context.log.warning(warning)
        frame = result.frame
        unpublishable = int((frame["skip_reason"] != "").sum()) if len(frame) else 0
        meta = {
            "rows": len(frame),
            "publishable": len(frame) - unpublishable,
            "skipped_unpublishable": unpublishable,
            "excluded": dg.MetadataValue.json(result.excluded),
            "warnings": len(result.warnings),
            "preview": dg.MetadataValue.md(sync.markdown_preview(frame, PREVIEW_COLUMNS)),
        }
        return dg.Output(frame, metadata=meta)

    @dg.asset(
        name="cancellation_reconciliation",
        ins=ins("worklist_rows", "booking_details"),
        **common,
    )
    def cancellation_reconciliation(
        worklist_rows: pd.DataFrame,
        booking_details: sync.FetchedWindow,
        worklist_db: WorklistDatabase,
    ) -> dg.Output[ReconciliationPlan]:
        """What publishing would change: inserts, updates, cancellations (not yet applied)."""
        plan = plan_against_db(
            worklist_db.get_engine(),
            source.name,
            worklist_rows,
            booking_details.window,
            booking_details.fetch.complete,
            sync.present_ids(worklist_rows, booking_details),
        )
        reasons = [{"booking_id": c["booking_id"], "reason": c["reason"]} for c in plan.cancels]
        meta = {
            **plan.counts(),
            "vanished_fraction": round(plan.vanished_fraction, 3),
            "cancellations": dg.MetadataValue.json(reasons[:50]),
        }
        return dg.Output(plan, metadata=meta)

    @dg.asset(
        name="worklist",
        ins=ins("worklist_rows", "booking_details", "cancellation_reconciliation"),
        **common,
    )
    def worklist(
        context: dg.AssetExecutionContext,
        worklist_rows: pd.DataFrame,
        booking_details: sync.FetchedWindow,
        cancellation_reconciliation: ReconciliationPlan,
        worklist_db: WorklistDatabase,
    ) -> dg.MaterializeResult:
        """The published worklist table: one transaction, only after the checks passed."""
        result = sync.publish_rows(
            worklist_db.get_engine(), source, worklist_rows, booking_details, context.run.run_id
        )
        planned = cancellation_reconciliation.counts()
        context.log.info(f"planned {planned}; published {vars(result)}")
        return dg.MaterializeResult(metadata=dict(vars(result)))

    return [raw_bookings, booking_details, worklist_rows, cancellation_reconciliation, worklist]
