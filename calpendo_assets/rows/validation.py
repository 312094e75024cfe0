"""Row checks that guard publishing (pure; the Dagster asset checks call these).

Each returns a list of problems, one line per offending booking, empty when fine.
Only publishable rows (no skip_reason) are checked: unpublishable ones are reported
by worklist_rows and never written.
"""

from __future__ import annotations

import pandas as pd

from mwl_service.vr import ROW_FIELD_VRS, field_problem

REQUIRED_FIELDS = (
    "patient_id",
    "patient_name",
    "accession_number",
    "study_instance_uid",
    "requested_procedure_id",
    "scheduled_procedure_step_id",
    "scheduled_station_ae_title",
    "modality",
    "scheduled_start_date",
    "scheduled_start_time",
)

UNIQUE_FIELDS = ("booking_id", "accession_number", "study_instance_uid")


def publishable(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["skip_reason"] == ""]


def missing_required(frame: pd.DataFrame) -> list[str]:
    rows = publishable(frame)
    problems = []
    for field in REQUIRED_FIELDS:
        empty = rows[rows[field].isna() | (rows[field].astype(str).str.strip() == "")]
        problems += [f"booking {b}: {field} is empty" for b in empty["booking_id"]]
    return problems


def invalid_values(frame: pd.DataFrame) -> list[str]:
    rows = publishable(frame)
    problems = []
    for field, vr in ROW_FIELD_VRS.items():
        if field not in rows.columns:
            continue
        for booking_id, value in zip(rows["booking_id"], rows[field]):
            missing = value is None or (isinstance(value, float) and pd.isna(value))
            # field_problem knows multi-valued fields (several station AE titles) and
            # enumerated values (pregnancy status 1-4).
            problem = None if missing else field_problem(field, value)
            if problem:
                problems.append(f"booking {booking_id}: {field} ({vr}) {problem}")
    return problems


def duplicate_identifiers(frame: pd.DataFrame) -> list[str]:
    rows = publishable(frame)
    problems = []
    for field in UNIQUE_FIELDS:
        dups = rows[rows[field].duplicated(keep=False)]
        for value, group in dups.groupby(field):
            ids = ", ".join(map(str, group["booking_id"]))
            problems.append(f"{field} {value!r} shared by bookings {ids}")
    return problems
