"""What a sync asks REDCap for: one ``content=record`` export of the visit window.

REDCap (15.x, API/record/export.php and Records::getData) exports a record's data as
rows: one per record-event (the non-repeating row) and one per repeating instance.
``filterLogic`` is evaluated on each of those rows, so a window on a repeating
instrument's date field alone would drop every non-repeating row (the participant's
names, birth date, weight): `visit_window_logic` also admits the rows where that field
is blank. The record id field must be requested: REDCap only adds the
``redcap_event_name`` / ``redcap_repeat_*`` columns next to it, and refuses those names
in ``fields`` (HTTP 400). A checkbox exports one column per option, ``race___2``;
asking for that column drops it (``fields`` takes variable names, and REDCap forbids
``___`` in them), so its field ``race`` is asked for. ``redcap_data_access_group`` is
no field either: ``exportDataAccessGroups`` adds it to every row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from calpendo_assets.core.records import records_fingerprint

STRUCTURAL_FIELDS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
DAG_COLUMN = "redcap_data_access_group"
CHECKBOX_OPTION = "___"  # a checkbox option's column: field + ___ + coded value
# REDCap variable names: lower-case letters, digits and underscores, starting with a letter.
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
_EVENT_NAME = re.compile(r"[a-z0-9_]+")  # unique event names, e.g. "t1_arm_1"


def field_name(name: str) -> str:
    """``name`` if it can be a REDCap field name, else ValueError (it goes into logic)."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a REDCap field name (lower-case letters, digits "
                         "and underscores, starting with a letter)")
    return name


def export_field(column: str) -> str:
    """The field whose export holds ``column``: a checkbox option's field, else itself."""
    return column.split(CHECKBOX_OPTION, 1)[0] if CHECKBOX_OPTION in column else column


def event_name(name: str) -> str:
    if not _EVENT_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a REDCap unique event name (e.g. 't1_arm_1')")
    return name


def visit_days(start: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
    """The whole days covering ``[start, end)``: the first day and the day after the last.

    Bounds may be dates or (site-local) datetimes; a datetime ``end`` past midnight
    covers its own day too.
    """
    first = start.date() if isinstance(start, dt.datetime) else start
    if isinstance(end, dt.datetime):
        last = end.date() + dt.timedelta(days=1 if end.time() != dt.time(0) else 0)
    else:
        last = end
    if last <= first:
        raise ValueError(f"empty visit window: {start} .. {end}")
    return first, last


def visit_window_logic(date_field: str, first_day: dt.date, end_day: dt.date,
                       admit_undated: bool = True) -> str:
    """``([mri_date] >= '2026-12-01' and [mri_date] < '2026-12-05') or [mri_date] = ''``.

    Visits on ``[first_day, end_day)``. REDCap compares the stored text: a date field
    holds ``YYYY-MM-DD``, a datetime field ``YYYY-MM-DD HH:MM[:SS]``, and both sort right
    against a day. ``admit_undated`` keeps the rows where the field is blank: every
    record's non-repeating row (and visits not yet dated, which the merge leaves out).
    """
    name = field_name(date_field)
    window = f"[{name}] >= '{first_day.isoformat()}' and [{name}] < '{end_day.isoformat()}'"
    return f"({window}) or [{name}] = ''" if admit_undated else window


@dataclass(frozen=True)
class RecordRequest:
    """One flat JSON export: fields, optional events, optional filter logic."""

    fields: tuple[str, ...]
    events: tuple[str, ...] = ()
    filter_logic: str = ""
    data_access_groups: bool = False

    def form(self) -> list[tuple[str, str]]:
        """The form fields to POST, without the token (in REDCap's array notation)."""
        dags = "true" if self.data_access_groups else "false"
        pairs = [("content", "record"), ("format", "json"), ("type", "flat"),
                 ("rawOrLabel", "raw"), ("rawOrLabelHeaders", "raw"),
                 ("exportCheckboxLabel", "false"), ("exportSurveyFields", "false"),
                 ("exportDataAccessGroups", dags), ("returnFormat", "json")]
        pairs += [(f"fields[{index}]", name) for index, name in enumerate(self.fields)]
        pairs += [(f"events[{index}]", name) for index, name in enumerate(self.events)]
        if self.filter_logic:
            pairs.append(("filterLogic", self.filter_logic))
        return pairs


def visit_request(record_id_field: str, fields: Iterable[str], date_field: str,
                  start: dt.date, end: dt.date, events: Sequence[str] = ()) -> RecordRequest:
    """The window's export: the record id first, then ``fields`` and the date field
    (each once; REDCap's structural names dropped, checkbox columns asked as their field,
    the data access group as its flag), visits dated in ``[start, end)`` widened to
    whole days, plus every record's non-repeating row."""
    wanted = [record_id_field, *fields, date_field]
    asked = [export_field(name) for name in wanted if name not in (*STRUCTURAL_FIELDS, DAG_COLUMN)]
    first, last = visit_days(start, end)
    return RecordRequest(fields=tuple(field_name(name) for name in dict.fromkeys(asked)),
                         events=tuple(event_name(e) for e in events),
                         filter_logic=visit_window_logic(date_field, first, last),
                         data_access_groups=DAG_COLUMN in wanted)


def answer_fingerprint(request: RecordRequest, rows: list[dict]) -> str:
    """sha256 of the request (what was asked, without the token) and its answer, row
    order aside: what a sensor compares between ticks."""
    asked = json.dumps(request.form(), separators=(",", ":"))
    return hashlib.sha256(f"{asked}\n{records_fingerprint(rows)}".encode("utf-8")).hexdigest()
