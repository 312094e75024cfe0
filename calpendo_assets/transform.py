"""Calpendo bookings -> worklist rows (pure: no HTTP, no database, no Dagster).

`bookings_to_rows` applies a data source's scope (resources, status filter), field
mapping and regex extraction, the time-zone conversion (site-local wall time -> UTC
instant, then back to local DICOM DA/TM), status, modality and AE-title mapping, the
deterministic identifiers of `mwl_service.schema`, and a content hash.

Rows that cannot be published (no patient ID, no start time) stay in the frame with
a non-empty ``skip_reason``: the booking still exists, so reconciliation must not
cancel its row, but it is never written either.

Warnings name the booking id, never the title text: titles hold participant names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from calpendo_assets.calpendo_api import get_path
from calpendo_assets.config import DataSource, FieldExtraction, is_number
from mwl_service.schema import (
    DISCONTINUED,
    SCHEDULED,
    WorklistItem,
    accession_number,
    step_id,
    study_instance_uid,
)
from mwl_service.vr import MAX_LENGTH, PN_GROUP_MAX, ROW_FIELD_VRS, vr_problem

log = logging.getLogger(__name__)

# Columns the database manages itself; the sync never supplies them from a booking.
DB_MANAGED_COLUMNS = ("id", "step_status_owner", "discontinued_at", "created_at", "updated_at")
# Every WorklistItem column the sync writes, in table order (taken from the schema,
# never redefined here).
SYNC_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in WorklistItem.__table__.columns if c.name not in DB_MANAGED_COLUMNS
)
ROW_COLUMNS: tuple[str, ...] = SYNC_COLUMNS + ("skip_reason",)
# What the content hash covers: all content, not the hash itself nor bookkeeping.
HASH_COLUMNS: tuple[str, ...] = tuple(c for c in SYNC_COLUMNS if c != "content_hash")
_COLUMN_LENGTH = {
    c.name: c.type.length for c in WorklistItem.__table__.columns if getattr(c.type, "length", None)
}

PN_FIELDS = frozenset(f for f, vr in ROW_FIELD_VRS.items() if vr == "PN")
# Identifier-like fields: never truncated (a cut-off ID names the wrong person).
ID_FIELDS = frozenset({"patient_id", "other_patient_ids", "admission_id", "requested_procedure_id"})

CANCELLED_STATUSES = frozenset({"CANCELLED", "CANCELED"})
DENIED_STATUSES = frozenset({"DENIED"})

EXCLUDED_RESOURCE = "resource not configured"
EXCLUDED_STATUS = "status not in filter"
EXCLUDED_NO_ID = "no booking id"
EXCLUDED_NOT_FETCHED = "details not fetched"
SKIP_NO_START = "no start time"
SKIP_NO_PATIENT_ID = "no patient ID"
SKIP_BAD_PATIENT_ID = "patient ID not valid for DICOM"

VANISHED_REASON = "no longer in Calpendo: deleted, moved out of the window, or status changed"


# ---------------------------------------------------------------- time


def _localize(
    naive: dt.datetime, tz: ZoneInfo, what: str = "", notes: list[str] | None = None
) -> dt.datetime:
    """Site-local wall time -> aware datetime, DST-safe.

    Nonexistent (spring-forward gap): fold=0 reads it with the offset before the
    change, i.e. it is shifted forward by the gap (02:30 -> 03:30 MDT).
    Ambiguous (fall-back overlap): fold=0 is the first occurrence (daylight time).
    The warning goes to `notes` when given (a sync's warnings, shown in the run
    log), else to this module's logger.
    """
    aware = naive.replace(tzinfo=tz, fold=0)
    if aware.utcoffset() == naive.replace(tzinfo=tz, fold=1).utcoffset():
        return aware  # the common case: neither in a gap nor in an overlap
    normal = aware.astimezone(dt.UTC).astimezone(tz)
    stamp, used = naive.isoformat(sep=" "), normal.isoformat(sep=" ")
    if normal.replace(tzinfo=None) != naive:
        message = f"{what}{stamp} does not exist in {tz.key} (DST gap); using {used}"
    else:
        message = (
            f"{what}{stamp} is ambiguous in {tz.key} (DST overlap); "
            f"using the first occurrence {used}"
        )
    if notes is None:
        log.warning(message)
    else:
        notes.append(message)
    return normal


def parse_calpendo_datetime(
    value: Any, tz: ZoneInfo, *, what: str = "", notes: list[str] | None = None
) -> dt.datetime:
    """A Calpendo date-time as an aware datetime in `tz`.

    Accepts ``"2025-02-12 10:00:00.0"``, ISO 8601 with or without an offset
    (``"2025-02-12T10:00:00"``, ``"...Z"``, ``"...-07:00"``), Calpendo literals
    (``"20140526T1200"``), epoch milliseconds (int, or a string of digits) and
    datetime objects. Naive values are site-local wall time (DST gap/overlap handled,
    with a warning into `notes`, or logged; `what` prefixes it). Raises ValueError for
    anything else.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, bool) or value is None:
        raise ValueError(f"not a date-time: {value!r}")
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"not a date-time: {value!r}")
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).astimezone(tz)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d{10,}", text):
            return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC).astimezone(tz)
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a date-time: {value!r}") from None
    else:
        raise ValueError(f"not a date-time: {value!r}")
    if parsed.tzinfo is None:
        return _localize(parsed, tz, what, notes)
    return parsed.astimezone(tz)


_FORMATTED_RANGE = re.compile(r"^\s*\[\s*([^,\]]+?)\s*,\s*([^\]]*?)\s*\]\s*$")


def _range_part(booking: Mapping, index: int) -> Any:
    name = get_path(booking, "formattedName")
    if isinstance(name, str):
        m = _FORMATTED_RANGE.match(name)
        if m and m.group(index + 1):
            return m.group(index + 1)
    return None


def _booking_instant(
    booking: Mapping, tz: ZoneInfo, key: str, index: int, notes: list[str] | None = None
) -> dt.datetime | None:
    what = f"booking {booking.get('id')}: {key} "
    for value in (get_path(booking, f"dateRange.{key}"), _range_part(booking, index)):
        if value is None or value == "":
            continue
        try:
            return parse_calpendo_datetime(value, tz, what=what, notes=notes)
        except (ValueError, OverflowError, OSError):
            continue
    return None


def booking_start(
    booking: Mapping, tz: ZoneInfo, notes: list[str] | None = None
) -> dt.datetime | None:
    """``dateRange.start``, else the first part of ``formattedName`` "[start, finish]"."""
    return _booking_instant(booking, tz, "start", 0, notes)


def booking_finish(booking: Mapping, tz: ZoneInfo) -> dt.datetime | None:
    return _booking_instant(booking, tz, "finish", 1)


# ---------------------------------------------------------------- mapping helpers


def match_resource(resource_name: str | None, resources: Iterable[str]) -> bool:
    """No configured resources = every resource; else case-insensitive prefix match."""
    resources = tuple(resources)
    if not resources:
        return True
    name = (resource_name or "").strip().casefold()
    return any(name.startswith(r.strip().casefold()) for r in resources)


def map_by_resource(resource_name: str | None, mapping: Mapping[str, Any], default: Any) -> Any:
    """Exact (case-insensitive) match first, then the longest matching prefix, else default."""
    name = (resource_name or "").strip().casefold()
    if not mapping:
        return default
    best_len, best = -1, default
    for key, value in mapping.items():
        folded = key.strip().casefold()
        if folded == name:
            return value
        if name.startswith(folded) and len(folded) > best_len:
            best_len, best = len(folded), value
    return best


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
    if status in {s.strip().upper() for s in status_filter}:
        return SCHEDULED, ""
    return None, f"status {status or '(empty)'} not in filter"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1", "y"}
    return bool(value)


# ---------------------------------------------------------------- text and names


_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]+")
_SPACES = re.compile(r"\s+")


def _clean(text: str) -> str:
    """No control characters or backslashes (DICOM separator); single spaces; stripped."""
    return _SPACES.sub(" ", _BAD_CHARS.sub(" ", text)).strip()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("name", "formattedName", "title", "id"):
            if value.get(key) not in (None, ""):
                return _as_text(value[key])
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_as_text(v) for v in value) if t)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _cap_pn_group(group: str) -> str:
    parts = group.split("^")[:5]
    while parts and parts[-1] == "":
        parts.pop()
    out = "^".join(p.strip() for p in parts)
    if len(out) > PN_GROUP_MAX:
        out = out[:PN_GROUP_MAX].rstrip("^ ")
    return out


def dicom_pn(name: Any) -> str:
    """A person's name as DICOM PN: "Jane Doe" -> "Doe^Jane", "Doe, Jane" -> "Doe^Jane".

    Already-DICOM names ("Doe^John") are kept; three or more words give
    family^given^middle ("Jane Mary Doe" -> "Doe^Jane^Mary"); underscores count as
    spaces; Unicode is kept; each component group is capped at 64 characters and 5
    components; backslashes and control characters are removed.
    """
    text = _clean(_as_text(name))
    if not text:
        return ""
    if "^" in text or "=" in text:
        groups = text.split("=")[:3]
        return "=".join(_cap_pn_group(g) for g in groups).rstrip("=")
    text = _SPACES.sub(" ", text.replace("_", " ")).strip()
    if "," in text:
        family, _, given = text.partition(",")
        parts = [family.strip(), " ".join(given.replace(",", " ").split())]
        return _cap_pn_group("^".join(parts))
    words = text.split(" ")
    if len(words) == 1:
        return _cap_pn_group(words[0])
    if len(words) == 2:
        return _cap_pn_group(f"{words[1]}^{words[0]}")
    return _cap_pn_group(f"{words[-1]}^{words[0]}^{' '.join(words[1:-1])}")


def extract_fields(
    text: Any, extractions: Iterable[FieldExtraction], booking_id: Any
) -> tuple[dict[str, str], list[str]]:
    """Apply each extraction's regex to `text`: {field: value}, warnings.

    A pattern that does not match (or whose group did not take part) leaves that
    field empty with a warning naming the booking: the whole text is never used as
    a fallback.
    """
    source = _as_text(text)
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


# ---------------------------------------------------------------- hashing


def canonical_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value is pd.NaT:
            return None
        if value.tzinfo is None:
            raise ValueError("content_hash needs aware datetimes")
        if value.tzinfo is not dt.UTC:
            value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return value
    if pd.isna(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return canonical_value(value.item())
    return str(value)


def content_hash(row: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the row's content columns.

    The JSON is the array of the `HASH_COLUMNS` values in schema order (every
    WorklistItem column the sync writes except the hash itself; not the timestamps
    the database manages, nor ``skip_reason``). Datetimes are hashed as UTC ISO
    text, NaN/NaT/NA as null, numpy scalars as Python numbers. Stable across runs
    and processes (no use of Python's randomised ``hash``).
    """
    get = row.get
    values = [get(c) for c in HASH_COLUMNS]
    for i, value in enumerate(values):
        if value.__class__ is not str and value is not None:
            values[i] = canonical_value(value)
    text = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- rows


@dataclass
class TransformResult:
    frame: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count
    warnings: list[str] = field(default_factory=list)
    present_ids: set[str] = field(default_factory=set)  # in scope, incl. unpublishable

    @property
    def publishable(self) -> int:
        return int((self.frame["skip_reason"] == "").sum()) if len(self.frame) else 0


def empty_frame() -> pd.DataFrame:
    return _to_frame([])


def _to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=list(ROW_COLUMNS))
    frame["scheduled_start_utc"] = pd.to_datetime(frame["scheduled_start_utc"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame["duration_minutes"] = frame["duration_minutes"].astype("Int64")
    for col in ROW_COLUMNS:
        if col not in ("scheduled_start_utc", "duration_minutes"):
            frame[col] = frame[col].astype("str")
    return frame


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as plain Python dicts (aware datetimes, None for missing)."""
    if frame is None or len(frame) == 0:
        return []
    columns = {}
    for name in frame.columns:
        series = frame[name]
        if name == "scheduled_start_utc":
            values = [
                None if pd.isna(v) else (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
                for v in series.tolist()
            ]
        elif name == "duration_minutes":
            values = [None if pd.isna(v) else int(v) for v in series.tolist()]
        else:
            values = [
                "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                for v in series.tolist()
            ]
        columns[name] = values
    keys = list(columns)
    return [dict(zip(keys, row)) for row in zip(*columns.values())]


def _duration(booking: Mapping, start: dt.datetime | None, tz: ZoneInfo) -> int | None:
    value = get_path(booking, "durationInMinutes")
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
    value = _clean(raw)
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
    if field_name in ("modality", "scheduled_station_ae_title"):
        value = value.upper() if field_name == "modality" else value
        problem = vr_problem(vr, value)
        if problem:
            warnings.append(
                f"booking {booking_id}: mapped {field_name} {problem}; using the resource mapping"
            )
            return ""
        return value
    limit = MAX_LENGTH.get(vr or "", None) or _COLUMN_LENGTH.get(field_name)
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


def bookings_to_rows(
    bookings: Iterable[Mapping],
    source: DataSource,
    skipped: Mapping[str, str] | None = None,
) -> TransformResult:
    """Normalised Calpendo bookings -> one worklist row per booking in scope.

    `skipped` are bookings the fetch saw but could not read (id -> reason, e.g. a
    404 on the detail request): they count as present (not cancelled) and are
    reported, but produce no row.
    """
    tz = source.tz
    status_filter = {s.upper() for s in source.status_filter}
    excluded: dict[str, int] = {}
    warnings: list[str] = []
    rows: list[dict] = []
    seen: set[str] = set()
    resource_cache: dict[str, tuple[bool, str, str]] = {}

    def exclude(reason: str) -> None:
        excluded[reason] = excluded.get(reason, 0) + 1

    for booking in bookings:
        raw_id = get_path(booking, "id")
        if raw_id is None or str(raw_id).strip() == "":
            exclude(EXCLUDED_NO_ID)
            warnings.append("a booking without an id was ignored")
            continue
        booking_id = str(raw_id).strip()
        if booking_id in seen:
            warnings.append(
                f"booking {booking_id}: returned twice by Calpendo; the first copy is used"
            )
            continue
        seen.add(booking_id)

        resource_name = _clean(_as_text(get_path(booking, "resource.name")))
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
            continue

        booking_status = _clean(_as_text(get_path(booking, "status"))).upper()
        step_status, reason = map_step_status(
            booking_status, _truthy(get_path(booking, "cancelled")), status_filter
        )
        if step_status is None:
            exclude(EXCLUDED_STATUS)
            continue
        if step_status == DISCONTINUED:
            why = _clean(_as_text(get_path(booking, "cancellationReason")))
            if why:
                reason = f"{reason}: {why}"

        row = dict.fromkeys(ROW_COLUMNS, "")
        row["source"] = source.name
        row["booking_id"] = booking_id
        row_warnings: list[str] = []

        for path, target in source.direct_mappings:
            row[target] = _normalise_field(
                target, _as_text(get_path(booking, path)), booking_id, row_warnings
            )
        for path, items in source.extractions:
            values, extract_warnings = extract_fields(get_path(booking, path), items, booking_id)
            row_warnings += extract_warnings
            for target, value in values.items():
                row[target] = _normalise_field(target, value, booking_id, row_warnings)

        if not row["patient_name"] and row["patient_id"]:
            # Patient's Name is type 1 in the worklist; research sites commonly use the
            # participant ID as the name when the booking carries none. Kept verbatim as
            # one family-name component: an ID is not "Given Family" ("EDM_SUB001").
            row["patient_name"] = _cap_pn_group(re.sub(r"[\^=]", " ", row["patient_id"]))
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
        if start is None:
            row["scheduled_start_utc"] = None
            row["scheduled_start_date"] = row["scheduled_start_time"] = ""
        else:
            local = start.astimezone(tz)
            row["scheduled_start_utc"] = start.astimezone(dt.UTC)
            row["scheduled_start_date"] = f"{local.year:04d}{local.month:02d}{local.day:02d}"
            row["scheduled_start_time"] = f"{local.hour:02d}{local.minute:02d}{local.second:02d}"
        row["site_timezone"] = source.timezone
        row["duration_minutes"] = _duration(booking, start, tz)
        row["step_status"] = step_status
        row["discontinued_reason"] = reason[: _COLUMN_LENGTH.get("discontinued_reason", 255)]
        row["booking_status"] = booking_status[: _COLUMN_LENGTH.get("booking_status", 32)]
        row["resource_name"] = resource_name[: _COLUMN_LENGTH.get("resource_name", 128)]
        row["project_name"] = _clean(_as_text(get_path(booking, "project.name")))[
            : _COLUMN_LENGTH.get("project_name", 255)
        ]

        skip = []
        if start is None:
            skip.append(SKIP_NO_START)
        if not row["patient_id"]:
            skip.append(SKIP_NO_PATIENT_ID)
        elif vr_problem("LO", row["patient_id"]):
            skip.append(SKIP_BAD_PATIENT_ID)
        row["skip_reason"] = "; ".join(skip)
        for s in skip:
            exclude(s)
            row_warnings.append(f"booking {booking_id}: not published: {s}")
        warnings += row_warnings

        row["content_hash"] = content_hash(row)
        rows.append(row)

    for booking_id, why in (skipped or {}).items():
        booking_id = str(booking_id)
        if booking_id in seen:
            continue
        exclude(EXCLUDED_NOT_FETCHED)
        warnings.append(f"booking {booking_id}: details not fetched: {why}")

    frame = _to_frame(rows)
    return TransformResult(
        frame=frame,
        excluded=excluded,
        warnings=warnings,
        present_ids=present_booking_ids(frame, skipped or {}),
    )


def present_booking_ids(frame: pd.DataFrame, skipped: Mapping[str, str]) -> set[str]:
    """Bookings that still exist in scope: every frame row (publishable or not) and
    those the fetch saw but could not read. Reconciliation never cancels these."""
    ids = set(frame["booking_id"].astype(str)) if len(frame) else set()
    return ids | {str(k) for k in skipped}
