"""From REDCap's flat rows to one record per scan visit, with a stable booking id.

A flat export has one row per record-event (the non-repeating row: empty
``redcap_repeat_instrument`` and ``redcap_repeat_instance``) and one per repeating
instance. A visit is an instance of the configured repeating instrument; with none
configured, a record-event row (or a repeating event's instance) is the visit. Either
way only rows whose date field is filled are visits; a dated row that is no visit means
``repeat_instrument`` does not match the project, and is set aside (so nothing is
cancelled on an answer read wrong). Like Pylantir, each visit gets its
record's non-repeating values (date of birth, sex, weight, names) underneath its own:
first those of its own event, then those of the record's other events, in answer order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

EVENT = "redcap_event_name"
INSTRUMENT = "redcap_repeat_instrument"
INSTANCE = "redcap_repeat_instance"
STRUCTURAL = (EVENT, INSTRUMENT, INSTANCE)

Row = Mapping[str, Any]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _part(value: Any) -> str:
    # ':' separates the parts and '%' escapes: a record name holding either stays unambiguous.
    return "" if _blank(value) else str(value).replace("%", "%25").replace(":", "%3A")


def booking_id(record: Any, event: Any = "", instrument: Any = "", instance: Any = "") -> str:
    """``RECORD:EVENT:INSTRUMENT:INSTANCE``; parts that do not apply are left empty."""
    return ":".join(_part(value) for value in (record, event, instrument, instance))


def row_booking_id(row: Row, record_id_field: str) -> str:
    return booking_id(row.get(record_id_field), row.get(EVENT), row.get(INSTRUMENT),
                      row.get(INSTANCE))


def is_non_repeating(row: Row) -> bool:
    """The record-event's own row: no repeat instrument and no instance."""
    return _blank(row.get(INSTRUMENT)) and _blank(row.get(INSTANCE))


def is_visit_row(row: Row, repeat_instrument: str | None, date_field: str) -> bool:
    if _blank(row.get(date_field)):
        return False
    if repeat_instrument is None:
        return _blank(row.get(INSTRUMENT))  # a record-event, or a repeating event's instance
    return row.get(INSTRUMENT) == repeat_instrument


@dataclass
class MergedVisits:
    """The visits, each a flat dict with ``id`` (its booking id), and rows set aside
    (by position, ``"#3"``) with the reason; set-aside rows make a fetch incomplete."""

    visits: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _record_values(rows: Sequence[Row], record_id_field: str) -> dict[str, list[Row]]:
    """Each record's non-repeating rows, in answer order."""
    found: dict[str, list[Row]] = {}
    for row in rows:
        record = row.get(record_id_field)
        if not _blank(record) and is_non_repeating(row):
            found.setdefault(str(record), []).append(row)
    return found


def _underlay(own_rows: list[Row], event: Any) -> dict[str, Any]:
    """The record's non-repeating values a visit in ``event`` gets: its event's first."""
    ordered = ([r for r in own_rows if r.get(EVENT) == event]
               + [r for r in own_rows if r.get(EVENT) != event])
    values: dict[str, Any] = {}
    for row in ordered:
        for name, value in row.items():
            if name not in STRUCTURAL and _blank(values.get(name)) and not _blank(value):
                values[name] = value
    return values


def _misplaced(row: Row, repeat_instrument: str | None, date_field: str) -> str:
    """Why a dated row is no visit: config.repeat_instrument does not match the project
    (a project without repeating instruments has no such column at all)."""
    where = (f"repeating instrument {row.get(INSTRUMENT)!r}" if not _blank(row.get(INSTRUMENT))
             else "a row outside any repeating instrument")
    return (f"config.date_field {date_field!r} is filled on {where}, but "
            f"config.repeat_instrument is {repeat_instrument!r}")


def merge_visits(rows: Sequence[Row], record_id_field: str = "record_id",
                 repeat_instrument: str | None = "mri",
                 date_field: str = "mri_date") -> MergedVisits:
    """One flat record per visit: the record's non-repeating values under the visit's
    own non-blank ones, the structural columns of the visit row, and ``id``."""
    merged = MergedVisits()
    base = _record_values(rows, record_id_field)
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if _blank(row.get(record_id_field)):
            merged.skipped[f"#{index}"] = f"row without a {record_id_field}"
            continue
        if not is_visit_row(row, repeat_instrument, date_field):
            if not _blank(row.get(date_field)):  # dated outside the configured instrument
                merged.skipped[f"#{index}"] = _misplaced(row, repeat_instrument, date_field)
            continue
        visit_id = row_booking_id(row, record_id_field)
        if visit_id in seen:
            merged.skipped[f"#{index}"] = "a second row for the same visit"
            continue
        seen.add(visit_id)
        visit = _underlay(base.get(str(row[record_id_field]), []), row.get(EVENT))
        visit.update({name: value for name, value in row.items() if not _blank(value)})
        visit.update({name: row.get(name, "") for name in STRUCTURAL if name in row})
        visit["id"] = visit_id
        merged.visits.append(visit)
    return merged
