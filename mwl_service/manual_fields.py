"""The fields of a manual worklist item, checked as the sync checks a booking's (pure).

A client sends JSON: the mappable worklist fields by their schema names, plus
``scheduled_start`` (ISO 8601; without an offset it is site-local wall time) and
``duration_minutes``. `check_fields` converts what has a friendlier spelling
("Doe, Jane" -> ``Doe^Jane``, ``1980-01-31`` -> ``19800131``, a number of kg -> DS
text) and applies the VR rules of :mod:`mwl_service.vr`; it returns the column values
and a problem per bad field, every bad field at once, so nothing half-valid is written.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from mwl_service.schema import MAPPABLE_FIELDS, MAX_STATION_AE_TITLES, WorklistItem
from mwl_service.vr import ROW_FIELD_VRS, canonical_uid_pairs, field_problem, vr_problem

TIME_FIELDS = ("scheduled_start", "duration_minutes")
FIELDS = (*MAPPABLE_FIELDS, *TIME_FIELDS)
REQUIRED = ("patient_id", "patient_name", "scheduled_start")
NUMBER_FIELDS = frozenset({"patient_weight", "patient_size"})
MAX_DURATION = 24 * 60
_LENGTH = {
    c.name: c.type.length for c in WorklistItem.__table__.columns
    if getattr(c.type, "length", None)
}
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def person_name(text: str) -> str:
    """DICOM PN as given (``Doe^Jane``), or "Family, Given" as ``Family^Given``."""
    text = " ".join(text.split())
    if "^" in text or "=" in text or "," not in text:
        return text
    family, _, given = text.partition(",")
    return f"{family.strip()}^{given.strip()}".rstrip("^")


def _number(value: Any) -> str:
    """A DS value from a JSON number or numeric text; ValueError if not positive."""
    number = float(value) if not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError("is not a positive number")
    return f"{number:.6g}"


def _text(field: str, value: Any) -> str:
    if field == "scheduled_station_ae_title" and isinstance(value, list):
        if len(value) > MAX_STATION_AE_TITLES or not all(isinstance(v, str) for v in value):
            raise ValueError(f"is not a list of at most {MAX_STATION_AE_TITLES} AE titles")
        return "\\".join(v.strip() for v in value)
    if field in NUMBER_FIELDS and isinstance(value, (int, float)):
        return _number(value)
    if field == "referenced_studies":
        return _uid_pairs(value)
    if field == "pregnancy_status" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("must be text")
    value = value.strip()
    if field in ("patient_name", "referring_physician_name", "requesting_physician",
                 "performing_physician_name"):
        return person_name(value)
    if field == "patient_birth_date" and _ISO_DATE.fullmatch(value):
        return value.replace("-", "")
    if field in ("patient_sex", "modality"):
        return value.upper()
    if field in NUMBER_FIELDS and value:
        return _number(value)
    return value


def _uid_pairs(value: Any) -> str:
    """Referenced studies as the sync accepts them (UIDs separated by backslashes,
    commas, semicolons or white space), or a JSON list of [class, instance] pairs."""
    if isinstance(value, list):
        if not all(isinstance(pair, list) and len(pair) == 2
                   and all(isinstance(uid, str) for uid in pair) for pair in value):
            raise ValueError("is not a list of [SOP Class UID, SOP Instance UID] pairs")
        value = "\\".join(uid for pair in value for uid in pair)
    if not isinstance(value, str):
        raise ValueError("must be text or a list of UID pairs")
    text, problem = canonical_uid_pairs(value)
    if problem:
        raise ValueError(problem)
    return text


def _field_value(field: str, value: Any) -> str:
    """The column value of one mappable field; ValueError naming the problem."""
    text = _text(field, value)
    problem = field_problem(field, text) if field in ROW_FIELD_VRS else None
    if problem is None and field == "patient_sex" and text not in ("", "M", "F", "O"):
        problem = "must be M, F or O"
    limit = _LENGTH.get(field)
    if problem is None and limit and len(text) > limit:
        problem = f"is {len(text)} characters long (max {limit})"
    if problem:
        raise ValueError(problem)
    return text


def parse_start(value: Any, tz: ZoneInfo) -> dt.datetime:
    """An ISO 8601 date-time as an aware instant; without an offset, site-local wall
    time (a time in a DST gap moves forward by the gap, as the sync does)."""
    if not isinstance(value, str):
        raise ValueError("must be ISO 8601 text, e.g. 2026-03-10T14:30")
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time, e.g. 2026-03-10T14:30") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz).astimezone(dt.UTC).astimezone(tz)
    return parsed


def start_columns(start: dt.datetime, tz: ZoneInfo) -> dict[str, Any]:
    """The start columns of a row: the UTC instant, the zone and its DA/TM wall clock."""
    local = start.astimezone(tz)
    return {
        "scheduled_start_utc": start.astimezone(dt.UTC),
        "site_timezone": tz.key,
        "scheduled_start_date": local.strftime("%Y%m%d"),
        "scheduled_start_time": local.strftime("%H%M%S"),
    }


def _duration(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DURATION:
        raise ValueError(f"must be a whole number of minutes from 1 to {MAX_DURATION}")
    return value


def check_fields(
    payload: Mapping[str, Any], tz: ZoneInfo, *, partial: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """(column values, {field: problem}) for a manual item's JSON object.

    ``partial`` (a change): only the given fields, none required; a required field
    may still not be emptied. Unknown fields are problems too.
    """
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field in payload:
        if field not in FIELDS:
            problems[field] = "is not a field of a manual item"
    for field in REQUIRED:
        given = payload.get(field)
        if (not partial or field in payload) and (given is None or given == ""):
            problems[field] = "is required"
    for field in FIELDS:
        if field not in payload or field in problems:
            continue
        value = payload[field]
        if bad_text := unicode_problem(value):
            problems[field] = bad_text
            continue
        try:
            if field == "scheduled_start":
                values.update(start_columns(parse_start(value, tz), tz))
            elif field == "duration_minutes":
                values[field] = _duration(value)
            else:
                values[field] = _field_value(field, "" if value is None else value)
        except (ValueError, TypeError) as exc:
            problems[field] = str(exc)
        except OverflowError:  # a start near year 1 or 9999 in UTC, a number of 400 digits
            problems[field] = "is out of range"
    return values, problems


def check_new_item(
    payload: Mapping[str, Any], tz: ZoneInfo
) -> tuple[dict[str, Any], dict[str, str]]:
    """`check_fields` for a new item, which also needs a station or a modality (one
    given but bad is named for what is wrong with it, not as missing)."""
    values, problems = check_fields(payload, tz)
    if not problems.keys() & {*REQUIRED, "scheduled_station_ae_title", "modality"}:
        problems |= station_or_modality(values)
    return values, problems


def unicode_problem(value: Any) -> str | None:
    """JSON may carry lone surrogates (``"\\ud800"``), which no database stores."""
    if isinstance(value, list):
        return next((p for v in value if (p := unicode_problem(v))), None)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (a lone surrogate)"
    return None


def reason_problem(reason: str) -> str | None:
    """A cancellation reason: valid text without control characters (as LT)."""
    return unicode_problem(reason) or (vr_problem("LT", reason) if reason else None)


def station_or_modality(values: Mapping[str, Any]) -> dict[str, str]:
    """The problem when an item has neither a station AE title nor a modality."""
    if values.get("scheduled_station_ae_title") or values.get("modality"):
        return {}
    problem = "is required when the other is missing (scheduled_station_ae_title or modality)"
    return {"scheduled_station_ae_title": problem, "modality": problem}
