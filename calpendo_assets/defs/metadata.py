"""What each asset of a sync reports in Dagster: counts, reasons and a preview.

Booking ids, times, stations and reasons only: no names or titles reach Dagster's
storage.
"""

from collections.abc import Mapping

import dagster as dg
import pandas as pd

from calpendo_assets.reconcile.plan import ReconciliationPlan
from calpendo_assets.rows.model import TransformResult
from calpendo_assets.sync import FetchedWindow

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
MAX_TABLE_ROWS = 50


def table(records: list[Mapping], columns: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: str(r.get(c, "")) for c in columns}) for r in records],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def window_metadata(fetched: FetchedWindow) -> dict:
    return {
        "window_start": fetched.window.start.isoformat(),
        "window_end": fetched.window.end.isoformat(),
        "timezone": fetched.window.timezone,
        "strategy": fetched.fetch.strategy,
        "http_requests": fetched.fetch.requests,
        "fetch_complete": fetched.fetch.complete,
        "fetched_at": fetched.fetched_at.isoformat(),
    }


def _with_operator(frame: pd.DataFrame) -> int:
    """Publishable rows that name the booking's operator (Performing Physician's Name),
    whatever the source type and whichever record path the field mapping read it from."""
    if not len(frame):
        return 0
    return int(((frame["performing_physician_name"] != "") & (frame["skip_reason"] == "")).sum())


def fetch_metadata(fetched: FetchedWindow, frame: pd.DataFrame) -> dict[str, dict]:
    """`raw_bookings` and `booking_details`: what the fetch saw and skipped."""
    window = window_metadata(fetched)
    bookings, skipped = fetched.fetch.bookings, fetched.fetch.skipped
    reasons = [{"booking_id": b, "reason": r} for b, r in skipped.items()]
    return {
        "raw_bookings": {"bookings_fetched": len(bookings) + len(skipped), **window},
        "booking_details": {
            "bookings": len(bookings),
            "skipped": len(skipped),
            "skipped_reasons": table(reasons[:MAX_TABLE_ROWS], ["booking_id", "reason"]),
            "with_operator": _with_operator(frame),
            **window,
        },
    }


def rows_metadata(result: TransformResult) -> dict:
    frame = result.frame
    unpublishable = int((frame["skip_reason"] != "").sum()) if len(frame) else 0
    preview = frame[[c for c in PREVIEW_COLUMNS if c in frame.columns]].head(MAX_TABLE_ROWS)
    return {
        "rows": len(frame),
        "publishable": len(frame) - unpublishable,
        "skipped_unpublishable": unpublishable,
        "excluded": table(
            [{"reason": r, "bookings": n} for r, n in result.excluded.items()],
            ["reason", "bookings"],
        ),
        "warnings": len(result.warnings),
        "warning_list": table(
            [{"warning": w} for w in result.warnings[:MAX_TABLE_ROWS]], ["warning"]
        ),
        # IDs, times and stations only: no names or titles in Dagster's storage.
        "preview": table(preview.to_dict("records"), list(preview.columns)),
    }


def plan_metadata(plan: ReconciliationPlan) -> dict:
    reasons = [{"booking_id": c.booking_id, "reason": c.reason} for c in plan.cancels]
    return {
        **plan.counts(),
        "vanished_fraction": round(plan.vanished_fraction, 3),
        "cancellations": table(reasons[:MAX_TABLE_ROWS], ["booking_id", "reason"]),
    }
