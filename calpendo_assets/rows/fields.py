"""Mapped values -> column values: regex extraction, and each value cleaned for its VR (pure).

Warnings name the booking id, never the value: values hold participant names.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from calpendo_assets.core.source import FieldExtraction
from calpendo_assets.rows.model import COLUMN_LENGTH
from calpendo_assets.rows.names import as_text, clean, dicom_pn
from calpendo_assets.rows.scope import map_by_resource
from mwl_service.vr import (
    MAX_LENGTH,
    ROW_FIELD_VRS,
    UID_PAIR_FIELDS,
    canonical_uid_pairs,
    vr_problem,
)

PN_FIELDS = frozenset(f for f, vr in ROW_FIELD_VRS.items() if vr == "PN")
# Identifier-like fields: never truncated (a cut-off ID names the wrong person).
ID_FIELDS = frozenset({"patient_id", "other_patient_ids", "admission_id", "requested_procedure_id"})
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")  # a CS defined term: MR, CT, EEG, OT...


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


def _special(field_name: str, value: str, vr: str | None) -> tuple[str, str | None] | None:
    """Fields with rules of their own: (value, problem), or None for the general rule."""
    if field_name == "patient_birth_date":
        digits = re.sub(r"[-/.]", "", value)
        if vr_problem("DA", digits):
            return "", "patient_birth_date is not a valid date"
        return digits, None
    if field_name == "patient_sex":
        sex = value[:1].upper()
        return (sex, None) if sex in ("M", "F", "O") else ("", "patient_sex is not M, F or O")
    if field_name == "scheduled_station_ae_title":
        problem = vr_problem(vr, value)
        if problem:
            return "", f"mapped {field_name} {problem}; using the resource mapping"
        return value, None
    return None


# Projects, operators and resources repeat across thousands of bookings: one
# normalisation per distinct value (the problem text names no booking, so it is shared).
@functools.lru_cache(maxsize=50_000)
def normalised(field_name: str, raw: str) -> tuple[str, str | None]:
    """A mapped value cleaned for its column's VR, and why it is unusable (value "")."""
    if field_name in PN_FIELDS:
        return dicom_pn(raw), None
    if field_name in UID_PAIR_FIELDS:
        # Identifiers: never cut or half-kept; the backslashes are the item separators.
        value, problem = canonical_uid_pairs(raw)
        return value, (f"{field_name} {problem}; left empty" if problem else None)
    value = clean(raw)
    if not value:
        return "", None
    vr = ROW_FIELD_VRS.get(field_name)
    special = _special(field_name, value, vr)
    if special is not None:
        return special
    limit = MAX_LENGTH.get(vr or "", None) or COLUMN_LENGTH.get(field_name)
    if limit and len(value) > limit:
        if field_name == "patient_id":
            return value, None  # reported as a skip reason by the mapping step
        if field_name in ID_FIELDS:
            return "", f"{field_name} longer than {limit} characters; left empty"
        value = value[:limit].rstrip()
    return value, None


def normalise_field(field_name: str, raw: str, booking_id: str, warnings: list[str]) -> str:
    """`normalised`, its problem (if any) added to `warnings` naming the booking."""
    value, problem = normalised(field_name, raw)
    if problem:
        warnings.append(f"booking {booking_id}: {problem}")
    return value


def mapped_modality(
    text: str, modality_mapping: Mapping[str, str], default: str
) -> tuple[str, bool]:
    """A mapped modality, and whether it was no modality term. Pylantir configs map a
    resource name ("3T Diagnostic") to modality: a value that names a resource of the
    modality mapping, or is no modality term at all, goes through that mapping (else
    `default`)."""
    name = clean(text)
    if not name:
        return "", False
    mapped = map_by_resource(name, modality_mapping, None)
    if mapped is None and _MODALITY.fullmatch(name.upper()):
        return name.upper(), False
    return mapped or default, True
