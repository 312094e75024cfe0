"""The MR-console fields of a worklist row: mapped raw values -> valid DICOM values (pure).

`mr_fields` is the one call the mapping step makes per booking. It turns the raw
values that ``field_mapping`` (and ``_templates``) produced for the fields an MR
console needs before it scans into values valid for their VRs, picks the protocol and
procedure codes for the booking's project, and says what it could not use:

======================================  ============  ==============================
field                                   DICOM VR      accepted
======================================  ============  ==============================
patient_weight (0010,1030)              DS, kg        number, optional unit
patient_size (0010,1020)                DS, m         number, optional unit, 5'9"
pregnancy_status (0010,21C0)            US 1-4        1-4, 0001-0004, words
medical_alerts, allergies               LO (64)       any text; cut with a warning
patient_comments,                       LT (10240)    any text, line breaks kept
scheduled_procedure_step_comments
requesting_physician (0032,1032)        PN            a person's name
requested_procedure_priority            SH            STAT HIGH ROUTINE MEDIUM LOW
======================================  ============  ==============================

A value that cannot be used is left empty with a warning naming the booking: never
guessed, never defaulted (the upstream Pylantir served 100 lb for "unknown"). An
absent or blank value is simply empty, without a warning. Warnings never repeat a
free-text value: bookings hold participant names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydicom.valuerep import MAX_VALUE_LEN

from calpendo_assets.rows.codes import CODE_COLUMNS, code_columns
from calpendo_assets.rows.templates import render_templates, template_paths
from calpendo_assets.rows.model import SYNC_COLUMNS
from calpendo_assets.rows.names import as_text, clean, dicom_pn
from mwl_service.schema import MAPPABLE_FIELDS, MR_FIELDS
from mwl_service.vr import MAX_LENGTH

LO_FIELDS = ("medical_alerts", "allergies")
LT_FIELDS = ("patient_comments", "scheduled_procedure_step_comments")
# Any mappable field may be built by a template (e.g. weight "{weight} {weightUnit}");
# mr_fields renders those of the MR fields, the mapping step the others.
TEMPLATE_FIELDS = MAPPABLE_FIELDS
# Placeholders with these names read the row; any other name is a record path.
WORKLIST_FIELD_NAMES = frozenset(SYNC_COLUMNS) | frozenset(MR_FIELDS) | frozenset(CODE_COLUMNS)

# ---------------------------------------------------------------- weight and size


@dataclass(frozen=True)
class Quantity:
    """How one measured field is read, converted, checked and rounded."""

    field: str
    si: str  # the unit DICOM serves it in
    units: Mapping[str, Decimal]  # the units a source may configure -> factor to `si`
    spellings: Mapping[str, str]  # a unit written in a value (casefolded) -> unit
    factors: Mapping[str, Decimal]  # every unit a value may carry -> factor to `si`
    plausible: tuple[Decimal, Decimal]  # inclusive, in `si`
    step: Decimal  # rounding, in `si`
    kind: str  # "a weight", "a length": to explain a unit of the wrong kind


def _spellings(**units: tuple[str, ...]) -> dict[str, str]:
    return {spelling: unit for unit, spellings in units.items() for spelling in spellings}


# Factors are exact (the international yard and pound, 1959). Plausible ranges are
# wide enough for neonates and the heaviest and tallest people recorded, and narrow
# enough to catch a wrong unit (175 read as metres, 1.75 as centimetres, 0 for "not
# weighed"). Weight to 0.1 kg: a scale's resolution and all SAR limits need; more
# digits from a pound conversion (165 lb = 74.84274105 kg) would be false precision.
# Size to 0.01 m, a stadiometer's centimetre: 69 in gives 1.75, not 1.7526.
_KG = {"kg": Decimal(1), "lb": Decimal("0.45359237")}
WEIGHT = Quantity(
    field="patient_weight",
    si="kg",
    units=_KG,
    spellings=_spellings(
        kg=("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"),
        lb=("lb", "lbs", "pound", "pounds"),
    ),
    factors=_KG,
    plausible=(Decimal("0.2"), Decimal(650)),
    step=Decimal("0.1"),
    kind="a weight",
)
_M = {"m": Decimal(1), "cm": Decimal("0.01"), "in": Decimal("0.0254")}
SIZE = Quantity(
    field="patient_size",
    si="m",
    units=_M,
    spellings=_spellings(
        m=("m", "meter", "meters", "metre", "metres"),
        cm=("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
        mm=("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
        **{"in": ("in", "inch", "inches", '"', "''")},
    ),
    factors={**_M, "mm": Decimal("0.001")},  # understood in a value, not a config unit
    plausible=(Decimal("0.2"), Decimal("2.8")),
    step=Decimal("0.01"),
    kind="a length",
)
QUANTITIES = {WEIGHT.field: WEIGHT, SIZE.field: SIZE}
DEFAULT_UNITS = {WEIGHT.field: "kg", SIZE.field: "m"}

# A number with "." or one "," as the decimal mark ("72,5"), then an optional unit.
_NUMBER_UNIT = re.compile(r"([+-]?(?:\d+(?:[.,]\d+)?|[.,]\d+))\s*([^\d\s].*?)?")
_FEET_INCHES = re.compile(
    r"(\d+)\s*(?:'|’|ft|foot|feet)\s*(?:(\d+(?:[.,]\d+)?)\s*(?:\"|”|''|in|inch|inches)?)?",
    re.IGNORECASE,
)


def _decimal(text: str) -> Decimal:
    return Decimal(text.replace(",", "."))


def _amount(raw: Any, q: Quantity) -> tuple[Decimal, str | None] | str:
    """(amount, the unit written in the value or None), or why the value is not one."""
    if isinstance(raw, bool):
        return "is not a number"
    if isinstance(raw, (int, float, Decimal)):
        amount = Decimal(str(raw))
        return (amount, None) if amount.is_finite() else "is not a finite number"
    text = clean(as_text(raw))
    feet = _FEET_INCHES.fullmatch(text) if q is SIZE else None
    if feet:
        return Decimal(12) * int(feet.group(1)) + _decimal(feet.group(2) or "0"), "in"
    m = _NUMBER_UNIT.fullmatch(text)
    if not m:
        return "is not a number with an optional unit"
    if m.group(2) is None:
        return _decimal(m.group(1)), None
    written = m.group(2).casefold()
    if written in q.spellings:
        return _decimal(m.group(1)), q.spellings[written]
    other = SIZE if q is WEIGHT else WEIGHT
    if written in other.spellings:
        return f"has {other.kind} unit"
    return f"has an unknown unit (known: {', '.join(sorted(set(q.spellings.values())))})"


def measure(raw: Any, q: Quantity, unit: str, *, booking_id: str, warnings: list[str]) -> str:
    """`raw` as DS text in `q.si`, rounded half-up to `q.step` ("74.8"); "" when empty.

    `unit` is the source's unit for values without one; a unit written in the value
    wins (it is the more specific statement). Unusable values: "" and a warning.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ""
    parsed = _amount(raw, q)
    if isinstance(parsed, str):
        warnings.append(f"booking {booking_id}: {q.field} {parsed}; left empty")
        return ""
    amount, written = parsed
    value = amount * q.factors[written or unit]
    low, high = q.plausible
    if not low <= value <= high:
        why = f"unit written: {written}" if written else f"no unit; units.{q.field} is {unit!r}"
        warnings.append(
            f"booking {booking_id}: {q.field} {float(value):.4g} {q.si} is outside "
            f"{low}-{high} {q.si} ({why}); left empty"
        )
        return ""
    # Shortest DS text ("75", "1.8"); at most 5 characters within the plausible range.
    return format(value.quantize(q.step, rounding=ROUND_HALF_UP).normalize(), "f")


def configured_unit(units: Any, q: Quantity) -> str:
    """The source's unit for `q` (``units.patient_weight`` ...), default kg / m."""
    unit = units.get(q.field) if isinstance(units, Mapping) else getattr(units, q.field, None)
    unit = unit or DEFAULT_UNITS[q.field]
    if unit not in q.units:
        # A config error, not a booking's: the config must refuse it at load time.
        raise ValueError(f"units.{q.field} must be one of {', '.join(q.units)}, got {unit!r}")
    return unit


# ---------------------------------------------------------------- coded values

# PS3.3 C.2.4, Pregnancy Status (0010,21C0): enumerated values 0001-0004.
NOT_PREGNANT, POSSIBLY_PREGNANT, DEFINITELY_PREGNANT, PREGNANCY_UNKNOWN = 1, 2, 3, 4
_PREGNANCY_WORDS = {
    "no": NOT_PREGNANT,
    "not pregnant": NOT_PREGNANT,
    "possibly": POSSIBLY_PREGNANT,
    "possibly pregnant": POSSIBLY_PREGNANT,
    "yes": DEFINITELY_PREGNANT,
    "definitely pregnant": DEFINITELY_PREGNANT,
    "unknown": PREGNANCY_UNKNOWN,
}
# PS3.3 C.4.11, Requested Procedure Priority (0040,1003): defined terms. Its VR is SH
# (PS3.6), not CS; these terms are valid as either.
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")


def pregnancy_status(raw: Any, *, booking_id: str, warnings: list[str]) -> int | None:
    """1 not pregnant, 2 possibly, 3 definitely pregnant, 4 unknown; None when empty.

    Accepts those numbers (int, integral float, "3", "0003"), the words no / possibly
    / yes / unknown and PS3.3's own "not pregnant" / "possibly pregnant" /
    "definitely pregnant", in any case. Anything else: None with a warning.
    """
    if isinstance(raw, bool):
        number = None
    elif isinstance(raw, int):
        number = raw
    elif isinstance(raw, float) and raw.is_integer():
        number = int(raw)
    else:
        text = " ".join(clean(as_text(raw)).casefold().split())
        if not text:
            return None
        number = int(text) if text.isascii() and text.isdigit() else _PREGNANCY_WORDS.get(text)
    if number not in (1, 2, 3, 4):
        warnings.append(
            f"booking {booking_id}: pregnancy_status is not 1-4 or "
            "no/possibly/yes/unknown; left empty"
        )
        return None
    return number


def requested_procedure_priority(raw: Any, *, booking_id: str, warnings: list[str]) -> str:
    """One of `PRIORITIES`, matched case-insensitively; else "" with a warning."""
    text = clean(as_text(raw)).upper()
    if not text:
        return ""
    if text not in PRIORITIES:
        warnings.append(
            f"booking {booking_id}: requested_procedure_priority is not one of "
            f"{', '.join(PRIORITIES)}; left empty"
        )
        return ""
    return text


# ---------------------------------------------------------------- text and names

_LT_BAD = re.compile(r"[\x00-\x09\x0b\x0e-\x1f\x7f]")  # LT keeps LF, FF and CR


def long_string(field: str, raw: Any, *, booking_id: str, warnings: list[str]) -> str:
    """LO text: one line, no backslash; cut to 64 characters with a warning."""
    text = clean(as_text(raw))
    limit = MAX_LENGTH["LO"]
    if len(text) > limit:
        warnings.append(f"booking {booking_id}: {field} longer than {limit} characters; cut")
        text = text[:limit].rstrip()
    return text


def long_text(field: str, raw: Any, *, booking_id: str, warnings: list[str]) -> str:
    """LT text: line breaks and backslashes kept (LT is single-valued); other control
    characters become spaces; cut to 10240 characters with a warning."""
    text = as_text(raw).replace("\r\n", "\n").replace("\r", "\n")
    # Line breaks as CR LF; trailing spaces are insignificant in LT (PS3.5 6.2).
    text = "\r\n".join(_LT_BAD.sub(" ", line).rstrip() for line in text.split("\n")).strip()
    limit = MAX_VALUE_LEN["LT"]
    if len(text) > limit:
        warnings.append(f"booking {booking_id}: {field} longer than {limit} characters; cut")
        text = text[:limit].rstrip()
    return text


# ---------------------------------------------------------------- the entry point


def _normalise(
    field: str, raw: Any, units: Any, booking_id: str, warnings: list[str]
) -> Any:
    q = QUANTITIES.get(field)
    if q is not None:
        return measure(raw, q, configured_unit(units, q), booking_id=booking_id, warnings=warnings)
    if (raw is None or (isinstance(raw, str) and not raw)) and field in _BLANK:
        return _BLANK[field]  # most fields of most bookings: not mapped
    return _read(field, raw, booking_id, warnings)


def _read(field: str, raw: Any, booking_id: str, warnings: list[str]) -> Any:
    if field == "pregnancy_status":
        return pregnancy_status(raw, booking_id=booking_id, warnings=warnings)
    if field == "requested_procedure_priority":
        return requested_procedure_priority(raw, booking_id=booking_id, warnings=warnings)
    if field == "requesting_physician":
        # As every other name of the row ("Jane Doe" -> "Doe^Jane"); always valid PN.
        return dicom_pn(raw)
    if field in LT_FIELDS:
        return long_text(field, raw, booking_id=booking_id, warnings=warnings)
    if field in LO_FIELDS:
        return long_string(field, raw, booking_id=booking_id, warnings=warnings)
    raise ValueError(f"{field!r} is not one of the MR fields ({', '.join(MR_FIELDS)})")


# What `_read` makes of a blank value (None or ""; each reader starts with as_text,
# which makes None ""): always empty, never a warning. Worked out once, by `_read`.
_BLANK = {field: _read(field, None, "", []) for field in MR_FIELDS if field not in QUANTITIES}


def mr_fields(
    booking: Mapping,
    mapped: Mapping[str, Any],
    *,
    booking_id: str,
    project_name: str,
    units: Any = None,
    scheduled_protocol_codes: Mapping[str, Any] | None = None,
    requested_procedure_codes: Mapping[str, Any] | None = None,
    templates: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The final values of `MR_FIELDS` and `CODE_COLUMNS` for one booking, plus warnings.

    `mapped` is the row so far: the raw values ``field_mapping`` gave the MR fields
    (numbers or text, absent when not mapped) and the finished values of the other
    worklist fields, which templates may name. `units` has ``patient_weight`` and
    ``patient_size`` (None or missing: kg and m). Codes map a project name to an
    object (or dict) with ``code_value``, ``coding_scheme_designator`` and
    ``code_meaning``. A field with a template is built from it (its mapped value, if
    any, is ignored) after the others, so a template may name them, and the
    `variables` (values ``_extract`` gave names that are no worklist field).

    Values: DS text for weight and size, int or None for pregnancy_status, text for
    the rest; "" (None) when empty.
    """
    warnings: list[str] = []
    templates = templates or {}
    values: dict[str, Any] = {
        field: _normalise(field, mapped.get(field), units, booking_id, warnings)
        for field in MR_FIELDS
        if field not in templates
    }
    codes, code_warnings = code_columns(
        project_name,
        scheduled_protocol_codes=scheduled_protocol_codes,
        requested_procedure_codes=requested_procedure_codes,
        booking_id=booking_id,
    )
    values |= codes
    warnings += code_warnings
    if templates:
        # A templated field's mapped value is ignored, so no template may read it.
        row = {name: mapped.get(name, "") for name in WORKLIST_FIELD_NAMES if name not in templates}
        row |= dict.fromkeys(templates, "") | values | dict(variables or {})
        rendered, template_warnings = render_templates(
            templates, booking, row, booking_id=booking_id
        )
        warnings += template_warnings
        for field, text in rendered.items():
            values[field] = _normalise(field, text, units, booking_id, warnings)
    return values, warnings


def template_record_paths(templates: Mapping[str, str] | None) -> list[str]:
    """The record paths `templates` read (placeholders that are not worklist fields), so
    that a fetch asks for them, whatever the source type."""
    return template_paths(templates or {}, WORKLIST_FIELD_NAMES)
