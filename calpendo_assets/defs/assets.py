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

from collections.abc import Iterator, Set
from dataclasses import dataclass

import dagster as dg
import requests
from sqlalchemy.engine import Engine

from calpendo_assets import sync
from calpendo_assets.core.errors import ConfigError, SourceError
from calpendo_assets.core.source import DataSource
from calpendo_assets.defs import checks, metadata
from calpendo_assets.defs.resources import SourceAccess, WorklistDatabase
from calpendo_assets.reconcile.plan import ReconciliationPlan
from calpendo_assets.reconcile.publish import Reconciled, reconcile
from calpendo_assets.rows.model import TransformResult
from mwl_service.migrate import SchemaOutOfDateError

# Retries of transient source failures, on top of urllib3's per-request retries:
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
    "booking_details": "Bookings with every field the mapping reads (for Calpendo: plus "
    "the operator from its booking subtype).",
    "worklist_rows": "Bookings mapped to worklist rows: extraction, time zones, status, modality.",
    "cancellation_reconciliation": "What publishing changes: inserts, updates, cancellations.",
    "worklist": "The published worklist table: one transaction, only after every check passed.",
}


def asset_key(source: DataSource, name: str) -> dg.AssetKey:
    return dg.AssetKey([source.name, name])


def pool_name(source: DataSource) -> str:
    """The Dagster concurrency pool of a source: one sync step at a time (dagster.yaml)."""
    return f"calpendo_mwl_{source.name}"


@dataclass(frozen=True)
class Selection:
    """The asset keys of one source and what the run selected of them."""

    key: dict[str, dg.AssetKey]
    assets: Set[dg.AssetKey]
    checks: Set[dg.AssetCheckKey]

    @classmethod
    def of(cls, context: dg.AssetExecutionContext, source: DataSource) -> "Selection":
        key = {name: asset_key(source, name) for name in ASSET_NAMES}
        return cls(key, context.selected_asset_keys, context.selected_asset_check_keys)

    @property
    def publish(self) -> bool:
        return self.key["worklist"] in self.assets

    def has_check(self, result: dg.AssetCheckResult) -> bool:
        return dg.AssetCheckKey(result.asset_key, result.check_name) in self.checks


def _transient(exc: BaseException) -> bool:
    return bool(getattr(exc, "transient", False)) or isinstance(
        exc, (requests.ConnectionError, requests.Timeout)
    )


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


def _engine(worklist_db: WorklistDatabase) -> Engine:
    try:
        return worklist_db.get_engine()
    except SchemaOutOfDateError as exc:
        # Waiting cannot upgrade the schema: no step retries; the message names the command.
        failure = dg.Failure(description=f"{exc}\nNothing was published.", allow_retries=False)
        raise failure from None


def _fetch(
    context: dg.AssetExecutionContext, source: DataSource, calpendo: SourceAccess
) -> sync.FetchedWindow:
    """The window, or a clear step failure naming the fetch."""
    try:
        return calpendo.fetch(source, logger=context.log)
    except Exception as exc:
        raise _step_failure(context, exc, f"fetching the booking window of {source.name!r}")


def _transform(
    context: dg.AssetExecutionContext, source: DataSource, fetched: sync.FetchedWindow, rows_key
) -> TransformResult:
    result = sync.transform(source, fetched, context.log)
    if result.warnings:
        # Once per sync, not once per booking: the list is in the metadata. A count of
        # warnings, not bookings: a booking may have several, a mapping note has none.
        context.log.warning(
            f"{len(result.warnings)} data warning(s); see the 'warning_list' "
            f"metadata of {rows_key.to_user_string()}"
        )
    return result


def _reconcile(
    context: dg.AssetExecutionContext,
    source: DataSource,
    engine: Engine,
    fetched: sync.FetchedWindow,
    result: TransformResult,
    results: list[dg.AssetCheckResult],
    selection: Selection,
) -> Reconciled:
    """The plan, approved by every check and published when `worklist` is selected
    (with the bookings the fetch left out); the guard's result joins `results` either way."""

    def approve(plan: ReconciliationPlan) -> bool:
        results.append(
            checks.guard_result(selection.key["cancellation_reconciliation"], source, plan)
        )
        return all(r.passed for r in results)

    done = reconcile(
        engine,
        source.name,
        result.frame,
        fetched.window,
        fetched.fetch.complete,
        sync.present_ids(result.frame, fetched),
        approve=approve if selection.publish else None,
        fetched_at=fetched.fetched_at,
        run_id=context.run.run_id,
        excluded=result.left_out,
    )
    if not selection.publish:
        approve(done.plan)
    return done


def _reports(
    selection: Selection, fetched: sync.FetchedWindow, result: TransformResult,
    done: Reconciled, results: list[dg.AssetCheckResult],
) -> Iterator:
    """The selected assets' materializations (but `worklist`) and check results."""
    reported = {
        **metadata.fetch_metadata(fetched, result.frame),
        "worklist_rows": metadata.rows_metadata(result),
        "cancellation_reconciliation": metadata.plan_metadata(done.plan),
    }
    for name, meta in reported.items():
        if selection.key[name] in selection.assets:
            yield dg.MaterializeResult(asset_key=selection.key[name], metadata=meta)
    for check in results:
        if selection.has_check(check):
            yield check


def _refusal(failed: list[dg.AssetCheckResult]) -> str:
    names = ", ".join(f"{r.asset_key.to_user_string()}:{r.check_name}" for r in failed)
    return (
        f"Blocking check(s) failed: {names}. Nothing was published: the worklist is "
        "unchanged. See the check results of this run; fix the data at the source (or the "
        "source's config) and materialize again."
    )


def _outcome(
    context: dg.AssetExecutionContext, selection: Selection, done: Reconciled,
    results: list[dg.AssetCheckResult],
) -> Iterator:
    """`worklist` when published; else the failure of a check that counts, or why a
    publish that was asked for wrote nothing."""
    if done.published is not None:
        context.log.info(f"published {vars(done.published)}")
        yield dg.MaterializeResult(
            asset_key=selection.key["worklist"], metadata=dict(vars(done.published))
        )
        return
    # Without `worklist` only the selected checks count; with it, all four do.
    failed = [r for r in results if not r.passed and (selection.publish or selection.has_check(r))]
    if failed:
        raise dg.Failure(description=_refusal(failed), allow_retries=False)
    if selection.publish:
        # A newer fetch is already published: this run's older view must not replace it.
        context.log.warning(done.refused)


def sync_step(
    context: dg.AssetExecutionContext,
    source: DataSource,
    calpendo: SourceAccess,
    worklist_db: WorklistDatabase,
) -> Iterator:
    """The whole sync in memory; yields only the selected assets and checks."""
    selection = Selection.of(context, source)
    engine = _engine(worklist_db)
    fetched = _fetch(context, source, calpendo)
    result = _transform(context, source, fetched, selection.key["worklist_rows"])
    results = checks.row_check_results(selection.key["worklist_rows"], result.frame)
    done = _reconcile(context, source, engine, fetched, result, results, selection)
    yield from _reports(selection, fetched, result, done, results)
    yield from _outcome(context, selection, done, results)


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
        calpendo: SourceAccess,  # the resource key keeps its first name (defs.resources)
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
