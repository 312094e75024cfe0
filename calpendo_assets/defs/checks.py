"""The four blocking checks of a data source: specs, and their evaluation in the sync step.

Three look at `NAME/worklist_rows`, one (`mass_cancellation_guard`) at the plan of
`NAME/cancellation_reconciliation`. The sync step evaluates all four on every run,
selected or not: a publish needs every one of them to pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from calpendo_assets.core.source import DataSource
from calpendo_assets.reconcile.plan import ReconciliationPlan, mass_cancellation_problem
from calpendo_assets.rows import validation

MAX_LISTED = 50


@dataclass(frozen=True)
class RowCheck:
    name: str
    description: str
    find: Callable[[pd.DataFrame], list[str]]


ROW_CHECKS = (
    RowCheck(
        "required_fields_present",
        "Every publishable row has patient, identifiers, station, modality and start.",
        validation.missing_required,
    ),
    RowCheck(
        "dicom_values_valid",
        "Values fit their DICOM VRs (DA/TM/PN/AE/SH/LO/UI lengths and characters).",
        validation.invalid_values,
    ),
    RowCheck(
        "identifiers_unique",
        "No two rows share a booking id, Accession Number or Study Instance UID.",
        validation.duplicate_identifiers,
    ),
)
GUARD = "mass_cancellation_guard"
GUARD_DESCRIPTION = (
    "Refuses to publish when too large a share of the window would be cancelled."
)
CHECK_NAMES = (*(c.name for c in ROW_CHECKS), GUARD)


def check_specs(rows_key: dg.AssetKey, plan_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(c.name, asset=rows_key, description=c.description, blocking=True)
        for c in ROW_CHECKS
    ]
    specs.append(
        dg.AssetCheckSpec(GUARD, asset=plan_key, description=GUARD_DESCRIPTION, blocking=True)
    )
    return specs


def _result(key: dg.AssetKey, name: str, problems: list[str], checked: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
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


def row_check_results(rows_key: dg.AssetKey, frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    checked = len(validation.publishable(frame))
    return [_result(rows_key, c.name, c.find(frame), checked) for c in ROW_CHECKS]


def guard_result(
    plan_key: dg.AssetKey, source: DataSource, plan: ReconciliationPlan
) -> dg.AssetCheckResult:
    settings = source.settings
    problem = mass_cancellation_problem(
        plan, settings.max_cancel_fraction, settings.min_cancel_guard_rows
    )
    return _result(plan_key, GUARD, [problem] if problem else [], plan.active_in_window)
