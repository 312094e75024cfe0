"""What a ``field_mapping`` target may name, and what each name means here.

A target is one of our worklist fields (``mwl_service.schema.MAPPABLE_FIELDS``), a
field the sync derives itself (`DERIVED_FIELDS`: Pylantir configs map them; each is
accepted with its meaning said once, never copied blindly) or one of Pylantir's own
worklist columns that names one of ours differently (`PYLANTIR_COLUMNS`). Anything
else is an error, unless the source type's rules accept other targets (a Pylantir
REDCap source names REDCap fields Pylantir ignored) or it is an extracted value that
only templates read (a variable).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import WithJsonSchema

from mwl_service.schema import MAPPABLE_FIELDS

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"

DERIVED_FIELDS: dict[str, str] = {
    "scheduled_start_date": "the booking's start (dateRange.start, else formattedName), "
    "converted DST-safely to site-local DA",
    "scheduled_start_time": "the booking's start (dateRange.start, else formattedName), "
    "converted DST-safely to site-local TM",
    "scheduled_procedure_step_duration": "the booking's duration in minutes",
    "performed_procedure_step_status": "the booking status through the status mapping "
    "(status_filter -> SCHEDULED, CANCELLED/DENIED -> DISCONTINUED; MPPS owns it after)",
    "accession_number": "derived from the source and the booking id, the same at every sync",
    "study_instance_uid": "2.25.<uuid5> from the source and the booking id, the same at every "
    "sync (Pylantir made a new random UID at every sync)",
}
# Derived fields whose mapped path is honoured as the source of what they derive from
# (unless the source type's rules say where that comes from).
PATH_FIELDS = {
    "scheduled_procedure_step_duration": "duration_path",
    "performed_procedure_step_status": "status_path",
}

# Pylantir's worklist columns (its WorklistItem) -> (our field, what differs).
PYLANTIR_COLUMNS: dict[str, tuple[str, str]] = {
    "patient_weight_lb": ("patient_weight", (
        "read in lb whatever config.units says, served in kg; no default weight "
        "(Pylantir served 100 when it had none)")),
    "performing_physician": ("performing_physician_name", ""),
    "station_name": ("scheduled_station_name", ""),
    "scheduled_station_aetitle": ("scheduled_station_ae_title", ""),
    "protocol_name": ("scheduled_procedure_step_description", "where Pylantir served it"),
    "procedure_description": ("requested_procedure_description", ""),
}
# The unit a Pylantir column's values are in (FieldMap.units).
PYLANTIR_UNITS: dict[str, dict[str, str]] = {"patient_weight_lb": {"patient_weight": "lb"}}

KNOWN_TARGETS = (*MAPPABLE_FIELDS, *DERIVED_FIELDS, *PYLANTIR_COLUMNS)
WorklistField = Literal[KNOWN_TARGETS]  # type: ignore[valid-type]
# A target the compiler judges (see the module's docstring); editors offer the known ones.
TargetName = Annotated[str, WithJsonSchema({"anyOf": [
    {"enum": list(KNOWN_TARGETS)}, {"type": "string", "pattern": f"^{NAME_PATTERN}$"}]})]


def is_name(text: str) -> bool:
    return re.fullmatch(NAME_PATTERN, text) is not None


def unknown_field(name: str) -> str:
    """The message for a target that names nothing here (as pydantic's for a list item)."""
    return f"unknown worklist field {name!r} (known: {', '.join(MAPPABLE_FIELDS)})"
