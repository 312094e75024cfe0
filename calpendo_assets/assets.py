"""The sync of one data source as one subsettable multi-asset.

Its five asset specs (`raw_bookings` -> `booking_details` -> `worklist_rows` ->
`cancellation_reconciliation` -> `worklist`) and four blocking checks are one step.
Whatever the UI selected, the step runs the whole sync in memory (fetch, rows,
plan, checks) and then reports only what was selected; it publishes only when
`worklist` is selected and every blocking check passed. Intermediate values never
leave the step, so no IO manager stores participant data, and any selection or
re-execution works without values from an earlier run.

No `from __future__ import annotations` here: Dagster inspects the real
annotation objects of context and resource parameters.
"""

from collections.abc import Iterator, Mapping

import dagster as dg
import pandas as pd
import requests

from calpendo_assets import checks, sync
from calpendo_assets.config import ConfigError, DataSource
from calpendo_assets.reconcile import ReconciliationPlan, reconcile
from calpendo_assets.resources import CalpendoResource, WorklistDatabase
from calpendo_assets.sources.errors import SourceError
from mwl_service.migrate import SchemaOutOfDateError

# Retries of transient Calpendo failures, on top of urllib3's per-request retries:
# a Calpendo restart takes longer than a few seconds of backoff.
HTTP_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)

# The asset names of every data source, upstream first.
ASSET_NAMES = (
    "raw_bookings",
    "booking_details",
    "worklist_rows",
    "cancellation_reconciliation",
    "worklist",
)
# Each asset's upstream assets (the lineage the UI draws).
DEPS = {
    "booking_details": ("raw_bookings",),
    "worklist_rows": ("booking_details",),
    "cancellation_reconciliation": ("worklist_rows", "booking_details"),
    "worklist": ("worklist_rows", "booking_details", "cancellation_reconciliation"),
}
DESCRIPTIONS = {
    "raw_bookings": "Bookings in the sync window (the window query).",
    "booking_details": "Bookings with every field, plus the operator from the MRIScan subtype.",
    "worklist_rows": "Bookings mapped to worklist rows: extraction, time zones, status, modality.",
    "cancellation_reconciliation": "What publishing changes: inserts, updates, cancellations.",
    "worklist": "The published worklist table: one transaction, only after every check passed.",
}

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


def asset_key(source: DataSource, name: str) -> dg.AssetKey:
    return dg.AssetKey([source.name, name])


def pool_name(source: DataSource) -> str:
    """The Dagster concurrency pool of a source: one sync step at a time (dagster.yaml)."""
    return f"calpendo_mwl_{source.name}"


def _table(records: list[Mapping], columns: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: str(r.get(c, "")) for c in columns}) for r in records],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _transient(exc: BaseException) -> bool:
    return bool(getattr(exc, "transient", False)) or isinstance(
        exc, (requests.ConnectionError, requests.Timeout)
    )


def _fetch(
    context: dg.AssetExecutionContext, source: DataSource, calpendo: CalpendoResource
) -> sync.FetchedWindow:
    """The window, or a clear step failure naming the fetch."""
    try:
        return calpendo.fetch(source, logger=context.log)
    except Exception as exc:
        raise _step_failure(context, exc, f"fetching the booking window of {source.name!r}")


def _step_failure(context: dg.AssetExecutionContext, exc: Exception, what: str) -> Exception:
    """What to raise for `exc`: itself while a transient failure has retries left (the
    step's retry policy tries again), else a Failure that is not retried (a refused
    password, a bad answer or a bug would fail the same way again).

    Only texts written to name no record content (source errors, connection errors)
    are quoted: any other exception's text could hold a participant's name, and the
    Failure is stored in Dagster's event log, so it gives the type alone.
    """
    policy = context.op_def.retry_policy
    retries_left = policy is not None and context.retry_number < policy.max_retries
    if _transient(exc) and retries_left:
        return exc
    safe = isinstance(exc, (SourceError, ConfigError, requests.RequestException))
    detail = f"{type(exc).__name__}: {exc}" if safe else type(exc).__name__
    return dg.Failure(
        description=f"{what} failed: {detail}. Nothing was published.", allow_retries=False
    )


def _window_metadata(fetched: sync.FetchedWindow) -> dict:
    return {
        "window_start": fetched.window.start.isoformat(),
        "window_end": fetched.window.end.isoformat(),
        "timezone": fetched.window.timezone,
        "strategy": fetched.fetch.strategy,
        "http_requests": fetched.fetch.requests,
        "fetch_complete": fetched.fetch.complete,
        "fetched_at": fetched.fetched_at.isoformat(),
    }


def _rows_metadata(result, frame: pd.DataFrame) -> dict:
    unpublishable = int((frame["skip_reason"] != "").sum()) if len(frame) else 0
    preview = frame[[c for c in PREVIEW_COLUMNS if c in frame.columns]].head(MAX_TABLE_ROWS)
    return {
        "rows": len(frame),
        "publishable": len(frame) - unpublishable,
        "skipped_unpublishable": unpublishable,
        "excluded": _table(
            [{"reason": r, "bookings": n} for r, n in result.excluded.items()],
            ["reason", "bookings"],
        ),
        "warnings": len(result.warnings),
        "warning_list": _table(
            [{"warning": w} for w in result.warnings[:MAX_TABLE_ROWS]], ["warning"]
        ),
        # IDs, times and stations only: no names or titles in Dagster's storage.
        "preview": _table(preview.to_dict("records"), list(preview.columns)),
    }


def _plan_metadata(plan: ReconciliationPlan) -> dict:
    reasons = [{"booking_id": c.booking_id, "reason": c.reason} for c in plan.cancels]
    return {
        **plan.counts(),
        "vanished_fraction": round(plan.vanished_fraction, 3),
        "cancellations": _table(reasons[:MAX_TABLE_ROWS], ["booking_id", "reason"]),
    }


def _refusal(failed: list[dg.AssetCheckResult]) -> str:
    names = ", ".join(f"{r.asset_key.to_user_string()}:{r.check_name}" for r in failed)
    return (
        f"Blocking check(s) failed: {names}. Nothing was published: the worklist is "
        "unchanged. See the check results of this run; fix the data in Calpendo (or the "
        "source's config) and materialize again."
    )


def sync_step(
    context: dg.AssetExecutionContext,
    source: DataSource,
    calpendo: CalpendoResource,
    worklist_db: WorklistDatabase,
) -> Iterator:
    """The whole sync in memory; yields only the selected assets and checks."""
    key = {name: asset_key(source, name) for name in ASSET_NAMES}
    selected = context.selected_asset_keys
    selected_checks = context.selected_asset_check_keys
    publish_wanted = key["worklist"] in selected

    try:
        engine = worklist_db.get_engine()
    except SchemaOutOfDateError as exc:
        # Waiting cannot upgrade the schema: no step retries; the message names the command.
        raise dg.Failure(description=f"{exc}\nNothing was published.", allow_retries=False) from None
    fetched = _fetch(context, source, calpendo)
    result = sync.transform(source, fetched)
    frame = result.frame
    if result.warnings:
        # Once per sync, not once per booking: the list is in the metadata. A count of
        # warnings, not bookings: a booking may have several, a mapping note has none.
        context.log.warning(
            f"{len(result.warnings)} data warning(s); see the 'warning_list' "
            f"metadata of {key['worklist_rows'].to_user_string()}"
        )
    results = checks.row_check_results(key["worklist_rows"], frame)

    def approve(plan: ReconciliationPlan) -> bool:
        results.append(checks.guard_result(key["cancellation_reconciliation"], source, plan))
        return all(r.passed for r in results)

    done = reconcile(
        engine,
        source.name,
        frame,
        fetched.window,
        fetched.fetch.complete,
        sync.present_ids(frame, fetched),
        approve=approve if publish_wanted else None,
        fetched_at=fetched.fetched_at,
        run_id=context.run.run_id,
        excluded=result.left_out,
    )
    if not publish_wanted:
        approve(done.plan)

    window_meta = _window_metadata(fetched)
    bookings = fetched.fetch.bookings
    metadata = {
        "raw_bookings": {"bookings_fetched": len(bookings) + len(fetched.fetch.skipped), **window_meta},
        "booking_details": {
            "bookings": len(bookings),
            "skipped": len(fetched.fetch.skipped),
            "skipped_reasons": _table(
                [{"booking_id": b, "reason": r} for b, r in fetched.fetch.skipped.items()][
                    :MAX_TABLE_ROWS
                ],
                ["booking_id", "reason"],
            ),
            "with_operator": sum(1 for b in bookings if b.get("Operator")),
            **window_meta,
        },
        "worklist_rows": _rows_metadata(result, frame),
        "cancellation_reconciliation": _plan_metadata(done.plan),
    }
    for name, meta in metadata.items():
        if key[name] in selected:
            yield dg.MaterializeResult(asset_key=key[name], metadata=meta)
    for check in results:
        if dg.AssetCheckKey(check.asset_key, check.check_name) in selected_checks:
            yield check

    if done.published is not None:
        context.log.info(f"published {vars(done.published)}")
        yield dg.MaterializeResult(asset_key=key["worklist"], metadata=dict(vars(done.published)))
        return
    # Without `worklist` only the selected checks count; with it, all four do.
    failed = [
        r
        for r in results
        if not r.passed
        and (publish_wanted or dg.AssetCheckKey(r.asset_key, r.check_name) in selected_checks)
    ]
    if failed:
        raise dg.Failure(description=_refusal(failed), allow_retries=False)
    if publish_wanted:
        # A newer fetch is already published: this run's older view must not replace it.
        context.log.warning(done.refused)


def build_source_assets(
    source: DataSource, retry_policy: dg.RetryPolicy | None = HTTP_RETRY_POLICY
) -> dg.AssetsDefinition:
    """The sync of one data source: five assets and four checks, keys prefixed with its name."""
    specs = [
        dg.AssetSpec(
            asset_key(source, name),
            deps=[asset_key(source, d) for d in DEPS.get(name, ())],
            description=DESCRIPTIONS[name],
            group_name=source.name,
            # `worklist` is not materialized when a newer fetch was already published.
            skippable=name == "worklist",
        )
        for name in ASSET_NAMES
    ]

    @dg.multi_asset(
        name=f"{source.name}__sync",
        specs=specs,
        check_specs=checks.check_specs(
            asset_key(source, "worklist_rows"), asset_key(source, "cancellation_reconciliation")
        ),
        can_subset=True,
        retry_policy=retry_policy,
        pool=pool_name(source),
        description=f"Sync of '{source.name}': fetch, map, check and publish in one step.",
    )
    def _sync(
        context: dg.AssetExecutionContext,
        calpendo: CalpendoResource,
        worklist_db: WorklistDatabase,
    ):
        try:
            yield from sync_step(context, source, calpendo, worklist_db)
        except dg.Failure:
            raise
        except Exception as exc:
            # `from None`: the cause's text and traceback would be stored with the event.
            raise _step_failure(context, exc, f"the sync of {source.name!r}") from None

    return _sync
