"""Records -> worklist rows: the mapping step, one named step after another (pure).

`bookings_to_rows` takes each record through the same steps, whatever the source
type: its id, its resource (scope, modality, AE title), its status, the mapped
fields (field mapping, regex extraction, templates), the deterministic identifiers
of `mwl_service.schema`, its times (site-local wall time -> UTC instant, back to
local DICOM DA/TM, DST-safe), the booking columns, the MR fields, what keeps it
from being published, and the content hash. The source's rules are derived once per
transform (`_Transform`), not per booking.

Rows that cannot be published (no patient ID, no start time) stay in the frame with
a non-empty ``skip_reason``: the booking still exists, so reconciliation must not
cancel its row, but it is never written either. Every booking not offered as work
(scoped out, cancelled, not publishable, outside the window, repeated) is also named
in the result's ``left_out`` with why (`rows.left_out`), for mwl-api's list.

Warnings name the booking id, never the title text: titles hold participant names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from calpendo_assets.core.records import get_path
from calpendo_assets.core.source import DataSource
from calpendo_assets.core.window import Window
from calpendo_assets.rows.clinical import MR_FIELDS, mr_fields
from calpendo_assets.rows.fields import extract_fields, is_number, mapped_modality, normalise_field
from calpendo_assets.rows.left_out import left_out_entry, not_offered, outside, skip_reasons
from calpendo_assets.rows.model import (
    COLUMN_LENGTH,
    ROW_COLUMNS,
    TransformResult,
    content_hash,
    present_booking_ids,
    to_frame,
)
from calpendo_assets.rows.names import as_text, cap_pn_group, clean
from calpendo_assets.rows.scope import (
    default_ae_title,
    map_by_resource,
    map_step_status,
    match_resource,
    truthy,
)
from calpendo_assets.rows.templates import render_templates
from calpendo_assets.rows.times import booking_finish, booking_start, is_multi_day
from mwl_service import excluded as why
from mwl_service.schema import DISCONTINUED, accession_number, step_id, study_instance_uid

EXCLUDED_RESOURCE = "resource not configured"
EXCLUDED_STATUS = "status not in filter"
EXCLUDED_NO_ID = "no booking id"
EXCLUDED_NOT_FETCHED = "details not fetched"


@dataclass(frozen=True)
class Resource:
    """A booking's resource as the source's config reads it."""

    name: str
    in_scope: bool
    modality: str
    ae_title: str


@dataclass(frozen=True)
class Status:
    booking_status: str  # as the source gave it, upper case
    step_status: str  # "" when the status is not in scope
    reason: str  # why the step is discontinued, "" when scheduled


def duration_minutes(
    booking: Mapping, start: dt.datetime | None, finish: dt.datetime | None, path: str
) -> int | None:
    """The mapped duration (a number, or digits), else finish - start, else None."""
    value = get_path(booking, path)
    if is_number(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if start is not None and finish is not None and finish > start:
        return int((finish - start).total_seconds() // 60)
    return None


def _local_stamps(start: dt.datetime, tz: ZoneInfo) -> tuple[str, str]:
    local = start.astimezone(tz)
    return (
        f"{local.year:04d}{local.month:02d}{local.day:02d}",
        f"{local.hour:02d}{local.minute:02d}{local.second:02d}",
    )


def _cut(text: str, column: str, default: int) -> str:
    return text[: COLUMN_LENGTH.get(column, default)]


class _Transform:
    """One transform of one source: its rules, derived once, and what its bookings
    add up to (rows, exclusions, warnings, the bookings left out)."""

    def __init__(self, source: DataSource, window: Window | None = None) -> None:
        settings = source.settings
        self.name, self.tz, self.settings, self.mapping, self.window = (
            source.name, source.tz, settings, source.mapping, window
        )
        self.status_filter = settings.scheduled_statuses()
        # A mapped column's own unit (Pylantir's patient_weight_lb) wins over config.units.
        self.units = {**settings.units.model_dump(), **self.mapping.units}
        self.variables = frozenset(self.mapping.variables)
        # Several station AE titles are one DICOM multi-value.
        self.ae_titles = {
            k: v if isinstance(v, str) else "\\".join(v)
            for k, v in settings.resource_ae_title_mapping.items()
        }
        # mr_fields renders the MR fields' templates; the others are rendered here.
        templates = self.mapping.templates
        self.mr_templates = {f: t for f, t in templates.items() if f in MR_FIELDS}
        self.text_templates = {f: t for f, t in templates.items() if f not in MR_FIELDS}
        self.rows: list[dict] = []
        self.excluded: dict[str, int] = {}
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.resources: dict[str, Resource] = {}
        self.not_modalities: dict[str, int] = {}  # mapped path -> values that were no modality
        self.multi_day: dict[str, str] = {}
        self.left_out: list[why.Excluded] = []

    def exclude(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1

    def leave_out(
        self, booking: Mapping, booking_id: str, kind: str, detail: str = "",
        start: dt.datetime | None = None,
    ) -> None:
        """Name a booking not offered as work, and why (no title, name or patient ID)."""
        self.left_out.append(left_out_entry(booking_id, kind, booking, self.tz, detail, start))

    def add(self, booking: Mapping) -> None:
        """One booking through every step; it becomes a row, or is counted as excluded."""
        booking_id = self.booking_id(booking)
        if booking_id is None:
            return
        scope = self.scope(booking, booking_id)
        if scope is None:
            return
        resource, status = scope
        warnings: list[str] = []
        row, mr_raw = self.mapped(booking, booking_id, warnings)
        self.identifiers(row, booking_id, resource)
        start = self.times(booking, booking_id, row, warnings)
        if self.outside_window(booking, booking_id, start):
            return
        self.booking_columns(booking, row, status, resource)
        self.mr_columns(booking, row, mr_raw, booking_id, warnings)
        self.skip_reasons(booking, row, start, warnings)
        self.warnings += warnings
        row["content_hash"] = content_hash(row)
        self.rows.append(row)

    def booking_id(self, booking: Mapping) -> str | None:
        """The record's id; None (counted, with a warning) when it has none or repeats."""
        raw_id = get_path(booking, "id")
        if raw_id is None or str(raw_id).strip() == "":
            self.exclude(EXCLUDED_NO_ID)
            self.warnings.append("a booking without an id was ignored")
            self.leave_out(booking, "", why.NO_BOOKING_ID)
            return None
        booking_id = str(raw_id).strip()
        if booking_id in self.seen:
            self.warnings.append(
                f"booking {booking_id}: returned twice by the source; the first copy is used"
            )
            self.leave_out(booking, booking_id, why.DUPLICATE)
            return None
        self.seen.add(booking_id)
        return booking_id

    def scope(self, booking: Mapping, booking_id: str) -> tuple[Resource, Status] | None:
        """The booking's resource and status; None (counted, left out) when either is
        out of the source's scope."""
        resource = self.resource(booking)
        if not resource.in_scope:
            self.exclude(EXCLUDED_RESOURCE)
            self.leave_out(booking, booking_id, why.RESOURCE_NOT_IN_SCOPE)
            return None
        status = self.status(booking)
        if not status.step_status:
            self.exclude(EXCLUDED_STATUS)
            detail = f"status {status.booking_status or '(empty)'}"
            self.leave_out(booking, booking_id, why.STATUS_NOT_IN_SCOPE, detail)
            return None
        return resource, status

    def resource(self, booking: Mapping) -> Resource:
        """Scope, modality and AE title of the booking's resource (once per resource)."""
        name = clean(as_text(get_path(booking, "resource.name")))
        found = self.resources.get(name)
        if found is None:
            s = self.settings
            found = self.resources[name] = Resource(
                name,
                match_resource(name, s.resources),
                map_by_resource(name, s.resource_modality_mapping, s.default_modality),
                map_by_resource(name, self.ae_titles, default_ae_title(name)),
            )
        return found

    def status(self, booking: Mapping) -> Status:
        """The step status the booking's status maps to; "" when not in scope."""
        booking_status = clean(as_text(get_path(booking, self.mapping.status_path))).upper()
        cancelled = truthy(get_path(booking, "cancelled"))
        step_status, reason = map_step_status(booking_status, cancelled, self.status_filter)
        if step_status is None:
            return Status(booking_status, "", "")
        if step_status == DISCONTINUED:
            note = clean(as_text(get_path(booking, "cancellationReason")))
            if note:
                reason = f"{reason}: {note}"
        return Status(booking_status, step_status, reason)

    def mapped(
        self, booking: Mapping, booking_id: str, warnings: list[str]
    ) -> tuple[dict, dict[str, Any]]:
        """A new row with the mapped fields, and the raw values of the MR fields (numbers,
        units, line breaks: `mr_fields` reads them) and of the variables (templates)."""
        row = dict.fromkeys(ROW_COLUMNS, "")
        row["source"], row["booking_id"] = self.name, booking_id
        mr_raw: dict[str, Any] = {}
        for path, target in self.mapping.direct:
            if target in MR_FIELDS:
                mr_raw[target] = get_path(booking, path)
            else:
                self.set_field(row, target, as_text(get_path(booking, path)), path, warnings)
        for path, items in self.mapping.extractions:
            values, extract_warnings = extract_fields(get_path(booking, path), items, booking_id)
            warnings += extract_warnings
            for target, value in values.items():
                if target in MR_FIELDS or target in self.variables:
                    mr_raw[target] = value
                else:
                    self.set_field(row, target, value, path, warnings)
        if self.text_templates:
            rendered, template_warnings = render_templates(
                self.text_templates, booking, row | mr_raw, booking_id=booking_id
            )
            warnings += template_warnings
            for target, text in rendered.items():
                row[target] = normalise_field(target, text, booking_id, warnings)
        return row, mr_raw

    def set_field(self, row: dict, target: str, text: str, path: str, warnings: list[str]) -> None:
        if target != "modality":
            row[target] = normalise_field(target, text, row["booking_id"], warnings)
            return
        s = self.settings
        row[target], unmapped = mapped_modality(
            text, s.resource_modality_mapping, s.default_modality
        )
        if unmapped:
            self.not_modalities[path] = self.not_modalities.get(path, 0) + 1

    def identifiers(self, row: dict, booking_id: str, resource: Resource) -> None:
        """Identifiers derived from (source, booking id), and the defaults of fields the
        mapping left empty."""
        if not row["patient_name"] and row["patient_id"]:
            # Patient's Name is type 1 in the worklist; research sites commonly use the
            # participant ID as the name when the booking carries none. Kept verbatim as
            # one family-name component: an ID is not "Given Family" ("EDM_SUB001").
            row["patient_name"] = cap_pn_group(re.sub(r"[\^=]", " ", row["patient_id"]))
        row["accession_number"] = accession_number(self.name, booking_id)
        row["study_instance_uid"] = study_instance_uid(self.name, booking_id)
        own_step_id = step_id(self.name, booking_id)
        row["scheduled_procedure_step_id"] = own_step_id
        row["requested_procedure_id"] = row["requested_procedure_id"] or own_step_id
        row["modality"] = row["modality"] or resource.modality
        row["scheduled_station_ae_title"] = row["scheduled_station_ae_title"] or resource.ae_title

    def times(
        self, booking: Mapping, booking_id: str, row: dict, warnings: list[str]
    ) -> dt.datetime | None:
        """Start (UTC instant, local DA/TM), zone and duration; a booking that spans
        days is noted for the administrator and scheduled on its start date."""
        start = booking_start(booking, self.tz, warnings)
        finish = booking_finish(booking, self.tz, warnings)
        minutes = duration_minutes(booking, start, finish, self.mapping.duration_path)
        row["site_timezone"] = self.settings.timezone
        row["duration_minutes"] = minutes
        if start is None:
            row["scheduled_start_utc"] = None
            return None
        row["scheduled_start_utc"] = start.astimezone(dt.UTC)
        row["scheduled_start_date"], row["scheduled_start_time"] = _local_stamps(start, self.tz)
        if finish is None and minutes is not None:
            finish = start + dt.timedelta(minutes=minutes)  # a source without a finish
        if is_multi_day(start, finish, self.tz):
            warnings.append(self.note_multi_day(booking_id, start, finish))
        return start

    def outside_window(self, booking: Mapping, booking_id: str, start: dt.datetime | None) -> bool:
        """Whether the booking starts outside the fetched window (then it is left out)."""
        if not outside(self.window, start):
            return False
        self.leave_out(booking, booking_id, why.OUTSIDE_WINDOW, "", start)
        self.warnings.append(f"booking {booking_id}: starts outside the fetched window; left out")
        return True

    def note_multi_day(self, booking_id: str, start: dt.datetime, finish: dt.datetime) -> str:
        """The administrator's note on a booking that spans days (its id and times only)."""
        shown = [t.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") for t in (start, finish)]
        note = (
            f"booking {booking_id}: a multi-day booking (from {shown[0]} to {shown[1]}, "
            "site-local); its worklist step is scheduled on its start date"
        )
        self.multi_day[booking_id] = note
        return note

    def booking_columns(
        self, booking: Mapping, row: dict, status: Status, resource: Resource
    ) -> None:
        row["step_status"] = status.step_status
        row["discontinued_reason"] = _cut(status.reason, "discontinued_reason", 255)
        row["booking_status"] = _cut(status.booking_status, "booking_status", 32)
        row["resource_name"] = _cut(resource.name, "resource_name", 128)
        project = clean(as_text(get_path(booking, "project.name")))
        row["project_name"] = _cut(project, "project_name", 255)

    def mr_columns(
        self, booking: Mapping, row: dict, mr_raw: dict, booking_id: str, warnings: list[str]
    ) -> None:
        s = self.settings
        values, mr_warnings = mr_fields(
            booking,
            row | mr_raw,
            booking_id=booking_id,
            project_name=row["project_name"],
            units=self.units,
            scheduled_protocol_codes=s.scheduled_protocol_codes,
            requested_procedure_codes=s.requested_procedure_codes,
            templates=self.mr_templates,
            variables={k: v for k, v in mr_raw.items() if k in self.variables},
        )
        warnings += mr_warnings
        row |= {k: "" if v is None else v for k, v in values.items()}

    def skip_reasons(
        self, booking: Mapping, row: dict, start: dt.datetime | None, warnings: list[str]
    ) -> None:
        """What keeps the row from being published (it stays in the frame); a row not
        offered (cancelled, or not publishable) is also left out."""
        skip = skip_reasons(row, start, booking, self.mapping.extractions)
        row["skip_reason"] = "; ".join(text for text, _ in skip)
        for text, _ in skip:
            self.exclude(text)
            warnings.append(f"booking {row['booking_id']}: not published: {text}")
        entry = not_offered(row, start, booking, skip, self.tz)
        if entry is not None:
            self.left_out.append(entry)

    def result(self, skipped: Mapping[str, str]) -> TransformResult:
        for booking_id, reason in skipped.items():
            if str(booking_id) not in self.seen:
                self.exclude(EXCLUDED_NOT_FETCHED)
                self.warnings.append(f"booking {booking_id}: details not fetched: {reason}")
                self.left_out.append(why.Excluded(str(booking_id), why.NOT_FETCHED, reason[:120]))
        for path, count in self.not_modalities.items():
            self.warnings.append(
                f"field_mapping.{path} -> modality: {count} values are resource names or not "
                "DICOM modalities; they were mapped through config.resource_modality_mapping, "
                f"else config.default_modality {self.settings.default_modality!r}"
            )
        frame = to_frame(self.rows)
        return TransformResult(
            frame=frame,
            excluded=self.excluded,
            warnings=self.warnings,
            present_ids=present_booking_ids(frame, skipped),
            multi_day=self.multi_day,
            left_out=self.left_out,
        )


def bookings_to_rows(
    bookings: Iterable[Mapping],
    source: DataSource,
    skipped: Mapping[str, str] | None = None,
    window: Window | None = None,
) -> TransformResult:
    """A source's records -> one worklist row per booking in scope.

    `skipped` are bookings the fetch saw but could not read (id -> reason, e.g. a
    404 on the detail request): they count as present (not cancelled) and are
    reported, but produce no row. With `window`, a booking starting outside it is
    left out (a source that ignored the window query). Every booking left out is
    named in the result's ``left_out``, with why.
    """
    transform = _Transform(source, window)
    for booking in bookings:
        transform.add(booking)
    return transform.result(skipped or {})
