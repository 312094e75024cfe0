"""The row checks behind the blocking asset checks (calpendo_assets.validation)."""

from __future__ import annotations

from calpendo_assets.rows import validation
from calpendo_assets.rows.model import ROW_COLUMNS, to_frame


def _frame(**rows: dict) -> object:
    records = []
    for booking_id, values in rows.items():
        row = dict.fromkeys(ROW_COLUMNS, "")
        row.update(booking_id=booking_id, scheduled_start_utc=None, duration_minutes=None)
        row.update(values)
        records.append(row)
    return to_frame(records)


def test_two_consoles_are_valid_and_each_title_is_checked():
    frame = _frame(
        b1={"scheduled_station_ae_title": "MRI3T\\MRI3TB"},
        b2={"scheduled_station_ae_title": "MRI3T\\"},
        b3={"scheduled_station_ae_title": "GOOD\\" + "X" * 17},
    )
    problems = validation.invalid_values(frame)
    assert [p.split(":")[0] for p in problems] == ["booking b2", "booking b3"]
    assert all("scheduled_station_ae_title (AE)" in p for p in problems)


def test_enumerated_values_are_checked_and_unpublishable_rows_skipped():
    frame = _frame(
        ok={"pregnancy_status": "4"},
        bad={"pregnancy_status": "7"},
        skipped={"pregnancy_status": "9", "skip_reason": "no start time"},
    )
    (problem,) = validation.invalid_values(frame)
    assert problem.startswith("booking bad: pregnancy_status (US)")
