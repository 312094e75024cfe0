"""Blocking asset checks: a failure stops `worklist` from publishing in that run."""

from collections.abc import Callable

import dagster as dg
import pandas as pd

from calpendo_assets import validation
from calpendo_assets.assets import asset_key
from calpendo_assets.config import DataSource
from calpendo_assets.reconcile import ReconciliationPlan, mass_cancellation_problem

MAX_LISTED = 50


def _result(problems: list[str], checked: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_checked": checked,
            "problems": len(problems),
            "details": dg.MetadataValue.md(
                "\n".join(f"- {p}" for p in problems[:MAX_LISTED]) or "none"
            ),
        },
    )


def _row_check(
    source: DataSource, name: str, description: str, find: Callable[[pd.DataFrame], list[str]]
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(source, "worklist_rows"), name=name, description=description, blocking=True
    )
    def _check(worklist_rows: pd.DataFrame) -> dg.AssetCheckResult:
        return _result(find(worklist_rows), len(validation.publishable(worklist_rows)))

    return _check


def build_source_checks(source: DataSource) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=asset_key(source, "cancellation_reconciliation"),
        name="mass_cancellation_guard",
        description="Refuses to publish when too large a share of the window would be cancelled.",
        blocking=True,
    )
    def mass_cancellation_guard(
        cancellation_reconciliation: ReconciliationPlan,
    ) -> dg.AssetCheckResult:
        plan = cancellation_reconciliation
        problem = mass_cancellation_problem(
            plan, source.max_cancel_fraction, source.min_cancel_guard_rows
        )
        return _result([problem] if problem else [], plan.active_in_window)

    return [
        _row_check(
            source,
            "required_fields_present",
            "Every publishable row has patient, identifiers, station, modality and start.",
            validation.missing_required,
        ),
        _row_check(
            source,
            "dicom_values_valid",
            "Values fit their DICOM VRs (DA/TM/PN/AE/SH/LO/UI lengths and characters).",
            validation.invalid_values,
        ),
        _row_check(
            source,
            "identifiers_unique",
            "No two rows share a booking id, Accession Number or Study Instance UID.",
            validation.duplicate_identifiers,
        ),
        mass_cancellation_guard,
    ]
