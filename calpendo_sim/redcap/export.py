"""``content=record``: REDCap's flat JSON export, row by row as the real server builds it.

What REDCap 15 does, and this follows (its API/record/export.php and Records::getData):
- ``fields`` may be an array (``fields[0]=..``) or one comma-separated value; unknown
  names fail with HTTP 400 naming them, as do unknown ``events`` and ``forms``.
- Rows are (record, event, repeat instrument, instance) groups that hold data for at
  least one requested field; every row carries every requested field, in data-dictionary
  order, blank where the field belongs to another instrument or event.
- The record id column (only when requested) is followed by ``redcap_event_name``
  (longitudinal projects) and ``redcap_repeat_instrument``/``redcap_repeat_instance``
  (projects with repeating instruments); both are blank on a non-repeating row.
- ``filterLogic`` is evaluated on each row: a repeating instrument's field is blank on
  every row but that instrument's own, so a filter on a visit date drops the records'
  non-repeating rows unless it also admits ``[field] = ''``.
- ``dateRangeBegin``/``dateRangeEnd`` select records by modification time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .logic import LogicError, Node, Ref, evaluate, parse, references
from .project import FORMS, Project, parse_choices
from .store import RowKey, Values


class ApiError(Exception):
    """An error answer: HTTP ``status`` with REDCap's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Params:
    """A form-encoded request body, in order, as PHP would see it."""

    pairs: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str = "") -> str:
        found = [value for key, value in self.pairs if key == name]
        return found[-1] if found else default  # PHP keeps the last of repeated names

    def names(self) -> set[str]:
        return {key for key, _ in self.pairs}

    def array(self, name: str) -> list[str] | None:
        """``name[0]=a&name[1]=b`` or ``name=a,b`` as a list; None when absent."""
        indexed = re.compile(re.escape(name) + r"\[\d*\]")
        items = [value for key, value in self.pairs if indexed.fullmatch(key)]
        if items:
            return [item.strip() for item in items]
        if any(key == name for key, _ in self.pairs):
            value = self.get(name)
            return [item.strip() for item in value.split(",")] if value != "" else []
        return None


def not_valid(parameter: str, values: list[str]) -> ApiError:
    quoted = ", ".join(f"'{value}'" for value in dict.fromkeys(values))
    return ApiError(400, f'The following values in the parameter "{parameter}" are not valid: '
                         f"{quoted}")


def requested_events(project: Project, params: Params) -> set[str] | None:
    names = params.array("events")
    if not names or not project.longitudinal:  # classic projects ignore events
        return None
    invalid = [name for name in names if name not in project.event_names]
    if invalid:
        raise not_valid("events", invalid)
    return set(names)


def requested_fields(project: Project, params: Params) -> list[str]:
    """The requested fields in data-dictionary order; every field when none is named."""
    names = params.array("fields") or []
    invalid = [name for name in names if project.form_of(name) is None]
    if invalid:
        raise not_valid("fields", invalid)
    forms = params.array("forms") or []
    unknown_forms = [form for form in forms if form not in FORMS]
    if unknown_forms:
        raise not_valid("forms", unknown_forms)
    everything = project.export_fields()
    wanted = set(names) | {name for name in everything if project.form_of(name) in forms}
    return [name for name in everything if name in wanted] if wanted else everything


def filter_logic(project: Project, params: Params) -> Node | None:
    """The parsed ``filterLogic``, or HTTP 400. REDCap documents "an error message" for
    bad syntax but has no wording of its own (its parser's exception escapes), so the
    wording here is the simulator's; so is refusing unknown fields and events."""
    text = params.get("filterLogic")
    if text.strip() == "":
        return None
    try:
        tree = parse(text)
    except LogicError as exc:
        raise ApiError(400, f'The value of the parameter "filterLogic" is not valid: {exc}')
    for ref in references(tree):
        if project.form_of(ref.field) is None:
            raise ApiError(400, f'The value of the parameter "filterLogic" is not valid: '
                                f"[{ref.field}] is not a field of this project")
        if ref.event is not None and ref.event not in project.event_names:
            raise ApiError(400, f'The value of the parameter "filterLogic" is not valid: '
                                f"[{ref.event}] is not an event of this project")
    return tree


def _instant(params: Params, name: str) -> dt.datetime | None:
    text = params.get(name).strip()
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f'The value of the parameter "{name}" is not valid: '
                            "expected YYYY-MM-DD HH:MM:SS") from None


def modified_between(params: Params, modified: dict[str, dt.datetime]) -> set[str] | None:
    """Records created or modified in [dateRangeBegin, dateRangeEnd], None: no range."""
    begin, end = _instant(params, "dateRangeBegin"), _instant(params, "dateRangeEnd")
    if begin is None and end is None:
        return None
    return {record for record, when in modified.items()
            if (begin is None or when >= begin) and (end is None or when <= end)}


class RowView:
    """Field values as REDCap sees them from one row (for output and for the filter)."""

    def __init__(self, project: Project, rows: list[tuple[RowKey, Values]]) -> None:
        self.project = project
        self.base = {key[:2]: values for key, values in rows if not key.instrument}

    def value(self, key: RowKey, values: Values, name: str, event: str | None = None) -> str:
        if name == self.project.record_id_field:
            return key.record  # on every event and instance
        event = event or key.event
        form = self.project.form_of(name) or ""
        if not self.project.designated(event, form):
            return ""
        status_default = "0" if name == f"{form}_complete" else ""
        if self.project.is_repeating(form):
            if key.instrument != form or event != key.event:
                return ""
            return values.get(name, status_default)
        if key.instrument and event == key.event:
            return ""  # a non-repeating field is not part of an instance's row...
        return self.base.get((key.record, event), {}).get(name, status_default)

    def logic_value(self, key: RowKey, values: Values, ref: Ref) -> str:
        if key.instrument and ref.event in (None, key.event) and not self.project.is_repeating(
                self.project.form_of(ref.field) or ""):
            # ...but the filter reads the record-event's non-repeating value there.
            return self.base.get((key.record, key.event), {}).get(ref.field, "")
        return self.value(key, values, ref.field, ref.event)


def has_data(project: Project, key: RowKey, values: Values, fields: list[str]) -> bool:
    """Whether the row stores a value for a requested field (REDCap skips it otherwise)."""
    if project.record_id_field in fields and not key.instrument:
        return True  # the record id is stored on every event the record has data in
    for name in fields:
        form = project.form_of(name) or ""
        on_row = form == key.instrument if key.instrument else not project.is_repeating(form)
        if on_row and project.designated(key.event, form) and values.get(name, "") != "":
            return True
    return False


def flat_row(view: RowView, key: RowKey, values: Values, fields: list[str],
             labels: bool) -> dict[str, object]:
    project, row = view.project, {}
    for name in fields:
        if name == project.record_id_field:
            row[name] = key.record
            if project.longitudinal:
                row["redcap_event_name"] = key.event
            if project.repeating:
                row["redcap_repeat_instrument"] = key.instrument
                row["redcap_repeat_instance"] = "" if key.instance is None else key.instance
            continue
        value = view.value(key, values, name)
        field = project.field(name)
        if labels and field is not None and field.choices:
            value = parse_choices(field.choices).get(value, value)
        row[name] = value
    return row


def export_records(project: Project, rows: list[tuple[RowKey, Values]], params: Params,
                   modified: dict[str, dt.datetime]) -> list[dict[str, object]]:
    """The answer to ``content=record`` (ApiError for an invalid request)."""
    if params.get("type").lower() == "eav":
        raise ApiError(400, "The simulator exports records as type=flat only")
    events = requested_events(project, params)
    fields = requested_fields(project, params)
    logic = filter_logic(project, params)
    records = set(params.array("records") or ())
    changed = modified_between(params, modified)
    labels = params.get("rawOrLabel").lower() == "label"
    view, answer = RowView(project, rows), []
    for key, values in rows:
        if ((events is not None and key.event not in events)
                or (records and key.record not in records)
                or (changed is not None and key.record not in changed)
                or not has_data(project, key, values, fields)):
            continue
        if logic is not None and not evaluate(
                logic, lambda ref, key=key, values=values: view.logic_value(key, values, ref)):
            continue
        answer.append(flat_row(view, key, values, fields, labels))
    return answer
