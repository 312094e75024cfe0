"""Records -> worklist rows: the mapping step (pure: no HTTP, no database, no Dagster).

`bookings_to_rows` applies a data source's scope (resources, status filter), field
mapping and regex extraction, the time-zone conversion (site-local wall time -> UTC
instant, then back to local DICOM DA/TM), status, modality and AE-title mapping, the
deterministic identifiers of `mwl_service.schema`, and the content hash. It is the same
for every source type: plugins hand over plain records keyed by dotted paths.

Rows that cannot be published (no patient ID, no start time) stay in the frame with
a non-empty ``skip_reason``: the booking still exists, so reconciliation must not
cancel its row, but it is never written either.

Warnings name the booking id, never the title text: titles hold participant names.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from calpendo_assets.config import DataSource, FieldExtraction
from calpendo_assets.rows.clinical import MR_FIELDS, mr_fields
from calpendo_assets.rows.codes import match_by_name
from calpendo_assets.rows.templates import render_templates
from calpendo_assets.rows.model import (
    COLUMN_LENGTH,
    ROW_COLUMNS,
    TransformResult,
    content_hash,
    present_booking_ids,
    to_frame,
)
from calpendo_assets.rows.names import as_text, cap_pn_group, clean, dicom_pn
from calpendo_assets.rows.times import booking_finish, booking_start
from calpendo_assets.rows.left_out import left_out_entry, skip_reasons
from calpendo_assets.sources.base import get_path
from mwl_service import excluded as why
from mwl_service.schema import (
    DISCONTINUED,
    SCHEDULED,
    accession_number,
    step_id,
    study_instance_uid,
)
from mwl_service.vr import MAX_LENGTH, ROW_FIELD_VRS, vr_problem

PN_FIELDS = frozenset(f for f, vr in ROW_FIELD_VRS.items() if vr == "PN")
# Identifier-like fields: never truncated (a cut-off ID names the wrong person).
ID_FIELDS = frozenset({"patient_id", "other_patient_ids", "admission_id", "requested_procedure_id"})

CANCELLED_STATUSES = frozenset({"CANCELLED", "CANCELED"})
DENIED_STATUSES = frozenset({"DENIED"})

EXCLUDED_RESOURCE = "resource not configured"
EXCLUDED_STATUS = "status not in filter"
EXCLUDED_NO_ID = "no booking id"
EXCLUDED_NOT_FETCHED = "details not fetched"


def match_resource(resource_name: str | None, resources: Iterable[str]) -> bool:
    """No configured resources = every resource; else case-insensitive prefix match."""
    resources = tuple(resources)
    if not resources:
        return True
    name = (resource_name or "").strip().casefold()
    return any(name.startswith(r.strip().casefold()) for r in resources)


def map_by_resource(resource_name: str | None, mapping: Mapping[str, Any], default: Any) -> Any:
    """Exact (case-insensitive) match first, then the longest matching prefix, else default."""
    return match_by_name(resource_name, mapping, default)


def default_ae_title(resource_name: str | None) -> str:
    """Resource name upper-cased, non [A-Z0-9_] -> "_" (runs collapsed), max 16."""
    ae = re.sub(r"[^A-Z0-9_]+", "_", (resource_name or "").upper())
    ae = re.sub(r"_+", "_", ae).strip("_")
    return ae[:16].rstrip("_")


def map_step_status(
    booking_status: str | None, cancelled: bool, status_filter: Iterable[str]
) -> tuple[str | None, str]:
    """(step_status, reason) for a booking; step_status None = not in scope.

    Cancelled (flag or status CANCELLED) -> DISCONTINUED, reason with Calpendo's
    cancellation reason appended by the caller; DENIED -> DISCONTINUED; a status in
    the filter -> SCHEDULED; anything else (REQUESTED, TENTATIVE, ...) -> None.
    """
    status = (booking_status or "").strip().upper()
    if cancelled or status in CANCELLED_STATUSES:
        return DISCONTINUED, "cancelled in Calpendo"
    if status in DENIED_STATUSES:
        return DISCONTINUED, "denied in Calpendo"
    wanted = {s.strip().upper() for s in status_filter}
    if status in wanted or not wanted:  # no filter (a file source): every other status
        return SCHEDULED, ""
    return None, f"status {status or '(empty)'} not in filter"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1", "y"}
    return bool(value)




def extract_fields(
    text: Any, extractions: Iterable[FieldExtraction], booking_id: Any
) -> tuple[dict[str, str], list[str]]:
    """Apply each extraction's regex to `text`: {field: value}, warnings.

    A pattern that does not match (or whose group did not take part) leaves that
    field empty with a warning naming the booking: the whole text is never used as
    a fallback.
    """
    source = as_text(text)
    values: dict[str, str] = {}
    warnings: list[str] = []
    matches: dict[re.Pattern, re.Match | None] = {}
    unmatched: list[str] = []
    for ex in extractions:
        if ex.pattern not in matches:
            matches[ex.pattern] = ex.pattern.search(source)
        m = matches[ex.pattern]
        value = m.group(ex.group) if m is not None else None
        if value is None or not value.strip():
            values[ex.field] = ""
            if m is None:
                unmatched.append(ex.field)
            elif ex.field == "patient_id":
                warnings.append(
                    f"booking {booking_id}: patient_id: pattern group {ex.group!r} is empty"
                )
        else:
            values[ex.field] = value.strip()
    if unmatched:
        warnings.insert(
            0, f"booking {booking_id}: pattern did not match, left empty: {', '.join(unmatched)}"
        )
    return values, warnings




def is_number(value: Any) -> bool:
    """A finite int or float; bool is not a number here (JSON true is no count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _duration(
    booking: Mapping, start: dt.datetime | None, tz: ZoneInfo, path: str = "durationInMinutes"
) -> int | None:
    value = get_path(booking, path)
    if is_number(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    finish = booking_finish(booking, tz)
    if start is not None and finish is not None and finish > start:
        return int((finish - start).total_seconds() // 60)
    return None


_NORMALISED_CACHE: dict[tuple[str, str], str] = {}
_CACHE_LIMIT = 50_000


def _normalise_field(field_name: str, raw: str, booking_id: str, warnings: list[str]) -> str:
    """A mapped value cleaned for its column's VR; "" (with a warning) when unusable.

    Values that normalise without a warning are memoised: projects, operators and
    resources repeat across thousands of bookings.
    """
    key = (field_name, raw)
    cached = _NORMALISED_CACHE.get(key)
    if cached is not None:
        return cached
    before = len(warnings)
    value = _normalise_uncached(field_name, raw, booking_id, warnings)
    if len(warnings) == before:
        if len(_NORMALISED_CACHE) >= _CACHE_LIMIT:
            _NORMALISED_CACHE.clear()
        _NORMALISED_CACHE[key] = value
    return value


def _normalise_uncached(field_name: str, raw: str, booking_id: str, warnings: list[str]) -> str:
    if field_name in PN_FIELDS:
        return dicom_pn(raw)
    value = clean(raw)
    if not value:
        return ""
    vr = ROW_FIELD_VRS.get(field_name)
    if field_name == "patient_birth_date":
        digits = re.sub(r"[-/.]", "", value)
        if vr_problem("DA", digits):
            warnings.append(f"booking {booking_id}: patient_birth_date is not a valid date")
            return ""
        return digits
    if field_name == "patient_sex":
        sex = value[:1].upper()
        if sex not in ("M", "F", "O"):
            warnings.append(f"booking {booking_id}: patient_sex is not M, F or O")
            return ""
        return sex
    if field_name == "scheduled_station_ae_title":
        problem = vr_problem(vr, value)
        if problem:
            warnings.append(
                f"booking {booking_id}: mapped {field_name} {problem}; using the resource mapping"
            )
            return ""
        return value
    limit = MAX_LENGTH.get(vr or "", None) or COLUMN_LENGTH.get(field_name)
    if limit and len(value) > limit:
        if field_name in ID_FIELDS:
            if field_name != "patient_id":
                warnings.append(
                    f"booking {booking_id}: {field_name} longer than {limit} characters; left empty"
                )
                return ""
            return value  # patient_id: reported as a skip reason by the caller
        value = value[:limit].rstrip()
    return value


_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")  # a CS defined term: MR, CT, EEG, OT...


def _mapped_modality(text: str, source: DataSource, path: str, not_modalities: dict) -> str:
    """A mapped modality. Pylantir configs map a resource name ("3T Diagnostic") to
    modality: a value that names a resource of resource_modality_mapping, or is no
    modality term at all, goes through that mapping (else default_modality), counted
    per path for one warning."""
    name = clean(text)
    if not name:
        return ""
    mapped = map_by_resource(name, source.resource_modality_mapping, None)
    if mapped is None and _MODALITY.fullmatch(name.upper()):
        return name.upper()
    not_modalities[path] = not_modalities.get(path, 0) + 1
    return mapped or source.default_modality


def bookings_to_rows(
    bookings: Iterable[Mapping],
    source: DataSource,
    skipped: Mapping[str, str] | None = None,
    window=None,
) -> TransformResult:
    """Normalised Calpendo bookings -> one worklist row per booking in scope.

    `skipped` are bookings the fetch saw but could not read (id -> reason, e.g. a
    404 on the detail request): they count as present (not cancelled) and are
    reported, but produce no row. With `window` (aware ``start``/``end``), a booking
    starting outside it is left out (a source that ignored the window query).
    Every booking left out is named in the result's ``left_out``, with why.
    """
    tz = source.tz
    status_filter = {s.upper() for s in source.status_filter}
    excluded: dict[str, int] = {}
    warnings: list[str] = []
    rows: list[dict] = []
    seen: set[str] = set()
    resource_cache: dict[str, tuple[bool, str, str]] = {}
    not_modalities: dict[str, int] = {}  # mapped path -> values that were no modality
    left_out: list[why.Excluded] = []
    # mr_fields renders the MR fields' templates; the others are rendered here.
    mr_templates = {f: t for f, t in source.templates.items() if f in MR_FIELDS}
    text_templates = {f: t for f, t in source.templates.items() if f not in MR_FIELDS}

    def exclude(reason: str) -> None:
        excluded[reason] = excluded.get(reason, 0) + 1

    for booking in bookings:
        raw_id = get_path(booking, "id")
        if raw_id is None or str(raw_id).strip() == "":
            exclude(EXCLUDED_NO_ID)
            warnings.append("a booking without an id was ignored")
            left_out.append(left_out_entry("", why.NO_BOOKING_ID, booking, tz))
            continue
        booking_id = str(raw_id).strip()
        if booking_id in seen:
            warnings.append(
                f"booking {booking_id}: returned twice by Calpendo; the first copy is used"
            )
            left_out.append(left_out_entry(booking_id, why.DUPLICATE, booking, tz))
            continue
        seen.add(booking_id)

        resource_name = clean(as_text(get_path(booking, "resource.name")))
        cached = resource_cache.get(resource_name)
        if cached is None:
            cached = (
                match_resource(resource_name, source.resources),
                map_by_resource(
                    resource_name, source.resource_modality_mapping, source.default_modality
                ),
                map_by_resource(
                    resource_name, source.resource_ae_title_mapping, default_ae_title(resource_name)
                ),
            )
            resource_cache[resource_name] = cached
        in_scope, resource_modality, resource_ae = cached
        if not in_scope:
            exclude(EXCLUDED_RESOURCE)
            left_out.append(left_out_entry(booking_id, why.RESOURCE_NOT_IN_SCOPE, booking, tz))
            continue

        booking_status = clean(as_text(get_path(booking, source.status_path))).upper()
        step_status, reason = map_step_status(
            booking_status, _truthy(get_path(booking, "cancelled")), status_filter
        )
        if step_status is None:
            exclude(EXCLUDED_STATUS)
            detail = f"status {booking_status or '(empty)'}"
            left_out.append(left_out_entry(booking_id, why.STATUS_NOT_IN_SCOPE, booking, tz, detail))
            continue
        if step_status == DISCONTINUED:
            note = clean(as_text(get_path(booking, "cancellationReason")))
            if note:
                reason = f"{reason}: {note}"

        row = dict.fromkeys(ROW_COLUMNS, "")
        row["source"] = source.name
        row["booking_id"] = booking_id
        row_warnings: list[str] = []

        # The MR fields keep their raw values (numbers, units, line breaks) for mr_fields.
        mr_raw: dict[str, Any] = {}
        for path, target in source.direct_mappings:
            if target in MR_FIELDS:
                mr_raw[target] = get_path(booking, path)
                continue
            text = as_text(get_path(booking, path))
            if target == "modality":
                row[target] = _mapped_modality(text, source, path, not_modalities)
            else:
                row[target] = _normalise_field(target, text, booking_id, row_warnings)
        for path, items in source.extractions:
            values, extract_warnings = extract_fields(get_path(booking, path), items, booking_id)
            row_warnings += extract_warnings
            for target, value in values.items():
                if target in MR_FIELDS:
                    mr_raw[target] = value
                elif target == "modality":
                    row[target] = _mapped_modality(value, source, path, not_modalities)
                else:
                    row[target] = _normalise_field(target, value, booking_id, row_warnings)

        if text_templates:
            rendered, template_warnings = render_templates(
                text_templates, booking, row | mr_raw, booking_id=booking_id
            )
            row_warnings += template_warnings
            for target, text in rendered.items():
                row[target] = _normalise_field(target, text, booking_id, row_warnings)

        if not row["patient_name"] and row["patient_id"]:
            # Patient's Name is type 1 in the worklist; research sites commonly use the
            # participant ID as the name when the booking carries none. Kept verbatim as
            # one family-name component: an ID is not "Given Family" ("EDM_SUB001").
            row["patient_name"] = cap_pn_group(re.sub(r"[\^=]", " ", row["patient_id"]))
        row["accession_number"] = accession_number(source.name, booking_id)
        row["study_instance_uid"] = study_instance_uid(source.name, booking_id)
        own_step_id = step_id(source.name, booking_id)
        row["scheduled_procedure_step_id"] = own_step_id
        if not row["requested_procedure_id"]:
            row["requested_procedure_id"] = own_step_id
        if not row["modality"]:
            row["modality"] = resource_modality
        if not row["scheduled_station_ae_title"]:
            row["scheduled_station_ae_title"] = resource_ae

        start = booking_start(booking, tz, row_warnings)
        if start is not None and window is not None and not window.start <= start < window.end:
            left_out.append(left_out_entry(booking_id, why.OUTSIDE_WINDOW, booking, tz, "", start))
            warnings.append(f"booking {booking_id}: starts outside the fetched window; left out")
            continue
        if start is None:
            row["scheduled_start_utc"] = None
            row["scheduled_start_date"] = row["scheduled_start_time"] = ""
        else:
            local = start.astimezone(tz)
            row["scheduled_start_utc"] = start.astimezone(dt.UTC)
            row["scheduled_start_date"] = f"{local.year:04d}{local.month:02d}{local.day:02d}"
            row["scheduled_start_time"] = f"{local.hour:02d}{local.minute:02d}{local.second:02d}"
        row["site_timezone"] = source.timezone
        row["duration_minutes"] = _duration(booking, start, tz, source.duration_path)
        row["step_status"] = step_status
        row["discontinued_reason"] = reason[: COLUMN_LENGTH.get("discontinued_reason", 255)]
        row["booking_status"] = booking_status[: COLUMN_LENGTH.get("booking_status", 32)]
        row["resource_name"] = resource_name[: COLUMN_LENGTH.get("resource_name", 128)]
        row["project_name"] = clean(as_text(get_path(booking, "project.name")))[
            : COLUMN_LENGTH.get("project_name", 255)
        ]

        mr_values, mr_warnings = mr_fields(
            booking,
            row | mr_raw,
            booking_id=booking_id,
            project_name=row["project_name"],
            units=source.units,
            scheduled_protocol_codes=source.scheduled_protocol_codes,
            requested_procedure_codes=source.requested_procedure_codes,
            templates=mr_templates,
        )
        row_warnings += mr_warnings
        row |= {k: "" if v is None else v for k, v in mr_values.items()}

        skip = skip_reasons(row, start, booking, source, left_out)
        row["skip_reason"] = "; ".join(skip)
        for s in skip:
            exclude(s)
            row_warnings.append(f"booking {booking_id}: not published: {s}")
        warnings += row_warnings

        row["content_hash"] = content_hash(row)
        rows.append(row)

    for booking_id, reason in (skipped or {}).items():
        booking_id = str(booking_id)
        if booking_id in seen:
            continue
        exclude(EXCLUDED_NOT_FETCHED)
        warnings.append(f"booking {booking_id}: details not fetched: {reason}")
        left_out.append(why.Excluded(booking_id, why.NOT_FETCHED, reason[:120]))

    for path, count in not_modalities.items():
        warnings.append(
            f"field_mapping.{path} -> modality: {count} values are resource names or not "
            "DICOM modalities; they were mapped through config.resource_modality_mapping, else "
            f"config.default_modality {source.default_modality!r}"
        )
    frame = to_frame(rows)
    return TransformResult(
        frame=frame,
        excluded=excluded,
        warnings=warnings,
        present_ids=present_booking_ids(frame, skipped or {}),
        left_out=left_out,
    )
